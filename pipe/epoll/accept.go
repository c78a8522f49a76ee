package epoll

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/pipe"
)

// A Listener is a listening socket whose connections the group's loops
// accept themselves, so that a plain TCP connection never touches Go's
// network poller: accept4, the read of the client's first packet and a
// non-blocking connect to the broker all happen on a loop's thread, and
// the pair is piped by the same loop without a handover.
//
//	ln, err := g.Listen(tcpListener, acceptor) // tcpListener's socket is the loops' now
//	...
//	ln.Close() // stop accepting; connections already accepted go on
//
// The acceptor's methods and a Session's run on the loop's thread: they must
// not block. A Session answers each event with one of the Conn's pending
// calls (Dial, Pipe, Refuse, End, Detach) before it returns.
type Listener struct {
	g   *Group
	fd  int
	acc Acceptor
	// local is the address every accepted connection has, when the socket
	// is bound to one (not 0.0.0.0 or ::): no getsockname per connection.
	local netip.AddrPort
	// noDelay: TCP_NODELAY is set on the listening socket, and Linux
	// copies it to every connection accepted from it (the child socket is
	// a clone of the listener's): no setsockopt per connection.
	noDelay bool
	// pres are the pre records of connections piped (Pipe gives them
	// back): one allocation fewer per connect. A connection that ends
	// before its pipe leaves its own to the collector.
	pres sync.Pool
}

// Acceptor takes the connections a Listener accepts.
type Acceptor interface {
	// Accept is called for each new connection with its addresses. It
	// returns the Session that follows it and the buffer its first packet
	// is read into (its length is kept), or a nil Session to have the
	// connection closed at once. It may Detach c instead.
	Accept(c *Conn, remote, local netip.AddrPort) (s Session, buf []byte, f First)
	// AcceptFailed is told of an accept that failed for want of
	// descriptors or memory; accepting pauses for the duration it
	// returns.
	AcceptFailed(err error) time.Duration
}

// First is how the first packet of a connection is read.
type First struct {
	// Frame returns the size of the whole packet b starts with, once b
	// holds enough to know it (0 until then), or why it is not one.
	Frame   func(b []byte) (int, error)
	Timeout time.Duration // for the whole packet, from the accept
}

// Session follows one accepted connection until it is piped or ends.
type Session interface {
	// FirstPacket is called when b[:size] is the client's first packet; b
	// holds what came after it too. b is the Session's from now.
	FirstPacket(c *Conn, b []byte, size int)
	// FirstFailed is called when the first packet could not be read:
	// io.EOF, os.ErrDeadlineExceeded, a read error or Frame's error.
	// b is what was read. The Session ends or refuses c.
	FirstFailed(c *Conn, b []byte, err error)
	// Dialled is called with the broker's first packet (and what came
	// after it) once it is in, or with a *DialError. ack may be the loop's
	// read buffer: it is valid until Dialled returns (Pipe, called from
	// Dialled, writes or copies it).
	Dialled(c *Conn, ack []byte, connected time.Duration, err error)
	// Ended is called once, on the loop after the batch of events, when a
	// connection that was not piped ends (refused, ended, closed from
	// outside). A piped connection reports to Pipe's done instead, in the
	// same way. Neither may block.
	Ended(res pipe.Result)
}

// DialError says which step of Conn.Dial failed: "dial" (the connect),
// "write" (sending the packet) or "read" (the answer: io.EOF,
// os.ErrDeadlineExceeded, a read error or the answer's Frame error).
type DialError struct {
	Op  string
	Err error
}

func (e *DialError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Dial is how Conn.Dial reaches a broker.
type Dial struct {
	Addr          netip.AddrPort
	Send          []byte                      // written once connected
	Timeout       time.Duration               // for the connect and the write
	AnswerTimeout time.Duration               // for the answer, from the write
	Frame         func(b []byte) (int, error) // the answer's size, as First.Frame
	AnswerLimit   int                         // the most the answer may be; 0 = Frame says
	Affinity      Affinity                    // ByConnection: dial on the loop that accepted the Conn
}

// Pre-pipe phases of a Conn.
const (
	phaseFirst   uint8 = iota + 1 // reading the client's first packet
	phaseIdle                     // the Session holds the first packet
	phaseDial                     // connecting to the broker, writing Send
	phaseAnswer                   // reading the broker's answer
	phaseRefused                  // answered; dropping the client's bytes until it closes
)

// pre is what a Conn holds between its accept and its pipe.
type pre struct {
	sess  Session
	phase uint8
	reg   [2]bool // the side's descriptor is in the epoll set, edge-triggered (preEvents)
	due   int64   // loop clock: the phase's deadline
	first First
	buf   []byte // the first packet as read
	dial  Dial
	sent  int    // of dial.Send
	ack   []byte // the answer as read
	// drained: the broker's side was read to empty with the answer and no
	// hang-up came with it, so its registration (preEvents, the same as
	// pairEvents) stands for the pair: new bytes or a FIN raise an edge of
	// their own, and Pipe makes no epoll_ctl for it.
	drained bool
	start   int64     // loop clock when the dial started
	drop    int       // bytes dropped while refused
	ln      *Listener // whose pres it goes back to
}

// maxRefusedDrop bounds what a refused client may still send before it is
// closed on.
const maxRefusedDrop = 64 << 10

// Listen hands ln's socket to the loops: each waits for its connections
// (EPOLLEXCLUSIVE: one loop wakes per connection) and accepts them itself.
// ln is closed; the loops hold a duplicate of its descriptor until Close.
func (g *Group) Listen(ln *net.TCPListener, acc Acceptor) (*Listener, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup listener: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l := &Listener{g: g, fd: fd, acc: acc}
	l.noDelay = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) == nil
	if a, err := sockname(fd); err == nil && !a.Addr().IsUnspecified() {
		l.local = a
	}
	for i, lp := range g.loops {
		if !lp.enqueue(command{op: opListen, ln: l}) {
			for _, lp := range g.loops[:i] {
				lp.enqueue(command{op: opUnlisten, ln: l})
			}
			unix.Close(fd)
			return nil, errClosed
		}
	}
	// Go's descriptor goes, so that its poller is not woken for
	// connections it will never accept.
	ln.Close()
	return l, nil
}

// Close stops accepting. Connections accepted go on.
func (ln *Listener) Close() {
	for _, l := range ln.g.loops {
		l.enqueue(command{op: opUnlisten, ln: ln})
	}
}

// listen registers ln with the loop.
func (l *loop) listen(ln *Listener) {
	i := len(l.lns)
	l.lns = append(l.lns, ln)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: listenTag(i)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		l.lns[i] = nil
	}
}

// unlisten takes ln out of the loop; the last loop to let go closes it.
func (l *loop) unlisten(ln *Listener) {
	for i, x := range l.lns {
		if x == ln {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
			l.lns[i] = nil
		}
	}
	if ln.g.unlistened(ln) {
		unix.Close(ln.fd)
	}
}

// unlistened counts the loops done with ln and reports whether it was the last.
func (g *Group) unlistened(ln *Listener) bool {
	g.lnMu.Lock()
	defer g.lnMu.Unlock()
	if g.lnDone == nil {
		g.lnDone = make(map[*Listener]int)
	}
	g.lnDone[ln]++
	if g.lnDone[ln] < len(g.loops) {
		return false
	}
	delete(g.lnDone, ln)
	return true
}

// listenTag is the epoll data of the loop's listener i: below wakeTag.
func listenTag(i int) int32 { return -2 - int32(i) }

// acceptBatch bounds the connections one wake-up accepts, so that pairs'
// traffic is not held back by a flood.
const acceptBatch = 64

// accept takes the pending connections of listener i.
func (l *loop) accept(i int) {
	ln := l.lns[i]
	if ln == nil || l.now < l.acceptPause {
		return
	}
	for range acceptBatch {
		nfd, remote, err := accept4(ln.fd)
		switch {
		case err == unix.EAGAIN || err == unix.ECONNABORTED || err == unix.EINTR:
			if err == unix.EAGAIN {
				return
			}
			continue
		case err != nil:
			pause := ln.acc.AcceptFailed(os.NewSyscallError("accept4", err))
			l.pauseAccepting(max(pause, time.Millisecond))
			return
		}
		l.accepted(ln, nfd, remote)
	}
}

// pauseAccepting takes the listeners out of the epoll set for d: a loop
// out of descriptors would otherwise be woken for the same connection again
// and again.
func (l *loop) pauseAccepting(d time.Duration) {
	l.acceptPause = l.now + int64(d)
	for _, ln := range l.lns {
		if ln != nil {
			ev := unix.EpollEvent{}
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, ln.fd, &ev)
		}
	}
}

// resumeAccepting puts the listeners back once the pause is over.
func (l *loop) resumeAccepting() {
	l.acceptPause = 0
	for i, ln := range l.lns {
		if ln != nil {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: listenTag(i)}
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, ln.fd, &ev)
		}
	}
}

func (l *loop) accepted(ln *Listener, nfd int, remote netip.AddrPort) {
	// As Go's net package does: MQTT's small packets must not wait for
	// ACKs. Inherited from the listener, unless it could not be set there.
	if !ln.noDelay {
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	p := &Conn{fd: [2]int32{int32(nfd), -1}, slot: -1, idx: -1, first: -1}
	p.loop.Store(l)
	l.place(p)
	local := ln.local
	if !local.IsValid() {
		local, _ = sockname(nfd)
	}
	pr, _ := ln.pres.Get().(*pre)
	if pr == nil {
		pr = &pre{ln: ln}
	}
	pr.phase = phaseIdle
	p.pre = pr
	sess, buf, first := ln.acc.Accept(p, remote, local)
	switch {
	case p.done: // detached
		return
	case sess == nil:
		p.done = true
		l.release(p)
		unix.Close(nfd)
		return
	}
	pr.sess, pr.phase, pr.first, pr.buf, pr.due = sess, phaseFirst, first, buf, l.now+int64(first.Timeout)
	l.arm(p)
	l.readFirst(p) // with TCP_DEFER_ACCEPT the CONNECT is most often here already
}

// place gives p a slot in l.conns.
func (l *loop) place(p *Conn) {
	p.lastActive = l.now
	if n := len(l.free); n > 0 {
		p.idx = l.free[n-1]
		l.free = l.free[:n-1]
		l.conns[p.idx] = p
	} else {
		p.idx = int32(len(l.conns))
		l.conns = append(l.conns, p)
	}
	l.makeRoom(p) // an upgraded Conn moving loops brings its frame state
}

// makeRoom grows the loop's tables of WebSocket frame and TLS record
// state, by slot, to p's slot when p is such a pair.
func (l *loop) makeRoom(p *Conn) {
	for p.ws && int(p.idx) >= len(l.ws) {
		l.ws = append(l.ws, nil)
	}
	for p.tls && int(p.idx) >= len(l.tls) {
		l.tls = append(l.tls, nil)
	}
}

// release gives p's slot back, for reuse after the batch of events.
func (l *loop) release(p *Conn) {
	if p.idx >= 0 {
		l.conns[p.idx] = nil
		l.freed = append(l.freed, p.idx)
		p.idx = -1
	}
}

// accept4 takes one pending connection of the listening socket fd, non-
// blocking and close-on-exec. It is unix.Accept4 without its
// getsockopt(SO_PROTOCOL) per address (x/sys asks, to tell L2TP sockets
// apart): a system call per connection for nothing on a TCP listener.
func accept4(fd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, netip.AddrPort{}, errno
		}
		return int(r), rawAddrPort(&rsa), nil
	}
}

// sockname is the local address of socket fd, as accept4 reads addresses.
func sockname(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	if _, _, errno := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n))); errno != 0 {
		return netip.AddrPort{}, errno
	}
	return rawAddrPort(&rsa), nil
}

// rawAddrPort reads an AF_INET or AF_INET6 address as the kernel wrote it.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), netPort(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), netPort(a.Port))
	}
	return netip.AddrPort{}
}

// connect starts the non-blocking connect of socket fd to a, its address
// on the stack (unix.Connect's Sockaddr is an allocation per dial).
func connect(fd int, a netip.AddrPort) error {
	var rsa unix.RawSockaddrAny
	n := uintptr(unix.SizeofSockaddrInet4)
	if ip := a.Addr(); ip.Is4() || ip.Is4In6() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		sa.Family, sa.Port, sa.Addr = unix.AF_INET, netPort(a.Port()), ip.Unmap().As4()
	} else {
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		sa.Family, sa.Port, sa.Addr = unix.AF_INET6, netPort(a.Port()), ip.As16()
		n = unix.SizeofSockaddrInet6
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), n); errno != 0 {
		return errno
	}
	return nil
}

// netPort is a port in network byte order, as sockaddr holds it, and back
// (the swap is its own inverse).
func netPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// preEvents is what a pending connection's side waits for, edge-triggered,
// from its registration until Pipe: each side is added once and never
// changed before the pipe (which sets the pair's pairEvents), so that the
// steps in between (the CONNECT read, the connect, the CONNACK read) cost
// no epoll_ctl of their own; a step reads or writes until EAGAIN, and an
// event in a phase that has no use for it is let pass.
var preEvents = [2]uint32{
	client: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET,
	broker: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
}

// register puts side s of a pending p in the epoll set, once.
func (l *loop) register(p *Conn, s int) error {
	if p.pre.reg[s] {
		return nil
	}
	ev := unix.EpollEvent{Events: preEvents[s], Fd: tag(p.idx, s)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(p.fd[s]), &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	p.pre.reg[s] = true
	return nil
}

// readable is the events that say a socket may be read.
const readable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP

// handlePre reacts to readiness of a pending connection.
func (l *loop) handlePre(p *Conn, s int, events uint32) {
	pr := p.pre
	switch {
	case s == client && pr.phase == phaseFirst:
		l.readFirst(p)
	case s == client && pr.phase == phaseRefused:
		l.dropRefused(p)
	case s == broker && pr.phase == phaseDial:
		l.connected(p, events)
	case s == broker && pr.phase == phaseAnswer && events&readable != 0:
		l.readAnswer(p, events)
	}
}

// readFirst reads what the client has sent of its first packet.
func (l *loop) readFirst(p *Conn) {
	pr := p.pre
	for {
		if len(pr.buf) == cap(pr.buf) {
			pr.buf = append(pr.buf, 0)[:len(pr.buf)]
		}
		n, err := readFD(int(p.fd[client]), pr.buf[len(pr.buf):cap(pr.buf)])
		switch {
		case err == unix.EAGAIN:
			if err := l.register(p, client); err != nil {
				l.firstFailed(p, err)
			}
			return
		case err != nil:
			l.firstFailed(p, os.NewSyscallError("read", err))
			return
		case n == 0:
			l.firstFailed(p, io.EOF)
			return
		}
		if p.ws {
			if !l.wsFirst(p, len(pr.buf), n) {
				return
			}
		} else {
			pr.buf = pr.buf[:len(pr.buf)+n]
		}
		if l.firstIn(p) {
			return
		}
	}
}

// firstIn checks whether the first packet is all in, and hands it on (or
// Frame's error) if so: it reports whether the Session has it now. A
// buffer too small for the size Frame said grows to it.
func (l *loop) firstIn(p *Conn) bool {
	pr := p.pre
	if len(pr.buf) == 0 {
		return false // a WebSocket read of frame headers only
	}
	size, ferr := pr.first.Frame(pr.buf)
	switch {
	case ferr != nil:
		l.firstFailed(p, ferr)
		return true
	case size > 0 && len(pr.buf) >= size:
		l.firstPacket(p, size)
		return true
	case size > cap(pr.buf):
		b := make([]byte, len(pr.buf), size)
		copy(b, pr.buf)
		pr.buf = b
	}
	return false
}

// firstPacket gives the Session the first packet. The client is not read
// while the Session dials: its next bytes wait in the socket (an edge they
// raise meanwhile is let pass; Pipe's level-triggered registration finds
// them).
func (l *loop) firstPacket(p *Conn, size int) {
	pr := p.pre
	pr.phase, pr.due = phaseIdle, 0
	b := pr.buf
	pr.buf = nil
	pr.sess.FirstPacket(p, b, size)
}

func (l *loop) firstFailed(p *Conn, err error) {
	pr := p.pre
	pr.phase, pr.due = phaseIdle, 0
	b := pr.buf
	pr.buf = nil
	pr.sess.FirstFailed(p, b, err)
}

// Dial connects to d.Addr without blocking, writes d.Send and reads the
// broker's first packet; the Session's Dialled gets it. On a pending Conn
// only, from one of its Session's calls. The Conn moves to the loop that
// serves d.Addr's pairs first (Group.loopFor), unless d.Affinity is
// ByConnection: the Session's calls that follow may come on another loop's
// thread.
func (p *Conn) Dial(d Dial) {
	l := p.loop.Load()
	if d.Affinity == ByConnection {
		l.dial(p, d)
		return
	}
	if to := l.g.loopFor(d.Addr); to != l && p.fd[broker] < 0 {
		l.moveDial(p, to, d)
		return
	}
	l.dial(p, d)
}

// dial is Dial on p's own loop.
func (l *loop) dial(p *Conn, d Dial) {
	pr := p.pre
	pr.dial, pr.sent, pr.ack, pr.drained = d, 0, nil, false
	pr.phase, pr.start = phaseDial, l.now
	pr.due = l.now + int64(d.Timeout)
	pr.reg[broker] = false
	fail := func(err error) {
		l.dialFailed(p, "dial", &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(d.Addr), Err: err})
	}
	family := unix.AF_INET
	if a := d.Addr.Addr(); !a.Is4() && !a.Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail(os.NewSyscallError("socket", err))
		return
	}
	p.fd[broker] = int32(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err = connect(fd, d.Addr)
	if err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		fail(os.NewSyscallError("connect", err))
		return
	}
	if err := l.register(p, broker); err != nil {
		fail(err)
		return
	}
	if err == nil {
		l.connected(p, 0)
		return
	}
	l.arm(p)
}

// connected: the connect finished (or failed); send the packet. A failed
// connect fails the first write with its error, so SO_ERROR is not asked.
// The answer is read when the broker's bytes raise an edge (or raised it
// with this event already).
func (l *loop) connected(p *Conn, events uint32) {
	pr := p.pre
	n, err := writeFD(int(p.fd[broker]), pr.dial.Send[pr.sent:])
	pr.sent += n
	switch {
	case err == unix.EAGAIN:
		return // the next EPOLLOUT edge
	case err != nil && pr.sent == 0:
		l.dialFailed(p, "dial", &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pr.dial.Addr), Err: os.NewSyscallError("connect", err)})
		return
	case err != nil:
		l.dialFailed(p, "write", os.NewSyscallError("write", err))
		return
	}
	pr.phase = phaseAnswer
	pr.due = l.now + int64(pr.dial.AnswerTimeout)
	l.arm(p)
	if events&readable != 0 {
		l.readAnswer(p, events)
	}
}

// readAnswer reads the broker's first packet; events are those of the
// wake-up that brought it. An answer that comes in one read (the CONNACK
// nearly always does) is read into the loop's buffer and handed over from
// there: no buffer of its own per connect. Only a part of one is copied
// into p's.
func (l *loop) readAnswer(p *Conn, events uint32) {
	pr := p.pre
	for {
		b := pr.ack
		switch {
		case b == nil:
			b = l.buf[:0]
		case len(b) == cap(b):
			b = append(b, 0)[:len(b)]
		}
		space := cap(b) - len(b)
		n, err := readFD(int(p.fd[broker]), b[len(b):cap(b)])
		switch {
		case err == unix.EAGAIN:
			return // the next EPOLLIN edge
		case err != nil:
			l.dialFailed(p, "read", os.NewSyscallError("read", err))
			return
		case n == 0:
			l.dialFailed(p, "read", io.EOF)
			return
		}
		b = b[:len(b)+n]
		size, ferr := pr.dial.Frame(b)
		switch {
		case ferr != nil:
			l.dialFailed(p, "read", ferr)
			return
		case pr.dial.AnswerLimit > 0 && size > pr.dial.AnswerLimit:
			l.dialFailed(p, "read", fmt.Errorf("answered with a %d-byte packet", size))
			return
		case size > 0 && len(b) >= size:
			// A read shorter than its buffer emptied the socket.
			pr.drained = n < space && events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0
			pr.ack, pr.phase, pr.due = nil, phaseIdle, 0
			pr.sess.Dialled(p, b, time.Duration(l.now-pr.start), nil)
			return
		}
		// A part: kept in p's own buffer until the rest comes.
		if pr.ack == nil || size > cap(b) {
			keep := make([]byte, len(b), max(size, 256))
			copy(keep, b)
			b = keep
		}
		pr.ack = b
	}
}

// dialFailed closes the broker's socket and tells the Session.
func (l *loop) dialFailed(p *Conn, op string, err error) {
	pr := p.pre
	l.closeBroker(p)
	pr.ack, pr.phase, pr.due = nil, phaseIdle, 0
	pr.sess.Dialled(p, nil, 0, &DialError{Op: op, Err: err})
}

func (l *loop) closeBroker(p *Conn) {
	if fd := p.fd[broker]; fd >= 0 {
		unix.Close(int(fd)) // leaves the epoll set with it
		p.fd[broker] = -1
	}
	p.pre.reg[broker] = false
	p.ev[broker] = 0
}

// Pipe makes the pending Conn a pair piped by its loop: ack goes to the
// client and rest to the broker first, then bytes flow both ways as for
// Group.Add, reporting to done. On a pending Conn only, from its Session's
// Dialled.
func (p *Conn) Pipe(ack, rest []byte, opts pipe.Options, done func(pipe.Result)) {
	l := p.loop.Load()
	pr := p.pre
	p.setOptions(opts, done)
	p.pre = nil
	p.lastActive = l.now
	for s := range p.fd {
		p.ev[s] = 0 // the pre-pipe registration's record; a pair's is pairEvents
		if s == broker && pr.reg[s] && pr.drained && preEvents[s] == pairEvents {
			continue
		}
		op := unix.EPOLL_CTL_ADD
		if pr.reg[s] {
			op = unix.EPOLL_CTL_MOD
		}
		ev := unix.EpollEvent{Events: pairEvents, Fd: tag(p.idx, s)}
		if err := unix.EpollCtl(l.epfd, op, int(p.fd[s]), &ev); err != nil {
			l.finish(p, errorEnd[s], os.NewSyscallError("epoll_ctl", err), false)
			return
		}
	}
	// Nothing refers to pr any more: the Session, its buffers and the
	// dial let go of, it serves the Listener's next connection.
	ln := pr.ln
	*pr = pre{ln: ln}
	ln.pres.Put(pr)
	l.arm(p)
	// As written by the goroutine path before its handover: not counted by
	// the meter (the caller counted them) and not framed, but for a
	// WebSocket client in a binary frame.
	if len(ack) > 0 && p.ws {
		ack = appendFrame(nil, ws.OpBinary, ack)
	}
	if len(ack) > 0 && !l.handWrite(p, client, ack) {
		return
	}
	if len(rest) > 0 {
		l.handWrite(p, broker, rest)
	}
}

// handWrite writes b to side d outside the pair's framing and metering;
// what does not fit waits as a blocked write does.
func (l *loop) handWrite(p *Conn, d int, b []byte) bool {
	n, err := writeFD(int(p.fd[d]), b)
	if err != nil && err != unix.EAGAIN {
		l.finish(p, errorEnd[d], os.NewSyscallError("write", err), false)
		return false
	}
	if n == len(b) {
		return true
	}
	if p.blocked == nil {
		p.blocked = &backlog{}
	}
	l.backlogs.Add(1)
	b = b[n:]
	if q := p.blocked.buf[d]; q != nil {
		b = append(q, b...)
	} else {
		b = append([]byte(nil), b...)
	}
	p.blocked.buf[d] = b
	p.blocked.since[d] = l.now
	return true
}

// Refuse answers the client with pkt (a refusing CONNACK) and a FIN, then
// drops what it still sends until it closes, for at most linger; the
// Session's Ended follows. On a pending Conn only.
func (p *Conn) Refuse(pkt []byte, linger time.Duration) {
	l := p.loop.Load()
	pr := p.pre
	if p.fd[broker] >= 0 {
		l.closeBroker(p)
	}
	fd := int(p.fd[client])
	if p.ws {
		// As mqttws.Conn's Write and CloseWrite say it: the packet in a
		// binary frame, a close frame 1000, then the FIN.
		pkt = append(appendFrame(nil, ws.OpBinary, pkt), closeFrame(ws.StatusNormalClosure, "")...)
	}
	if n, err := writeFD(fd, pkt); err != nil || n < len(pkt) {
		l.endPre(p, pipe.ClientError, err)
		return
	}
	// Closing with unread input would reset the connection and could
	// destroy the CONNACK in flight: FIN, and let the client close.
	unix.Shutdown(fd, unix.SHUT_WR)
	pr.phase, pr.due = phaseRefused, l.now+int64(linger)
	l.arm(p)
	l.dropRefused(p)
}

func (l *loop) dropRefused(p *Conn) {
	pr := p.pre
	for {
		n, err := readFD(int(p.fd[client]), l.buf)
		switch {
		case err == unix.EAGAIN:
			if err := l.register(p, client); err != nil {
				l.endPre(p, pipe.ClientError, err)
			}
			return
		case err != nil || n == 0:
			l.endPre(p, pipe.ClientClosed, nil)
			return
		}
		if pr.drop += n; pr.drop >= maxRefusedDrop {
			l.endPre(p, pipe.ClientClosed, nil)
			return
		}
	}
}

// End closes a pending Conn at once; its Session's Ended follows.
func (p *Conn) End(end pipe.End, err error) {
	p.loop.Load().endPre(p, end, err)
}

// endPre ends a pending connection.
func (l *loop) endPre(p *Conn, end pipe.End, err error) {
	pr := p.pre
	p.onDone = pr.sess.Ended
	l.finish(p, end, err, true)
}

// Detach takes a pending Conn, not dialling, out of its loop and returns
// its client as a Go connection, for a path the loops do not serve (TLS,
// an upstream the loops cannot dial). The Session hears no more of it.
func (p *Conn) Detach() (*net.TCPConn, error) {
	l := p.loop.Load()
	pr := p.pre
	if p.fd[broker] >= 0 {
		l.closeBroker(p)
	}
	fd := int(p.fd[client])
	if pr.reg[client] {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	p.done = true
	l.wheel.remove(p)
	if p.ws {
		l.ws[p.idx] = nil
	}
	l.release(p)
	p.pre = nil
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, errors.New("epoll: detached connection is not TCP")
	}
	return tc, nil
}

// checkPre runs when a pending connection's timer fires.
func (l *loop) checkPre(p *Conn) {
	pr := p.pre
	if pr.due == 0 || l.now < pr.due {
		l.arm(p)
		return
	}
	switch pr.phase {
	case phaseFirst:
		l.firstFailed(p, os.ErrDeadlineExceeded)
	case phaseDial:
		l.dialFailed(p, "dial", &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pr.dial.Addr), Err: os.ErrDeadlineExceeded})
	case phaseAnswer:
		l.dialFailed(p, "read", os.ErrDeadlineExceeded)
	case phaseRefused:
		l.endPre(p, pipe.ClientClosed, nil)
	}
}
