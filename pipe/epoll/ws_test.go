package epoll

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame is a client's frame as RFC 6455 5.2 lays it out, masked with
// mask unless unmasked; rsv sets the reserved bits, and length127 forces
// the 64-bit length form with its top bit as given.
type clientFrame struct {
	fin      bool
	rsv      byte
	op       ws.OpCode
	payload  []byte
	unmasked bool
	len127   bool
	msb      bool
}

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

func (f clientFrame) bytes() []byte {
	b0 := byte(f.op) | f.rsv<<4
	if f.fin {
		b0 |= 0x80
	}
	var m byte
	if !f.unmasked {
		m = 0x80
	}
	out := []byte{b0}
	n := len(f.payload)
	switch {
	case f.len127:
		out = append(out, m|127)
		v := uint64(n)
		if f.msb {
			v |= 1 << 63
		}
		out = binary.BigEndian.AppendUint64(out, v)
	case n < 126:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	p := bytes.Clone(f.payload)
	if !f.unmasked {
		out = append(out, testMask[:]...)
		ws.Cipher(p, testMask, 0)
	}
	return append(out, p...)
}

func stream(fs ...clientFrame) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f.bytes()...)
	}
	return b
}

func bin(p string) clientFrame               { return clientFrame{fin: true, op: ws.OpBinary, payload: []byte(p)} }
func ctl(op ws.OpCode, p []byte) clientFrame { return clientFrame{fin: true, op: op, payload: p} }

// outcome is what the state machine made of a stream: the MQTT bytes, the
// control frames in order (with what the loop answers), and the failure's
// close code.
type outcome struct {
	data []byte
	ctl  []string
	fail ws.StatusCode
	why  string
	mid  bool // the stream ended inside a frame
}

// feed runs the client's stream through a wsIn in reads of at most chunk
// bytes (0: one read), as the loop does with its read buffer.
func feed(in []byte, chunk int) outcome {
	var (
		w   wsIn
		out outcome
	)
	if chunk <= 0 {
		chunk = len(in) + 1
	}
	for off := 0; off < len(in); off += chunk {
		if feedRead(&w, bytes.Clone(in[off:min(off+chunk, len(in))]), &out) {
			return out
		}
	}
	out.mid = w.midFrame()
	return out
}

// feedRead takes one read's frames b apart as readWS does, adding what
// they make to out; it reports whether a frame failed the connection.
func feedRead(w *wsIn, b []byte, out *outcome) (failed bool) {
	for len(b) > 0 {
		data, used, op, payload, fail := w.unframe(b)
		if data > used || used > len(b) || used == 0 {
			panic(fmt.Sprintf("unframe of %d bytes: data %d, used %d", len(b), data, used))
		}
		out.data = append(out.data, b[:data]...)
		if fail != nil {
			out.fail, out.why = fail.code, fail.err.Error()
			return true
		}
		if payload != nil {
			reply, closed, f := control(op, payload)
			if f != nil {
				out.fail, out.why = f.code, f.err.Error()
				return true
			}
			out.ctl = append(out.ctl, fmt.Sprintf("%s %q -> % x closed=%v", map[ws.OpCode]string{ws.OpPing: "ping", ws.OpPong: "pong", ws.OpClose: "close"}[op], payload, reply, closed))
		}
		b = b[used:]
	}
	return false
}

func TestUnframe(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80 kB: the 64-bit length
	mid := bytes.Repeat([]byte{0xa5}, 300)                // the 16-bit length
	for _, tc := range []struct {
		name string
		in   []byte
		data []byte
		ctl  []string
		fail ws.StatusCode
		why  string
		mid  bool
	}{
		{name: "RFC 6455 5.3: a masked binary frame is unmasked", in: stream(bin("\x10\x0chello")), data: []byte("\x10\x0chello")},
		{name: "RFC 6455 5.2: 16-bit payload length", in: stream(clientFrame{fin: true, op: ws.OpBinary, payload: mid}), data: mid},
		{name: "RFC 6455 5.2: 64-bit payload length", in: stream(clientFrame{fin: true, op: ws.OpBinary, payload: big}), data: big},
		{name: "RFC 6455 5.2: 64-bit length form for a short payload", in: stream(clientFrame{fin: true, op: ws.OpBinary, payload: []byte("ab"), len127: true}), data: []byte("ab")},
		{name: "RFC 6455 5.2: empty binary frames carry nothing", in: stream(bin(""), bin("x"), bin("")), data: []byte("x")},
		{name: "MQTT-6.0.0-2: several frames in one read make one stream", in: stream(bin("\xc0"), bin("\x00\xc0\x00"), bin("\xe0\x00")), data: []byte("\xc0\x00\xc0\x00\xe0\x00")},
		{name: "RFC 6455 5.4: a fragmented message is its fragments' payloads",
			in:   stream(clientFrame{op: ws.OpBinary, payload: []byte("ab")}, clientFrame{op: ws.OpContinuation, payload: []byte("cd")}, clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("ef")}, bin("g")),
			data: []byte("abcdefg")},
		{name: "RFC 6455 5.4, 5.5: a ping between fragments",
			in:   stream(clientFrame{op: ws.OpBinary, payload: []byte("ab")}, ctl(ws.OpPing, []byte("?")), clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("cd")}),
			data: []byte("abcd"), ctl: []string{`ping "?" -> 8a 01 3f closed=false`}},
		{name: "RFC 6455 5.5.2, 5.5.3: a ping is answered with a pong echoing it", in: stream(ctl(ws.OpPing, []byte("are you there")), bin("\xc0\x00")),
			data: []byte("\xc0\x00"), ctl: []string{`ping "are you there" -> 8a 0d 61 72 65 20 79 6f 75 20 74 68 65 72 65 closed=false`}},
		{name: "RFC 6455 5.5.2: an empty ping", in: stream(ctl(ws.OpPing, nil)), ctl: []string{`ping "" -> 8a 00 closed=false`}},
		{name: "RFC 6455 5.5.3: a pong needs nothing", in: stream(ctl(ws.OpPong, []byte("x"))), ctl: []string{`pong "x" ->  closed=false`}},
		{name: "RFC 6455 5.5.1: a close is answered with its code", in: stream(bin("a"), ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))),
			data: []byte("a"), ctl: []string{`close "\x03\xe9bye" -> 88 02 03 e9 closed=true`}},
		{name: "RFC 6455 5.5.1: an empty close is answered 1000", in: stream(ctl(ws.OpClose, nil)), ctl: []string{`close "" -> 88 02 03 e8 closed=true`}},
		{name: "RFC 6455 5.5.1: a close of one byte", in: stream(ctl(ws.OpClose, []byte{3})), fail: ws.StatusProtocolError},
		{name: "RFC 6455 7.4.1: a close with a code not to be sent (1005)", in: stream(ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNoStatusRcvd, ""))), fail: ws.StatusProtocolError, why: "status code"},
		{name: "MQTT-6.0.0-1: a text frame", in: stream(bin("ok"), clientFrame{fin: true, op: ws.OpText, payload: []byte("hello")}), data: []byte("ok"), fail: ws.StatusUnsupportedData, why: "MQTT-6.0.0-1"},
		{name: "RFC 6455 5.1, 5.3: an unmasked client frame", in: stream(clientFrame{fin: true, op: ws.OpBinary, payload: []byte("x"), unmasked: true}), fail: ws.StatusProtocolError, why: "masked"},
		{name: "RFC 6455 5.2: reserved bits without an extension", in: stream(clientFrame{fin: true, rsv: 4, op: ws.OpBinary, payload: []byte("x")}), fail: ws.StatusProtocolError, why: "rsv"},
		{name: "RFC 6455 5.2: a reserved data opcode", in: stream(clientFrame{fin: true, op: 3, payload: []byte("x")}), fail: ws.StatusProtocolError, why: "reserved op code"},
		{name: "RFC 6455 5.2: a reserved control opcode", in: stream(clientFrame{fin: true, op: 0xb}), fail: ws.StatusProtocolError, why: "reserved op code"},
		{name: "RFC 6455 5.2: the 64-bit length's top bit", in: stream(clientFrame{fin: true, op: ws.OpBinary, payload: []byte("x"), len127: true, msb: true}), fail: ws.StatusProtocolError, why: "most significant bit"},
		{name: "RFC 6455 5.5: a control frame not final", in: stream(clientFrame{op: ws.OpPing}), fail: ws.StatusProtocolError, why: "not final"},
		{name: "RFC 6455 5.5: a control payload over 125 bytes", in: stream(ctl(ws.OpPing, mid[:126])), fail: ws.StatusProtocolError, why: "payload limit"},
		{name: "RFC 6455 5.4: a continuation with no message open", in: stream(clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("x")}), fail: ws.StatusProtocolError, why: "unexpected continuation"},
		{name: "RFC 6455 5.4: a new message inside a fragmented one", in: stream(clientFrame{op: ws.OpBinary, payload: []byte("a")}, bin("b")), data: []byte("a"), fail: ws.StatusProtocolError, why: "non-continuation"},
		{name: "RFC 6455 5.2: the stream stops inside a payload", in: stream(bin("abcdef"))[:8], data: []byte("ab"), mid: true},
		{name: "RFC 6455 5.2: the stream stops inside a header", in: stream(bin("ab"), bin("cd"))[:11], data: []byte("ab"), mid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every cut of the stream into reads gives the same: headers,
			// masks and control payloads cut anywhere carry over.
			chunks := []int{0, 1, 2, 3, 5, 7, 13, 64, 1000}
			for _, chunk := range chunks {
				got := feed(tc.in, chunk)
				if !bytes.Equal(got.data, tc.data) || strings.Join(got.ctl, "\n") != strings.Join(tc.ctl, "\n") || got.fail != tc.fail || got.mid != tc.mid {
					t.Fatalf("in reads of %d: data %q, control %q, fail %d (%s), mid %v;\nwant %q, %q, fail %d, mid %v",
						chunk, trim(got.data), got.ctl, got.fail, got.why, got.mid, trim(tc.data), tc.ctl, tc.fail, tc.mid)
				}
				if !strings.Contains(got.why, tc.why) {
					t.Fatalf("in reads of %d: failure %q, want it to say %q", chunk, got.why, tc.why)
				}
			}
		})
	}
}

func trim(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// TestPutHeader: the server's frame headers are RFC 6455 5.2's three
// length forms, unmasked, final.
func TestPutHeader(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 0xffff, 0x10000, readBufSize} {
		var h [wsHeadroom]byte
		k := putHeader(h[:], ws.OpBinary, n)
		hd, err := ws.ReadHeader(bytes.NewReader(h[wsHeadroom-k:]))
		if err != nil || !hd.Fin || hd.Masked || hd.OpCode != ws.OpBinary || hd.Length != int64(n) || hd.Rsv != 0 {
			t.Errorf("length %d: header % x read as %+v, %v", n, h[wsHeadroom-k:], hd, err)
		}
		if want := map[bool]int{true: 2}[n < 126]; want != 0 && k != want {
			t.Errorf("length %d: %d header bytes, want %d", n, k, want)
		}
	}
}

// FuzzUnframe: whatever the client sends, the state machine neither
// panics nor makes bytes up, and cutting the stream into reads anywhere
// changes nothing of what it makes of it.
func FuzzUnframe(f *testing.F) {
	f.Add(stream(bin("\x10\x0chello")), uint16(1))
	f.Add(stream(clientFrame{op: ws.OpBinary, payload: []byte("ab")}, ctl(ws.OpPing, []byte("?")), clientFrame{fin: true, op: ws.OpContinuation, payload: []byte("cd")}), uint16(3))
	f.Add(stream(bin("a"), ctl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))), uint16(5))
	f.Add(stream(clientFrame{fin: true, op: ws.OpBinary, payload: bytes.Repeat([]byte{1}, 300)}), uint16(7))
	f.Add(stream(clientFrame{fin: true, op: ws.OpText, payload: []byte("hi")}), uint16(2))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		whole := feed(in, 0)
		cut := feed(in, int(chunk%64)+1)
		if len(whole.data) > len(in) {
			t.Fatalf("%d MQTT bytes out of %d", len(whole.data), len(in))
		}
		if !bytes.Equal(whole.data, cut.data) || strings.Join(whole.ctl, "\n") != strings.Join(cut.ctl, "\n") || whole.fail != cut.fail || whole.mid != cut.mid {
			t.Fatalf("one read: %q %q %d %v; reads of %d: %q %q %d %v", whole.data, whole.ctl, whole.fail, whole.mid, chunk%64+1, cut.data, cut.ctl, cut.fail, cut.mid)
		}
	})
}
