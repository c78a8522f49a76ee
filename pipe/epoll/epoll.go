// Package epoll pipes plain TCP connection pairs through a few event loops,
// one per core, instead of two goroutines per pair. It is the form of
// package pipe for idle-heavy MQTT traffic: an idle pair costs two file
// descriptors and a 128-byte Conn in its loop, no goroutine, no stack and
// no buffer.
//
//	g, err := epoll.NewGroup(epoll.Cores())
//	if err != nil { ... }
//	defer g.Close(pipe.End("shutdown"))
//	conn, err := g.Add(client, broker, pipe.Options{Idle: 90 * time.Second}, func(res pipe.Result) {
//		log.Printf("up %d down %d, ended: %s", res.Up, res.Down, res.End)
//	})
//	if err != nil { ... } // client and broker are untouched: pipe.Run them instead
//	...
//	conn.Close(pipe.End("operator")) // end it from outside
//	conn.CloseAtBoundary("kick", final) // or between two MQTT packets, final (a DISCONNECT) first
//
// AddWebSocket does the same for a client speaking MQTT over WebSocket
// (ws, its upgrade done): the loop takes its frames apart and frames the
// broker's bytes itself (ws.go). AddTLS does it for a TLS 1.3 client
// whose record layer tlsrecord hands over (tls.go), and AddWSS for wss,
// both layers composed: records opened, the frames in them taken apart.
//
// Add takes the sockets away from Go's network poller: it duplicates their
// file descriptors, closes the *net.TCPConn values and registers the
// duplicates with a loop. From then on the loop owns them. Listen goes
// further (accept.go): the loops accept on a listening socket themselves,
// read each client's first packet and dial its broker without blocking, so
// that such a pair never was in Go's poller.
//
// The loop follows pipe.Run's rules: bytes are counted when written, a FIN
// from one side is passed on with shutdown(SHUT_WR) and the other direction
// may go on for Options.HalfCloseTimeout, Options.Idle ends a pair through
// which no byte passed either way for that long, Options.WriteTimeout ends
// a pair whose write has been blocked that long, and the side that ends
// first says why (the same pipe.End values). Each loop has one read buffer;
// a pair holds a buffer only while a write is blocked, and then stops
// reading the other side until the bytes are out (backpressure). Deadlines
// sit in a timer wheel with a resolution of Tick.
//
// A loop is a goroutine that waits in epoll_wait itself, as an event-loop
// proxy's threads do, so that the kernel wakes each loop directly. What clients send one broker keeps its order of
// arrival: the pairs to one broker share a loop (loops woken microseconds
// apart race for the CPUs), unless they are placed ByConnection (Affinity), and a pair's sockets are registered
// edge-triggered, so that a loop is told of sockets in the order their
// bytes came. So that a loop never holds a P that the rest of the program
// (accept, TLS, the access log, the garbage collector) waits for, nor
// waits for one itself, NewGroup raises GOMAXPROCS by the number of loops
// and Close lowers it again; a busy loop keeps its P between batches and
// an idle one hands it on while it blocks (see loop.wait).
// Completion callbacks run on the loop, in turn after each batch of events,
// as a waking goroutine would cost a thread wake-up per batch: they must
// not block (mqgate's access log does no I/O in Log).
package epoll

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

// Group is a set of event loops that pairs are spread over.
type Group struct {
	loops []*loop
	wg    sync.WaitGroup
	once  sync.Once
	procs int // added to GOMAXPROCS by NewGroup

	lnMu   sync.Mutex
	lnDone map[*Listener]int // loops done with a closing Listener

	// brokerLoops is the loop of each broker address seen (loopFor),
	// copied on write: a dial only loads it, taking no lock. brokerMu
	// serialises the writers.
	brokerMu    sync.Mutex
	brokerLoops atomic.Pointer[map[netip.AddrPort]*loop]

	next atomic.Uint32 // AddBy's round robin for ByConnection
}

// Affinity says which loop pipes a pair: Group.loopFor's for its broker
// (ByBroker, the default) or the one that accepted it (ByConnection).
// ByBroker keeps what clients send one broker in its order of arrival;
// ByConnection spreads one broker's pairs over all the loops, for a
// broker whose traffic is more than one core's worth and whose clients do
// not depend on the order across connections.
type Affinity uint8

// The Affinity values (stream_proxy.loop_affinity).
const (
	ByBroker     Affinity = iota // the loop serving the broker (Group.loopFor)
	ByConnection                 // the loop that accepted it; Add: round robin
)

// maxBrokerLoops bounds Group.brokerLoops: brokers beyond it (addresses
// that come and go with reloads) are placed by a hash of their address.
const maxBrokerLoops = 4096

// loopFor is the loop that serves the pairs to the broker at addr. All the
// pairs to one broker share a loop, so that what their clients send it is
// forwarded in the order it arrived, as by a one-threaded proxy: MQTT's
// order across connections matters at a broker (B's SUBSCRIBE, then A's
// PUBLISH to that topic must reach it in that order for B to get the
// message), and two loops woken microseconds apart race for the CPUs (the
// PUBLISH came first in 16-19 of 60 rounds of bench's ordering probe when
// A and B were on different loops, 0-9 on one; BenchmarkCrossLoopOrder).
// Brokers are spread over the loops in the order they are first seen.
func (g *Group) loopFor(addr netip.AddrPort) *loop {
	if len(g.loops) == 1 {
		return g.loops[0]
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if m := g.brokerLoops.Load(); m != nil {
		if l, ok := (*m)[addr]; ok {
			return l
		}
	}
	g.brokerMu.Lock()
	defer g.brokerMu.Unlock()
	var old map[netip.AddrPort]*loop
	if m := g.brokerLoops.Load(); m != nil {
		old = *m
	}
	if l, ok := old[addr]; ok {
		return l
	}
	if len(old) >= maxBrokerLoops {
		h := fnv.New32a()
		b, _ := addr.MarshalBinary()
		h.Write(b)
		return g.loops[h.Sum32()%uint32(len(g.loops))]
	}
	m := make(map[netip.AddrPort]*loop, len(old)+1)
	for a, l := range old {
		m[a] = l
	}
	l := g.loops[len(old)%len(g.loops)]
	m[addr] = l
	g.brokerLoops.Store(&m)
	return l
}

// NewGroup starts n event loops (at least one), each on its own goroutine
// and P, and raises GOMAXPROCS by as many (see the package doc).
func NewGroup(n int) (*Group, error) {
	g := &Group{}
	start := time.Now() // one clock for all loops: a pair may move between them
	for range max(n, 1) {
		l, err := newLoop(g, start)
		if err != nil {
			for _, l := range g.loops {
				l.closeFDs()
			}
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	g.procs = len(g.loops)
	addProcs(g.procs)
	for _, l := range g.loops {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); l.run() }()
	}
	return g, nil
}

// Close ends every pair still open, reporting end as their End, stops the
// loops, waits for them to exit and gives back the Ps NewGroup added. Add
// fails afterwards.
func (g *Group) Close(end pipe.End) {
	g.once.Do(func() {
		for _, l := range g.loops {
			l.enqueue(command{op: opStop, end: end})
		}
		g.wg.Wait()
		addProcs(-g.procs)
	})
}

// GOMAXPROCS is process state, and groups come and go concurrently
// (tests, a server's restarts): procs.mu makes addProcs's read-modify-write
// of it atomic, and procs.added is what live groups added, so that Cores
// still finds the number the process started with.
var procs struct {
	mu    sync.Mutex
	added int
}

// addProcs changes GOMAXPROCS by n.
func addProcs(n int) {
	if n == 0 {
		return
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0)+n, 1))
	procs.added += n
}

// Cores is GOMAXPROCS without the Ps that live groups added: the number of
// loops for a new group, one per core the process may use.
func Cores() int {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	return max(runtime.GOMAXPROCS(0)-procs.added, 1)
}

// Close ends the pair from outside (shutdown, an operator's request); its
// Result reports end and net.ErrClosed. It is safe to call from any
// goroutine, more than once, and after the pair has ended by itself (then it
// does nothing).
func (p *Conn) Close(end pipe.End) {
	p.loop.Load().enqueue(command{op: opClose, p: p, end: end})
}

// CloseAtBoundary ends the pair from outside at the next packet boundary of
// the stream to the client, as [pipe.Control.CloseAtBoundary] does: the
// client is sent final (a DISCONNECT; empty for a 3.x client) after whole
// packets only. The first close asked for counts.
func (p *Conn) CloseAtBoundary(end pipe.End, final []byte) {
	p.loop.Load().enqueue(command{op: opClose, p: p, end: end, boundary: true, final: final})
}

// CloseAtBoundaryThen is CloseAtBoundary, and calls then on the pair's
// loop once the client was sent final (or the pair ended otherwise): so
// that what replaces the pair (a client taking over its client id) reaches
// the broker only after the client was told. It reports false when the
// group is closed (then is not called).
func (p *Conn) CloseAtBoundaryThen(end pipe.End, final []byte, then func()) bool {
	return p.loop.Load().enqueue(command{op: opClose, p: p, end: end, boundary: true, final: final, then: then})
}

// Run runs f on the Conn's loop, unless the Conn has ended by then.
func (p *Conn) Run(f func()) {
	p.loop.Load().enqueue(command{op: opRun, p: p, then: f})
}

// Add moves the pair client ↔ broker into the loop of broker's address
// (all pairs to one broker share a loop, see Group.loopFor) and calls done
// once with its Result when it ends, on the loop: done must not block. On success client and broker are
// closed (the loop holds duplicates of their descriptors); on error they are
// untouched and still usable.
func (g *Group) Add(client, broker *net.TCPConn, opts pipe.Options, done func(pipe.Result)) (*Conn, error) {
	return g.AddBy(ByBroker, client, broker, opts, done)
}

// AddBy is Add placing the pair by aff: ByConnection takes the loops in
// turn (no loop accepted a pair handed in from Go's poller), as Add did
// before the pairs to one broker shared a loop.
func (g *Group) AddBy(aff Affinity, client, broker *net.TCPConn, opts pipe.Options, done func(pipe.Result)) (*Conn, error) {
	return g.add(aff, client, broker, opts, done, false, nil, 0)
}

// AddWebSocket is AddBy for a client that speaks MQTT over WebSocket on
// client (ws, not wss), its upgrade done: the loop takes the client's
// frames apart and frames what the broker sends (ws.go), answers pings and
// a close, and fails the connection on a bad frame as mqttws.Conn does.
// The client's stream must be at a frame boundary with nothing of it read
// ahead (mqttws.Conn.Detach).
func (g *Group) AddWebSocket(aff Affinity, client, broker *net.TCPConn, opts pipe.Options, done func(pipe.Result)) (*Conn, error) {
	return g.add(aff, client, broker, opts, done, true, nil, 0)
}

// AddTLS is AddBy for a client that speaks TLS 1.3 on client, its
// handshake done and its record layer rec taken from its tlsrecord.Conn
// (Detach): the loop opens the client's records and seals what the broker
// sends (tls.go) by tlsrecord's rules, answers a KeyUpdate, passes a
// close_notify on as a FIN and fails the connection on a bad record with
// the alert tlsrecord.Conn sends. The client's stream must be at a record
// boundary with nothing of it read ahead (Detach reports so).
//
//	rec, ok := conn.Detach() // conn: the *tlsrecord.Conn over tcp
//	if ok {
//		p, err := g.AddTLS(epoll.ByBroker, tcp, broker, rec, opts, done)
//	}
func (g *Group) AddTLS(aff Affinity, client, broker *net.TCPConn, rec *tlsrecord.Records, opts pipe.Options, done func(pipe.Result)) (*Conn, error) {
	return g.add(aff, client, broker, opts, done, false, rec, 0)
}

// AddWSS is AddTLS for a client that speaks MQTT over WebSocket inside
// its TLS records (wss): the loop opens the records and takes apart the
// frames in them, frames what the broker sends and seals the frames
// (tls.go and ws.go composed), with every rule of both. The client's
// stream must be at a record boundary (Detach) and its WebSocket reader at
// a frame boundary with nothing read ahead (mqttws.Conn.Detachable).
func (g *Group) AddWSS(aff Affinity, client, broker *net.TCPConn, rec *tlsrecord.Records, opts pipe.Options, done func(pipe.Result)) (*Conn, error) {
	return g.add(aff, client, broker, opts, done, true, rec, 0)
}

// MoveTLS is AddTLS for a pair that was piped elsewhere until now (parked,
// pipe.Handover) and through which no byte has passed for idle: its
// Options.Idle counts from then, not from the move.
func (g *Group) MoveTLS(aff Affinity, client, broker *net.TCPConn, rec *tlsrecord.Records, opts pipe.Options, idle time.Duration, done func(pipe.Result)) (*Conn, error) {
	return g.add(aff, client, broker, opts, done, false, rec, idle)
}

func (g *Group) add(aff Affinity, client, broker *net.TCPConn, opts pipe.Options, done func(pipe.Result), ws bool, rec *tlsrecord.Records, idle time.Duration) (*Conn, error) {
	cfd, err := dupFD(client)
	if err != nil {
		return nil, fmt.Errorf("detach client: %w", err)
	}
	bfd, err := dupFD(broker)
	if err != nil {
		unix.Close(cfd)
		return nil, fmt.Errorf("detach broker: %w", err)
	}
	l := g.loops[0]
	if aff == ByConnection {
		l = g.loops[(g.next.Add(1)-1)%uint32(len(g.loops))]
	} else if a, ok := broker.RemoteAddr().(*net.TCPAddr); ok {
		l = g.loopFor(a.AddrPort())
	}
	p := &Conn{fd: [2]int32{int32(cfd), int32(bfd)}, slot: -1, idx: -1, first: -1, ws: ws, tls: rec != nil}
	p.loop.Store(l)
	p.setOptions(opts, done)
	if !l.enqueue(command{op: opAdd, p: p, rec: rec, idle: int64(idle)}) {
		unix.Close(cfd)
		unix.Close(bfd)
		return nil, errClosed
	}
	// The duplicates share the sockets; closing Go's descriptors only takes
	// them out of the runtime's poller.
	client.Close()
	broker.Close()
	return p, nil
}

// setOptions sets the pair's pipe.Options and completion.
func (p *Conn) setOptions(opts pipe.Options, done func(pipe.Result)) {
	p.meter = opts.Meter
	if p.meter == nil {
		p.meter = new(pipe.Meter)
	}
	p.idle = toMS(opts.Idle)
	p.writeTO = toMS(opts.WriteTimeout)
	p.halfClose = toMS(opts.HalfCloseTimeout)
	p.maxPacket = uint32(min(max(opts.MaxPacketSize, 0), 1<<32-1))
	p.level = opts.Level
	p.onDone = done
}

var errClosed = errors.New("epoll: group closed")

// dupFD duplicates c's descriptor, close-on-exec and, as the socket is
// shared, non-blocking like the original.
func dupFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return nfd, nil
}
