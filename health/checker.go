// Package health keeps one view of the health of every broker node: active
// probes (an MQTT CONNECT that must get a successful CONNACK, or a TCP
// connect) and passive reports from real client dials feed it, balancers
// read it, operators see it.
//
//	hc := health.NewChecker(log, nil)
//	defer hc.Close()
//	hc.Update([]health.Target{{Upstream: "cloud", Addrs: addrs, Checks: up.Checks}})
//	n := hc.Node("cloud", "10.0.0.1:1883")
//	b, _ := balance.New(nodes, balance.Options{State: balance.State{Healthy: func(i int) bool { return ns[i].Healthy() }}})
//	...
//	conn, err := dial(addr)
//	n.ReportDial(err) // passive checks
//
// Update is called with every new configuration: nodes that stay keep their
// state, probes of nodes that go stop before Update returns, and probes whose
// settings did not change run on undisturbed. Each node is probed on its own
// schedule from a random phase, so the probes of many nodes spread over the
// interval instead of firing together, and at most checks.active.concurrency
// probes of one upstream are in flight at once.
package health

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/keyed"
)

// Dialer connects to a node for a probe. It is the hook for TLS to brokers:
// when an upstream's scheme is tls, the proxy passes the dialer its client
// connections use, so probes see what clients see.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Target is one upstream to watch.
type Target struct {
	Upstream string
	Addrs    []string       // the nodes' dial addresses
	Checks   *config.Checks // nil = no checks: every node is healthy
	Dial     Dialer         // nil = plain TCP
}

// Checker owns the probes and the health of every node.
type Checker struct {
	log      *slog.Logger
	onChange func(Status)

	nodes  keyed.Map[nodeKey, *Node]
	mu     sync.Mutex          // over groups and closed, and the updates of nodes
	groups map[groupKey]*group // probes by upstream id and check
	closed bool

	probing atomic.Int64 // probe goroutines running
}

type nodeKey struct{ upstream, addr string }

// groupKey names one active check of one upstream: its index in
// checks.active.
type groupKey struct {
	upstream string
	check    int
}

// group is the probes of one upstream's nodes under one check.
type group struct {
	check  int // its index in checks.active
	cfg    config.ActiveCheck
	dial   atomic.Pointer[Dialer] // the upstream's current dialer, set by every Update
	sem    chan struct{}          // bounds probes in flight
	probes map[string]*probe
}

// probe is the goroutine that probes one node.
type probe struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// NewChecker returns a Checker with no targets. onChange, when not nil, is
// called with the new state after every change of a node's state, in a
// goroutine of its own (so it may take its time, and calls for one node may
// arrive out of order: read Status.Since, or the node, for the latest).
func NewChecker(log *slog.Logger, onChange func(Status)) *Checker {
	if log == nil {
		log = slog.Default()
	}
	return &Checker{log: log, onChange: onChange, groups: make(map[groupKey]*group)}
}

// Node returns the health of the node addr of upstream, creating it
// healthy when it is new. It is safe to call before Update lists it.
func (c *Checker) Node(upstream, addr string) *Node {
	return c.nodes.Get(nodeKey{upstream, addr}, func() *Node { return newNode(upstream, addr, c.log, c.onChange) })
}

// Update makes targets the watched set: probes start for new nodes, stop for
// nodes gone (before Update returns) and restart where the settings
// changed; nodes that stay keep their state. Nodes not in targets are
// forgotten (a *Node still held keeps working, unprobed).
func (c *Checker) Update(targets []Target) {
	var stopped []*probe
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	keep := make(map[nodeKey]bool)
	wantGroups := make(map[groupKey]bool)
	for _, t := range targets {
		var active []*config.ActiveCheck
		var passive *config.PassiveCheck
		if t.Checks != nil {
			active, passive = t.Checks.Active, t.Checks.Passive
		}
		for _, addr := range t.Addrs {
			keep[nodeKey{t.Upstream, addr}] = true
			c.Node(t.Upstream, addr).configure(active, passive)
		}
		for i, a := range active {
			gk := groupKey{t.Upstream, i}
			wantGroups[gk] = true
			g := c.groups[gk]
			if g != nil && !g.cfg.Equal(a) {
				stopped = append(stopped, g.stopAll()...)
				g = nil
			}
			if g == nil {
				g = &group{check: i, cfg: *a, sem: make(chan struct{}, a.Concurrency), probes: make(map[string]*probe)}
				c.groups[gk] = g
			}
			// Every update brings the upstream's current dialer, so that a
			// reload that changes only how nodes are reached (scheme,
			// proxy_protocol) reaches the running probes too.
			dial := probeDialer(a, t.Dial)
			g.dial.Store(&dial)
			want := make(map[string]bool, len(t.Addrs))
			for _, addr := range t.Addrs {
				want[addr] = true
				if _, ok := g.probes[addr]; !ok {
					g.probes[addr] = c.startProbe(g, c.Node(t.Upstream, addr), addr)
				}
			}
			for addr, p := range g.probes {
				if !want[addr] {
					p.cancel()
					stopped = append(stopped, p)
					delete(g.probes, addr)
				}
			}
		}
	}
	for id, g := range c.groups {
		if !wantGroups[id] {
			stopped = append(stopped, g.stopAll()...)
			delete(c.groups, id)
		}
	}
	c.nodes.Prune(func(k nodeKey, _ *Node) bool { return keep[k] })
	c.mu.Unlock()
	for _, p := range stopped {
		<-p.done
	}
}

// stopAll cancels every probe of g and returns them to wait for.
func (g *group) stopAll() []*probe {
	var out []*probe
	for addr, p := range g.probes {
		p.cancel()
		out = append(out, p)
		delete(g.probes, addr)
	}
	return out
}

// Close stops every probe and waits for them to end; later Updates do
// nothing.
func (c *Checker) Close() {
	var stopped []*probe
	c.mu.Lock()
	c.closed = true
	for id, g := range c.groups {
		stopped = append(stopped, g.stopAll()...)
		delete(c.groups, id)
	}
	c.mu.Unlock()
	for _, p := range stopped {
		<-p.done
	}
}

// Statuses returns the state of every watched node, by upstream and address.
func (c *Checker) Statuses() []Status {
	nodes := c.nodes.All()
	out := make([]Status, len(nodes))
	for i, n := range nodes {
		out[i] = n.Status()
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Upstream, b.Upstream), cmp.Compare(a.Addr, b.Addr))
	})
	return out
}

// Probing returns how many probe goroutines run now.
func (c *Checker) Probing() int { return int(c.probing.Load()) }

func (c *Checker) startProbe(g *group, n *Node, addr string) *probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{cancel: cancel, done: make(chan struct{})}
	c.probing.Add(1)
	go func() {
		defer close(p.done)
		defer c.probing.Add(-1)
		runProbe(ctx, g, n, probeAddr(addr, g.cfg.Port))
	}()
	return p
}

// runProbe probes n until ctx is done: first at a random point of the
// interval, so that nodes configured together are not probed together,
// then every interval (the healthy or the unhealthy one, by n's state).
func runProbe(ctx context.Context, g *group, n *Node, addr string) {
	timer := time.NewTimer(rand.N(g.cfg.HealthyInterval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		select {
		case g.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		latency, err := probeOnce(ctx, &g.cfg, *g.dial.Load(), addr)
		<-g.sem
		if ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing of the node
		}
		n.probed(g.check, err, latency)
		next := g.cfg.HealthyInterval
		if !n.healthy.Load() {
			next = g.cfg.UnhealthyInterval
		}
		timer.Reset(next)
	}
}

// probeDialer is the dialer of check a: the upstream's own (PROXY header,
// TLS) for probes of the MQTT port, plain TCP for HTTP probes, which speak to
// a status port of their own (https does its own TLS).
func probeDialer(a *config.ActiveCheck, upstream Dialer) Dialer {
	if upstream != nil && !a.IsHTTP() {
		return upstream
	}
	d := &net.Dialer{}
	return d.DialContext
}

// probeAddr is addr with its port replaced by port, when port is set.
func probeAddr(addr string, port int) string {
	if port == 0 {
		return addr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, itoa(port))
}
