package epoll

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
)

// wsPair is pair with a WebSocket client (AddWebSocket); frames reads the
// server's frames as the client sees them.
func (h *harness) wsPair(opts pipe.Options, small bool) (*testPair, *bufio.Reader) {
	h.t.Helper()
	tp, proxyClient, proxyBroker := h.sockets()
	if small { // so that megabytes cannot hide in the kernel
		for _, c := range []*net.TCPConn{tp.client, tp.broker, proxyClient, proxyBroker} {
			c.SetReadBuffer(16 << 10)
			c.SetWriteBuffer(16 << 10)
		}
	}
	res := make(chan pipe.Result, 1)
	c, err := h.g.AddWebSocket(ByBroker, proxyClient, proxyBroker, opts, func(r pipe.Result) { res <- r })
	if err != nil {
		h.t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	return tp, bufio.NewReader(tp.client)
}

// nextFrame reads the server's next frame, within 10 s.
func nextFrame(t *testing.T, tp *testPair, r *bufio.Reader) (ws.Header, []byte) {
	t.Helper()
	tp.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatalf("frame header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatalf("frame payload: %v", err)
	}
	if h.Masked || !h.Fin || h.Rsv != 0 {
		t.Fatalf("server frame %+v: want final, unmasked, no reserved bits [RFC 6455 5.1]", h)
	}
	return h, p
}

// TestWebSocketPairBytes: a burst of the client's frames reaches the
// broker as one stream [MQTT-6.0.0-2] (unmasked, RFC 6455 5.3), a ping is
// answered between them [RFC 6455 5.5.2], and what the broker sends, 4 MB
// the client does not read at first (the writes block: backlogs of whole
// frames), comes back in binary frames with every byte in order, a pong
// among them whole; the
// meter counts MQTT bytes, not frame headers.
func TestWebSocketPairBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, r := h.wsPair(pipe.Options{}, true)
	in := stream(bin("\x10\x02ab"), ctl(ws.OpPing, []byte("p")), clientFrame{op: ws.OpBinary, payload: []byte("cd")}, clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("ef")})
	write(t, tp.client, in)
	if got := readN(t, tp.broker, 8); string(got) != "\x10\x02abcdef" {
		t.Fatalf("broker read %q", got)
	}
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpPong || string(p) != "p" {
		t.Fatalf("answer to a ping: %v %q", hd.OpCode, p)
	}

	const size = 4 << 20
	down := make([]byte, size)
	for i := range down {
		down[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		tp.broker.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := tp.broker.Write(down)
		done <- err
	}()
	waitFor(t, "a blocked write", func() bool { return h.g.loops[0].backlogs.Load() > 0 })
	// A ping while the frames to the client wait: its pong goes behind them.
	write(t, tp.client, stream(ctl(ws.OpPing, []byte("q"))))
	got := framesBack(t, func() (ws.Header, []byte) { return nextFrame(t, tp, r) }, size)
	checkCarried(t, tp, done, got, down)
}

// framesBack reads the broker's bytes out of the binary frames next
// returns until size bytes and the pong of a ping "q" have come; any
// other frame fails the test.
func framesBack(t *testing.T, next func() (ws.Header, []byte), size int) []byte {
	t.Helper()
	var got []byte
	pongs := 0
	for len(got) < size || pongs == 0 {
		switch hd, p := next(); {
		case hd.OpCode == ws.OpBinary:
			got = append(got, p...)
		case hd.OpCode == ws.OpPong && string(p) == "q":
			pongs++
		default:
			t.Fatalf("frame %v % x among the broker's bytes", hd.OpCode, p)
		}
	}
	return got
}

// TestWebSocketPairGoodbye: a close at a boundary sends the client final
// in a binary frame, then a close frame 1000 and a FIN, as mqttws.Conn's
// Write and CloseWrite do.
func TestWebSocketPairGoodbye(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, r := h.wsPair(pipe.Options{}, false)
	write(t, tp.broker, publish(100))
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpBinary || !bytes.Equal(p, publish(100)) {
		t.Fatalf("PUBLISH frame: %v %d bytes", hd.OpCode, len(p))
	}
	final := []byte{0xe0, 1, 0x98}
	tp.conn.CloseAtBoundary("kick", final)
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpBinary || !bytes.Equal(p, final) {
		t.Fatalf("goodbye: %v % x, want the DISCONNECT in a binary frame", hd.OpCode, p)
	}
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpClose || !bytes.Equal(p, []byte{3, 0xe8}) {
		t.Fatalf("after the DISCONNECT: %v % x, want close 1000", hd.OpCode, p)
	}
	expectEOF(t, tp.client)
	tp.client.Close()
	if res := tp.wait(t); res.End != "kick" {
		t.Errorf("end %q, want kick", res.End)
	}
}

// TestWebSocketPairBrokerFIN: the broker's FIN becomes a close frame 1000
// and a FIN; the client's close frame in answer [RFC 6455 5.5.1] is not
// answered again, and the pair ends as the broker's.
func TestWebSocketPairBrokerFIN(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, r := h.wsPair(pipe.Options{}, false)
	tp.broker.CloseWrite()
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpClose || !bytes.Equal(p, []byte{3, 0xe8}) {
		t.Fatalf("after the broker's FIN: %v % x, want close 1000", hd.OpCode, p)
	}
	expectEOF(t, tp.client)
	write(t, tp.client, stream(ctl(ws.OpClose, []byte{3, 0xe8})))
	if res := tp.wait(t); res.End != pipe.BrokerClosed {
		t.Errorf("end %q (%v), want broker_closed", res.End, res.Err)
	}
}

// TestWebSocketPairClientClose: the client's close frame is answered with
// its code and passed on to the broker as a FIN; what the broker still
// sends goes nowhere [RFC 6455 5.5.1].
func TestWebSocketPairClientClose(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, r := h.wsPair(pipe.Options{}, false)
	write(t, tp.client, stream(ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, ""))))
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpClose || !bytes.Equal(p, []byte{3, 0xe9}) {
		t.Fatalf("answer to a close: %v % x, want close 1001", hd.OpCode, p)
	}
	expectEOF(t, tp.broker)
	write(t, tp.broker, []byte{0xd0, 0})
	tp.broker.CloseWrite()
	if res := tp.wait(t); res.End != pipe.ClientClosed {
		t.Errorf("end %q (%v), want client_closed", res.End, res.Err)
	}
	tp.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(r); len(rest) != 0 {
		t.Errorf("after the close frame the client read % x (%v), want nothing", rest, err)
	}
}

// TestWebSocketPairBadFrame: an unmasked frame [RFC 6455 5.1] fails the
// connection with close 1002 saying why, and the pair ends with the
// mqttws.FrameError the parked path ends with; a text frame
// [MQTT-6.0.0-1] with 1003 and mqttws.ErrTextFrame. Nothing of either
// reaches the broker.
func TestWebSocketPairBadFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		frame clientFrame
		code  ws.StatusCode
		is    func(error) bool
	}{
		{"unmasked", clientFrame{fin: true, op: ws.OpBinary, payload: []byte{0xc0, 0}, unmasked: true}, ws.StatusProtocolError,
			func(err error) bool { var fe *mqttws.FrameError; return errors.As(err, &fe) }},
		{"text", clientFrame{fin: true, op: ws.OpText, payload: []byte("hi")}, ws.StatusUnsupportedData,
			func(err error) bool { return errors.Is(err, mqttws.ErrTextFrame) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1)
			tp, r := h.wsPair(pipe.Options{}, false)
			write(t, tp.client, tc.frame.bytes())
			hd, p := nextFrame(t, tp, r)
			if code, _ := ws.ParseCloseFrameData(p); hd.OpCode != ws.OpClose || code != tc.code {
				t.Fatalf("%v % x, want close %d", hd.OpCode, p, tc.code)
			}
			expectEOF(t, tp.client)
			tp.client.Close()
			res := tp.wait(t)
			if res.End != pipe.ClientError || !tc.is(res.Err) {
				t.Errorf("end %q, err %v", res.End, res.Err)
			}
			if up, _ := tp.conn.Bytes(); up != 0 {
				t.Errorf("%d bytes reached the broker", up)
			}
		})
	}
}

// TestWebSocketPairCloseBehindBacklog: a close frame that comes while the
// frames before it still wait for the broker (which does not read at
// first, and whose socket buffers are small) is passed on as a FIN only
// after them: the broker gets every byte, then EOF. The broker's socket
// buffers are small, so the forward of the read that ends with the close
// frame mostly blocks too.
func TestWebSocketPairCloseBehindBacklog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, proxyClient, proxyBroker := h.sockets()
	tp.broker.SetReadBuffer(16 << 10)
	proxyBroker.SetWriteBuffer(16 << 10)
	res := make(chan pipe.Result, 1)
	c, err := h.g.AddWebSocket(ByBroker, proxyClient, proxyBroker, pipe.Options{}, func(r pipe.Result) { res <- r })
	if err != nil {
		t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	r := bufio.NewReader(tp.client)
	const size = 1 << 20
	up := make([]byte, size)
	for i := range up {
		up[i] = byte(i * 13)
	}
	go func() { // nobody reads the client's answer until the broker read all
		tp.client.SetWriteDeadline(time.Now().Add(20 * time.Second))
		tp.client.Write(append(bin(string(up)).bytes(), stream(ctl(ws.OpClose, nil))...))
	}()
	waitFor(t, "a blocked write", func() bool { return h.g.loops[0].backlogs.Load() > 0 })
	tp.broker.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(tp.broker)
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("broker read %d bytes (%v), want the %d sent, then EOF", len(got), err, size)
	}
	if hd, p := nextFrame(t, tp, r); hd.OpCode != ws.OpClose || !bytes.Equal(p, []byte{3, 0xe8}) {
		t.Fatalf("answer to the close: %v % x", hd.OpCode, p)
	}
	tp.broker.Close()
	if res := tp.wait(t); res.End != pipe.ClientClosed || res.Up != size {
		t.Errorf("result %+v, want client_closed and %d up", res, size)
	}
}
