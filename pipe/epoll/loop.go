package epoll

import (
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

// readBufSize is the one read buffer of a loop: large enough that a burst
// moves in few system calls.
const readBufSize = 64 << 10

// maxEvents is how many readiness events one epoll_wait returns at most.
const maxEvents = 256

// pairEvents is a piped pair's registration, the same for its life:
// edge-triggered, so that the kernel reports a socket when bytes arrive on
// it, in the order they arrive. Level-triggered, a socket reported once is
// queued again behind those ready before it and reported first the next
// time if bytes came meanwhile: of B's SUBSCRIBE and A's PUBLISH right after
// it on one loop, A's went first in 26-30% of rounds
// (BenchmarkCrossLoopOrder/one-broker), and each wait polled every socket
// of the last batch once more. Nothing is read while the other side's write
// is blocked; reading resumes with a read, not a wait (resume), as no new
// edge may come for bytes already there.
const pairEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// maxReads is how many full buffers one wake-up reads from a socket before
// the loop turns to its other sockets (fairness); the rest is read after
// the batch (loop.again).
const maxReads = 4

// Sides of a pair, the index into its per-side arrays.
const (
	client = 0
	broker = 1
)

var (
	closedEnd = [2]pipe.End{pipe.ClientClosed, pipe.BrokerClosed}
	errorEnd  = [2]pipe.End{pipe.ClientError, pipe.BrokerError}
)

// Conn is one client ↔ broker pair living in a loop. Everything in it but
// loop is owned by the loop goroutine. It is what an idle pair costs, so it
// is kept to 128 bytes.
type Conn struct {
	// loop is the loop the Conn lives in; it changes once at most, when
	// a pending Conn dials a broker another loop serves (loop.moveDial).
	loop    atomic.Pointer[loop]
	fd      [2]int32    // by side
	meter   *pipe.Meter // bytes moved, client to broker (Up) and back; read by Bytes from any goroutine
	blocked *backlog    // non-nil only while a write is blocked

	lastActive  int64 // loop clock of the last byte written either way
	halfCloseAt int64 // loop clock when the half-closed pair ends; 0 = not half-closed

	// pipe.Options in milliseconds (of the loop clock, by ms()), so that
	// the packet framing below fits in the 128 bytes.
	idle, writeTO, halfClose uint32
	maxPacket                uint32 // pipe.Options.MaxPacketSize; 0 = none
	onDone                   func(pipe.Result)

	// timer wheel links
	due        int64
	prev, next *Conn

	idx   int32          // slot in loop.conns, -1 until added
	frame [2]mqtt.Framer // frame[s]: the packet boundaries of what side s sent
	slot  int16          // timer wheel slot (< wheelSlots), -1 = none
	ev    [2]uint8       // before the pipe: the registered epoll interest (EPOLLIN, EPOLLOUT), by side
	eof   [2]bool        // the side has sent FIN
	done  bool           // ended; fds are closed
	first int8           // the side whose FIN came first, or -1
	level uint8          // pipe.Options.Level: the client's MQTT protocol level
	// bye: the last packet the client began is a DISCONNECT
	// (mqtt.Framer.FeedLast), so its FIN, with the DISCONNECT whole,
	// closes both sides at once.
	bye bool
	// ws: the client speaks MQTT over WebSocket (AddWebSocket); its frame
	// state is the loop's (loop.ws), by slot, so that Conn keeps its size.
	ws bool
	// tls: the client speaks TLS 1.3, its records carried by the loop
	// (AddTLS); their state is the loop's (loop.tls), by slot. Both set:
	// wss, frames inside the records (AddWSS).
	tls bool

	pre *pre // from a Listener's accept until Pipe: the connection's Session and its reads and dial
}

// ms is a duration of the Conn's, in milliseconds, on the loop clock.
func ms(v uint32) int64 { return int64(v) * int64(time.Millisecond) }

// toMS rounds d up to whole milliseconds for a Conn.
func toMS(d time.Duration) uint32 {
	return uint32(min((d+time.Millisecond-1)/time.Millisecond, 1<<32-1))
}

// Bytes returns the bytes the pair has moved so far, client to broker and
// broker to client; after the pair ended, its totals. Safe from any
// goroutine.
func (p *Conn) Bytes() (up, down int64) {
	return p.meter.Up.Load(), p.meter.Down.Load()
}

// backlog is what a pair holds while a write is blocked, or while it is
// being closed at a packet boundary.
type backlog struct {
	buf   [2][]byte // bytes waiting to be written to side s
	since [2]int64  // loop clock when that write started; 0 = none

	// A close at a packet boundary of the stream to the client: asked for
	// when closeEnd is set; once final is written and the FIN sent, the
	// client's last bytes are dropped until lingerUntil.
	closeEnd    pipe.End
	final       []byte
	closeBy     int64  // loop clock when it is cut where it is (pipe.CloseGrace)
	lingerUntil int64  // 0 until the goodbye is said
	then        func() // called once the goodbye is said (CloseAtBoundaryThen)
	// A failed WebSocket (wsFail): final is a close frame, said without
	// waiting for a packet boundary, and the pair ends with err.
	err error
	cut bool
}

// why is the error a pair closed at a boundary ends with.
func (b *backlog) why() error {
	if b.err != nil {
		return b.err
	}
	return net.ErrClosed
}

// said runs what waits for the goodbye.
func (b *backlog) said() {
	if f := b.then; f != nil {
		b.then = nil
		f()
	}
}

// closeDeadline is when a close at a boundary ends the pair, whatever the
// client and broker do.
func (b *backlog) closeDeadline() int64 {
	if b.lingerUntil != 0 {
		return b.lingerUntil
	}
	return b.closeBy
}

// closing reports whether a close at a boundary was asked for.
func (p *Conn) closing() bool { return p.blocked != nil && p.blocked.closeEnd != "" }

func (p *Conn) pending(s int) []byte {
	if p.blocked == nil {
		return nil
	}
	return p.blocked.buf[s]
}

// side is one side of a pair to be read again.
type side struct {
	p   *Conn
	s   int
	fin bool // read on after a short read (see loop.read)
}

type opcode uint8

const (
	opAdd opcode = iota
	opClose
	opStop
	opListen
	opUnlisten
	opRun
	opAdopt
)

type command struct {
	op       opcode
	p        *Conn
	end      pipe.End
	boundary bool   // opClose: at a packet boundary, writing final first
	final    []byte // opClose
	ln       *Listener
	then     func()             // opClose: once the goodbye is said; opRun, opAdopt: what to run
	rec      *tlsrecord.Records // opAdd of a TLS pair: its record layer
	idle     int64              // opAdd: nanoseconds the pair has been idle already (MoveTLS)
}

// loop is one event loop: an epoll instance, its pairs by descriptor, a
// timer wheel and a read buffer.
type loop struct {
	g     *Group
	epfd  int
	wake  int // an eventfd in the epoll set, edge-triggered: written to wake the loop
	start time.Time
	now   int64 // loop clock (monotonic nanoseconds since start), read once per wake-up
	// yieldAt is the loop clock when the loop next lets the scheduler
	// run (yield).
	yieldAt int64

	conns []*Conn  // by slot (Conn.idx); the epoll data names slot and side
	ws    []*wsIn  // by slot: the frame state of a WebSocket client's pair (Conn.ws), nil for others
	tls   []*tlsIn // by slot: the record state of a TLS client's pair (Conn.tls), nil for others
	free  []int32  // unused slots
	freed []int32  // slots freed while handling one batch of events, free after it
	ends  []ending
	lns   []*Listener
	// acceptPause is the loop clock until which accepting pauses (out of
	// descriptors); 0 = not paused.
	acceptPause int64
	wheel       wheel
	buf         []byte
	events      []unix.EpollEvent
	// again are the sides with bytes left after maxReads, read after the
	// batch; the loop does not block while there are any.
	again, againSpare []side

	mu      sync.Mutex
	queued  atomic.Bool // the queue is not empty
	queue   []command
	stopped bool
	spare   []command // the queue's other half, reused

	backlogs atomic.Int64 // writes that blocked, for tests and stats
}

func newLoop(g *Group, start time.Time) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	// Edge-triggered: every write is one wake-up, and the counter need
	// never be read back (it would take 2^64 writes to fill).
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: wakeTag}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &loop{
		g:      g,
		epfd:   epfd,
		wake:   wake,
		start:  start,
		wheel:  newWheel(),
		buf:    make([]byte, readBufSize),
		events: make([]unix.EpollEvent, maxEvents),
	}
	return l, nil
}

// enqueue hands a command to the loop and wakes it. It reports false when
// the loop has stopped.
func (l *loop) enqueue(c command) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	if c.op == opAdopt {
		// Under the lock: a command for p that another goroutine sends
		// to its new loop queues behind this one.
		c.p.loop.Store(l)
	}
	l.queue = append(l.queue, c)
	l.queued.Store(true)
	first := len(l.queue) == 1
	l.mu.Unlock()
	if first {
		// Later commands ride on this wake-up: the loop takes the whole
		// queue at once.
		var one = [8]byte{1}
		_, _ = unix.Write(l.wake, one[:])
	}
	return true
}

// wakeTag is the epoll data of the loop's eventfd; pairs' tags are >= 0.
const wakeTag = -1

func (l *loop) clock() int64 { return int64(time.Since(l.start)) }

// run is the loop. It waits in epoll_wait itself, so that the kernel
// wakes each loop directly, in the order events arrive, as an event-loop
// proxy's threads are. Waiting in Go's network poller instead (parking the
// loop on its epoll descriptor) reorders events microseconds apart on two
// loops: the poller returns the ready goroutines last-ready first and hands
// the others to idle Ps through a thread wake-up, so of a SUBSCRIBE on one
// connection and a PUBLISH on another right after it, the PUBLISH is
// forwarded first in most rounds (BenchmarkCrossLoopOrder).
//
// A busy loop holds its P: its reads and writes do not enter the
// scheduler's system call state (RawSyscall), so it never queues for a P
// between them. Its waits do, so that a loop that blocks gives its P to
// the rest of the program meanwhile (see wait).
func (l *loop) run() {
	for {
		if l.queued.Load() {
			if l.runCommands(false) {
				return
			}
			continue
		}
		n := l.wait()
		l.now = l.clock()
		// Commands that came during the wait go before the bytes that
		// came with them: a close at a boundary asked for before the
		// broker's next packet arrived must not let it through.
		if l.queued.Load() && l.runCommands(true) {
			return
		}
		if len(l.again) > 0 {
			l.readAgain()
		}
		for _, ev := range l.events[:n] {
			switch {
			case ev.Fd >= 0:
				l.handle(ev.Fd, ev.Events)
			case ev.Fd < wakeTag:
				l.accept(int(-2 - ev.Fd))
			}
		}
		l.wheel.advance(l.now, l.check)
		if l.acceptPause != 0 && l.now >= l.acceptPause {
			l.resumeAccepting()
		}
		l.reuseSlots()
		if l.now >= l.yieldAt {
			l.yield()
		}
	}
}

// yieldEvery is how long a busy loop runs before it lets the scheduler
// run (runtime.Gosched): under 10 ms, sysmon's preemption bound. A loop
// whose reads, writes and immediate waits keep its P is, to the runtime,
// one goroutine running without end; after 10 ms sysmon preempts it with
// a signal (tgkill, getpid, rt_sigreturn, and the signal ending a wait
// early), then polls every 20 us for a millisecond (nanosleep), as it
// does after every preemption.
const yieldEvery = 5 * time.Millisecond

// yield lets the scheduler run once, so that the runtime sees the loop's
// P schedule and sysmon has nothing to preempt.
func (l *loop) yield() {
	runtime.Gosched()
	l.yieldAt = l.clock() + int64(yieldEvery)
}

// readAgain reads the sides that had bytes left after the last batch. They
// go before the new batch: their bytes came first.
func (l *loop) readAgain() {
	again := l.again
	l.again = l.againSpare[:0]
	for i, a := range again {
		if !a.p.done && l.reading(a.p, a.s) {
			l.read(a.p, a.s, a.fin, false)
		}
		again[i] = side{}
	}
	l.againSpare = again
}

// wait returns the number of ready events in l.events, waiting for one at
// most until the wheel's next tick, and not at all while sides wait to be
// read again. A wait that may block is made in the scheduler's system call
// state, so that the runtime may hand the loop's P on while it sleeps; one
// that returns at once (events were ready) keeps the P, as the runtime
// takes it back on return unless sysmon gave it away meanwhile. A loop that
// blocked holding its P (RawSyscall) stalled the rest of the process:
// goroutines queued on that P waited for the wait to end, and after the
// first collection connects through mqgate in BenchmarkLoopConnect took 60
// ms each instead of 0.2 ms. Until 2026-12 every wait first asked without
// blocking (RawSyscall, timeout 0) and blocked only when nothing was ready:
// under mqbench's throughput load 38% of epoll_waits were such probes
// finding nothing, a system call for nothing before each sleep.
func (l *loop) wait() int {
	timeout := maxBlock // milliseconds
	next := l.wheel.nextTick()
	if l.acceptPause != 0 && (next == 0 || l.acceptPause < next) {
		next = l.acceptPause
	}
	switch {
	case len(l.again) > 0:
		timeout = 0
	case next != 0:
		timeout = int(min(max((next-l.clock()+int64(time.Millisecond)-1)/int64(time.Millisecond), 0), maxBlock))
	}
	ev := unsafe.Pointer(&l.events[0])
	var (
		r     uintptr
		errno unix.Errno
	)
	if timeout == 0 {
		r, _, errno = unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(ev), uintptr(len(l.events)), 0, 0, 0)
	} else {
		r, _, errno = unix.Syscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(ev), uintptr(len(l.events)), uintptr(timeout), 0, 0)
	}
	switch errno {
	case 0:
		return int(r)
	case unix.EINTR:
		// A signal: the runtime's preemption (a stop of the world, a
		// stack scan) is taken at the next call.
		return 0
	}
	// Only a bad epfd or events buffer fails here: a bug.
	panic(os.NewSyscallError("epoll_wait", errno))
}

// maxBlock bounds a blocking wait, in milliseconds: a loop holds its P
// while it waits, and a runtime that cannot preempt it by a signal
// (GODEBUG=asyncpreemptoff=1) waits for it at most this long. It is above
// sysmon's 10 ms on purpose: an idle loop's wait is then retaken, which
// keeps sysmon polling every 20 µs, and the busy loops are faster with it
// (9 ms: about a sixth fewer ws messages/s in bench; docs/data-path.md, "Loops
// and threads").
const maxBlock = 50

// runCommands runs the queued commands and reports whether the loop
// stopped. Amid a batch of events, the slots freed stay unused until its
// end.
func (l *loop) runCommands(midBatch bool) (stop bool) {
	l.mu.Lock()
	cmds := l.queue
	l.queue = l.spare[:0]
	l.queued.Store(false)
	l.mu.Unlock()
	l.now = l.clock()
	for i, c := range cmds {
		if c.p != nil {
			if to := c.p.loop.Load(); to != l {
				l.redirect(c, to) // the pair moved on
				cmds[i] = command{}
				continue
			}
		}
		switch c.op {
		case opAdd:
			l.add(c.p, c.rec, c.idle)
		case opAdopt:
			if !c.p.done {
				l.place(c.p)
				c.then()
			}
		case opClose:
			switch {
			case c.p.done:
			case c.boundary:
				l.closeAtBoundary(c.p, c.end, c.final)
			default:
				l.finish(c.p, c.end, net.ErrClosed, true)
			}
			if c.then != nil {
				l.afterGoodbye(c.p, c.then)
			}
		case opRun:
			if !c.p.done {
				c.then()
			}
		case opStop:
			l.stop(c.end)
			return true
		case opListen:
			l.listen(c.ln)
		case opUnlisten:
			l.unlisten(c.ln)
		}
		cmds[i] = command{}
	}
	l.spare = cmds
	if !midBatch {
		l.reuseSlots()
	}
	return false
}

// redirect hands a command for a pair that moved to its loop. A loop that
// has stopped ended the pair: what was to run once it ended runs here.
func (l *loop) redirect(c command, to *loop) {
	if !to.enqueue(c) && c.op == opClose && c.then != nil {
		c.then()
	}
}

// moveDial hands the pending p to the loop that serves d.Addr's pairs
// (Group.loopFor), which dials it. The client's descriptor leaves this
// loop's epoll set, and its slot and timer go with it; the Session's calls
// from then on come on the new loop's thread.
func (l *loop) moveDial(p *Conn, to *loop, d Dial) {
	pr := p.pre
	if pr.reg[client] {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(p.fd[client]), nil); err != nil {
			l.dial(p, d) // stays: dial here
			return
		}
		pr.reg[client], p.ev[client] = false, 0
	}
	l.wheel.remove(p)
	var w *wsIn // an upgraded client's frame state goes with it
	if p.ws {
		w, l.ws[p.idx] = l.ws[p.idx], nil
	}
	l.release(p)
	if !to.enqueue(command{op: opAdopt, p: p, then: func() {
		if p.ws {
			to.ws[p.idx] = w
		}
		to.dial(p, d)
	}}) {
		// The group is closing: stay, to be ended with this loop's pairs.
		l.place(p)
		if p.ws {
			l.ws[p.idx] = w
		}
		l.dial(p, d)
	}
}

// afterGoodbye calls then once p's client was told goodbye or p ended.
func (l *loop) afterGoodbye(p *Conn, then func()) {
	b := p.blocked
	switch {
	case p.done || b == nil || b.lingerUntil != 0:
		then()
	case b.then != nil:
		prev := b.then
		b.then = func() { prev(); then() }
	default:
		b.then = then
	}
}

// reuseSlots makes the slots freed since the last call free to take: not
// before the batch of events that may still name them is handled.
func (l *loop) reuseSlots() {
	l.free = append(l.free, l.freed...)
	l.freed = l.freed[:0]
	l.reportEnds()
}

// stop ends every pair, closes the loop's descriptors and refuses further
// commands.
func (l *loop) stop(end pipe.End) {
	l.mu.Lock()
	l.stopped = true
	rest := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range rest {
		switch c.op {
		case opAdd:
			l.add(c.p, c.rec, c.idle) // registered only to be ended with the rest
		case opAdopt:
			l.place(c.p)
		case opListen:
			l.listen(c.ln)
		}
	}
	for _, ln := range l.lns {
		if ln != nil {
			l.unlisten(ln)
		}
	}
	for _, p := range l.conns {
		if p != nil && !p.done {
			l.finish(p, end, net.ErrClosed, true)
		}
	}
	l.closeFDs()
	l.reportEnds()
}

func (l *loop) closeFDs() {
	unix.Close(l.wake)
	unix.Close(l.epfd)
}

// tag is the epoll data of side s of the pair in slot idx.
func tag(idx int32, side int) int32 { return idx<<1 | int32(side) }

func (l *loop) add(p *Conn, rec *tlsrecord.Records, idle int64) {
	l.place(p)
	p.lastActive -= idle
	if p.ws {
		l.ws[p.idx] = new(wsIn) // place made the room
	}
	if p.tls {
		l.tls[p.idx] = &tlsIn{rec: rec}
	}
	for s, fd := range p.fd {
		ev := unix.EpollEvent{Events: pairEvents, Fd: tag(p.idx, s)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			l.finish(p, errorEnd[s], os.NewSyscallError("epoll_ctl", err), false)
			return
		}
	}
	l.arm(p)
}

// handle reacts to readiness of one side of a pair.
func (l *loop) handle(tag int32, events uint32) {
	p := l.conns[tag>>1]
	if p == nil {
		return // ended earlier in this batch (slots are reused only between batches)
	}
	s := int(tag & 1)
	if p.pre != nil {
		l.handlePre(p, s, events)
		return
	}
	fd := p.fd[s]
	acted := false
	if p.pending(s) != nil && events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.flush(p, s)
		acted = true
	}
	if !p.done && l.reading(p, s) && events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		fin := events&(unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0
		l.read(p, s, fin, fin && events&(unix.EPOLLERR|unix.EPOLLHUP) == 0)
		acted = true
	}
	if !p.done && !acted && events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		// Neither reading nor writing this side, and it is gone (reset):
		// end now rather than be woken for it again and again.
		var err error
		if e, gerr := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && e != 0 {
			err = os.NewSyscallError("read", unix.Errno(e))
		} else {
			err = os.NewSyscallError("read", unix.ECONNRESET)
		}
		l.finish(p, errorEnd[s], err, false)
	}
}

// reading reports whether side s is to be read: it has not sent FIN and the
// other side has no blocked write (backpressure). During a close at a
// boundary only the broker is read, to the end of its packet, and once the
// goodbye is said only the client, whose bytes are dropped.
func (l *loop) reading(p *Conn, s int) bool {
	if p.closing() {
		if p.blocked.lingerUntil != 0 {
			return s == client && !p.eof[client]
		}
		if s == client {
			return false
		}
	}
	return !p.eof[s] && p.pending(1-s) == nil
}

// read reads side s until it has no more bytes (a read shorter than the
// buffer: the registration is edge-triggered), side s is no longer to be
// read, or maxReads full buffers came (the rest is read after the batch).
// With fin, a short read is not the end: the side's FIN or error was
// reported with its bytes (EPOLLRDHUP), or nobody knows (resume), and only
// a further read finds it; with peerFIN the FIN alone was reported, and a
// short read is all that came before it: the side has ended, and the read
// for the 0 is spared (a connect's DISCONNECT comes with the client's FIN).
func (l *loop) read(p *Conn, s int, fin, peerFIN bool) {
	buf := l.buf
	switch {
	case p.tls && s == broker:
		buf = l.tlsBrokerRead(p) // room for the record's header and tag (toClientTLS), and a wss frame's header (toClient)
	case p.ws && s == broker:
		buf = l.buf[wsHeadroom:] // room for the frame header (toClient)
	}
	for range maxReads {
		k := 0 // a TLS client's record cut short by the last read, before this one
		if p.tls && s == client {
			k = l.tlsClientRead(p)
			buf = l.buf[k:]
		}
		n, err := readFD(int(p.fd[s]), buf)
		switch {
		case err == unix.EAGAIN:
			if p.tls {
				l.tlsIdle(p, s)
			}
			return
		case err != nil:
			l.finish(p, errorEnd[s], os.NewSyscallError("read", err), false)
			return
		case n == 0:
			l.eofFrom(p, s)
			return
		case p.closing():
			l.readClosing(p, s, buf[:n])
		case p.tls && s == client: // a wss client's records too: their frames go on to readWS
			l.readTLS(p, l.buf[:k+n])
			if !p.done && peerFIN && n < len(buf) && l.reading(p, s) {
				l.eofFrom(p, s)
				return
			}
		case p.ws && s == client:
			l.readWS(p, buf[:n])
			if !p.done && peerFIN && n < len(buf) && l.reading(p, s) {
				l.eofFrom(p, s)
				return
			}
		default:
			b := buf[:n]
			max := 0
			if s == client {
				max = int(p.maxPacket)
			}
			m, size, last := p.frame[s].FeedLast(b, max)
			l.forward(p, s, b[:m])
			if s == client && last >= 0 {
				p.bye = mqtt.IsDisconnect(b[last])
			}
			switch {
			case p.done:
			case size > 0:
				l.closeAtBoundary(p, pipe.PacketTooLarge, pipe.Goodbye(p.level, mqtt.PacketTooLarge))
			case peerFIN && n < len(buf) && l.reading(p, s):
				l.eofFrom(p, s)
				return
			}
		}
		if (n < len(buf) && !fin) || p.done || !l.reading(p, s) {
			return
		}
		if l.queued.Load() {
			// A command came while reading (a close at a boundary): it
			// goes before the bytes that came after it.
			break
		}
	}
	l.again = append(l.again, side{p, s, fin})
}

// resume reads side s if it is to be read: called when it may have become
// so (a blocked write went out, the goodbye was said), as bytes that came
// while it was not are told by no new edge.
func (l *loop) resume(p *Conn, s int) {
	if !p.done && l.reading(p, s) {
		l.read(p, s, true, false)
	}
}

// readClosing handles bytes read while the pair closes at a boundary: the
// broker's go on to the end of the packet in flight, the rest is dropped.
func (l *loop) readClosing(p *Conn, s int, b []byte) {
	if s == client {
		return // lingering: the client's last bytes go nowhere
	}
	n, done := p.frame[broker].Finish(b)
	if n > 0 {
		l.forward(p, broker, b[:n])
	}
	if !p.done && (done || p.frame[broker].Lost()) {
		l.goodbye(p)
	}
}

// closeAtBoundary starts a close at the next packet boundary of the stream
// to the client: the client is no longer read, the broker's packet in
// flight finishes (for at most pipe.CloseGrace), final is written, a FIN
// sent, and the client's last bytes dropped for at most pipe.Linger.
func (l *loop) closeAtBoundary(p *Conn, end pipe.End, final []byte) {
	if p.done || p.closing() {
		return
	}
	if p.pre != nil { // not piped yet: no boundary to wait for
		l.finish(p, end, net.ErrClosed, true)
		return
	}
	if p.blocked == nil {
		p.blocked = &backlog{}
	}
	b := p.blocked
	b.closeEnd, b.final, b.closeBy = end, final, l.now+int64(pipe.CloseGrace)
	if !p.done {
		l.goodbye(p)
	}
	if !p.done {
		l.arm(p)
	}
}

// goodbye says goodbye to the client once the stream to it is at a
// boundary, with nothing of it still waiting to be written; a lost stream
// has no boundary to wait for and is cut.
func (l *loop) goodbye(p *Conn) {
	b := p.blocked
	if b.lingerUntil != 0 || b.buf[client] != nil {
		return
	}
	f := p.frame[broker]
	if f.Lost() && !b.cut {
		l.finish(p, b.closeEnd, b.why(), true)
		return
	}
	if !f.AtBoundary() && !b.cut {
		return
	}
	switch {
	case b.cut: // a close frame, counted as no MQTT byte
		_, _ = writeFD(int(p.fd[client]), b.final)
	case p.ws:
		l.wsGoodbye(p, b.final)
	case p.tls:
		l.tlsGoodbye(p, b.final)
	case len(b.final) > 0: // the loop's own bytes: not counted, as on the pipe's goroutines
		_, _ = writeFD(int(p.fd[client]), b.final)
	}
	unix.Shutdown(int(p.fd[client]), unix.SHUT_WR)
	b.lingerUntil = l.now + int64(pipe.Linger)
	b.said()
	if p.eof[client] {
		l.finish(p, b.closeEnd, b.why(), true)
		return
	}
	l.arm(p)
	l.resume(p, client) // lingering: the client's last bytes are read and dropped
}

// forward writes b, read from side s, to the other side; what does not fit
// waits in a backlog while side s is not read.
func (l *loop) forward(p *Conn, s int, b []byte) {
	if p.ws && s == broker {
		l.toClient(p, b)
		return
	}
	if p.tls && s == broker {
		l.toClientTLS(p, b)
		return
	}
	d := 1 - s
	n, err := writeFD(int(p.fd[d]), b)
	if n > 0 {
		p.meter.Add(s == client, int64(n))
		p.lastActive = l.now
	}
	if err != nil && err != unix.EAGAIN {
		l.finish(p, errorEnd[d], os.NewSyscallError("write", err), false)
		return
	}
	if n == len(b) {
		return
	}
	l.backlog(p, d, b[n:])
}

// backlog keeps b, what did not fit into side d's socket, until it can be
// written; side 1-d is not read meanwhile.
func (l *loop) backlog(p *Conn, d int, b []byte) {
	if p.blocked == nil {
		p.blocked = &backlog{}
	}
	l.backlogs.Add(1)
	p.blocked.buf[d] = append([]byte(nil), b...)
	p.blocked.since[d] = l.now
	if p.writeTO > 0 {
		l.arm(p)
	}
}

// flush writes side d's backlog; once it is out, the other side is read
// again.
func (l *loop) flush(p *Conn, d int) {
	b := p.blocked.buf[d]
	n, err := writeFD(int(p.fd[d]), b)
	if n > 0 {
		if !(p.ws || p.tls) || d == broker { // a WebSocket's frames, a TLS client's records were counted as their payloads (toClient)
			p.meter.Add(1-d == client, int64(n))
		}
		p.lastActive = l.now
	}
	if err != nil && err != unix.EAGAIN {
		l.finish(p, errorEnd[d], os.NewSyscallError("write", err), false)
		return
	}
	if n < len(b) {
		p.blocked.buf[d] = b[n:]
		return
	}
	p.blocked.buf[d], p.blocked.since[d] = nil, 0
	if p.closing() {
		if d == client && !p.done {
			l.goodbye(p) // the bytes to the client are out: the boundary may be here
		}
		l.resume(p, 1-d)
		return
	}
	if p.blocked.buf[1-d] == nil {
		p.blocked = nil
	}
	if l.wsClosedIn(p, d) {
		l.halfClose(p, client)
		return
	}
	l.resume(p, 1-d)
}

// halfClose handles a FIN from side s: pass it on, and bound how long the
// other direction may go on.
func (l *loop) halfClose(p *Conn, s int) {
	p.eof[s] = true
	if p.closing() {
		// The client closed while lingering (done), or the broker ended
		// inside the packet in flight (nothing more will come).
		l.finish(p, p.blocked.closeEnd, p.blocked.why(), true)
		return
	}
	if p.first < 0 {
		p.first = int8(s)
	}
	d := 1 - s
	if s == client && p.bye && p.frame[client].AtBoundary() && p.blocked == nil && !p.eof[d] {
		// The client sent DISCONNECT and closed [MQTT-3.14.4-1]: nothing
		// the broker still sends has a reader, so the pair ends now, not
		// after a FIN to the broker, a wake-up and a read for its own.
		// What the broker sent meanwhile is read first, so that the close
		// sends it a FIN behind the DISCONNECT, not a reset.
		l.dropBroker(p)
		l.finish(p, closedEnd[p.first], nil, false)
		return
	}
	if p.eof[d] {
		// Both sides have sent FIN: closing d sends it s's, as its input
		// was read to the end.
		l.finish(p, closedEnd[p.first], nil, false)
		return
	}
	// Reads of s pause while d has a backlog, so nothing is left to write
	// to d: the FIN goes right after the last byte.
	if p.ws && d == client {
		l.wsCloseWrite(p)
	}
	if p.tls && d == client {
		l.tlsCloseWrite(p)
	}
	unix.Shutdown(int(p.fd[d]), unix.SHUT_WR)
	if p.halfClose > 0 && p.halfCloseAt == 0 {
		p.halfCloseAt = l.now + ms(p.halfClose)
		l.arm(p)
	}
}

// dropBroker reads what the broker's side holds and drops it, so that its
// close is a FIN: a close with unread bytes resets the connection.
func (l *loop) dropBroker(p *Conn) {
	for range maxReads {
		if n, err := readFD(int(p.fd[broker]), l.buf); err != nil || n < len(l.buf) {
			return
		}
	}
}

// deadline is the earliest moment the pair must be looked at again, 0 for
// none: a blocked write's WriteTimeout, the half-close bound, the idle limit.
func (p *Conn) deadline() int64 {
	if p.pre != nil {
		return p.pre.due
	}
	var d int64
	earliest := func(t int64) {
		if d == 0 || t < d {
			d = t
		}
	}
	if p.blocked != nil && p.writeTO > 0 {
		for _, since := range p.blocked.since {
			if since != 0 {
				earliest(since + ms(p.writeTO))
			}
		}
	}
	if p.closing() {
		earliest(p.blocked.closeDeadline())
		return d
	}
	switch {
	case p.halfCloseAt != 0:
		earliest(p.halfCloseAt)
	case p.idle > 0:
		earliest(p.lastActive + ms(p.idle))
	}
	return d
}

// arm (re)schedules the pair's timer when its deadline is earlier than the
// one scheduled. Later deadlines (activity) are found when the timer fires.
func (l *loop) arm(p *Conn) {
	d := p.deadline()
	switch {
	case d == 0:
	case p.slot < 0:
		l.wheel.add(p, d)
	case d < p.due:
		l.wheel.remove(p)
		l.wheel.add(p, d)
	}
}

// check runs when the pair's timer fires: end the pair if a limit passed,
// otherwise schedule the next look.
func (l *loop) check(p *Conn) {
	if p.pre != nil {
		l.checkPre(p)
		return
	}
	now := l.now
	if b := p.blocked; b != nil && b.closeEnd != "" {
		if now >= b.closeDeadline() {
			l.finish(p, b.closeEnd, b.why(), true)
			return
		}
		l.arm(p)
		return
	}
	if b := p.blocked; b != nil && p.writeTO > 0 {
		for d, since := range b.since {
			if since != 0 && now >= since+ms(p.writeTO) {
				l.finish(p, errorEnd[d], os.ErrDeadlineExceeded, false)
				return
			}
		}
	}
	switch {
	case p.halfCloseAt != 0:
		if now >= p.halfCloseAt {
			l.finish(p, closedEnd[p.first], nil, false)
			return
		}
	case p.idle > 0:
		if now >= p.lastActive+ms(p.idle) {
			l.idledOut(p)
			return
		}
	}
	l.arm(p)
}

// idledOut ends a pair that reached its idle limit: a 5.0 client is told
// 0x8D Keep Alive timeout, a 3.x client sees the connection close.
func (l *loop) idledOut(p *Conn) {
	final := pipe.Goodbye(p.level, mqtt.KeepAliveTimeout)
	if final == nil || p.blocked != nil {
		l.finish(p, pipe.IdleTimeout, os.ErrDeadlineExceeded, false)
		return
	}
	l.closeAtBoundary(p, pipe.IdleTimeout, final)
}

// finish ends the pair: closes both descriptors and reports the Result. The
// first side to have ended says why, unless force (a close from outside).
func (l *loop) finish(p *Conn, end pipe.End, err error, force bool) {
	if p.done {
		return
	}
	p.done = true
	if p.first >= 0 && !force {
		end, err = closedEnd[p.first], nil
	}
	l.wheel.remove(p)
	if p.ws && p.idx >= 0 {
		l.ws[p.idx] = nil
	}
	if p.tls && p.idx >= 0 {
		l.tls[p.idx] = nil
	}
	l.release(p)
	for _, fd := range p.fd {
		if fd >= 0 {
			unix.Close(int(fd)) // also leaves the epoll set: the loop holds the only descriptor
		}
	}
	if p.pre != nil {
		if p.onDone == nil {
			p.onDone = p.pre.sess.Ended
		}
		p.pre = nil
	}
	if p.blocked != nil {
		p.blocked.said()
	}
	p.blocked = nil
	res := pipe.Result{End: end, Err: err}
	if p.meter != nil { // nil for a connection that ended before its pipe
		res.Up, res.Down = p.meter.Up.Load(), p.meter.Down.Load()
	}
	if done := p.onDone; done != nil {
		p.onDone = nil
		l.ends = append(l.ends, ending{done, res})
	}
}

// ending is a completion callback waiting for the end of the batch.
type ending struct {
	done func(pipe.Result)
	res  pipe.Result
}

// reportEnds runs the batch's completion callbacks on the loop, in turn:
// handing them to a goroutine woke a thread per batch (futex, and the
// scheduler's nanosleep while it looked for the goroutine), the largest
// cost of a connect left in strace's count. The callbacks must not block
// (the access log's Log does no I/O).
func (l *loop) reportEnds() {
	for i := 0; i < len(l.ends); i++ { // a callback may end another pair
		e := l.ends[i]
		l.ends[i] = ending{}
		e.done(e.res)
	}
	l.ends = l.ends[:0]
}

// readFD and writeFD call read and write without the scheduler's system
// call state: on non-blocking sockets they do not block, and a loop keeps
// its P (see loop.run).
func readFD(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// writeFD writes b until it is all out or the socket would block.
func writeFD(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
		switch {
		case errno == unix.EINTR:
		case errno != 0:
			return n, errno
		case r == 0:
			return n, unix.EAGAIN
		default:
			n += int(r)
		}
	}
	return n, nil
}
