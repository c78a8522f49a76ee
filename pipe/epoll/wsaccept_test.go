package epoll

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
)

// streamConn is a net.Conn reading a fixed stream; what is written to it
// (a pong) is dropped.
type streamConn struct {
	net.Conn
	r io.Reader
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *streamConn) Close() error                { return nil }

// masked is a client's frame [RFC 6455 5.2, 5.3].
func masked(op ws.OpCode, fin bool, payload []byte) []byte {
	var b bytes.Buffer
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	p := append([]byte(nil), payload...)
	ws.Cipher(p, mask, 0)
	_ = ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: mask, Length: int64(len(p))})
	b.Write(p)
	return b.Bytes()
}

// TestWSResume: wherever the loop stops inside a client's frames (a data
// frame, a header cut short, a control frame, a fragmented message [RFC
// 6455 5.4, 5.5]), what wsResume gives, then the rest of the stream, is
// read by mqttws.Conn (the goroutine path's reader, which DetachWebSocket
// hands the WebSocket to) as the same MQTT bytes, with no error.
func TestWSResume(t *testing.T) {
	long := bytes.Repeat([]byte("0123456789abcdef"), 20) // a 16-bit length [RFC 6455 5.2]
	var stream []byte
	stream = append(stream, masked(ws.OpBinary, true, []byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"))...)
	stream = append(stream, masked(ws.OpBinary, false, long[:100])...)
	stream = append(stream, masked(ws.OpPing, true, []byte("ping!"))...)
	stream = append(stream, masked(ws.OpContinuation, false, long[100:])...)
	stream = append(stream, masked(ws.OpContinuation, true, []byte("end"))...)
	stream = append(stream, masked(ws.OpBinary, true, []byte("\xc0\x00"))...)
	want := append(append(append([]byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"), long...), "end"...), "\xc0\x00"...)
	for cut := range len(stream) + 1 {
		var w wsIn
		in := append([]byte(nil), stream[:cut]...)
		var got []byte
		for b := in; len(b) > 0; {
			data, used, _, _, fail := w.unframe(b)
			if fail != nil {
				t.Fatalf("cut %d: %v", cut, fail.err)
			}
			got = append(got, b[:data]...)
			b = b[used:]
		}
		resume := wsResume(&w)
		c := mqttws.NewConn(&streamConn{r: bytes.NewReader(stream[cut:])}, mqttws.ProtocolMQTT, resume)
		rest, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("cut %d (resume % x): %v", cut, resume, err)
		}
		if got = append(got, rest...); !bytes.Equal(got, want) {
			t.Fatalf("cut %d (resume % x): %d bytes read, want %d", cut, resume, len(got), len(want))
		}
	}
}

// wsAcceptor upgrades each connection in the loop (Conn.Upgrade), then
// serves the CONNECT read from its frames as testSession does.
type wsAcceptor struct{ testAcceptor }

func (a *wsAcceptor) Accept(c *Conn, remote, local netip.AddrPort) (Session, []byte, First) {
	head := func(b []byte) (int, error) { return mqttws.HeadSize(b), nil }
	return &wsSession{testSession: testSession{a: &a.testAcceptor}}, make([]byte, 0, 16), First{Frame: head, Timeout: 5 * time.Second}
}

type wsSession struct {
	testSession
	upgraded bool
}

func (s *wsSession) FirstPacket(c *Conn, b []byte, size int) {
	if s.upgraded {
		s.testSession.FirstPacket(c, b, size)
		return
	}
	u, ok := mqttws.ParseUpgrade(b[:size], "/mqtt", nil)
	if !ok {
		s.a.events <- "not an upgrade"
		c.End(pipe.ClientError, nil)
		return
	}
	s.upgraded = true
	c.Upgrade(u.Answer, b, size, First{Frame: frame, Timeout: 5 * time.Second})
}

// TestUpgradeInLoop: the loop answers the upgrade, reads the CONNECT out of
// the client's frames [RFC 6455 5.2] (cut into writes of 1..N bytes, split
// over frames, a ping among them [RFC 6455 5.5.2], sent before the 101
// came) and pipes the pair as a WebSocket pair: the CONNACK and what the
// broker sends go in binary frames; a refusal is a binary frame and a
// close frame 1000 [RFC 6455 5.5.1].
func TestUpgradeInLoop(t *testing.T) {
	t.Parallel()
	head := upgradeHead()
	for _, tc := range []struct {
		name    string
		payload string
		chunk   int
		want    []byte // after the 101
	}{
		{name: "whole", payload: "client-a", chunk: 1 << 10, want: []byte{0x8a, 5, 'p', 'i', 'n', 'g', '!', 0x82, 4, 0x20, 2, 0, 0}},
		{name: "1-byte writes", payload: "client-b", chunk: 1, want: []byte{0x8a, 5, 'p', 'i', 'n', 'g', '!', 0x82, 4, 0x20, 2, 0, 0}},
		{name: "3-byte writes", payload: "client-c", chunk: 3, want: []byte{0x8a, 5, 'p', 'i', 'n', 'g', '!', 0x82, 4, 0x20, 2, 0, 0}},
		{name: "refused", payload: "refuse", chunk: 7, want: []byte{0x8a, 5, 'p', 'i', 'n', 'g', '!', 0x82, 4, 0x20, 2, 0, 5, 0x88, 2, 0x03, 0xe8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := &wsAcceptor{testAcceptor{broker: echoBroker(t), events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: 2 * time.Second, first: 5 * time.Second}}
			addr := listenLoops(t, a)
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			pkt := append([]byte{0x10, byte(len(tc.payload))}, tc.payload...)
			in := append([]byte(head), masked(ws.OpBinary, false, pkt[:1])...)
			in = append(in, masked(ws.OpPing, true, []byte("ping!"))...)
			in = append(in, masked(ws.OpContinuation, true, pkt[1:])...)
			go func() {
				for b := in; len(b) > 0; {
					n := min(tc.chunk, len(b))
					if _, err := c.Write(b[:n]); err != nil {
						return
					}
					b = b[n:]
				}
			}()
			resp := make([]byte, 0, 256)
			for mqttws.HeadSize(resp) == 0 {
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err != nil {
					t.Fatalf("101: %q, %v", resp, err)
				}
				resp = append(resp, one[0])
			}
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) {
				t.Fatalf("answer %q", resp)
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got % x, %v; want % x", got, err, tc.want)
			}
			want(t, a.events, "first "+tc.payload)
			if tc.payload == "refuse" {
				return
			}
			want(t, a.events, "dialled")
			if _, err := c.Write(masked(ws.OpBinary, true, []byte{0xc0, 0})); err != nil { // PINGREQ, echoed
				t.Fatal(err)
			}
			echo := make([]byte, 4)
			if _, err := io.ReadFull(c, echo); err != nil || !bytes.Equal(echo, []byte{0x82, 2, 0xc0, 0}) {
				t.Fatalf("echo % x, %v", echo, err)
			}
		})
	}
}

// upgradeHead is a browser's upgrade request for /mqtt [RFC 6455 4.1].
func upgradeHead() string {
	return "GET /mqtt HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
}
