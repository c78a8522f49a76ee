// Package pipe moves bytes both ways between a client and its broker once the
// proxy has forwarded the CONNECT, until either side ends.
//
// Most MQTT connections sit idle for minutes between small messages, so an idle
// pipe must cost almost nothing: for two *net.TCPConn it parks one goroutine per
// direction on the poller without holding a buffer, and takes a pooled buffer
// only for the moment bytes are there. Other net.Conn kinds (TLS, WebSocket)
// fall back to a pooled-buffer copy.
//
//	res := pipe.Run(client, broker, pipe.Options{Idle: 90 * time.Second})
//	log.Printf("up %d down %d, ended: %s", res.Up, res.Down, res.End)
//
// Run closes neither connection: the caller owns them. To end a pipe from
// outside (shutdown, an operator's request), close either connection; Run
// then returns with the side whose read failed. To end it between two MQTT
// packets, telling a 5.0 client why, set Options.Control and call
// [Control.CloseAtBoundary]:
//
//	ctl := new(pipe.Control)
//	go pipe.Run(client, broker, pipe.Options{Level: 5, Control: ctl})
//	ctl.CloseAtBoundary("shutdown", mqtt.AppendDisconnect(nil, 5, mqtt.ServerShuttingDown, ""))
//
// Both directions follow the packets' Fixed Headers as bytes pass
// (mqtt.Framer), so a pipe always knows whether the client has been sent
// whole packets only. A close at a boundary stops reading the client, lets
// the broker's packet in flight finish (for at most CloseGrace), writes the
// final bytes, sends FIN and reads the client's last bytes for at most
// Linger, so that the kernel does not answer them with a reset that could
// destroy the final bytes in flight.
//
// Park runs the same pipe for connections built on a ParkConn (a TLS
// client) with no goroutine while idle: a readiness source
// (epoll.Notifier) says when a socket has bytes, and a goroutine lives
// only while they flow:
//
//	pc := pipe.NewParkConn(tcp)
//	client := tls.Server(pc, cfg)
//	...
//	err := pipe.Park(client, pc, broker, nil, notifier, opts, done)
//
// Package pipe/epoll follows the same Options, End values and Result for
// plain TCP pairs without any goroutine per pair, in a few event loops.
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

	"github.com/mqgate/mqgate/mqtt"
)

// End says why a pipe ended.
type End string

const (
	ClientClosed End = "client_closed" // the client closed its side (FIN) and the broker side then ended
	BrokerClosed End = "broker_closed" // the broker closed its side and the client side then ended
	IdleTimeout  End = "idle_timeout"  // no byte passed either way for Options.Idle
	ClientError  End = "client_error"  // reading from or writing to the client failed
	BrokerError  End = "broker_error"  // reading from or writing to the broker failed
	// PacketTooLarge: the client sent a packet larger than Options.MaxPacketSize.
	PacketTooLarge End = "packet_too_large"
)

// CloseGrace bounds how long a close at a packet boundary waits for the
// broker's packet in flight to finish; then the pipe is cut where it is.
const CloseGrace = 5 * time.Second

// Linger bounds how long, after the final bytes and the FIN, the client's
// last bytes are read and dropped before the connection is closed.
const Linger = 2 * time.Second

// Goodbye is what a close the pipe decides sends a client of the given
// protocol level: a 5.0 DISCONNECT with code, nothing before 5.0 (a 3.x
// server has no DISCONNECT to send).
func Goodbye(level byte, code mqtt.ReasonCode) []byte {
	if level != mqtt.Level5 {
		return nil
	}
	return mqtt.AppendDisconnect(nil, level, code, "")
}

// Options bound a pipe in time.
type Options struct {
	// Idle closes the pipe when no byte has passed in either direction for
	// this long. Zero means no idle limit.
	Idle time.Duration
	// WriteTimeout bounds one blocked write to either side (a peer that
	// stopped reading). Zero means no bound.
	WriteTimeout time.Duration
	// HalfCloseTimeout bounds how long the other direction may go on after
	// one side has sent FIN. Zero means no bound beyond Idle.
	HalfCloseTimeout time.Duration
	// Meter, when set, counts the bytes while the pipe runs, for those who
	// watch live connections; Result has the same totals at the end.
	Meter *Meter
	// Level is the client's MQTT protocol level. At 5 the closes the pipe
	// decides send a DISCONNECT first: 0x8D Keep Alive timeout at the idle
	// limit, 0x95 Packet too large past MaxPacketSize.
	Level byte
	// MaxPacketSize ends the pipe (PacketTooLarge) at the first packet
	// from the client larger than this many bytes, none of which is
	// passed on. Zero means no limit.
	MaxPacketSize int
	// Control, when set, lets the caller end the pipe at a packet
	// boundary (Run and Start); an epoll.Conn has the same method.
	Control *Control
}

// Control ends a running pipe from outside at a packet boundary. The zero
// value is ready to use; one Control serves one pipe.
type Control struct {
	mu  sync.Mutex
	sh  *shared // the pipe, while Run runs
	req *closeReq
}

// closeReq is a close at the next packet boundary towards the client.
type closeReq struct {
	end   End
	final []byte // written to the client at the boundary, may be empty
}

// CloseAtBoundary ends the pipe at the next packet boundary of the stream
// to the client: the client is sent final (a DISCONNECT) after whole
// packets only, and Result.End is end. It may be called before Run starts,
// from any goroutine, more than once (the first call counts).
func (c *Control) CloseAtBoundary(end End, final []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.req != nil {
		return
	}
	c.req = &closeReq{end: end, final: final}
	if c.sh != nil {
		c.sh.requestClose(c.req)
	}
}

func (c *Control) attach(sh *shared) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sh = sh
	if sh != nil && c.req != nil {
		sh.requestClose(c.req)
	}
}

// Meter counts a running pipe's bytes. It may be read at any time.
type Meter struct {
	Up   atomic.Int64 // client to broker
	Down atomic.Int64 // broker to client
	// Totals are meters shared with other pipes (a route's, a node's):
	// every byte counted here is added to each that is set, so that their
	// readers read counters instead of summing live pipes. Two, in place,
	// so that a connection's meter costs no allocation.
	Totals [2]*Meter
}

// Add counts n bytes client to broker (up) or broker to client, here and
// in the totals.
func (m *Meter) Add(up bool, n int64) {
	if up {
		m.Up.Add(n)
	} else {
		m.Down.Add(n)
	}
	for _, t := range m.Totals {
		if t != nil {
			t.Add(up, n)
		}
	}
}

// Result reports what a pipe carried and why it ended.
type Result struct {
	Up   int64 // bytes from client to broker
	Down int64 // bytes from broker to client
	End  End
	Err  error // the error behind ClientError or BrokerError
}

// bufSize is one read's worth: large enough for a typical MQTT burst, small
// enough that a burst across many connections does not pin much memory.
const bufSize = 16 << 10

// smallBufSize is what a buffered-path direction waits in: most MQTT
// packets of an idle-heavy fleet (PINGREQ, small PUBLISH) fit.
const smallBufSize = 512

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// shared is what the two directions of one pipe both see.
type shared struct {
	opts       Options
	lastActive atomic.Int64 // unix nanoseconds of the last byte either way
	aborted    atomic.Bool  // set before abort's deadlines fire
	halfClosed atomic.Bool  // one side has sent FIN; the idle limit no longer re-arms
	first      atomic.Pointer[direction]

	client, broker net.Conn
	clientPC       *ParkConn                // the client's socket, when Park runs the pipe
	closing        atomic.Pointer[closeReq] // a close at a boundary was asked for
	grace          *time.Timer              // cuts the pipe CloseGrace after it; under graceMu
	graceMu        sync.Mutex
}

// requestClose starts a close at a packet boundary: both reads are woken
// (a past deadline), the client direction stops, and the broker direction
// finishes its packet and says goodbye, or CloseGrace cuts it.
func (sh *shared) requestClose(req *closeReq) {
	if !sh.closing.CompareAndSwap(nil, req) {
		return
	}
	sh.graceMu.Lock()
	sh.grace = time.AfterFunc(CloseGrace, sh.abort)
	sh.graceMu.Unlock()
	past := time.Unix(0, 1)
	_ = sh.client.SetReadDeadline(past)
	_ = sh.broker.SetReadDeadline(past)
}

// abort ends both directions at once by making every pending read and write
// on both connections fail now.
func (sh *shared) abort() {
	sh.aborted.Store(true)
	past := time.Unix(0, 1)
	_ = sh.client.SetDeadline(past)
	_ = sh.broker.SetDeadline(past)
}

// direction is one half of the pipe: it reads src and writes dst.
type direction struct {
	src, dst net.Conn
	srcEnd   End // what EOF on src means
	srcErr   End // what a failing read of src means
	dstErr   End // what a failing write to dst means
	bytes    int64
	meter    *Meter // nil without Options.Meter
	isUp     bool   // client to broker; the other direction says goodbye
	// bye: client to broker, the last packet begun is a DISCONNECT
	// (mqtt.Framer.FeedLast), so the client's FIN at a boundary, when it is
	// whole, ends the pipe.
	bye    bool
	frame  mqtt.Framer // the packets of src
	max    int         // Options.MaxPacketSize for packets from the client
	end    End
	err    error
	wdlSet int64    // unix nanoseconds when write last moved dst's write deadline
	park   *parking // set by Park
	finish func()   // Park's: the direction has ended
	*shared
}

// Why a direction stopped, beyond the errors of its connections.
var (
	errStopped = errors.New("pipe: client direction stopped for a close at a boundary")
	errGoodbye = errors.New("pipe: closed at a packet boundary")
)

// Run copies client→broker and broker→client until both directions have
// ended, or one of them fails or idles out, which aborts the other. The
// direction that ends first says why the pipe ended.
func Run(client, broker net.Conn, opts Options) Result {
	up, down := directions(client, broker, opts)
	done := make(chan struct{})
	go func() { down.run(); close(done) }()
	up.run()
	<-done
	return result(up, down)
}

// Start is Run without holding the caller's goroutine: each direction
// runs on a goroutine of its own, and done gets the Result once both have
// ended. The caller's goroutine, whose stack grew through the stages before
// the pipe (handshakes, the CONNECT, the dial), can then end, so an idle
// connection keeps only two shallow goroutines.
func Start(client, broker net.Conn, opts Options, done func(Result)) {
	up, down := directions(client, broker, opts)
	var left atomic.Int32
	left.Store(2)
	finish := func() {
		if left.Add(-1) == 0 {
			done(result(up, down))
		}
	}
	go func() { down.run(); finish() }()
	go func() { up.run(); finish() }()
}

func directions(client, broker net.Conn, opts Options) (up, down *direction) {
	up, down = newDirections(client, broker, opts)
	startDirections(up, down, opts)
	return up, down
}

func newDirections(client, broker net.Conn, opts Options) (up, down *direction) {
	sh := &shared{opts: opts, client: client, broker: broker}
	sh.lastActive.Store(time.Now().UnixNano())
	up = &direction{src: client, dst: broker, srcEnd: ClientClosed, srcErr: ClientError, dstErr: BrokerError, max: opts.MaxPacketSize, shared: sh}
	down = &direction{src: broker, dst: client, srcEnd: BrokerClosed, srcErr: BrokerError, dstErr: ClientError, shared: sh}
	up.meter, down.meter, up.isUp = opts.Meter, opts.Meter, true
	return up, down
}

// startDirections sets the first idle deadlines, before either direction
// runs, so that they cannot undo the past deadline of a close asked for,
// and gives the Control the pipe.
func startDirections(up, down *direction, opts Options) {
	if opts.Idle > 0 {
		t := time.Now().Add(opts.Idle)
		_ = up.src.SetReadDeadline(t)
		_ = down.src.SetReadDeadline(t)
	}
	if opts.Control != nil {
		opts.Control.attach(up.shared)
	}
}

// result is the pipe's Result once both directions have ended: a close at
// a boundary says why it ended, else the direction that ended first.
func result(up, down *direction) Result {
	sh := up.shared
	sh.graceMu.Lock()
	if sh.grace != nil {
		sh.grace.Stop()
	}
	sh.graceMu.Unlock()
	if sh.opts.Control != nil {
		sh.opts.Control.attach(nil)
	}
	res := Result{Up: up.bytes, Down: down.bytes}
	if req := sh.closing.Load(); req != nil {
		res.End = req.end
	} else {
		first := sh.first.Load()
		res.End, res.Err = first.end, first.err
	}
	return res
}

// abort ends both directions at once by making every pending read and write
// on both connections fail now.
func (d *direction) abort() {
	d.aborted.Store(true)
	past := time.Unix(0, 1)
	_ = d.src.SetDeadline(past)
	_ = d.dst.SetDeadline(past)
}

func (d *direction) run() {
	var err error
	if tc, ok := d.src.(*net.TCPConn); ok {
		err = d.copyRaw(tc)
	} else {
		err = d.copyBuffered()
	}
	d.ended(err)
}

// ended passes on how the direction's copy ended: a failure aborts the
// other direction, EOF is passed on as a half-close.
func (d *direction) ended(err error) {
	d.first.CompareAndSwap(nil, d)
	if err == errStopped {
		return // the other direction ends the pipe
	}
	if err != nil {
		d.abort()
		return
	}
	// EOF: pass the half-close on, and let the other direction finish.
	d.end = d.srcEnd
	if cw, ok := d.dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	d.halfClosed.Store(true)
	switch {
	case d.aborted.Load():
	case d.bye && d.frame.AtBoundary():
		// The client sent DISCONNECT and closed [MQTT-3.14.4-1]: what the
		// broker still sends has no reader, so its direction ends now, as
		// at the end of HalfCloseTimeout, not at the broker's FIN.
		_ = d.dst.SetReadDeadline(time.Unix(0, 1))
	case d.opts.HalfCloseTimeout > 0:
		_ = d.dst.SetReadDeadline(time.Now().Add(d.opts.HalfCloseTimeout))
	}
}

// readFailed classifies a read error on src, handling the idle deadline: a
// deadline that fired while the other direction was busy is re-armed.
// It reports whether the copy should go on.
// A close at a boundary (requested, or the idle limit's) is handled here
// too, and then err is replaced by errStopped or errGoodbye.
func (d *direction) readFailed(err *error) (retry bool) {
	if errors.Is(*err, os.ErrDeadlineExceeded) && !d.aborted.Load() {
		if req := d.closing.Load(); req != nil {
			return d.closeRead(req, err)
		}
		if !d.halfClosed.Load() && d.opts.Idle > 0 {
			last := time.Unix(0, d.lastActive.Load())
			if deadline := last.Add(d.opts.Idle); time.Now().Before(deadline) {
				_ = d.src.SetReadDeadline(deadline)
				if d.closing.Load() != nil {
					_ = d.src.SetReadDeadline(time.Unix(0, 1)) // asked for meanwhile
				}
				return true
			}
			d.requestClose(&closeReq{end: IdleTimeout, final: Goodbye(d.opts.Level, mqtt.KeepAliveTimeout)})
			return d.closeRead(d.closing.Load(), err)
		}
	}
	d.end, d.err = d.srcErr, *err
	return false
}

// closeRead is a direction's part in a close at a boundary, when its read
// was woken: the client direction stops; the broker direction says goodbye
// at a boundary, or reads on to the end of its packet.
func (d *direction) closeRead(req *closeReq, err *error) (retry bool) {
	if !!d.isUp {
		*err = errStopped
		return false
	}
	if d.frame.AtBoundary() {
		d.goodbye(req)
		*err = errGoodbye
		return false
	}
	if d.frame.Lost() {
		*err = errGoodbye // no boundary to wait for
		return false
	}
	_ = d.src.SetReadDeadline(time.Time{}) // CloseGrace bounds the wait
	return true
}

// goodbye writes the final bytes to the client after whole packets, sends
// FIN and drops what the client still sends, for at most Linger.
func (d *direction) goodbye(req *closeReq) {
	c := d.dst
	if d.clientPC != nil {
		d.clientPC.unpark() // the linger below waits for the client's last bytes
	}
	_ = c.SetWriteDeadline(time.Now().Add(Linger))
	if len(req.final) > 0 {
		if _, err := c.Write(req.final); err != nil {
			return
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // TLS sends close_notify
	}
	_ = c.SetReadDeadline(time.Now().Add(Linger))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// pass writes b, just read from src, following its packets. It returns
// errStopped or errGoodbye when the pipe is to end at a boundary.
func (d *direction) pass(b []byte) error {
	req := d.closing.Load()
	switch {
	case req != nil && !!d.isUp:
		return errStopped // nothing more from the client once a close began
	case req != nil:
		n, done := d.frame.Finish(b)
		if err := d.write(b[:n]); err != nil {
			return err
		}
		if done {
			d.goodbye(req)
			return errGoodbye
		}
		if d.frame.Lost() {
			return errGoodbye
		}
		return nil
	}
	n, size, last := d.frame.FeedLast(b, d.max)
	if d.isUp && last >= 0 {
		d.bye = mqtt.IsDisconnect(b[last])
	}
	if err := d.write(b[:n]); err != nil {
		return err
	}
	if size > 0 {
		d.requestClose(&closeReq{end: PacketTooLarge, final: Goodbye(d.opts.Level, mqtt.PacketTooLarge)})
		return errStopped
	}
	return nil
}

func (d *direction) write(b []byte) error {
	if wt := d.opts.WriteTimeout; wt > 0 {
		// The deadline moves once it has aged by an eighth of the timeout,
		// not on every write (a burst's writes set it once; it was ~3% of
		// the CPU of small messages): a write still fails after at least
		// 7/8 of WriteTimeout without progress, and at most WriteTimeout.
		// Only this direction writes to dst while the pipe runs.
		if now := time.Now(); now.UnixNano()-d.wdlSet >= int64(wt/8) {
			_ = d.dst.SetWriteDeadline(now.Add(wt))
			d.wdlSet = now.UnixNano()
		}
	}
	n, err := d.dst.Write(b)
	d.bytes += int64(n)
	if d.meter != nil {
		d.meter.Add(d.isUp, int64(n))
	}
	if err != nil {
		d.end, d.err = d.dstErr, err
		return err
	}
	if d.opts.Idle > 0 {
		d.lastActive.Store(time.Now().UnixNano())
	}
	return nil
}

// copyRaw waits for src to become readable without holding a buffer, so an
// idle connection pins no user-space memory beyond two parked goroutines.
// It returns nil at EOF.
func (d *direction) copyRaw(src *net.TCPConn) error {
	rc, err := src.SyscallConn()
	if err != nil {
		d.end, d.err = d.srcErr, err
		return err
	}
	for {
		var (
			buf   *[]byte
			n     int
			rdErr error
		)
		err := rc.Read(func(fd uintptr) bool {
			b := bufPool.Get().(*[]byte)
			for {
				n, rdErr = syscall.Read(int(fd), *b)
				if rdErr != syscall.EINTR {
					break
				}
			}
			if rdErr == syscall.EAGAIN {
				bufPool.Put(b)
				return false
			}
			buf = b
			return true
		})
		if err == nil && rdErr != nil {
			err = os.NewSyscallError("read", rdErr)
		}
		if err != nil {
			if buf != nil {
				bufPool.Put(buf)
			}
			if d.readFailed(&err) {
				continue
			}
			return err
		}
		if n <= 0 {
			bufPool.Put(buf)
			return nil
		}
		werr := d.pass((*buf)[:n])
		bufPool.Put(buf)
		if werr != nil {
			return werr
		}
	}
}

// copyBuffered is the path for connections that are not plain TCP (TLS,
// WebSocket), whose Read must be given a buffer to wait in. It waits in a
// small buffer of its own and takes a pooled one only while reads keep
// filling the small one, so an idle connection holds smallBufSize bytes per
// direction, not bufSize.
func (d *direction) copyBuffered() error {
	small := make([]byte, smallBufSize)
	var big *[]byte
	defer func() {
		if big != nil {
			bufPool.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := d.src.Read(buf)
		if n > 0 {
			if werr := d.pass(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case big == nil && n == len(small):
			big = bufPool.Get().(*[]byte) // a burst: read it in large pieces
		case big != nil && n < len(*big):
			bufPool.Put(big) // the burst is over: wait in the small buffer again
			big = nil
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if d.readFailed(&err) {
				continue
			}
			return err
		}
	}
}
