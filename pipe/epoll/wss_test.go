package epoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

// wssPair is a pair with a wss client (AddWSS): WebSocket frames inside
// TLS records. The returned wssClient is the client's side.
func (h *harness) wssPair(opts pipe.Options, small bool) (*testPair, *wssClient) {
	h.t.Helper()
	tp, proxyClient, proxyBroker := h.sockets()
	if small { // as tlsPair: not below a record's size
		for _, c := range []*net.TCPConn{tp.client, tp.broker, proxyClient, proxyBroker} {
			c.SetReadBuffer(64 << 10)
			c.SetWriteBuffer(64 << 10)
		}
	}
	server, client := tlsEnds(h.t)
	res := make(chan pipe.Result, 1)
	c, err := h.g.AddWSS(ByBroker, proxyClient, proxyBroker, server, opts, func(r pipe.Result) { res <- r })
	if err != nil {
		h.t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	return tp, &wssClient{tp: tp, rec: client}
}

// wssClient is a wss client's view of the loop's stream: records opened,
// their plaintext parsed into frames wherever the records cut them.
type wssClient struct {
	tp    *testPair
	rec   *tlsrecord.Records
	plain []byte // opened, not yet a whole frame
}

// records seals the client's frames b in records of at most cut bytes of
// plaintext each, so that frames and their headers are cut across records.
func (w *wssClient) records(b []byte, cut int) []byte {
	var out []byte
	for len(b) > 0 {
		k := min(cut, len(b))
		out = w.rec.AppendRecords(out, tlsrecord.TypeApplication, b[:k])
		b = b[k:]
	}
	return out
}

// next is the next thing the client gets: a frame (checked as a server's,
// RFC 6455 5.1), or the error of the record stream: io.EOF for
// close_notify, an alert's error.
func (w *wssClient) next(t *testing.T) (ws.Header, []byte, error) {
	t.Helper()
	for {
		if len(w.plain) > 0 {
			r := bytes.NewReader(w.plain)
			if h, err := ws.ReadHeader(r); err == nil {
				hl := len(w.plain) - r.Len()
				if len(w.plain)-hl >= int(h.Length) {
					p := bytes.Clone(w.plain[hl : hl+int(h.Length)])
					w.plain = w.plain[hl+int(h.Length):]
					if h.Masked || !h.Fin || h.Rsv != 0 {
						t.Fatalf("server frame %+v: want final, unmasked, no reserved bits [RFC 6455 5.1]", h)
					}
					return h, p, nil
				}
			}
		}
		d, err := nextRecord(t, w.tp, w.rec)
		if err != nil {
			if len(w.plain) > 0 {
				t.Fatalf("%v after % x, a frame cut short", err, w.plain)
			}
			return ws.Header{}, nil, err
		}
		w.plain = append(w.plain, d...)
	}
}

// frame is next, a frame wanted.
func (w *wssClient) frame(t *testing.T) (ws.Header, []byte) {
	t.Helper()
	h, p, err := w.next(t)
	if err != nil {
		t.Fatalf("want a frame, got %v", err)
	}
	return h, p
}

// TestWSSPairBytes: a wss client's frames, cut across records of 3 bytes
// and the records cut across reads of 1 byte, reach the broker as one
// stream (unmasked, RFC 6455 5.3), fragmented messages joined [RFC 6455
// 5.4]; a ping is answered [RFC 6455 5.5.2] and a KeyUpdate asking for
// ours [RFC 8446 4.6.3] before what is sealed after it; what the broker
// sends, 1 MB the client does not read at first (backlogs), comes back in
// binary frames in records of at most 2^14 bytes [RFC 8446 5.1], every
// byte in order; the meter counts MQTT bytes only.
func TestWSSPairBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, w := h.wssPair(pipe.Options{}, true)
	frames := stream(bin("\x10\x02ab"), ctl(ws.OpPing, []byte("p")), clientFrame{op: ws.OpBinary, payload: []byte("cd")}, clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("ef")})
	in := append(w.records(frames[:9], 3), w.rec.KeyUpdateRequest()...)
	in = append(in, w.records(frames[9:], 3)...)
	for i := range in {
		write(t, tp.client, in[i:i+1])
	}
	if got := readN(t, tp.broker, 8); string(got) != "\x10\x02abcdef" {
		t.Fatalf("broker read %q", got)
	}
	d, err := nextRecord(t, tp, w.rec) // the KeyUpdate's answer, an empty read for the client
	if err != nil || len(d) != 0 {
		t.Fatalf("the answer to a KeyUpdate: %q %v", d, err)
	}
	if hd, p := w.frame(t); hd.OpCode != ws.OpPong || string(p) != "p" {
		t.Fatalf("answer to a ping: %v %q", hd.OpCode, p)
	}

	const size = 1 << 20
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
	write(t, tp.client, w.records(stream(ctl(ws.OpPing, []byte("q"))), 100))
	checkCarried(t, tp, done, framesBack(t, func() (ws.Header, []byte) { return w.frame(t) }, size), down)
}

// TestWSSPairEnds: how a wss pair in a loop ends, each layer as on the
// parked path (mqttws.Conn over tlsrecord.Conn): WebSocket closes and
// failures in frames [RFC 6455 5.5.1, 7.4], then close_notify [RFC 8446
// 6.1]; a bad record is its alert [RFC 8446 6.2], no frame.
func TestWSSPairEnds(t *testing.T) {
	t.Parallel()
	frameErr := func(err error) bool { var fe *mqttws.FrameError; return errors.As(err, &fe) }
	for _, tc := range []struct {
		name   string
		act    func(t *testing.T, tp *testPair, w *wssClient)
		client []string // what the client gets, in order: "op:payload" of a frame, "EOF" (close_notify) or an alert's error
		end    pipe.End
		err    func(error) bool // nil: no error
		opts   *pipe.Options
	}{
		{name: "RFC 6455 5.5.1: the client's close is answered, then close_notify; a FIN to the broker",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.client, w.records(stream(ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, ""))), 3))
				expectEOF(t, tp.broker)
				write(t, tp.broker, []byte{0xd0, 0}) // goes nowhere
				tp.broker.CloseWrite()
			},
			client: []string{"close:\x03\xe9", "EOF"}, end: pipe.ClientClosed},
		{name: "the broker's FIN is close 1000, close_notify, FIN",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.broker, []byte("\xd0\x00"))
				tp.broker.CloseWrite()
			},
			client: []string{"binary:\xd0\x00", "close:\x03\xe8", "EOF"}, end: pipe.BrokerClosed},
		{name: "MQTT-3.14.4-1: DISCONNECT, then close_notify, ends both sides",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.client, append(w.records(stream(bin("\xe0\x00")), 100), alertRec(w.rec, 1, 0)...))
				expectEOFAfter(t, tp.broker, "\xe0\x00") // without the broker's FIN
			},
			end: pipe.ClientClosed},
		{name: "a close at a boundary: the DISCONNECT in a binary frame, close 1000, close_notify",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				tp.conn.CloseAtBoundary("kick", []byte{0xe0, 1, 0x8e})
			},
			client: []string{"binary:\xe0\x01\x8e", "close:\x03\xe8", "EOF"}, end: "kick", err: func(err error) bool { return errors.Is(err, net.ErrClosed) }},
		{name: "MQTT-3.1.2-22: the idle limit's DISCONNECT 0x8D",
			act:    func(t *testing.T, tp *testPair, w *wssClient) {},
			client: []string{"binary:\xe0\x01\x8d", "close:\x03\xe8", "EOF"}, end: pipe.IdleTimeout, err: func(err error) bool { return err != nil },
			opts: &pipe.Options{Idle: 100 * time.Millisecond, Level: 5}},
		{name: "RFC 6455 5.1: an unmasked frame is close 1002, then close_notify",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.client, w.records(clientFrame{fin: true, op: ws.OpBinary, payload: []byte{0xc0, 0}, unmasked: true}.bytes(), 1))
			},
			client: []string{"close:\x03\xea", "EOF"}, end: pipe.ClientError, err: frameErr},
		{name: "MQTT-6.0.0-1: a text frame is close 1003",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.client, w.records(clientFrame{fin: true, op: ws.OpText, payload: []byte("hi")}.bytes(), 100))
			},
			client: []string{"close:\x03\xeb", "EOF"}, end: pipe.ClientError, err: func(err error) bool { return errors.Is(err, mqttws.ErrTextFrame) }},
		{name: "RFC 6455 5.5: a fragmented ping is close 1002",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				write(t, tp.client, w.records(clientFrame{op: ws.OpPing, payload: []byte("x")}.bytes(), 100))
			},
			client: []string{"close:\x03\xea", "EOF"}, end: pipe.ClientError, err: frameErr},
		{name: "RFC 8446 5.2: a bad record is bad_record_mac, no close frame",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				b := w.records(stream(bin("\xc0\x00")), 100)
				b[6] ^= 1
				write(t, tp.client, b)
			},
			client: []string{"alert 20"}, end: pipe.ClientError, err: func(err error) bool { return err != nil && strings.Contains(err.Error(), "bad record MAC") }},
		{name: "RFC 8446 5.1: a FIN inside a record is a close inside a frame",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				b := w.records(stream(bin("\xc0\x00")), 100)
				write(t, tp.client, b[:len(b)-2])
				tp.client.CloseWrite()
			},
			end: pipe.ClientError, err: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{name: "RFC 6455 5.2: close_notify inside a frame",
			act: func(t *testing.T, tp *testPair, w *wssClient) {
				f := bin("\xc0\x00").bytes()
				write(t, tp.client, append(w.records(f[:len(f)-1], 100), alertRec(w.rec, 1, 0)...))
			},
			end: pipe.ClientError, err: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1)
			opts := pipe.Options{Idle: time.Minute, Level: 5}
			if tc.opts != nil {
				opts = *tc.opts
			}
			tp, w := h.wssPair(opts, false)
			write(t, tp.client, w.records(stream(bin("\x10\x00")), 1))
			if got := readN(t, tp.broker, 2); string(got) != "\x10\x00" {
				t.Fatalf("broker read %q", got)
			}
			tc.act(t, tp, w)
			for _, want := range tc.client {
				hd, p, err := w.next(t)
				got := map[ws.OpCode]string{ws.OpBinary: "binary", ws.OpClose: "close", ws.OpPong: "pong"}[hd.OpCode] + ":" + string(p)
				if err != nil {
					got = err.Error()
				}
				if !strings.Contains(got, want) {
					t.Fatalf("client got %q, want %q", got, want)
				}
			}
			if len(tc.client) > 0 {
				expectEOF(t, tp.client)
			}
			tp.client.CloseWrite()
			res := tp.wait(t)
			if res.End != tc.end || (tc.err == nil) != (res.Err == nil) || (tc.err != nil && !tc.err(res.Err)) {
				t.Fatalf("ended %s, %v; want %s", res.End, res.Err, tc.end)
			}
		})
	}
}

// feedWSS runs a wss client's frames through both layers as the loop's
// reads do: sealed in records of at most rcut bytes of plaintext (frames
// cut anywhere across records), the records read at most cut bytes at a
// time (records cut anywhere across reads, the part kept from one read
// put before the next, as tlsClientRead does), each read's plaintext
// taken apart in place by one wsIn (readTLS handing it to readWS).
func feedWSS(t *testing.T, frames []byte, rcut, cut int) outcome {
	t.Helper()
	server, client := tlsEnds(t)
	var recs []byte
	for b := frames; len(b) > 0; {
		k := min(rcut, len(b))
		recs = client.AppendRecords(recs, tlsrecord.TypeApplication, b[:k])
		b = b[k:]
	}
	var (
		ti  = &tlsIn{rec: server}
		w   wsIn
		out outcome
	)
	for len(recs) > 0 {
		k := min(cut, len(recs))
		b := append(append([]byte(nil), ti.part...), recs[:k]...)
		recs = recs[k:]
		data, _, _, err := ti.open(b)
		if err != nil {
			t.Fatalf("records sealed by the client: %v", err)
		}
		if data > len(b) {
			t.Fatalf("%d bytes of plaintext out of %d", data, len(b))
		}
		if feedRead(&w, b[:data], &out) {
			return out
		}
	}
	out.mid = w.midFrame() || ti.part != nil
	return out
}

// FuzzWSSRead: whatever frames a wss client sends, however its records
// cut them [RFC 8446 5.1: a record's plaintext is a slice of the stream]
// and however the reads cut the records, the loop makes of them what it
// makes of the same frames on a plain ws pair in one read (FuzzUnframe's
// state machine): the MQTT bytes, the control frames and their answers,
// the failure and its close code, a frame left open.
func FuzzWSSRead(f *testing.F) {
	f.Add(stream(bin("\x10\x0chello")), uint16(1), uint16(1))
	f.Add(stream(clientFrame{op: ws.OpBinary, payload: []byte("ab")}, ctl(ws.OpPing, []byte("?")), clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("cd")}), uint16(3), uint16(7))
	f.Add(stream(bin("a"), ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))), uint16(2), uint16(30))
	f.Add(stream(clientFrame{fin: true, op: ws.OpBinary, payload: bytes.Repeat([]byte{1}, 300)}), uint16(64), uint16(5))
	f.Add(stream(bin("x"), clientFrame{fin: true, op: ws.OpText, payload: []byte("hi")}), uint16(4), uint16(2))
	f.Add(clientFrame{fin: true, op: ws.OpBinary, payload: []byte{0xc0, 0}, unmasked: true}.bytes(), uint16(1), uint16(3))
	f.Fuzz(func(t *testing.T, frames []byte, rcut, cut uint16) {
		if len(frames) > 4096 {
			return // the records' cost, not more cases
		}
		want := feed(frames, 0)
		got := feedWSS(t, frames, int(rcut%64)+1, int(cut%128)+1)
		if !bytes.Equal(want.data, got.data) || strings.Join(want.ctl, "\n") != strings.Join(got.ctl, "\n") || want.fail != got.fail || want.mid != got.mid {
			t.Fatalf("ws, one read: %q %q %d %v; wss, records of %d, reads of %d: %q %q %d %v",
				want.data, want.ctl, want.fail, want.mid, rcut%64+1, cut%128+1, got.data, got.ctl, got.fail, got.mid)
		}
	})
}
