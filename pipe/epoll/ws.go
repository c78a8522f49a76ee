package epoll

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/gobwas/ws"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

// This file is MQTT over WebSocket inside the loops (ws; for wss the same
// frames inside TLS records, tls.go opening and sealing them), as an
// event-loop proxy carries it: the client's frames are taken apart in the
// loop's read buffer (each payload unmasked and moved down over the headers
// before it, so a burst of frames reaches the broker in one write), and
// what the broker sends is read into the buffer at an offset and becomes
// one binary frame, its 2-10 byte header written just before the bytes, so
// one write per read as for plain TCP. Control frames are answered by the
// loop: a ping with a pong, a close with a close; a text frame or a frame
// breaking RFC 6455 fails the connection with a close frame saying why, as
// mqttws.Conn does on the goroutine and parked paths (the same errors, so
// the same ends in the access log).

// wsHeadroom is the room before a broker read's bytes in the loop's
// buffer for the frame header that goes before them (RFC 6455 5.2: at
// most 10 bytes unmasked).
const wsHeadroom = 10

// wsIn is the state of a client's frames between two reads: the frame a
// read ended inside (its payload still to come, its mask and where in the
// mask the next byte is), a header or control payload cut short, and
// whether a fragmented data message is open. It and the close flag are
// all a WebSocket pair adds to a Conn (about 160 bytes, kept by the loop
// beside its slot: Conn itself stays in its size class).
type wsIn struct {
	left      uint64 // payload bytes of the current frame still to come
	mask      [4]byte
	off       uint8 // payload bytes of the current frame so far, mod 4 (the mask's position)
	op        ws.OpCode
	inFrame   bool // between a header and the end of its payload
	frag      bool // a data message was started and not finished: continuations come [RFC 6455 5.4]
	closeSent bool // a close frame went to the client: no data frame may follow [RFC 6455 5.5.1]
	closedIn  bool // the client's close frame came: its FIN goes to the broker once the bytes before it are out
	hn        uint8
	cn        uint8
	hdr       [ws.MaxHeaderSize]byte              // a header cut short by the end of a read (hn bytes)
	ctl       [ws.MaxControlFramePayloadSize]byte // a control frame's payload so far (cn bytes), unmasked
}

// midFrame reports whether the client's stream stopped inside a frame or
// its header: a FIN then is an error, not a close.
func (w *wsIn) midFrame() bool { return w.inFrame || w.hn > 0 }

// wsFailure is a client's frame that fails the connection: the close code
// and reason to send, and the error the pair ends with.
type wsFailure struct {
	code   ws.StatusCode
	reason string
	err    error
}

// protocolFailure is a frame that breaks RFC 6455: close 1002, the
// mqttws.FrameError the other paths end with.
func protocolFailure(err error) *wsFailure {
	return &wsFailure{code: ws.StatusProtocolError, reason: err.Error(), err: &mqttws.FrameError{Err: err}}
}

// textFailure is a text frame [MQTT-6.0.0-1]: close 1003.
var textFailure = wsFailure{code: ws.StatusUnsupportedData, reason: "binary frames only [MQTT-6.0.0-1]", err: mqttws.ErrTextFrame}

// unframe takes the frames in b apart in place. The payloads of binary and
// continuation frames, unmasked, are moved to the front of b: b[:data] are
// MQTT bytes. It stops after the first control frame that completes
// (op and payload, unmasked; payload is valid until the next call) or at a
// frame that fails the connection; used is how much of b it consumed, and
// the caller calls again with b[used:] for the rest.
func (w *wsIn) unframe(b []byte) (data, used int, op ws.OpCode, payload []byte, fail *wsFailure) {
	i := 0
	for i < len(b) {
		if !w.inFrame {
			n, f := w.header(b[i:])
			i += n
			if f != nil {
				return data, i, 0, nil, f
			}
			if !w.inFrame {
				continue // the header is cut short (all of b is used) or it was an empty data frame
			}
			if w.left == 0 { // an empty control frame
				w.inFrame = false
				return data, i, w.op, w.ctl[:0], nil
			}
		}
		k := int(min(w.left, uint64(len(b)-i)))
		seg := b[i : i+k]
		ws.Cipher(seg, w.mask, int(w.off)) // [RFC 6455 5.3]
		if w.op.IsControl() {
			w.cn += uint8(copy(w.ctl[w.cn:], seg))
		} else {
			data += copy(b[data:], seg)
		}
		i += k
		w.left -= uint64(k)
		w.off = uint8((int(w.off) + k) & 3)
		if w.left == 0 {
			w.inFrame = false
			if w.op.IsControl() {
				n := w.cn
				w.cn = 0
				return data, i, w.op, w.ctl[:n], nil
			}
		}
	}
	return data, i, 0, nil, nil
}

// header reads a frame header [RFC 6455 5.2] from what is kept of one cut
// short and b, and checks it as mqttws.Conn's reader does (ws.CheckHeader:
// reserved bits and opcodes, control frames final and at most 125 bytes
// [RFC 6455 5.5], client frames masked [RFC 6455 5.3], continuations only
// inside a fragmented message [RFC 6455 5.4]); a text frame fails too
// [MQTT-6.0.0-1]. It returns how much of b it used: all of it when the
// header is still cut short (kept in w.hdr).
func (w *wsIn) header(b []byte) (int, *wsFailure) {
	have := int(w.hn)
	h := w.hdr[:]
	src := b // the usual case: the whole header is in b
	if have > 0 || len(b) < ws.MaxHeaderSize {
		src = h[:have+copy(h[have:], b)]
	}
	need := 2
	if len(src) >= 2 {
		switch src[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if src[1]&0x80 != 0 {
			need += 4
		}
	}
	if len(src) < need {
		w.hn = uint8(len(src)) // src is h: b was shorter than any header
		return len(b), nil
	}
	used := need - have // bytes of b in the header
	w.hn = 0
	hd := ws.Header{
		Fin:    src[0]&0x80 != 0,
		Rsv:    (src[0] >> 4) & 0x7,
		OpCode: ws.OpCode(src[0] & 0x0f),
		Masked: src[1]&0x80 != 0,
	}
	p := 2
	switch l := src[1] & 0x7f; l {
	case 126:
		hd.Length = int64(binary.BigEndian.Uint16(src[2:4]))
		p = 4
	case 127:
		v := binary.BigEndian.Uint64(src[2:10])
		if v&(1<<63) != 0 {
			return used, protocolFailure(ws.ErrHeaderLengthMSB)
		}
		hd.Length = int64(v)
		p = 10
	default:
		hd.Length = int64(l)
	}
	if hd.Masked {
		copy(hd.Mask[:], src[p:p+4])
	}
	state := ws.StateServerSide
	if w.frag {
		state |= ws.StateFragmented
	}
	if err := ws.CheckHeader(hd, state); err != nil {
		return used, protocolFailure(err)
	}
	if hd.OpCode == ws.OpText {
		f := textFailure
		return used, &f
	}
	if !hd.OpCode.IsControl() {
		w.frag = !hd.Fin
	}
	w.op, w.mask, w.off, w.left = hd.OpCode, hd.Mask, 0, uint64(hd.Length)
	w.inFrame = hd.Length > 0 || hd.OpCode.IsControl()
	return used, nil
}

// control is what the loop does with a client's control frame [RFC 6455
// 5.5]: a ping's payload is echoed in a pong (reply), a close is answered
// with a close echoing its code (reply, closed: the client's stream ended,
// as a FIN), a pong needs nothing. A close whose payload breaks 5.5.1 or
// 7.4 fails the connection as mqttws.Conn's does.
func control(op ws.OpCode, payload []byte) (reply []byte, closed bool, fail *wsFailure) {
	switch op {
	case ws.OpPing:
		return appendFrame(nil, ws.OpPong, payload), false, nil
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		if len(payload) == 1 {
			code, reason = 0, "" // too short for a code: a protocol error below
		}
		if err := ws.CheckCloseFrameData(code, reason); len(payload) > 0 && err != nil {
			return nil, false, protocolFailure(err)
		}
		if code.Empty() {
			code = ws.StatusNormalClosure
		}
		return closeFrame(code, ""), true, nil
	}
	return nil, false, nil
}

// closeFrame is a close frame from the server [RFC 6455 5.5.1], its reason
// cut to what fits in a control frame.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > ws.MaxControlFramePayloadSize-2 {
		reason = reason[:ws.MaxControlFramePayloadSize-2]
	}
	return appendFrame(nil, ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// appendFrame appends a final, unmasked frame (the server's) of payload p.
func appendFrame(b []byte, op ws.OpCode, p []byte) []byte {
	var h [wsHeadroom]byte
	n := putHeader(h[:], op, len(p))
	return append(append(b, h[wsHeadroom-n:]...), p...)
}

// putHeader writes the header of a final unmasked frame of length bytes
// at the end of h [RFC 6455 5.2] and returns its size.
func putHeader(h []byte, op ws.OpCode, length int) int {
	return putFrameHeader(h, 0x80|byte(op), 0, uint64(length))
}

// putFrameHeader writes a frame header at the end of h: its first byte
// (FIN and opcode), the mask bit (0x80 for a client's frame, its key to
// follow; 0 for the server's) and the length in the fewest bytes [RFC 6455
// 5.2]; it returns the header's size.
func putFrameHeader(h []byte, first, mask byte, length uint64) int {
	e := len(h)
	switch {
	case length < 126:
		h[e-2], h[e-1] = first, mask|byte(length)
		return 2
	case length <= 0xffff:
		h[e-4], h[e-3] = first, mask|126
		binary.BigEndian.PutUint16(h[e-2:], uint16(length))
		return 4
	}
	h[e-10], h[e-9] = first, mask|127
	binary.BigEndian.PutUint64(h[e-8:], length)
	return 10
}

// errClosedInFrame is a client's FIN inside a frame, as mqttws.Conn says it.
var errClosedInFrame = fmt.Errorf("WebSocket closed inside a frame: %w", io.ErrUnexpectedEOF)

// clientMQTT sends b, MQTT bytes a WebSocket or TLS client sent (its
// frames unframed, its records opened), to the broker, and reports whether
// the pair goes on. As for TCP (read): a DISCONNECT last, then the
// client's close (frame, close_notify or FIN), ends the pair at once
// [MQTT-3.14.4-1]; a packet over the limit closes it at the boundary.
func (l *loop) clientMQTT(p *Conn, b []byte) bool {
	m, size, last := p.frame[client].FeedLast(b, int(p.maxPacket))
	l.send(p, broker, b[:m])
	if last >= 0 {
		p.bye = mqtt.IsDisconnect(b[last])
	}
	switch {
	case p.done:
		return false
	case size > 0:
		l.closeAtBoundary(p, pipe.PacketTooLarge, pipe.Goodbye(p.level, mqtt.PacketTooLarge))
		return false
	}
	return true
}

// readWS passes on what a WebSocket client sent, b as read into the loop's
// buffer: the binary frames' payloads go to the broker (one write for all
// the frames of the read, unless a control frame comes between them), the
// control frames are answered, a bad frame fails the connection.
func (l *loop) readWS(p *Conn, b []byte) {
	w := l.ws[p.idx]
	if w.closedIn {
		return // nothing follows a close frame [RFC 6455 5.5.1]
	}
	for len(b) > 0 && !p.done {
		data, used, op, payload, fail := w.unframe(b)
		if data > 0 && !l.clientMQTT(p, b[:data]) {
			return
		}
		if fail != nil {
			l.wsFail(p, fail)
			return
		}
		b = b[used:]
		if payload == nil {
			continue
		}
		reply, closed, fail := control(op, payload)
		if fail != nil {
			l.wsFail(p, fail)
			return
		}
		if reply != nil && !w.closeSent {
			// wss: a close answered goes with close_notify, as nothing
			// may follow it.
			l.sendRaw(p, client, l.wsWire(p, reply, closed))
		}
		if closed {
			// The client closed the WebSocket, as a FIN on TCP: the
			// broker is told so, and what it still sends is dropped, as
			// no data frame may follow a close frame [RFC 6455 5.5.1].
			w.closeSent, w.closedIn = true, true
			if !p.done && p.pending(broker) == nil {
				l.halfClose(p, client)
			} // else flush passes the FIN on behind the frames before the close (wsClosedIn)
			return
		}
	}
}

// send writes b, the client's MQTT bytes, to the broker, behind what waits
// for it already: the frames of one read are forwarded in turn.
func (l *loop) send(p *Conn, d int, b []byte) {
	if q := p.pending(d); q != nil {
		p.blocked.buf[d] = append(q, b...)
		return
	}
	l.forward(p, 1-d, b)
}

// toClient sends b, bytes the broker sent, to the WebSocket client as one
// binary frame. b is a read into the loop's buffer at wsHeadroom (read),
// so the header is written in the room before it and the frame goes out
// in one write. The bytes are counted as MQTT bytes, without the header.
func (l *loop) toClient(p *Conn, b []byte) {
	if len(b) == 0 || l.ws[p.idx].closeSent {
		return // after a close frame no data frame may follow [RFC 6455 5.5.1]
	}
	var frame []byte
	switch at := &b[0]; {
	case p.tls && at == &l.buf[tlsrecord.HeaderRoom+wsHeadroom] && len(b) <= tlsrecord.MaxPlaintext-wsHeadroom:
		// wss, a read at tlsBrokerRead: the frame's header before b, the
		// record's before that, sealed in place (one record a read).
		end := tlsrecord.HeaderRoom + wsHeadroom
		n := putHeader(l.buf[:end], ws.OpBinary, len(b))
		frame = l.tls[p.idx].rec.Seal(l.buf[end-n-tlsrecord.HeaderRoom:end+len(b)], tlsrecord.TypeApplication)
	case !p.tls && at == &l.buf[wsHeadroom]:
		n := putHeader(l.buf[:wsHeadroom], ws.OpBinary, len(b))
		frame = l.buf[wsHeadroom-n : wsHeadroom+len(b)]
	default: // not from a read: no room before it
		frame = l.wsWire(p, appendFrame(nil, ws.OpBinary, b), false)
	}
	p.meter.Add(false, int64(len(b)))
	p.lastActive = l.now
	l.sendRaw(p, client, frame)
}

// wsWire is what goes on the client's socket for b, frames from the
// loop: b itself, or for a wss client b sealed in records (tlsIn.seal),
// with closing then close_notify.
func (l *loop) wsWire(p *Conn, b []byte, closing bool) []byte {
	if !p.tls {
		return b
	}
	return l.tls[p.idx].seal(b, closing)
}

// sendRaw writes b to side d, behind what waits for it; what does not fit
// waits in the backlog. Nothing of it is counted (control frames, or
// frames counted already by toClient).
func (l *loop) sendRaw(p *Conn, d int, b []byte) {
	if q := p.pending(d); q != nil {
		p.blocked.buf[d] = append(q, b...)
		return
	}
	n, err := writeFD(int(p.fd[d]), b)
	if err != nil && err != unix.EAGAIN {
		l.finish(p, errorEnd[d], os.NewSyscallError("write", err), false)
		return
	}
	if n < len(b) {
		l.backlog(p, d, b[n:])
	}
}

// wsGoodbye says the goodbye of a close at a boundary to a WebSocket
// client: final (a DISCONNECT, if any) in a binary frame, then a close
// frame 1000, in one write, as mqttws.Conn's Write and CloseWrite do on
// the other paths (for wss in records, then close_notify: the CloseWrite
// of the tlsrecord.Conn under it). The stream to the client has nothing
// waiting.
func (l *loop) wsGoodbye(p *Conn, final []byte) {
	w := l.ws[p.idx]
	if w.closeSent {
		return
	}
	w.closeSent = true
	var b []byte
	if len(final) > 0 {
		b = appendFrame(b, ws.OpBinary, final)
	}
	b = l.wsWire(p, append(b, closeFrame(ws.StatusNormalClosure, "")...), true)
	_, _ = writeFD(int(p.fd[client]), b) // not counted: none of it is the broker's
}

// wsCloseWrite sends the close frame 1000 that goes before the FIN when
// the broker ended its stream (mqttws.Conn.CloseWrite; for wss sealed,
// then close_notify, so tlsCloseWrite has nothing left to say). Nothing
// waits to be written to the client (halfClose).
func (l *loop) wsCloseWrite(p *Conn) {
	if w := l.ws[p.idx]; !w.closeSent {
		w.closeSent = true
		_, _ = writeFD(int(p.fd[client]), l.wsWire(p, closeFrame(ws.StatusNormalClosure, ""), true))
	}
}

// wsFail fails the WebSocket for a frame the client broke it with: a close
// frame saying why, after what waits for the client, then a FIN, and the
// client's last bytes dropped for at most pipe.Linger (closing a socket
// with unread input resets it, which could destroy the close frame in
// flight), as mqttws.Conn's fail does; the pair ends with the failure's
// error (a ClientError, which the proxy's access log names).
func (l *loop) wsFail(p *Conn, f *wsFailure) {
	if p.closing() {
		l.finish(p, pipe.ClientError, f.err, true)
		return
	}
	w := l.ws[p.idx]
	var final []byte
	if !w.closeSent {
		final = l.wsWire(p, closeFrame(f.code, f.reason), true) // wss: then close_notify, as mqttws.Conn's fail
	}
	w.closeSent = true
	l.failClient(p, f.err, final)
}

// failClient ends a pair whose client broke its framing (a WebSocket
// frame, a TLS record): final, the close frame or alert saying why (nil
// when one went already), goes after what waits for the client, then a
// FIN; the client's last bytes are dropped for at most pipe.Linger, and
// the pair ends as a ClientError with err.
func (l *loop) failClient(p *Conn, err error, final []byte) {
	if p.blocked == nil {
		p.blocked = &backlog{}
	}
	b := p.blocked
	b.closeEnd, b.err, b.cut = pipe.ClientError, err, true
	b.final = final
	b.closeBy = l.now + int64(pipe.CloseGrace)
	l.goodbye(p)
	if !p.done {
		l.arm(p)
	}
}

// eofFrom handles the end of side s's stream (a read of 0, or the FIN
// reported with its last bytes): a WebSocket client that stops inside a
// frame broke it, an error as on the other paths; else halfClose.
func (l *loop) eofFrom(p *Conn, s int) {
	if s == client && !p.closing() {
		inFrame, inRecord := p.ws && l.ws[p.idx].midFrame(), p.tls && l.tlsMidRecord(p)
		switch {
		case inFrame || (inRecord && p.ws):
			// A wss client's FIN inside a record is inside a frame too
			// for mqttws.Conn, which reads the records' io.ErrUnexpectedEOF.
			l.finish(p, pipe.ClientError, errClosedInFrame, false)
			return
		case inRecord:
			l.finish(p, pipe.ClientError, io.ErrUnexpectedEOF, false) // as tlsrecord.Conn's Read
			return
		}
	}
	l.halfClose(p, s)
}

// wsClosedIn reports whether side d's backlog, now written, was the last
// a WebSocket client sent before its close frame: then the close is passed
// on (halfClose) instead of reading the client again.
func (l *loop) wsClosedIn(p *Conn, d int) bool {
	if d != broker || p.eof[client] {
		return false
	}
	return (p.tls && l.tls[p.idx].closedIn) || (p.ws && l.ws[p.idx].closedIn)
}
