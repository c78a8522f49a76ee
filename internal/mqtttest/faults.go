package mqtttest

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/mqgate/mqgate/mqtt"
)

// StartMochiAt starts a mochi-mqtt broker on addr, such as the address of
// a Mochi that was closed: a mochi Server cannot be restarted, so a test
// that brings a broker back starts a new one where the old one was.
func StartMochiAt(t testing.TB, addr string) *Mochi {
	t.Helper()
	srv, seen := newMochi(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("mochi listener on %s: %v", addr, err)
	}
	conns := &trackingListener{Listener: ln}
	if err := srv.AddListener(listeners.NewNet("t", conns)); err != nil {
		t.Fatalf("mochi listener on %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("mochi serve: %v", err)
	}
	m := &Mochi{Server: srv, addr: ln.Addr().String(), seen: seen, conns: conns}
	t.Cleanup(m.Close)
	return m
}

// newMochi is a mochi-mqtt server, without listeners yet, that allows
// every client and records who connected.
func newMochi(t testing.TB) (*mochi.Server, *seenHook) {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	seen := &seenHook{}
	for _, h := range []mochi.Hook{new(auth.AllowHook), seen} {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatalf("mochi hook: %v", err)
		}
	}
	return srv, seen
}

// StartMochiWS starts a mochi-mqtt broker that takes MQTT over WebSocket
// only (ws://, or wss:// with tlsCfg), on any path, as EMQX's 8083 and 8084
// do: the stand-in for a broker that wants WebSocket, since Debian's
// Mosquitto will not open a websockets listener here. Its Addr is
// "127.0.0.1:port". mochi's listener binds an address of its own choosing
// (no listener can be handed to it), so the port is a FreePort.
func StartMochiWS(t testing.TB, tlsCfg *tls.Config) *Mochi {
	t.Helper()
	srv, seen := newMochi(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	ws := &wsTracker{Websocket: listeners.NewWebsocket(listeners.Config{ID: "t", Address: addr, TLSConfig: tlsCfg})}
	if err := srv.AddListener(ws); err != nil {
		t.Fatalf("mochi WebSocket listener on %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("mochi serve: %v", err)
	}
	m := &Mochi{Server: srv, addr: addr, seen: seen, ws: ws}
	t.Cleanup(m.Close)
	// Serve listens on a goroutine of mochi's: wait until the port takes
	// connections.
	WaitFor(t, "mochi's WebSocket listener on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return m
}

// stop closes the port, then drops every connection, waits until mochi's
// goroutine of each has let go of it, and only then closes the server.
// (mochi's own Close drops the clients while its port still accepts, so a
// client reconnecting in between is accepted and never answered; and a
// Close while client goroutines run is a data race inside mochi, on its
// WaitGroup of clients.)
func (m *Mochi) stop() {
	if l, ok := m.Server.Listeners.Get("t"); ok {
		l.Close(func(string) {}) // stops accepting; connections go below
	}
	m.conns.dropAll()
	m.ws.dropAll()
	m.Server.Close()
}

// wsTracker is mochi's WebSocket listener with the connections it hands
// to the server tracked, so that stop can drop them and wait until mochi's
// handler of each has returned before the server closes, as
// trackingListener does for TCP (mochi's http.Server hijacks them, so its
// Shutdown waits for none, and a handler still attaching a client while
// the server closes is the same data race inside mochi).
type wsTracker struct {
	*listeners.Websocket
	mu     sync.Mutex
	closed bool
	conns  []net.Conn
	active int
}

func (l *wsTracker) Serve(establish listeners.EstablishFn) {
	l.Websocket.Serve(func(id string, c net.Conn) error {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return c.Close()
		}
		l.conns = append(l.conns, c)
		l.active++
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			l.active--
			l.mu.Unlock()
		}()
		return establish(id, c)
	})
}

// dropAll closes every connection and waits (at most 5 s) until every
// handler has returned.
func (l *wsTracker) dropAll() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.closed = true
	conns := slices.Clone(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		n := l.active
		l.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond) // polling, bounded by deadline
	}
}

// trackingListener remembers the connections it accepted, so that a
// broker can be stopped in order.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*trackedConn
}

// trackedConn records that its owner closed it.
type trackedConn struct {
	net.Conn
	released atomic.Bool
}

func (c *trackedConn) Close() error {
	c.released.Store(true)
	return c.Conn.Close()
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.track(c), nil
}

func (l *trackingListener) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, tc)
	l.mu.Unlock()
	return tc
}

// dropAll closes every connection under its owner, then waits (at most
// 5 s) until each owner has closed it too: mochi's goroutine of a client
// closes its connection as it ends, and the atomic it sets here orders
// that goroutine's work before the server's Close.
func (l *trackingListener) dropAll() {
	if l == nil { // a WebSocket broker: wsTracker has its connections
		return
	}
	l.mu.Lock()
	conns := slices.Clone(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range conns {
		for !c.released.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling, bounded by deadline
		}
	}
}

// Silent is a loopback port that accepts connections and never answers: a
// hung broker, or a port that is open without a broker behind it. All its
// connections close when the test ends.
type Silent struct {
	addr     string
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	markers  int // Settle's own connections among conns
}

// SilentPort starts a Silent port.
func SilentPort(t testing.TB) *Silent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Silent{addr: ln.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

// Addr is the port's address.
func (s *Silent) Addr() string { return s.addr }

// Accepted is how many connections the accept loop has taken so far,
// Settle's own included; it lags behind the dials when that loop waits
// for the CPU. Use it to wait for more, Settle to count exactly.
func (s *Silent) Accepted() int64 { return s.accepted.Load() }

// Settle reports how many connections, Settle's own not counted, were
// dialled to the port before Settle was called: it dials one of its own
// and waits for the accept loop to take it, and the kernel hands over
// connections in the order their handshakes completed, so every earlier
// one has been taken by then. Two Settles with nothing dialled in between
// report the same, however late the accept loop runs.
func (s *Silent) Settle(t testing.TB) int {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mine := c.LocalAddr().String()
	n := -1
	WaitFor(t, "the silent port to take Settle's connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := len(s.conns) - 1; i >= 0; i-- {
			if s.conns[i].RemoteAddr().String() == mine {
				s.markers++
				n = i + 1 - s.markers
				return true
			}
		}
		return false
	})
	return n
}

// Relay forwards TCP connections to a broker until Freeze, which makes it a
// hung broker: bytes stop flowing both ways, connections stay open, and new
// connections are accepted and never answered. After Refuse, new
// connections are closed as soon as they are accepted (a broker that fails
// every new client) while the relayed ones go on.
type Relay struct {
	addr     string
	frozen   chan struct{} // closed by Freeze
	freeze   sync.Once
	refusing atomic.Bool
}

// StartRelay listens on a loopback port and relays every connection to
// target until the test ends.
func StartRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{addr: ln.Addr().String(), frozen: make(chan struct{})}
	frozen := func() bool {
		select {
		case <-r.frozen:
			return true
		default:
			return false
		}
	}
	// copy moves bytes from src to dst; once frozen it holds them until the
	// test ends.
	copy := func(dst, src net.Conn, done <-chan struct{}) {
		defer dst.Close()
		buf := make([]byte, 4096)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if frozen() {
					<-done
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	relay(t, ln, target, frozen, r.refusing.Load, copy, copy)
	return r
}

// relay accepts connections on ln until the test ends. It holds one open
// unanswered while hold reports true, closes it at once while refuse
// does; otherwise it dials target and runs up(broker, client) and
// down(client, broker) on goroutines of their own. When the test ends,
// done is closed, every connection is closed, and the relay waits for its
// goroutines.
func relay(t testing.TB, ln net.Listener, target string, hold, refuse func() bool, up, down func(dst, src net.Conn, done <-chan struct{})) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-done: // the test is ending
			c.Close()
		default:
			conns = append(conns, c)
		}
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if refuse() {
				c.Close()
				continue
			}
			track(c)
			if hold() {
				continue // accepted, never answered
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(b)
			wg.Go(func() { up(b, c, done) })
			wg.Go(func() { down(c, b, done) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		close(done)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Addr is where clients connect to the relayed broker.
func (r *Relay) Addr() string { return r.addr }

// Freeze makes the relay hang.
func (r *Relay) Freeze() { r.freeze.Do(func() { close(r.frozen) }) }

// Refuse makes the relay close every new connection at once; those it
// relays already go on.
func (r *Relay) Refuse() { r.refusing.Store(true) }

// SplitRelay relays TCP connections to a broker and passes what the broker
// sends on in pieces of at most Chunk bytes, one write each, so that the
// proxy reads a large packet over many reads. HoldInPacket stops the
// stream from the broker inside a packet, for a test that must act while
// the proxy is in the middle of one.
type SplitRelay struct {
	addr   string
	mu     sync.Mutex
	armed  bool
	held   chan int64 // bytes the held connection had sent on when it stopped
	resume chan struct{}
}

// SplitRelayChunk is the most a SplitRelay writes at once.
const SplitRelayChunk = 4096

// StartSplitRelay listens on a loopback port and relays every connection
// to target until the test ends.
func StartSplitRelay(t testing.TB, target string) *SplitRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &SplitRelay{addr: ln.Addr().String(), held: make(chan int64, 1), resume: make(chan struct{}, 1)}
	up := func(dst, src net.Conn, _ <-chan struct{}) { defer dst.Close(); _, _ = io.Copy(dst, src) }
	down := func(dst, src net.Conn, done <-chan struct{}) { defer dst.Close(); r.down(dst, src, done) }
	never := func() bool { return false }
	relay(t, ln, target, never, never, up, down)
	return r
}

// Addr is where the proxy connects to the relayed broker.
func (r *SplitRelay) Addr() string { return r.addr }

// HoldInPacket makes the next piece from the broker that ends inside a
// packet, on any connection, the last until Resume. Held then says how
// many bytes that connection had passed on by then.
func (r *SplitRelay) HoldInPacket() {
	r.mu.Lock()
	r.armed = true
	r.mu.Unlock()
}

// Held waits (at most 15 s) for the hold HoldInPacket asked for and
// returns the bytes the held connection had passed on.
func (r *SplitRelay) Held(t testing.TB) int64 {
	t.Helper()
	select {
	case n := <-r.held:
		return n
	case <-time.After(15 * time.Second):
		t.Fatal("the relay did not hold a stream inside a packet within 15 s")
		return 0
	}
}

// Resume lets the held stream go on.
func (r *SplitRelay) Resume() { r.resume <- struct{}{} }

// down copies the broker's bytes to the client side in pieces, following
// the packets to know when a piece ends inside one.
func (r *SplitRelay) down(dst, src net.Conn, done <-chan struct{}) {
	var f mqtt.Framer
	var sent int64
	buf := make([]byte, SplitRelayChunk)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			f.Feed(buf[:n], 0)
			r.mu.Lock()
			hold := r.armed && !f.AtBoundary()
			if hold {
				r.armed = false
			}
			r.mu.Unlock()
			if hold {
				r.held <- sent
				select {
				case <-r.resume:
				case <-done:
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// RefusingPort is an AnsweringPort that refuses every CONNECT with code,
// in the CONNACK form of the CONNECT's level (a 5.0 code becomes its 3.x
// counterpart), and answers nothing to bytes that are no CONNECT.
func RefusingPort(t testing.TB, code mqtt.ReasonCode) (addr string, connects *atomic.Int64) {
	t.Helper()
	return AnsweringPort(t, func(connect []byte) []byte {
		c, err := mqtt.ParseConnect(connect)
		if err != nil {
			return nil
		}
		return mqtt.AppendConnack(nil, c.Level, code, "")
	})
}

// AnsweringPort is a faulty broker: it listens on a loopback port, reads
// each connection's first packet (the CONNECT), writes answer(connect)
// (a refusing CONNACK, say; nothing when nil) and closes. It counts the
// CONNECTs it read; the port closes when the test ends.
func AnsweringPort(t testing.TB, answer func(connect []byte) []byte) (addr string, connects *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	connects = new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				var buf []byte
				one := make([]byte, 512)
				for {
					if n, err := mqtt.FrameLen(buf); err == nil && len(buf) >= n {
						connects.Add(1)
						if b := answer(buf[:n]); b != nil {
							_, _ = c.Write(b)
						}
						return
					} else if err != nil && err != mqtt.ErrIncomplete {
						return
					}
					m, err := c.Read(one)
					buf = append(buf, one[:m]...)
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), connects
}
