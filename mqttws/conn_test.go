package mqttws

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// memConn is a client's byte stream in memory: reads come from in, writes
// (the server's frames) collect in out.
type memConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (m *memConn) Read(p []byte) (int, error)       { return m.in.Read(p) }
func (m *memConn) Write(p []byte) (int, error)      { return m.out.Write(p) }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// clientFrames compiles frames as a client sends them: masked.
func clientFrames(t testing.TB, frames ...ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range frames {
		if err := ws.WriteFrame(&b, ws.MaskFrame(f)); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// serverFrames parses what the server sent.
func serverFrames(t testing.TB, b []byte) []ws.Frame {
	t.Helper()
	var out []ws.Frame
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		f, err := ws.ReadFrame(r)
		if err != nil {
			t.Fatalf("server sent a bad frame: %v", err)
		}
		out = append(out, f)
	}
	return out
}

func TestConnRead(t *testing.T) {
	connect := []byte{0x10, 0x0d, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'a'}
	for _, tc := range []struct {
		name   string
		in     []byte
		want   []byte
		err    error         // nil: io.EOF at the end of input
		close  ws.StatusCode // the close frame the server sent; 0: none
		ponged bool
	}{
		{name: "[MQTT-6.0.0-2] a packet over two binary messages",
			in:   clientFrames(t, ws.NewBinaryFrame(connect[:3]), ws.NewBinaryFrame(connect[3:])),
			want: connect},
		{name: "[MQTT-6.0.0-2] two packets in one frame",
			in:   clientFrames(t, ws.NewBinaryFrame(append(append([]byte{}, connect...), 0xc0, 0))),
			want: append(append([]byte{}, connect...), 0xc0, 0)},
		{name: "[MQTT-6.0.0-2] a fragmented message with a ping between fragments",
			in: clientFrames(t, ws.NewFrame(ws.OpBinary, false, connect[:5]), ws.NewPingFrame([]byte("hi")),
				ws.NewFrame(ws.OpContinuation, true, connect[5:])),
			want: connect, ponged: true},
		{name: "an empty binary frame carries nothing",
			in:   clientFrames(t, ws.NewBinaryFrame(nil), ws.NewBinaryFrame(connect)),
			want: connect},
		{name: "[MQTT-6.0.0-1] a text frame closes with 1003",
			in:  clientFrames(t, ws.NewTextFrame([]byte("hello"))),
			err: ErrTextFrame, close: ws.StatusUnsupportedData},
		{name: "a close frame ends the stream and is answered",
			in:   clientFrames(t, ws.NewBinaryFrame(connect), ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))),
			want: connect, close: ws.StatusNormalClosure},
		{name: "an unmasked frame is a protocol error (RFC 6455 5.1)",
			in:  ws.MustCompileFrame(ws.NewBinaryFrame(connect)),
			err: &FrameError{}, close: ws.StatusProtocolError},
		{name: "a continuation without a message is a protocol error",
			in:  clientFrames(t, ws.NewFrame(ws.OpContinuation, true, connect)),
			err: &FrameError{}, close: ws.StatusProtocolError},
		{name: "RFC 6455 5.2: a 64-bit length with its top bit set is a protocol error",
			in:  []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 'x'},
			err: &FrameError{}, close: ws.StatusProtocolError},
		{name: "a close code not in use is a protocol error",
			in:  clientFrames(t, ws.NewCloseFrame(ws.NewCloseFrameBody(999, ""))),
			err: &FrameError{}, close: ws.StatusProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &memConn{in: bytes.NewReader(tc.in)}
			c := NewConn(m, ProtocolMQTT, nil)
			got, err := io.ReadAll(c)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("read % x, want % x", got, tc.want)
			}
			var fe *FrameError
			switch {
			case tc.err == nil && err != nil:
				t.Errorf("err %v, want EOF", err)
			case tc.err == ErrTextFrame && !errors.Is(err, ErrTextFrame):
				t.Errorf("err %v, want ErrTextFrame", err)
			case tc.err != nil && tc.err != ErrTextFrame && !errors.As(err, &fe):
				t.Errorf("err %v, want a FrameError", err)
			}
			var closeCode ws.StatusCode
			pongs := 0
			for _, f := range serverFrames(t, m.out.Bytes()) {
				switch f.Header.OpCode {
				case ws.OpClose:
					closeCode, _ = ws.ParseCloseFrameData(f.Payload)
				case ws.OpPong:
					pongs++
					if string(f.Payload) != "hi" {
						t.Errorf("pong %q, want the ping's payload", f.Payload)
					}
				}
				if f.Header.Masked {
					t.Error("server frame masked")
				}
			}
			if closeCode != tc.close {
				t.Errorf("close %d, want %d", closeCode, tc.close)
			}
			if (pongs > 0) != tc.ponged {
				t.Errorf("%d pongs", pongs)
			}
		})
	}
}

func TestConnWrite(t *testing.T) {
	m := &memConn{in: bytes.NewReader(nil)}
	c := NewConn(m, ProtocolMQTT, nil)
	big := bytes.Repeat([]byte{7}, 70_000) // over the pooled frame: written as header + payload
	for _, p := range [][]byte{{0x20, 2, 0, 0}, big} {
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1}); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	fs := serverFrames(t, m.out.Bytes())
	if len(fs) != 3 || fs[0].Header.OpCode != ws.OpBinary || !bytes.Equal(fs[0].Payload, []byte{0x20, 2, 0, 0}) ||
		!bytes.Equal(fs[1].Payload, big) || fs[2].Header.OpCode != ws.OpClose {
		t.Errorf("frames %v", fs)
	}
}

// FuzzConn: any client byte stream ends in MQTT bytes then an error or
// EOF, never a panic or a hang, and the server's answer is valid frames.
func FuzzConn(f *testing.F) {
	f.Add(clientFrames(f, ws.NewBinaryFrame([]byte{0x10, 0})))
	f.Add(clientFrames(f, ws.NewFrame(ws.OpBinary, false, []byte{1}), ws.NewPingFrame(nil), ws.NewFrame(ws.OpContinuation, true, []byte{2})))
	f.Add(clientFrames(f, ws.NewTextFrame([]byte("x"))))
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		m := &memConn{in: bytes.NewReader(in)}
		c := NewConn(m, ProtocolMQTT, nil)
		got, _ := io.ReadAll(c)
		if len(got) > len(in) {
			t.Fatalf("read %d bytes from %d", len(got), len(in))
		}
		serverFrames(t, m.out.Bytes())
		// Read into buffers too small to take frames apart in place, frame
		// by frame through the read-ahead: the same bytes.
		small := NewConn(&memConn{in: bytes.NewReader(in)}, ProtocolMQTT, nil)
		var want []byte
		buf := make([]byte, directMin-1)
		for {
			n, err := small.Read(buf)
			want = append(want, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read in place % x, frame by frame % x", got, want)
		}
	})
}

// countingConn is a memConn that counts the reads that reach it, each
// given at most one of chunks (what the socket holds at that moment).
type countingConn struct {
	memConn
	chunks [][]byte
	reads  int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestConnReadsAhead: read with the pipe's wait buffer, a frame costs one
// read of the socket, several frames that arrived together no more (they
// are taken apart in the caller's buffer); read into a buffer too small for
// that, a small frame costs one read, a larger one two. Either way, a
// connection waiting for its next frame holds no pooled buffer.
func TestConnReadsAhead(t *testing.T) {
	connect := []byte{0x10, 0x0d, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'a'}
	connect = append(connect, bytes.Repeat([]byte{0}, 40)...) // past the frame-start buffer
	connect[1] = byte(len(connect) - 2)
	ping := []byte{0xc0, 0}
	for _, tc := range []struct {
		name   string
		chunks [][]byte
		buf    int
		reads  int // socket reads until the payloads are in, the EOF read excluded
	}{
		{"a PINGREQ frame in one read", [][]byte{clientFrames(t, ws.NewBinaryFrame(ping))}, 512, 1},
		{"a CONNECT frame in one", [][]byte{clientFrames(t, ws.NewBinaryFrame(connect))}, 512, 1},
		{"a CONNECT and two PINGREQ that came together", [][]byte{clientFrames(t, ws.NewBinaryFrame(connect), ws.NewBinaryFrame(ping), ws.NewBinaryFrame(ping))}, 512, 1},
		{"small buffer: a PINGREQ frame in one read", [][]byte{clientFrames(t, ws.NewBinaryFrame(ping))}, 64, 1},
		{"small buffer: a CONNECT frame in two", [][]byte{clientFrames(t, ws.NewBinaryFrame(connect))}, 64, 2},
		{"small buffer: a CONNECT and two PINGREQ that came together", [][]byte{clientFrames(t, ws.NewBinaryFrame(connect), ws.NewBinaryFrame(ping), ws.NewBinaryFrame(ping))}, 64, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &countingConn{chunks: tc.chunks}
			c := NewConn(m, ProtocolMQTT, nil)
			var want []byte
			for _, f := range tc.chunks {
				r := bytes.NewReader(f)
				for r.Len() > 0 {
					fr, err := ws.ReadFrame(r)
					if err != nil {
						t.Fatal(err)
					}
					want = append(want, ws.UnmaskFrame(fr).Payload...)
				}
			}
			got := make([]byte, 0, len(want))
			buf := make([]byte, tc.buf) // 512: the pipe's wait buffer
			for len(got) < len(want) {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("read % x, want % x", got, want)
			}
			if m.reads != tc.reads {
				t.Errorf("%d reads of the socket, want %d", m.reads, tc.reads)
			}
			if c.src.pooled != nil || len(c.src.ahead) > 0 {
				t.Errorf("between frames the connection holds a read-ahead buffer (%d bytes unread)", len(c.src.ahead))
			}
		})
	}
}

// wouldBlock is what a parked connection's read returns with nothing to
// read yet (pipe.ParkConn).
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "would block" }
func (wouldBlock) Temporary() bool { return true }
func (wouldBlock) Timeout() bool   { return false }

// scriptConn gives each read one chunk; a nil chunk is a read that would
// block.
type scriptConn struct {
	memConn
	chunks [][]byte
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	if c.chunks[0] == nil {
		c.chunks = c.chunks[1:]
		return 0, wouldBlock{}
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestConnReadParked: on a parked connection a frame header may arrive in
// pieces, with reads that would block in between; the bytes read so far
// are parsed again from the frame's start, nothing is lost.
func TestConnReadParked(t *testing.T) {
	payload := bytes.Repeat([]byte{0x30}, 300) // a 2-byte length: a 4-byte header before the mask
	frame := clientFrames(t, ws.NewBinaryFrame(payload), ws.NewBinaryFrame([]byte{0xc0, 0}))
	for _, cut := range []int{1, 2, 3, 5, 7, 9} {
		m := &scriptConn{chunks: [][]byte{frame[:cut], nil, frame[cut:]}}
		c := NewConn(m, ProtocolMQTT, nil)
		var got []byte
		buf := make([]byte, 512)
		for blocked := 0; ; {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && blocked == 0 {
				blocked++
				continue
			}
			if err != nil {
				break
			}
		}
		if want := append(append([]byte{}, payload...), 0xc0, 0); !bytes.Equal(got, want) {
			t.Errorf("header cut after %d bytes: read %d bytes % x…, want the %d of the two frames", cut, len(got), got[:min(len(got), 8)], len(want))
		}
	}
}

// TestConnReadCoalesces: the binary frames that came in one read of the
// socket come out of one Read [MQTT-6.0.0-2], so the pipe writes them to
// the broker at once; a control or text frame, or a frame not read ahead
// whole, ends the Read, and the bytes before a bad frame are delivered
// before its error.
func TestConnReadCoalesces(t *testing.T) {
	pub := func(i byte) []byte { return []byte{0x30, 5, 0, 1, 't', i, i} }
	var burst []ws.Frame
	var want []byte
	for i := byte(0); i < 16; i++ {
		burst = append(burst, ws.NewBinaryFrame(pub(i)))
		want = append(want, pub(i)...)
	}
	big := append([]byte{0x30, 0x80, 0x02, 0, 1, 't'}, bytes.Repeat([]byte{9}, 253)...) // a 2-byte frame length
	second := clientFrames(t, ws.NewBinaryFrame(pub(2)))
	for _, tc := range []struct {
		name   string
		chunks [][]byte
		reads  [][]byte // what each Read returns
		err    error    // the last Read's, nil: EOF
	}{
		{"16 frames in one read of the socket, one Read",
			[][]byte{clientFrames(t, burst...)}, [][]byte{want}, nil},
		{"a frame with a 2-byte length after a small one",
			[][]byte{clientFrames(t, ws.NewBinaryFrame(pub(1)), ws.NewBinaryFrame(big))}, [][]byte{append(pub(1), big...)}, nil},
		{"a ping ends the Read, and is answered before the next",
			[][]byte{clientFrames(t, ws.NewBinaryFrame(pub(1)), ws.NewPingFrame(nil), ws.NewBinaryFrame(pub(2)))}, [][]byte{pub(1), pub(2)}, nil},
		{"an empty frame ends the Read",
			[][]byte{clientFrames(t, ws.NewBinaryFrame(pub(1)), ws.NewBinaryFrame(nil), ws.NewBinaryFrame(pub(2)))}, [][]byte{pub(1), pub(2)}, nil},
		{"a frame whose header came in the next read of the socket",
			[][]byte{append(clientFrames(t, ws.NewBinaryFrame(pub(1))), second[:3]...), second[3:]},
			[][]byte{pub(1), pub(2)}, nil},
		{"a fragment's continuation is read on its own",
			[][]byte{clientFrames(t, ws.NewBinaryFrame(pub(1)), ws.NewFrame(ws.OpBinary, false, pub(2)[:3]), ws.NewFrame(ws.OpContinuation, true, pub(2)[3:]))},
			[][]byte{append(pub(1), pub(2)[:3]...), pub(2)[3:]}, nil},
		{"[MQTT-6.0.0-1] the packets before a text frame, then its error",
			[][]byte{clientFrames(t, ws.NewBinaryFrame(pub(1)), ws.NewTextFrame([]byte("x")))}, [][]byte{pub(1)}, ErrTextFrame},
		{"the packets before an unmasked frame, then its error",
			[][]byte{append(clientFrames(t, ws.NewBinaryFrame(pub(1))), ws.MustCompileFrame(ws.NewBinaryFrame(pub(2)))...)}, [][]byte{pub(1)}, &FrameError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &countingConn{chunks: tc.chunks}
			c := NewConn(m, ProtocolMQTT, nil)
			buf := make([]byte, 16<<10)
			for i, w := range tc.reads {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("Read %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], w) {
					t.Fatalf("Read %d: % x, want % x", i, buf[:n], w)
				}
			}
			n, err := c.Read(buf)
			var fe *FrameError
			switch {
			case n != 0:
				t.Errorf("last Read: %d more bytes", n)
			case tc.err == nil && err != io.EOF:
				t.Errorf("last Read: %v, want EOF", err)
			case tc.err == ErrTextFrame && !errors.Is(err, ErrTextFrame):
				t.Errorf("last Read: %v, want ErrTextFrame", err)
			case tc.err != nil && tc.err != ErrTextFrame && !errors.As(err, &fe):
				t.Errorf("last Read: %v, want a FrameError", err)
			}
		})
	}
}

// BenchmarkConnWrite is the server side's frame of a small burst, as the
// pipe writes one to the client.
func BenchmarkConnWrite(b *testing.B) {
	c := NewConn(&discardConn{}, ProtocolMQTT, nil)
	p := bytes.Repeat([]byte{0x30, 0x40}, 600)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnRead is the client's burst of 16 frames, one PUBLISH each,
// taken apart in the pipe's buffer.
func BenchmarkConnRead(b *testing.B) {
	var frames []ws.Frame
	for range 16 {
		frames = append(frames, ws.NewBinaryFrame(append([]byte{0x30, 70, 0, 1, 't'}, bytes.Repeat([]byte{1}, 67)...)))
	}
	in := clientFrames(b, frames...)
	r := bytes.NewReader(in)
	c := NewConn(&memConn{in: r}, ProtocolMQTT, nil)
	buf := make([]byte, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(in)
		if n, err := c.Read(buf); err != nil || n != 16*72 {
			b.Fatalf("read %d, %v", n, err)
		}
	}
}

type discardConn struct{ memConn }

func (*discardConn) Write(p []byte) (int, error) { return len(p), nil }

// TestAppendHeader: frame headers as ws.WriteHeader writes them, for every
// length form, masked or not, fin or not.
func TestAppendHeader(t *testing.T) {
	for _, h := range []ws.Header{
		{Fin: true, OpCode: ws.OpBinary, Length: 0},
		{Fin: true, OpCode: ws.OpBinary, Length: 125},
		{Fin: true, OpCode: ws.OpBinary, Length: 126},
		{Fin: false, OpCode: ws.OpContinuation, Length: 0xffff},
		{Fin: true, OpCode: ws.OpClose, Length: 0x10000, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{Fin: true, OpCode: ws.OpPong, Length: 5, Rsv: 0, Masked: true, Mask: [4]byte{9, 8, 7, 6}},
		{Fin: true, OpCode: ws.OpBinary, Length: 1 << 40},
	} {
		var want bytes.Buffer
		if err := ws.WriteHeader(&want, h); err != nil {
			t.Fatal(err)
		}
		if got := appendHeader([]byte{0xee}, h); !bytes.Equal(got[1:], want.Bytes()) || got[0] != 0xee {
			t.Errorf("%+v: % x, want % x", h, got[1:], want.Bytes())
		}
	}
}

// TestConnReadCoalescesClientSide: the client side (Dial, a broker that
// takes WebSocket) joins the broker's unmasked frames the same way, and
// takes a masked one for the protocol error it is.
func TestConnReadCoalescesClientSide(t *testing.T) {
	var in []byte
	var want []byte
	for i := byte(0); i < 8; i++ {
		p := []byte{0x30, 3, 0, 1, i}
		in = append(in, ws.MustCompileFrame(ws.NewBinaryFrame(p))...)
		want = append(want, p...)
	}
	c := newConn(&countingConn{chunks: [][]byte{append(in, clientFrames(t, ws.NewBinaryFrame([]byte{0xc0, 0}))...)}}, ProtocolMQTT, nil, ws.StateClientSide)
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], want) {
		t.Fatalf("Read: % x, %v; want the 8 payloads in one Read", buf[:n], err)
	}
	var fe *FrameError
	if n, err := c.Read(buf); n != 0 || !errors.As(err, &fe) {
		t.Errorf("masked frame from the server: %d bytes, %v; want a FrameError", n, err)
	}
}

// TestConnCloseWriteAfterFIN: what CloseWrite sends depends on how the
// client's side ended. After its FIN between frames, without a close frame,
// the WebSocket is closed [RFC 6455 7.1.4]: only the FIN follows, no close
// frame. After its close frame, the close frame that answered it is the
// last [RFC 6455 5.5.1]. While it still speaks, a close frame 1000 goes
// first. Reads of both sizes take the paths Read has: into the caller's
// buffer at a frame boundary (large), through the frame reader (small).
func TestConnCloseWriteAfterFIN(t *testing.T) {
	pkt := []byte{0xe0, 0} // DISCONNECT
	closeFrame := ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	for _, tc := range []struct {
		name   string
		in     []byte
		readTo bool        // read until EOF before CloseWrite
		want   []ws.OpCode // the frames the server sent, in order
	}{
		{name: "[RFC 6455 7.1.4] the client's FIN: no close frame",
			in: clientFrames(t, ws.NewBinaryFrame(pkt)), readTo: true, want: []ws.OpCode{}},
		{name: "[RFC 6455 5.5.1] the client's close frame: answered once",
			in: clientFrames(t, ws.NewBinaryFrame(pkt), closeFrame), readTo: true, want: []ws.OpCode{ws.OpClose}},
		{name: "the broker ends first: a close frame",
			in: clientFrames(t, ws.NewBinaryFrame(pkt)), want: []ws.OpCode{ws.OpClose}},
	} {
		for _, size := range []int{16, 4096} {
			t.Run(fmt.Sprintf("%s/read %d", tc.name, size), func(t *testing.T) {
				m := &memConn{in: bytes.NewReader(tc.in)}
				c := NewConn(m, ProtocolMQTT, nil)
				if tc.readTo {
					var got []byte
					buf := make([]byte, size)
					for {
						n, err := c.Read(buf)
						got = append(got, buf[:n]...)
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatalf("Read: %v", err)
						}
					}
					if !bytes.Equal(got, pkt) {
						t.Fatalf("read % x, want % x", got, pkt)
					}
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write([]byte{1}); err == nil {
					t.Error("Write after CloseWrite succeeded")
				}
				got := []ws.OpCode{}
				for _, f := range serverFrames(t, m.out.Bytes()) {
					got = append(got, f.Header.OpCode)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("server sent frames %v, want %v", got, tc.want)
				}
			})
		}
	}
}
