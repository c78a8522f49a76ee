package epoll

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/mqttws"
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
