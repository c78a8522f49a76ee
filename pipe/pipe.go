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
// then returns with the side whose read failed.
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
)

// End says why a pipe ended.
type End string

const (
	ClientClosed End = "client_closed" // the client closed its side (FIN) and the broker side then ended
	BrokerClosed End = "broker_closed" // the broker closed its side and the client side then ended
	IdleTimeout  End = "idle_timeout"  // no byte passed either way for Options.Idle
	ClientError  End = "client_error"  // reading from or writing to the client failed
	BrokerError  End = "broker_error"  // reading from or writing to the broker failed
)

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
}

// direction is one half of the pipe: it reads src and writes dst.
type direction struct {
	src, dst net.Conn
	srcEnd   End // what EOF on src means
	srcErr   End // what a failing read of src means
	dstErr   End // what a failing write to dst means
	bytes    int64
	meter    *Meter // nil without Options.Meter
	isUp     bool   // client to broker
	end      End
	err      error
	*shared
}

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
	sh := &shared{opts: opts}
	sh.lastActive.Store(time.Now().UnixNano())
	up = &direction{src: client, dst: broker, srcEnd: ClientClosed, srcErr: ClientError, dstErr: BrokerError, shared: sh}
	down = &direction{src: broker, dst: client, srcEnd: BrokerClosed, srcErr: BrokerError, dstErr: ClientError, shared: sh}
	up.meter, down.meter, up.isUp = opts.Meter, opts.Meter, true
	return up, down
}

func result(up, down *direction) Result {
	first := up.first.Load()
	return Result{Up: up.bytes, Down: down.bytes, End: first.end, Err: first.err}
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
	if d.opts.Idle > 0 {
		_ = d.src.SetReadDeadline(time.Now().Add(d.opts.Idle))
	}
	var err error
	if tc, ok := d.src.(*net.TCPConn); ok {
		err = d.copyRaw(tc)
	} else {
		err = d.copyBuffered()
	}
	d.first.CompareAndSwap(nil, d)
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
	if d.opts.HalfCloseTimeout > 0 && !d.aborted.Load() {
		_ = d.dst.SetReadDeadline(time.Now().Add(d.opts.HalfCloseTimeout))
	}
}

// readFailed classifies a read error on src, handling the idle deadline: a
// deadline that fired while the other direction was busy is re-armed.
// It reports whether the copy should go on.
func (d *direction) readFailed(err error) (retry bool) {
	if errors.Is(err, os.ErrDeadlineExceeded) && !d.aborted.Load() && !d.halfClosed.Load() && d.opts.Idle > 0 {
		last := time.Unix(0, d.lastActive.Load())
		if deadline := last.Add(d.opts.Idle); time.Now().Before(deadline) {
			_ = d.src.SetReadDeadline(deadline)
			return true
		}
		d.end, d.err = IdleTimeout, err
		return false
	}
	d.end, d.err = d.srcErr, err
	return false
}

func (d *direction) write(b []byte) error {
	if d.opts.WriteTimeout > 0 {
		_ = d.dst.SetWriteDeadline(time.Now().Add(d.opts.WriteTimeout))
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
			if d.readFailed(err) {
				continue
			}
			return err
		}
		if n <= 0 {
			bufPool.Put(buf)
			return nil
		}
		werr := d.write((*buf)[:n])
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
			if werr := d.write(buf[:n]); werr != nil {
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
			if d.readFailed(err) {
				continue
			}
			return err
		}
	}
}
