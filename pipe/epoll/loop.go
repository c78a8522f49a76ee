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

	"github.com/mqgate/mqgate/pipe"
)

// readBufSize is the one read buffer of a loop: large enough that a burst
// moves in few system calls.
const readBufSize = 64 << 10

// maxEvents is how many readiness events one epoll_wait returns at most.
const maxEvents = 256

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
	loop    *loop
	fd      [2]int32    // by side
	meter   *pipe.Meter // bytes moved, client to broker (Up) and back; read by Bytes from any goroutine
	blocked *backlog    // non-nil only while a write is blocked

	lastActive  int64 // loop clock of the last byte written either way
	halfCloseAt int64 // loop clock when the half-closed pair ends; 0 = not half-closed

	idle, writeTO, halfClose int64 // pipe.Options in nanoseconds
	onDone                   func(pipe.Result)

	// timer wheel links
	due        int64
	prev, next *Conn
	slot       int32

	idx   int32    // slot in loop.conns, -1 until added
	ev    [2]uint8 // registered epoll interest (EPOLLIN, EPOLLOUT), by side
	eof   [2]bool  // the side has sent FIN
	done  bool     // ended; fds are closed
	first int8     // the side whose FIN came first, or -1
}

// Bytes returns the bytes the pair has moved so far, client to broker and
// broker to client; after the pair ended, its totals. Safe from any
// goroutine.
func (p *Conn) Bytes() (up, down int64) {
	return p.meter.Up.Load(), p.meter.Down.Load()
}

// backlog is what a pair holds while a write is blocked.
type backlog struct {
	buf   [2][]byte // bytes waiting to be written to side s
	since [2]int64  // loop clock when that write started; 0 = none
}

func (p *Conn) pending(s int) []byte {
	if p.blocked == nil {
		return nil
	}
	return p.blocked.buf[s]
}

type opcode uint8

const (
	opAdd opcode = iota
	opClose
	opStop
)

type command struct {
	op  opcode
	p   *Conn
	end pipe.End
}

// loop is one event loop: an epoll instance, its pairs by descriptor, a
// timer wheel and a read buffer.
type loop struct {
	epfd  int
	wake  int // an eventfd in the epoll set, edge-triggered: written to wake the loop
	start time.Time
	now   int64 // loop clock (monotonic nanoseconds since start), read once per wake-up

	conns  []*Conn // by slot (Conn.idx); the epoll data names slot and side
	free   []int32 // unused slots
	wheel  wheel
	buf    []byte
	events []unix.EpollEvent

	mu      sync.Mutex
	queued  atomic.Bool // the queue is not empty
	queue   []command
	stopped bool
	spare   []command // the queue's other half, reused

	backlogs atomic.Int64 // writes that blocked, for tests and stats
}

func newLoop() (*loop, error) {
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
		epfd:   epfd,
		wake:   wake,
		start:  time.Now(),
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

// run is the loop. It runs on a thread of its own and waits in
// epoll_wait there, so that the kernel wakes each loop directly, in the
// order events arrive, as an event-loop proxy's threads are. Waiting in
// Go's network poller instead (parking the loop on its epoll descriptor)
// reorders events microseconds apart on two loops: the poller returns the
// ready goroutines last-ready first and hands the others to idle Ps through
// a thread wake-up, so of a SUBSCRIBE on one connection and a PUBLISH on
// another right after it, the PUBLISH is forwarded first in most rounds
// (BenchmarkCrossLoopOrder).
//
// Each wait first asks epoll without blocking and without entering the
// scheduler's system call state (RawSyscall), so that a busy loop keeps its
// P; only an idle loop blocks, and may then have to take another P when it
// wakes.
func (l *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		if l.queued.Load() {
			if l.runCommands() {
				return
			}
			continue
		}
		n := l.wait()
		l.now = l.clock()
		for _, ev := range l.events[:n] {
			if ev.Fd != wakeTag {
				l.handle(ev.Fd, ev.Events)
			}
		}
		l.wheel.advance(l.now, l.check)
	}
}

// wait returns the number of ready events in l.events, waiting for one at
// most until the wheel's next tick.
func (l *loop) wait() int {
	ev := unsafe.Pointer(&l.events[0])
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(ev), uintptr(len(l.events)), 0, 0, 0)
	if errno == 0 && r > 0 {
		return int(r)
	}
	timeout := -1 // milliseconds; -1: no timer pending
	if next := l.wheel.nextTick(); next != 0 {
		timeout = int(max((next-l.clock()+int64(time.Millisecond)-1)/int64(time.Millisecond), 0))
	}
	for {
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			// Only a bad epfd or events buffer fails here: a bug.
			panic(os.NewSyscallError("epoll_wait", err))
		}
		return n
	}
}

// runCommands runs the queued commands and reports whether the loop stopped.
func (l *loop) runCommands() (stop bool) {
	l.mu.Lock()
	cmds := l.queue
	l.queue = l.spare[:0]
	l.queued.Store(false)
	l.mu.Unlock()
	l.now = l.clock()
	for i, c := range cmds {
		switch c.op {
		case opAdd:
			l.add(c.p)
		case opClose:
			if !c.p.done {
				l.finish(c.p, c.end, net.ErrClosed, true)
			}
		case opStop:
			l.stop(c.end)
			return true
		}
		cmds[i] = command{}
	}
	l.spare = cmds
	return false
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
		if c.op == opAdd {
			l.add(c.p) // registered only to be ended with the rest
		}
	}
	for _, p := range l.conns {
		if p != nil && !p.done {
			l.finish(p, end, net.ErrClosed, true)
		}
	}
	l.closeFDs()
}

func (l *loop) closeFDs() {
	unix.Close(l.wake)
	unix.Close(l.epfd)
}

// tag is the epoll data of side s of the pair in slot idx.
func tag(idx int32, side int) int32 { return idx<<1 | int32(side) }

func (l *loop) add(p *Conn) {
	p.lastActive = l.now
	if n := len(l.free); n > 0 {
		p.idx = l.free[n-1]
		l.free = l.free[:n-1]
		l.conns[p.idx] = p
	} else {
		p.idx = int32(len(l.conns))
		l.conns = append(l.conns, p)
	}
	for s, fd := range p.fd {
		p.ev[s] = unix.EPOLLIN
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: tag(p.idx, s)}
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
	fd := p.fd[s]
	acted := false
	if p.pending(s) != nil && events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.flush(p, s)
		acted = true
	}
	if !p.done && l.reading(p, s) && events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.read(p, s)
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
// other side has no blocked write (backpressure).
func (l *loop) reading(p *Conn, s int) bool {
	return !p.eof[s] && p.pending(1-s) == nil
}

func (l *loop) read(p *Conn, s int) {
	n, err := readFD(int(p.fd[s]), l.buf)
	switch {
	case err == unix.EAGAIN:
	case err != nil:
		l.finish(p, errorEnd[s], os.NewSyscallError("read", err), false)
	case n == 0:
		l.halfClose(p, s)
	default:
		l.forward(p, s, l.buf[:n])
	}
}

// forward writes b, read from side s, to the other side; what does not fit
// waits in a backlog while side s is not read.
func (l *loop) forward(p *Conn, s int, b []byte) {
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
	if p.blocked == nil {
		p.blocked = &backlog{}
	}
	l.backlogs.Add(1)
	p.blocked.buf[d] = append([]byte(nil), b[n:]...)
	p.blocked.since[d] = l.now
	l.interest(p, d)
	l.interest(p, s)
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
		p.meter.Add(1-d == client, int64(n))
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
	if p.blocked.buf[1-d] == nil {
		p.blocked = nil
	}
	l.interest(p, d)
	l.interest(p, 1-d)
}

// halfClose handles a FIN from side s: pass it on, and bound how long the
// other direction may go on.
func (l *loop) halfClose(p *Conn, s int) {
	p.eof[s] = true
	if p.first < 0 {
		p.first = int8(s)
	}
	d := 1 - s
	// Reads of s pause while d has a backlog, so nothing is left to write
	// to d: the FIN goes right after the last byte.
	unix.Shutdown(int(p.fd[d]), unix.SHUT_WR)
	if p.eof[d] {
		l.finish(p, closedEnd[p.first], nil, false)
		return
	}
	l.interest(p, s)
	if p.halfClose > 0 && p.halfCloseAt == 0 {
		p.halfCloseAt = l.now + p.halfClose
		l.arm(p)
	}
}

// interest brings side s's epoll registration in line with the pair's state.
func (l *loop) interest(p *Conn, s int) {
	var want uint8
	if l.reading(p, s) {
		want |= unix.EPOLLIN
	}
	if p.pending(s) != nil {
		want |= unix.EPOLLOUT
	}
	if want == p.ev[s] {
		return
	}
	p.ev[s] = want
	ev := unix.EpollEvent{Events: uint32(want), Fd: tag(p.idx, s)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(p.fd[s]), &ev); err != nil {
		l.finish(p, errorEnd[s], os.NewSyscallError("epoll_ctl", err), false)
	}
}

// deadline is the earliest moment the pair must be looked at again, 0 for
// none: a blocked write's WriteTimeout, the half-close bound, the idle limit.
func (p *Conn) deadline() int64 {
	var d int64
	earliest := func(t int64) {
		if d == 0 || t < d {
			d = t
		}
	}
	if p.blocked != nil && p.writeTO > 0 {
		for _, since := range p.blocked.since {
			if since != 0 {
				earliest(since + p.writeTO)
			}
		}
	}
	switch {
	case p.halfCloseAt != 0:
		earliest(p.halfCloseAt)
	case p.idle > 0:
		earliest(p.lastActive + p.idle)
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
	now := l.now
	if b := p.blocked; b != nil && p.writeTO > 0 {
		for d, since := range b.since {
			if since != 0 && now >= since+p.writeTO {
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
		if now >= p.lastActive+p.idle {
			l.finish(p, pipe.IdleTimeout, os.ErrDeadlineExceeded, false)
			return
		}
	}
	l.arm(p)
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
	if p.idx >= 0 {
		l.conns[p.idx] = nil
		l.free = append(l.free, p.idx)
	}
	for _, fd := range p.fd {
		unix.Close(int(fd)) // also leaves the epoll set: the loop holds the only descriptor
	}
	p.blocked = nil
	res := pipe.Result{Up: p.meter.Up.Load(), Down: p.meter.Down.Load(), End: end, Err: err}
	if done := p.onDone; done != nil {
		p.onDone = nil
		go done(res)
	}
}

func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// writeFD writes b until it is all out or the socket would block.
func writeFD(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(fd, b[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == unix.EINTR:
		case err != nil:
			return n, err
		case m <= 0:
			return n, unix.EAGAIN
		}
	}
	return n, nil
}
