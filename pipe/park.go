package pipe

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking: the form of the pipe for connections whose bytes pass through
// user space (TLS, WebSocket), which the event loops cannot carry, and
// whose waiting reads would otherwise hold a goroutine and its stack per
// direction (two stacks, 6 KB, of an idle TLS connection's 22 KB). A parked
// direction has no goroutine: a Readiness source says when its socket has
// bytes, a goroutine then reads (through TLS) and writes until the socket
// runs dry, and parks the direction again. The pipe's rules (deadlines, idle
// limit, half-close, close at a boundary) are those of Run, unchanged: the
// deadlines of a ParkConn wake its direction when they pass, so a read that
// is not waiting still fails at its deadline.

// Readiness tells parked pipes when a socket has bytes to read
// (epoll.Notifier).
type Readiness interface {
	// Watch registers the socket of rc, armed: wake runs once when it is
	// readable, hangs up or fails, and then again only after Watch.Arm.
	// wake must return quickly (it hands the work on).
	Watch(rc syscall.RawConn, wake func()) (Watch, error)
}

// Watch is one socket registered with a Readiness source.
type Watch interface {
	Arm() error // one more wake, when the socket is readable (at once if it is now); fails once it is closed
	Stop()      // no more wakes
	// Leave is Stop, and takes the socket out of the source now: for a
	// socket that stays open in other hands (a Handover), which a
	// source watching it would go on seeing after Go's descriptor is
	// closed.
	Leave() error
}

// ParkConn is a TCP connection whose reads can be parked. Until Park takes
// it, it is the *net.TCPConn it wraps; a TLS or WebSocket connection that
// may be parked later is built on one from the start:
//
//	pc := pipe.NewParkConn(tcp)
//	client := tls.Server(pc, cfg) // handshake and CONNECT as usual
//	...
//	pipe.Park(client, pc, broker, nil, ready, opts, done)
//
// Once parked, its Read does not wait: with nothing to read it fails with
// an error whose Temporary method reports true, which crypto/tls and the
// WebSocket reader pass on without giving up on the connection (a TLS
// record half read stays buffered in the tls.Conn), and its read deadline
// wakes the direction when it passes.
type ParkConn struct {
	*net.TCPConn
	rc        syscall.RawConn
	readFn    func(fd uintptr) bool // c.rawRead, for rc.Read
	rb        []byte                // Read's buffer, for rawRead; by the reading goroutine
	rn        int                   // rawRead's outcome
	rerr      error
	parked    atomic.Bool
	pumping   atomic.Bool  // the direction drains inside pump's wait (set and cleared by its goroutine)
	deadline  atomic.Int64 // unix nanoseconds of the read deadline; 0 = none
	lingerEnd atomic.Int64 // unix nanoseconds when a linger ends; 0 = none
	dmu       sync.Mutex   // orders the socket's read deadline updates
	lastPark  int64        // when a read last reported errWouldBlock; by the reading goroutine
	busy      bool         // reads wait in Go's poller (pump); by the reading goroutine
	read      bool         // busy, and bytes came in the current window
	drained   bool         // while pumping: the last read was short, and no wake since
	busyStart bool         // StartBusy: the first wait after Park is a busy window
	pfd       int32        // the socket, while pumping
	mu        sync.Mutex
	pmu       sync.Mutex  // held by pump while it may read; unpark waits on it
	timer     *time.Timer // wakes the direction at the read deadline, while parked
	wake      func()      // the direction's, while parked
}

// NewParkConn wraps tc.
func NewParkConn(tc *net.TCPConn) *ParkConn { return &ParkConn{TCPConn: tc} }

// StartBusy makes Park start both directions of c's pair busy, as if each
// had just parked: each waits its first lingerFor in Go's poller on a
// goroutine and is watched by the Readiness source only if no byte came
// by then. For connections that are likely to speak again at once (a
// TLS or WebSocket client's first packets after its CONNACK, or its
// DISCONNECT right away): watching them at once costs two epoll_ctl registrations
// and a notifier wake-up, handed to a new goroutine, for the first bytes;
// an idle connection parks lingerFor later, as before. Call it before
// Park.
func (c *ParkConn) StartBusy() { c.busyStart = true }

// errWouldBlock is what a parked ParkConn's Read returns when the socket has
// nothing to read. Temporary: crypto/tls keeps the connection usable.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "pipe: nothing to read yet" }
func (wouldBlock) Temporary() bool { return true }
func (wouldBlock) Timeout() bool   { return false }

var errWouldBlock net.Error = wouldBlock{}

// Read reads what the socket holds; parked, it never waits: a busy
// direction waits in pump, around its reads.
func (c *ParkConn) Read(b []byte) (int, error) {
	if c.pumping.Load() {
		// Only the pumping goroutine reads now: another reads after
		// unpark, which waits for the pump to end.
		return c.pumpRead(b)
	}
	if !c.parked.Load() {
		return c.TCPConn.Read(b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.rb = b
	err := c.rc.Read(c.readFn)
	n, rdErr := c.rn, c.rerr
	c.rb, c.rerr = nil, nil
	switch {
	case err != nil: // closed, or the deadline passed
		return 0, err
	case rdErr == syscall.EAGAIN:
		if c.busy {
			return 0, errWouldBlock // the direction pumps (runParked)
		}
		if dl := c.deadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
			// The deadline passed and the runtime's own timer has not
			// caught up yet: fail as the waiting read would have.
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
		}
		c.lastPark = time.Now().UnixNano()
		return 0, errWouldBlock
	case rdErr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rdErr)}
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawRead is the function of Read's RawConn.Read (c.readFn, a method value
// made once: a closure made per read was an allocation per read). It reads
// into c.rb once and never waits. With nothing to read, a direction woken
// again less than lingerFor after it parked becomes busy: it then drains
// inside one wait of Go's poller (pump) until a window of lingerFor passes
// with nothing read.
func (c *ParkConn) rawRead(fd uintptr) bool {
	for {
		c.rn, c.rerr = syscall.Read(int(fd), c.rb)
		if c.rerr != syscall.EINTR {
			break
		}
	}
	if c.rerr != syscall.EAGAIN {
		return true
	}
	now := time.Now().UnixNano()
	if dl := c.deadline.Load(); dl != 0 && now >= dl {
		return true // Read fails it
	}
	if now-c.lastPark < int64(lingerFor) {
		// Woken again soon after it parked: busy. Waking through the
		// notifier costs more per packet than Go's poller.
		c.busy = true
		c.lingerEnd.Store(now + int64(lingerFor))
		c.socketDeadline()
	}
	return true
}

// pumpRead is Read while the direction pumps: a read of the socket the
// pump's wait holds, with none after a short read (the socket was empty
// then: a stream socket's read takes all it holds that fits, and bytes that
// come after it wake the wait).
func (c *ParkConn) pumpRead(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if c.drained {
		return 0, errWouldBlock
	}
	var (
		n   int
		err error
	)
	for {
		n, err = syscall.Read(int(c.pfd), b)
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == syscall.EAGAIN:
		c.drained = true
		return 0, errWouldBlock
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
	case n <= 0:
		return 0, io.EOF
	}
	c.read = true
	c.drained = n < len(b)
	return n, nil
}

// lingerFor is how long a busy parked direction (woken again less than
// this after it parked) waits in Go's poller with nothing read (pump),
// goroutine kept, before it parks: waking through the notifier (a thread wake-up, a goroutine, an
// epoll_ctl) costs more per packet than the poller, and a connection
// that is busy now stays so; an idle one (keepalives seconds apart) parks
// at once.
const lingerFor = 50 * time.Millisecond

// idle ends a busy time: the socket gets the pipe's read deadline again.
func (c *ParkConn) idle() {
	c.busy, c.read = false, false
	c.lingerEnd.Store(0)
	c.socketDeadline()
}

// socketDeadline gives the socket the read deadline, or the end of a
// linger when that is earlier.
func (c *ParkConn) socketDeadline() error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	dl := c.deadline.Load()
	if le := c.lingerEnd.Load(); le != 0 && (dl == 0 || le < dl) {
		dl = le
	}
	var t time.Time
	if dl != 0 {
		t = time.Unix(0, dl)
	}
	return c.TCPConn.SetReadDeadline(t)
}

// SetReadDeadline is the TCP connection's, and while parked it also wakes
// the direction when t passes, so that the read that is not waiting fails.
func (c *ParkConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		c.deadline.Store(0)
	} else {
		c.deadline.Store(t.UnixNano())
	}
	err := c.socketDeadline()
	c.armDeadline(t)
	return err
}

// SetDeadline sets both deadlines, as SetReadDeadline and SetWriteDeadline.
func (c *ParkConn) SetDeadline(t time.Time) error {
	err := c.TCPConn.SetWriteDeadline(t)
	if rerr := c.SetReadDeadline(t); err == nil {
		err = rerr
	}
	return err
}

func (c *ParkConn) armDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake == nil {
		return
	}
	if t.IsZero() {
		if c.timer != nil {
			c.timer.Stop()
		}
		return
	}
	d := time.Until(t)
	if d <= 0 {
		if c.timer != nil {
			c.timer.Stop()
		}
		go c.wake() // not inline: the caller may hold its direction
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.wake)
		return
	}
	c.timer.Reset(d)
}

// park switches c to reads that never wait, with wake to run at its read
// deadline and when it is closed. It returns c's RawConn for the Readiness
// source.
func (c *ParkConn) park(wake func()) (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	c.rc = rc
	c.readFn = c.rawRead
	c.mu.Lock()
	c.wake = wake
	c.mu.Unlock()
	if c.busyStart {
		// As if it had just parked: the first read that finds nothing
		// waits a busy window (rawRead).
		c.lastPark = time.Now().UnixNano()
	}
	c.parked.Store(true)
	if dl := c.deadline.Load(); dl != 0 {
		c.armDeadline(time.Unix(0, dl))
	}
	return rc, nil
}

// Close closes the connection and, parked, wakes its direction, whose read
// then fails: as with Run, closing a connection ends its pipe.
func (c *ParkConn) Close() error {
	err := c.TCPConn.Close()
	c.mu.Lock()
	wake := c.wake
	c.mu.Unlock()
	if wake != nil {
		wake()
	}
	return err
}

// unpark makes c's reads wait again (a goodbye's linger), and stops its
// deadline's wake.
func (c *ParkConn) unpark() {
	c.parked.Store(false)
	// A direction pumping c reads it on until its wait ends (a close at
	// a boundary has set a past deadline, which ends it): only then may
	// another goroutine read c. pump looks at parked under pmu, so either
	// it sees parked false or this waits for its pump to end.
	c.pmu.Lock()
	c.pmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wake = nil
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// A parked direction's state.
const (
	parkIdle    = iota // waiting for readiness: no goroutine
	parkRunning        // a goroutine is draining src
	parkAgain          // draining, and woken again meanwhile: drain once more
	parkDone           // the direction has ended
	// parkMoving: held by a Handover's Take, parked; parkMovingWoken:
	// and woken meanwhile (drained when it stays).
	parkMoving
	parkMovingWoken
)

// parking is what a direction holds to be parked.
type parking struct {
	pc    *ParkConn // src's socket
	ready Readiness
	w     Watch // nil until the direction first parks, when it needed a first drain
	state atomic.Int32
	// settle: the pair may be handed on once it has stayed (Settler.Park),
	// told when the direction parks; nil for Park.
	settle *settling
}

// arm asks for the next wake: the first time, when the direction drained
// once before it was watched, by registering the socket (armed), so a
// connection's first park costs one epoll_ctl, not an add and a re-arm.
func (p *parking) arm(wake func()) error {
	if p.w == nil {
		w, err := p.ready.Watch(p.pc.rc, wake)
		if err != nil {
			return err
		}
		p.w = w
		return nil
	}
	return p.w.Arm()
}

// leave takes the socket out of the readiness source for a Handover.
func (p *parking) leave() error {
	w := p.w
	if w == nil {
		return nil
	}
	p.w = nil
	return w.Leave()
}

// release undoes a Take's hold on a direction that stays parked, or
// drains it when it was woken meanwhile.
func (p *parking) release(d *direction) {
	if !p.state.CompareAndSwap(parkMoving, parkIdle) {
		p.state.Store(parkRunning)
		go d.runParked()
	}
}

// stop takes the socket out of the readiness source, if it is in.
func (p *parking) stop() {
	if p.w != nil {
		p.w.Stop()
	}
}

// Buffered is what a connection over a ParkConn (a WebSocket reader, say)
// may implement to say that it holds no bytes read from the socket that a
// Read would return: then Park does not drain it once on a goroutine of
// its own before parking it, as it must when bytes may wait where no
// readiness tells (read with the CONNECT, a TLS record read ahead).
type Buffered interface{ Buffered() int }

// needsDrain reports whether src, read through pc, may hold bytes already
// read from the socket.
func needsDrain(src net.Conn, pc *ParkConn) bool {
	if src == net.Conn(pc) {
		return false
	}
	b, ok := src.(Buffered)
	return !ok || b.Buffered() > 0
}

// Park is Start for connections that can wait without a goroutine: client
// is read through clientPC (a TLS or WebSocket connection over it, or
// clientPC itself), broker through brokerPC (nil: broker is a
// *net.TCPConn, wrapped here). Each direction has a goroutine only while
// bytes flow; ready says when they do. done gets the Result once both
// directions have ended, as with Start. When Park fails (the Readiness
// source is closed) nothing has started and the caller may Start instead.
func Park(client net.Conn, clientPC *ParkConn, broker net.Conn, brokerPC *ParkConn, ready Readiness, opts Options, done func(Result)) error {
	return park(client, clientPC, broker, brokerPC, ready, opts, done, nil)
}

func park(client net.Conn, clientPC *ParkConn, broker net.Conn, brokerPC *ParkConn, ready Readiness, opts Options, done func(Result), st *settling) error {
	if brokerPC == nil {
		tc, ok := broker.(*net.TCPConn)
		if !ok {
			return errors.New("pipe: broker side cannot be parked")
		}
		brokerPC = NewParkConn(tc)
		broker = brokerPC
	}
	if clientPC.busyStart {
		brokerPC.busyStart = true // the broker answers what the client says
	}
	up, down := newDirections(client, broker, opts)
	up.clientPC = clientPC
	up.park, down.park = &parking{pc: clientPC, ready: ready, settle: st}, &parking{pc: brokerPC, ready: ready, settle: st}
	if st != nil {
		st.up, st.down = up, down
	}
	// A busy start drains on a goroutine at once too: its first read that
	// finds nothing waits in Go's poller (StartBusy).
	drainFirst := [2]bool{clientPC.busyStart || needsDrain(client, clientPC), brokerPC.busyStart || needsDrain(broker, brokerPC)}
	for i, d := range []*direction{up, down} {
		// Running until Park is done, and then until the first drain
		// ends when there is one: a wake before that only asks for one
		// more.
		d.park.state.Store(parkRunning)
		rc, err := d.park.pc.park(d.wakeParked)
		if err == nil && !drainFirst[i] {
			// Nothing read ahead: watched at once, armed, with no first
			// drain (no goroutine, no read that finds nothing).
			d.park.w, err = ready.Watch(rc, d.wakeParked)
		}
		if err != nil {
			up.park.stop()
			clientPC.unpark()
			brokerPC.unpark()
			return err
		}
	}
	var left atomic.Int32
	left.Store(2)
	finish := func() {
		if left.Add(-1) == 0 {
			clientPC.unpark() // stops the deadlines' wakes
			brokerPC.unpark()
			done(result(up, down))
		}
	}
	up.finish, down.finish = finish, finish
	startDirections(up, down, opts)
	for i, d := range []*direction{up, down} {
		// A direction that may hold bytes inside TLS or WebSocket (read
		// with the CONNECT), where no readiness would tell, drains once
		// at once; the others park, unless woken meanwhile.
		if drainFirst[i] || !d.park.state.CompareAndSwap(parkRunning, parkIdle) {
			go d.runParked()
		} else {
			d.park.settle.parked()
		}
	}
	return nil
}

// wakeParked runs the direction's drain on a goroutine, unless one runs
// already (then it drains once more before it parks).
func (d *direction) wakeParked() {
	p := d.park
	for {
		switch s := p.state.Load(); s {
		case parkIdle:
			if p.state.CompareAndSwap(parkIdle, parkRunning) {
				go d.runParked()
				return
			}
		case parkRunning:
			if p.state.CompareAndSwap(parkRunning, parkAgain) {
				return
			}
		case parkMoving:
			if p.state.CompareAndSwap(parkMoving, parkMovingWoken) {
				return
			}
		default:
			return
		}
	}
}

// runParked drains src until it runs dry, then parks the direction, or
// ends it.
func (d *direction) runParked() {
	p := d.park
	for {
		dry, err := d.drain()
		for dry && p.pc.busy {
			var again bool
			dry, again, err = d.pump()
			if again {
				dry, err = d.drain()
			}
		}
		if !dry {
			p.state.Store(parkDone)
			p.stop()
			d.ended(err)
			d.finish()
			return
		}
		if r, ok := d.dst.(interface{ ReleaseWrite() }); ok {
			r.ReleaseWrite() // a TLS connection drops its cipher state while idle (tlsrecord)
		}
		if aerr := p.arm(d.wakeParked); aerr != nil {
			p.state.Store(parkDone)
			p.stop()
			d.end, d.err = d.srcErr, aerr
			d.ended(aerr)
			d.finish()
			return
		}
		if p.state.CompareAndSwap(parkRunning, parkIdle) {
			p.settle.parked()
			return
		}
		p.state.Store(parkRunning) // woken meanwhile
	}
}

// drain reads src and passes what it reads until src has nothing more
// (dry) or the direction ends (err, nil at EOF). It holds a pooled buffer
// only while it runs.
func (d *direction) drain() (dry bool, err error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		n, rerr := d.src.Read(*buf)
		if n > 0 {
			if werr := d.pass((*buf)[:n]); werr != nil {
				return false, werr
			}
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			return false, nil
		case errors.Is(rerr, errWouldBlock):
			return true, nil
		case d.readFailed(&rerr):
		default:
			return false, rerr
		}
	}
}

// pump drains a busy direction inside one wait of Go's poller, a window of
// lingerFor at a time, until a window passes with nothing read (dry: park),
// the direction ends (not dry, with its error), or a deadline or close
// (again: drain once more, not busy, which meets it). Within the wait a
// drain that read the socket short ends without reading it again: bytes
// that come later wake the wait (edge-triggered), so a burst costs no read
// that finds nothing, as the loops' reads do not.
func (d *direction) pump() (dry, again bool, err error) {
	c := d.park.pc
	var ended, moving bool
	// One drain of the socket fd a wake of the wait: false waits for the
	// next bytes, true ends the wait with the direction, or parks it for
	// the pair's move (settling.moveDue). Made per busy time, not kept
	// while idle.
	step := func(fd uintptr) bool {
		c.pfd, c.drained = int32(fd), false
		dry, derr := d.drain()
		if dry {
			moving = d.park.settle.moveDue()
			return moving
		}
		ended, err = true, derr
		return true
	}
	for {
		c.pmu.Lock()
		if !c.parked.Load() { // unparked (a goodbye's linger): read as a TCPConn
			c.pmu.Unlock()
			c.idle()
			return false, true, nil
		}
		c.pumping.Store(true)
		werr := c.rc.Read(step)
		c.pumping.Store(false)
		c.pmu.Unlock()
		if ended {
			c.idle()
			return false, false, err
		}
		now := time.Now().UnixNano()
		if moving { // parks as after a window with nothing read
			c.idle()
			c.lastPark = now
			return true, false, nil
		}
		switch {
		case werr == nil || !errors.Is(werr, os.ErrDeadlineExceeded):
			c.idle() // closed: the drain's read fails
			return false, true, nil
		case c.deadline.Load() != 0 && now >= c.deadline.Load():
			c.idle() // the pipe's own deadline: the drain's read meets it
			return false, true, nil
		case c.read: // bytes came in this window: another one
			c.read = false
			c.lingerEnd.Store(now + int64(lingerFor))
			c.socketDeadline()
		default:
			c.idle()
			c.lastPark = now
			return true, false, nil
		}
	}
}
