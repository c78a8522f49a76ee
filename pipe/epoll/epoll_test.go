package epoll

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/pipe"
)

// harness is a group under test with the loopback listeners its pairs are
// made from.
type harness struct {
	t     testing.TB
	g     *Group
	front *net.TCPListener // the proxy's listener: clients connect here
	back  *net.TCPListener // the broker's listener: the proxy dials here
	// back2, when set, is a second broker: pairs alternate between the
	// two, so that a group of two loops serves pairs in both.
	back2    *net.TCPListener
	n        int
	closeOne sync.Once
}

func newHarness(t testing.TB, loops int) *harness {
	t.Helper()
	g, err := NewGroup(loops)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, g: g, front: listen(t), back: listen(t)}
	if loops > 1 {
		h.back2 = listen(t)
	}
	t.Cleanup(func() { h.close() })
	return h
}

func (h *harness) close() { h.closeOne.Do(func() { h.g.Close("test_end") }) }

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// testPair is a pair in a loop as the test sees it: the client's and the
// broker's own ends of the two connections, and the pair's result.
type testPair struct {
	client, broker *net.TCPConn
	conn           *Conn
	result         chan pipe.Result
}

// pair connects a client through a new pair to a broker.
func (h *harness) pair(opts pipe.Options) *testPair {
	h.t.Helper()
	tp, proxyClient, proxyBroker := h.sockets()
	res := make(chan pipe.Result, 1)
	c, err := h.g.Add(proxyClient, proxyBroker, opts, func(r pipe.Result) { res <- r })
	if err != nil {
		h.t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	return tp
}

// sockets makes the four sockets of a pair: the test's two ends and the
// proxy's two ends.
func (h *harness) sockets() (tp *testPair, proxyClient, proxyBroker *net.TCPConn) {
	h.t.Helper()
	t := h.t
	dial := func(ln *net.TCPListener) (mine, theirs *net.TCPConn) {
		c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); a.Close() })
		return c, a
	}
	clientEnd, proxyClient := dial(h.front)
	back := h.back
	if h.n++; h.back2 != nil && h.n%2 == 0 {
		back = h.back2
	}
	proxyBroker, brokerEnd := dial(back)
	return &testPair{client: clientEnd, broker: brokerEnd}, proxyClient, proxyBroker
}

// wait returns the pair's result, failing the test after 10 s.
func (tp *testPair) wait(t *testing.T) pipe.Result {
	t.Helper()
	select {
	case r := <-tp.result:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("pair did not end")
		return pipe.Result{}
	}
}

// ended reports whether the pair has ended, without waiting.
func (tp *testPair) ended() bool { return len(tp.result) > 0 }

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || (err != io.EOF && !isReset(err)) {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
}

func isReset(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se)
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestBytesBothWays(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	var total pipe.Meter
	meter := &pipe.Meter{Totals: [2]*pipe.Meter{&total}}
	tp := h.pair(pipe.Options{Idle: time.Minute, Meter: meter})
	up := []byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
	down := []byte{0x20, 0x02, 0x00, 0x00}
	for range 10 {
		write(t, tp.client, up)
		if got := readN(t, tp.broker, len(up)); !bytes.Equal(got, up) {
			t.Fatalf("broker got %x, want %x", got, up)
		}
		write(t, tp.broker, down)
		if got := readN(t, tp.client, len(down)); !bytes.Equal(got, down) {
			t.Fatalf("client got %x, want %x", got, down)
		}
	}
	tp.client.Close()
	expectEOF(t, tp.broker)
	tp.broker.Close()
	r := tp.wait(t)
	if r.Up != int64(10*len(up)) || r.Down != int64(10*len(down)) || r.End != pipe.ClientClosed || r.Err != nil {
		t.Errorf("result = %+v; want up %d down %d end %s", r, 10*len(up), 10*len(down), pipe.ClientClosed)
	}
	for _, m := range []*pipe.Meter{meter, &total} {
		if m.Up.Load() != r.Up || m.Down.Load() != r.Down {
			t.Errorf("meter %d up %d down, want the result's %d and %d", m.Up.Load(), m.Down.Load(), r.Up, r.Down)
		}
	}
}

// TestLargeReads sends 16 MB through a pair with large socket buffers, so
// that a wake-up finds more than maxReads buffers to read: the rest is read
// after the batch (the registration is edge-triggered; no new edge tells
// of bytes already there), and everything arrives intact and in order.
func TestLargeReads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, proxyClient, proxyBroker := h.sockets()
	for _, c := range []*net.TCPConn{tp.client, tp.broker, proxyClient, proxyBroker} {
		c.SetReadBuffer(4 << 20)
		c.SetWriteBuffer(4 << 20)
	}
	const size = 16 << 20
	up := make([]byte, size)
	rand.Read(up)
	done := make(chan error, 1)
	go func() {
		tp.client.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := tp.client.Write(up)
		done <- err
	}()
	res := make(chan pipe.Result, 1)
	if _, err := h.g.Add(proxyClient, proxyBroker, pipe.Options{Idle: time.Minute}, func(r pipe.Result) { res <- r }); err != nil {
		t.Fatal(err)
	}
	tp.result = res
	if b := readN(t, tp.broker, size); !bytes.Equal(b, up) {
		t.Error("broker received corrupted bytes")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	tp.client.Close()
	expectEOF(t, tp.broker)
	tp.broker.Close()
	if r := tp.wait(t); r.Up != size {
		t.Errorf("result %+v, want %d bytes up", r, size)
	}
}

// TestBurstBackpressure sends 4 MB each way at once to a broker and a client
// that read only once the loop has had to hold bytes back: everything
// arrives intact and in order.
func TestBurstBackpressure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	// Small socket buffers, so that 4 MB cannot hide in the kernel.
	tp, proxyClient, proxyBroker := h.sockets()
	for _, c := range []*net.TCPConn{tp.client, tp.broker, proxyClient, proxyBroker} {
		c.SetReadBuffer(16 << 10)
		c.SetWriteBuffer(16 << 10)
	}
	res := make(chan pipe.Result, 1)
	if _, err := h.g.Add(proxyClient, proxyBroker, pipe.Options{Idle: time.Minute, WriteTimeout: time.Minute}, func(r pipe.Result) { res <- r }); err != nil {
		t.Fatal(err)
	}
	tp.result = res
	const size = 4 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)

	var wg sync.WaitGroup
	writeAll := func(c *net.TCPConn, b []byte) {
		defer wg.Done()
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Errorf("burst write: %v", err)
		}
	}
	wg.Add(2)
	go writeAll(tp.client, up)
	go writeAll(tp.broker, down)
	// Nobody reads until the loop has a backlog.
	waitFor(t, "a blocked write", func() bool { return h.g.loops[0].backlogs.Load() > 0 })

	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, size)
		tp.client.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(tp.client, b); err != nil {
			t.Errorf("client read: %v", err)
		}
		got <- b
	}()
	if b := readN(t, tp.broker, size); !bytes.Equal(b, up) {
		t.Error("broker received corrupted bytes")
	}
	if b := <-got; !bytes.Equal(b, down) {
		t.Error("client received corrupted bytes")
	}
	wg.Wait()
	tp.broker.Close()
	expectEOF(t, tp.client)
	tp.client.Close()
	r := tp.wait(t)
	if r.Up != size || r.Down != size || r.End != pipe.BrokerClosed {
		t.Errorf("result = %+v; want %d both ways, broker_closed", r, size)
	}
}

func TestHalfCloseFromClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute})
	write(t, tp.client, []byte("last words"))
	tp.client.CloseWrite()
	readN(t, tp.broker, len("last words"))
	expectEOF(t, tp.broker) // the FIN was passed on
	// The other direction goes on.
	write(t, tp.broker, []byte("bye"))
	if got := readN(t, tp.client, 3); string(got) != "bye" {
		t.Fatalf("client got %q after half-close", got)
	}
	if tp.ended() {
		t.Fatal("pair ended while the broker was still sending")
	}
	tp.broker.Close()
	expectEOF(t, tp.client)
	r := tp.wait(t)
	if r.End != pipe.ClientClosed || r.Up != 10 || r.Down != 3 {
		t.Errorf("result = %+v; want client_closed, up 10, down 3", r)
	}
}

// The client's last bytes and its FIN are in the socket before the loop
// first looks (EPOLLRDHUP with the data): both are passed on, and the
// other direction goes on as after any half-close.
func TestHalfCloseWithLastBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, proxyClient, proxyBroker := h.sockets()
	write(t, tp.client, []byte("\xc0\x00")) // a PINGREQ: a client that did not say DISCONNECT may still read
	tp.client.CloseWrite()
	res := make(chan pipe.Result, 1)
	if _, err := h.g.Add(proxyClient, proxyBroker, pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute}, func(r pipe.Result) { res <- r }); err != nil {
		t.Fatal(err)
	}
	tp.result = res
	if got := readN(t, tp.broker, 2); string(got) != "\xc0\x00" {
		t.Fatalf("broker got %x", got)
	}
	expectEOF(t, tp.broker)
	write(t, tp.broker, []byte("bye"))
	if got := readN(t, tp.client, 3); string(got) != "bye" {
		t.Fatalf("client got %q after half-close", got)
	}
	if tp.ended() {
		t.Fatal("pair ended while the broker was still sending")
	}
	tp.broker.Close()
	expectEOF(t, tp.client)
	r := tp.wait(t)
	if r.End != pipe.ClientClosed || r.Up != 2 || r.Down != 3 {
		t.Errorf("result = %+v; want client_closed, up 2, down 3", r)
	}
}

// TestDisconnectThenFIN: a client that sent DISCONNECT and then its FIN has
// closed [MQTT-3.14.4-1], so the pair closes both sides at once: the broker
// gets the DISCONNECT and a FIN, and the pair ends without waiting for the
// broker's FIN (HalfCloseTimeout is a minute, longer than wait's limit),
// whether the FIN comes with the DISCONNECT or after it. Bytes the broker
// sent meanwhile are dropped, not left to reset its connection.
func TestDisconnectThenFIN(t *testing.T) {
	t.Parallel()
	const withProps = "\xe0\x08\x00\x06\x1f\x00\x03bye" // 5.0: Normal disconnection, Reason String "bye" (5.0 section 3.14.2.2.3)
	for _, tt := range []struct {
		name string
		// writes go to the pair one at a time, each read by the broker
		// before the next: the pair's reads are cut where they are.
		writes     []string
		together   bool // the FIN is there with the DISCONNECT at the pair's first read
		brokerSent bool
	}{
		{"3.1.1 with its FIN", []string{"\xe0\x00"}, true, false},
		{"5.0 reason code with its FIN", []string{"\xe0\x01\x00"}, true, false},
		{"after a PUBLISH, with its FIN", []string{"\x30\x04\x00\x01tx\xe0\x00"}, true, false},
		{"3.1.1, FIN later", []string{"\xe0\x00"}, false, false},
		{"3.1.1, FIN later, broker bytes unread", []string{"\xe0\x00"}, false, true},
		{"[MQTT-3.14.4-1] 5.0 with properties, with its FIN", []string{withProps}, true, false},
		{"[MQTT-3.14.4-1] 5.0 with properties, FIN later", []string{withProps}, false, false},
		{"[MQTT-3.14.4-1] at the end of a read that began inside a PUBLISH", []string{"\x30\x04\x00", "\x01tx\xe0\x00"}, false, false},
		{"[MQTT-3.14.4-1] a DISCONNECT cut over two reads", []string{withProps[:4], withProps[4:]}, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1)
			tp, proxyClient, proxyBroker := h.sockets()
			write(t, tp.client, []byte(tt.writes[0]))
			if tt.together {
				tp.client.CloseWrite()
			}
			res := make(chan pipe.Result, 1)
			if _, err := h.g.Add(proxyClient, proxyBroker, pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute}, func(r pipe.Result) { res <- r }); err != nil {
				t.Fatal(err)
			}
			tp.result = res
			up := 0
			for i, w := range tt.writes {
				if i > 0 {
					write(t, tp.client, []byte(w))
				}
				if got := readN(t, tp.broker, len(w)); string(got) != w {
					t.Fatalf("broker got %x, want %x", got, w)
				}
				up += len(w)
			}
			if tt.brokerSent {
				write(t, tp.broker, []byte("\x30\x03\x00\x01x"))
				if got := readN(t, tp.client, 5); got[0] != 0x30 {
					t.Fatalf("client got %x", got)
				}
				write(t, tp.broker, []byte("\x30\x03\x00\x01y")) // the pair may read it or not before the FIN
			}
			if !tt.together {
				tp.client.CloseWrite()
			}
			r := tp.wait(t) // the broker has not closed
			tp.broker.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := tp.broker.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("broker read = %d, %v; want EOF (a FIN, not a reset)", n, err)
			}
			tp.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(tp.client)
			if err != nil && !isReset(err) {
				t.Fatalf("client read %x, %v; want EOF", rest, err)
			}
			if len(rest) != 0 && (!tt.brokerSent || string(rest) != "\x30\x03\x00\x01y") {
				t.Errorf("client got %x before its EOF", rest)
			}
			if r.End != pipe.ClientClosed || r.Up != int64(up) || r.Err != nil {
				t.Errorf("result = %+v; want client_closed, up %d", r, up)
			}
		})
	}
}

func TestHalfCloseFromBroker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute})
	tp.broker.CloseWrite()
	expectEOF(t, tp.client)
	write(t, tp.client, []byte("\xe0\x00")) // DISCONNECT after the broker's FIN
	if got := readN(t, tp.broker, 2); string(got) != "\xe0\x00" {
		t.Fatalf("broker got %x after half-close", got)
	}
	tp.client.Close()
	r := tp.wait(t)
	if r.End != pipe.BrokerClosed || r.Up != 2 {
		t.Errorf("result = %+v; want broker_closed, up 2", r)
	}
}

func TestHalfCloseTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{Idle: time.Minute, HalfCloseTimeout: 200 * time.Millisecond})
	tp.client.CloseWrite()
	expectEOF(t, tp.broker)
	// The broker never closes: the pair ends on the half-close bound.
	r := tp.wait(t)
	if r.End != pipe.ClientClosed || r.Err != nil {
		t.Errorf("result = %+v; want client_closed", r)
	}
	expectEOF(t, tp.client)
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	const idle = time.Second
	// Traffic either way keeps the pair alive past the limit. A pair that
	// ends less than idle after the last byte the test sent through it
	// ended early: that fails. One that ends after a longer gap (the test's
	// goroutine stalled for a second on a loaded machine) was right to, and
	// proves nothing: the test tries a new pair, 5 times at most.
	var tp *testPair
	for attempt := 1; tp == nil; attempt++ {
		tp = steadyPair(t, h, idle)
		if tp == nil && attempt == 5 {
			t.Fatal("every pair saw a gap of more than the idle limit in its traffic: the machine is too slow to tell")
		}
	}
	r := tp.wait(t)
	if r.End != pipe.IdleTimeout || !errors.Is(r.Err, os.ErrDeadlineExceeded) {
		t.Errorf("result = %+v; want idle_timeout", r)
	}
	expectEOF(t, tp.client)
	expectEOF(t, tp.broker)
}

// steadyPair sends a byte through a new pair every 20 ms, either way, for
// 1.5 idle limits. It returns the pair when it outlived that, nil when it
// ended after a gap longer than idle; it fails the test when the pair ended
// sooner after a byte.
func steadyPair(t *testing.T, h *harness, idle time.Duration) *testPair {
	t.Helper()
	last := time.Now() // the last byte the pair saw is no older than this
	tp := h.pair(pipe.Options{Idle: idle})
	start := last
	for i := 0; time.Since(start) < 3*idle/2; i++ {
		from, to := tp.client, tp.broker
		if i%2 == 1 {
			from, to = to, from
		}
		sent := time.Now()
		_ = from.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := from.Write([]byte{byte(i)})
		if err == nil {
			_, err = io.ReadFull(to, make([]byte, 1))
		}
		if err != nil || tp.ended() {
			if gap := time.Since(last); gap < idle {
				t.Fatalf("pair ended %v after a byte went through (idle limit %v), after %v of steady traffic: %v, %+v",
					gap, idle, time.Since(start), err, tp.wait(t))
			}
			if r := tp.wait(t); r.End != pipe.IdleTimeout {
				t.Fatalf("pair ended with %+v after a gap of %v, want idle_timeout", r, time.Since(last))
			}
			t.Logf("a gap of %v in the traffic ended the pair: %v", time.Since(last), err)
			return nil
		}
		last = sent
		time.Sleep(20 * time.Millisecond) // pacing the traffic, not synchronisation
	}
	return tp
}

// TestWriteTimeout stops reading on the broker side: once the loop's write
// to it has been blocked for WriteTimeout, the pair ends as a broker error.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{WriteTimeout: 200 * time.Millisecond})
	go func() {
		chunk := make([]byte, 64<<10)
		tp.client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := tp.client.Write(chunk); err != nil {
				return
			}
		}
	}()
	r := tp.wait(t)
	if r.End != pipe.BrokerError || !errors.Is(r.Err, os.ErrDeadlineExceeded) {
		t.Errorf("result = %+v; want broker_error by deadline", r)
	}
	if h.g.loops[0].backlogs.Load() == 0 {
		t.Error("no write was ever blocked")
	}
}

func TestCloseFromOutside(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	tp := h.pair(pipe.Options{Idle: time.Minute})
	write(t, tp.client, []byte("x"))
	readN(t, tp.broker, 1)
	tp.conn.Close("operator")
	tp.conn.Close("again") // a second close changes nothing
	r := tp.wait(t)
	if r.End != "operator" || !errors.Is(r.Err, net.ErrClosed) || r.Up != 1 {
		t.Errorf("result = %+v; want operator, net.ErrClosed, up 1", r)
	}
	expectEOF(t, tp.client)
	expectEOF(t, tp.broker)
	tp.conn.Close("late") // after the end: nothing happens
}

func TestClientReset(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{})
	tp.client.SetLinger(0)
	tp.client.Close() // RST
	r := tp.wait(t)
	if r.End != pipe.ClientError || r.Err == nil {
		t.Errorf("result = %+v; want client_error with the reset", r)
	}
	expectEOF(t, tp.broker)
}

func TestGroupCloseEndsPairs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	pairs := []*testPair{h.pair(pipe.Options{}), h.pair(pipe.Options{}), h.pair(pipe.Options{})}
	h.close()
	for _, tp := range pairs {
		if r := tp.wait(t); r.End != "test_end" {
			t.Errorf("result = %+v; want test_end", r)
		}
		expectEOF(t, tp.client)
	}
	_, pc, pb := h.sockets()
	if _, err := h.g.Add(pc, pb, pipe.Options{}, nil); err == nil {
		t.Fatal("Add after Close succeeded")
	}
	// The connections are still the caller's.
	if _, err := pc.Write([]byte("x")); err != nil {
		t.Errorf("client conn unusable after a failed Add: %v", err)
	}
}

// TestManyPairs runs pairs concurrently, each moving its own bytes.
func TestManyPairs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		tp := h.pair(pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute})
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			for range 5 {
				if _, err := tp.client.Write(msg); err != nil {
					t.Error(err)
					return
				}
				if _, err := io.ReadFull(tp.broker, make([]byte, len(msg))); err != nil {
					t.Error(err)
					return
				}
				if _, err := tp.broker.Write(msg[:10]); err != nil {
					t.Error(err)
					return
				}
				if _, err := io.ReadFull(tp.client, make([]byte, 10)); err != nil {
					t.Error(err)
					return
				}
			}
			tp.client.Close()
			io.Copy(io.Discard, tp.broker)
			tp.broker.Close()
			select {
			case r := <-tp.result:
				if r.Up != int64(5*len(msg)) || r.Down != 50 || r.End != pipe.ClientClosed {
					t.Errorf("pair %d: %+v", i, r)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("pair %d did not end", i)
			}
		}()
	}
	wg.Wait()
}

// TestNoLeaks checks that a pair holds exactly two descriptors in the loop
// and that nothing (descriptor, goroutine) outlives pairs and group. It does
// not run in parallel: it counts the process's descriptors.
func TestNoLeaks(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	front, back := listen(t), listen(t)
	fds0 := countFDs(t)
	g, err := NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, g: g, front: front, back: back}
	fdsGroup := countFDs(t) - fds0 // epoll and eventfd per loop

	const n = 50
	pairs := make([]*testPair, n)
	for i := range pairs {
		pairs[i] = h.pair(pipe.Options{Idle: time.Minute})
	}
	// Per pair: the test's own two ends, and the loop's two.
	if got, want := countFDs(t)-fds0-fdsGroup, 4*n; got != want {
		t.Errorf("descriptors for %d pairs = %d, want %d (2 in the loop per pair)", n, got, want)
	}
	for i, tp := range pairs {
		if i%2 == 0 {
			tp.client.Close()
			tp.broker.Close()
		} else {
			tp.conn.Close("gone")
		}
		tp.wait(t)
		tp.client.Close()
		tp.broker.Close()
	}
	if got := countFDs(t) - fds0 - fdsGroup; got != 0 {
		t.Errorf("%d descriptors left after every pair ended", got)
	}
	g.Close("")
	if got := countFDs(t) - fds0; got != 0 {
		t.Errorf("%d descriptors left after Close", got)
	}
	front.Close()
	back.Close()
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= goroutines })
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGroupsAddAndGiveBackProcs checks that Cores does not count the Ps
// that groups add for their loops, while they run and after they close
// (once, however often Close is called), so that a second group gets as
// many loops as the first, not twice as many. It reads only Cores, which
// other tests' groups coming and going do not change.
func TestGroupsAddAndGiveBackProcs(t *testing.T) {
	t.Parallel()
	cores := Cores()
	g1, err := NewGroup(cores)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close("test_end")
	if runtime.GOMAXPROCS(0) < cores+len(g1.loops) {
		t.Errorf("GOMAXPROCS %d with a group of %d loops running, want at least %d", runtime.GOMAXPROCS(0), len(g1.loops), cores+len(g1.loops))
	}
	if got := Cores(); got != cores {
		t.Errorf("Cores with a group running = %d, want %d", got, cores)
	}
	g2, err := NewGroup(Cores())
	if err != nil {
		t.Fatal(err)
	}
	if len(g2.loops) != len(g1.loops) {
		t.Errorf("second group has %d loops, first %d", len(g2.loops), len(g1.loops))
	}
	g2.Close("test_end")
	g2.Close("test_end") // gives back nothing more
	if got := Cores(); got != cores {
		t.Errorf("Cores after a group closed twice = %d, want %d", got, cores)
	}
}
