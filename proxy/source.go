package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/vars"
)

// An upstream with source_addresses dials each node from one of several
// local addresses, so that connections to one broker are not bounded by
// the ~28,000 ephemeral ports of one address (NGINX's split_clients with
// proxy_bind). Each connection picks its source: the one with the fewest
// live connections to that node (even spread), or by hashing source_hash_key
// (a client keeps its source). The socket binds with
// IP_BIND_ADDRESS_NO_PORT, so the port is chosen at connect time for the
// 4-tuple and one local port serves many brokers. A source whose ports to
// a node are used up (connect: EADDRNOTAVAIL) is logged and counted, and
// the next source is tried.

// sourceCounts are one source address's connections to one node. They
// live in the node's state, so they outlive snapshots like its other
// counters.
type sourceCounts struct {
	source    netip.Addr
	active    atomic.Int64  // proxied connections from it now
	total     atomic.Uint64 // connections made from it
	exhausted atomic.Uint64 // dials refused for want of a local port
	loggedAt  atomic.Int64  // Unix nanoseconds of the last "out of ports" line
}

// exhaustLogEvery bounds the "out of ports" log lines per source and node:
// when it happens it happens to every new connection.
const exhaustLogEvery = 10 * time.Second

// sources returns the counts of node n for each of addrs, in order.
func (n *nodeState) sourcesFor(addrs []netip.Addr) []*sourceCounts {
	out := make([]*sourceCounts, len(addrs))
	for i, a := range addrs {
		out[i] = n.sources.Get(a, func() *sourceCounts { return &sourceCounts{source: a} })
	}
	n.sources.Prune(func(a netip.Addr, c *sourceCounts) bool { return slices.Contains(addrs, a) || c.active.Load() > 0 })
	return out
}

// sourceOrder is the order in which node i's sources are tried for a
// connection whose variables are vs: by live connections (fewest first) to
// spread evenly, or by rendezvous hashing of source_hash_key, so that a
// client keeps its source and removing one moves only that source's
// clients.
func (up *upstream) sourceOrder(i int, vs *vars.Set) []int {
	srcs := up.sources[i]
	key := ""
	if up.cfg.SourceHashKey != "" {
		key, _ = vs.Get(up.cfg.SourceHashKey)
	}
	order := make([]int, len(srcs))
	if key == "" {
		// Fewest first; ties in turn, so that they spread too.
		start := int(up.sourceTurn.Add(1) % uint64(len(srcs)))
		for j := range order {
			order[j] = (start + j) % len(srcs)
		}
		slices.SortStableFunc(order, func(a, b int) int {
			return cmp.Compare(srcs[a].active.Load(), srcs[b].active.Load())
		})
		return order
	}
	for j := range order {
		order[j] = j
	}
	score := make([]uint64, len(srcs))
	for j, s := range srcs {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write(s.source.AsSlice())
		score[j] = h.Sum64()
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case score[a] > score[b]:
			return -1
		case score[a] < score[b]:
			return 1
		}
		return a - b
	})
	return order
}

// dialFrom dials node i of up from its sources in order, moving on from a
// source that is out of local ports; it returns the connection and the
// source's counts. Without source addresses it dials as the kernel picks.
func (s *Server) dialFrom(ctx context.Context, up *upstream, i int, vs *vars.Set, from *proxySource) (net.Conn, *sourceCounts, error) {
	if len(up.sources) == 0 {
		c, err := up.dialer.dial(ctx, up.addrs[i], up.cfg.Nodes[i].Host, from, netip.Addr{})
		return c, nil, err
	}
	var errs []string
	for _, j := range up.sourceOrder(i, vs) {
		sc := up.sources[i][j]
		c, err := up.dialer.dial(ctx, up.addrs[i], up.cfg.Nodes[i].Host, from, sc.source)
		if err == nil {
			return c, sc, nil
		}
		if !outOfPorts(err) {
			return nil, nil, err
		}
		sc.exhausted.Add(1)
		now := time.Now().UnixNano()
		if last := sc.loggedAt.Load(); now-last >= int64(exhaustLogEvery) && sc.loggedAt.CompareAndSwap(last, now) {
			s.log.Warn("source address out of ports to this broker: trying the next one; add source_addresses or widen source_port_range",
				"upstream", up.cfg.ID, "node", up.addrs[i], "source", sc.source, "live_from_source", sc.active.Load(), "err", err)
		}
		errs = append(errs, sc.source.String())
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, fmt.Errorf("every source address is out of local ports to %s (%s)", up.addrs[i], strings.Join(errs, ", "))
}

// outOfPorts reports whether a dial failed for want of a local port: with
// IP_BIND_ADDRESS_NO_PORT the kernel picks the port at connect(2) and
// answers EADDRNOTAVAIL when none is free for the 4-tuple. (bind(2)
// answers the same for an address that is not local: that is another
// trouble, a configuration one, and is not retried.)
func outOfPorts(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && se.Syscall == "connect" && errors.Is(se.Err, syscall.EADDRNOTAVAIL)
}

// bindControl sets the socket options of a dial from a source address:
// IP_BIND_ADDRESS_NO_PORT, and the source_port_range when set.
func bindControl(portRange [2]uint16) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			if serr == nil && portRange[0] != 0 {
				// IP_LOCAL_PORT_RANGE (Linux 6.3): the low port in the low
				// 16 bits, the high one in the high 16.
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, int(uint32(portRange[1])<<16|uint32(portRange[0])))
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setsockopt: %w", serr)
		}
		return nil
	}
}

// SourceStats are one source address's connections to one node.
type SourceStats struct {
	Upstream, Node, Source string
	Active                 int64
	Total                  uint64
	Exhausted              uint64 // dials that found no free local port
}
