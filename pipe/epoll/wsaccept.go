package epoll

import (
	"errors"
	"io"
	"net"
	"os"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/pipe"
)

// This file is a WebSocket client's upgrade inside the loops: the Session
// reads the HTTP request head as the first packet (its own First.Frame),
// checks it and has the loop write the 101 (Upgrade); the loop then takes
// the client's frames apart as a ws pair's (ws.go) while it reads the
// CONNECT, so that the Session gets MQTT bytes as from a TCP client, and
// the pair it pipes is a WebSocket pair from the first byte on.

// Upgrade answers a pending Conn's client, whose first packet b[:head] was
// an upgrade to MQTT over WebSocket, with answer (the 101 Switching
// Protocols [RFC 6455 4.2.2]), and reads its next first packet, read as f
// says, from the WebSocket frames that follow: b[head:] (frames sent
// before the 101 came) and what the socket has. b is the Conn's to read
// into. The Session's FirstPacket or FirstFailed follows, with MQTT bytes;
// a ping before it is answered, a close or a bad frame fails it (io.EOF or
// the frame's mqttws error, after a close frame). From then on Pipe sends
// the CONNACK in a binary frame and the pair is a WebSocket pair
// (Group.AddWebSocket), Refuse sends its packet in a binary frame and a
// close frame. On a pending Conn only, from FirstPacket.
func (p *Conn) Upgrade(answer, b []byte, head int, f First) {
	l := p.loop.Load()
	pr := p.pre
	fd := int(p.fd[client])
	if n, err := writeFD(fd, answer); err != nil || n < len(answer) {
		if err == nil || err == unix.EAGAIN {
			err = io.ErrShortWrite // a fresh socket's buffer holds a 101: the client reads nothing
		}
		l.endPre(p, pipe.ClientError, os.NewSyscallError("write", err))
		return
	}
	p.ws = true
	l.makeRoom(p)
	l.ws[p.idx] = new(wsIn)
	n := copy(b, b[head:])
	pr.first, pr.phase, pr.due = f, phaseFirst, l.now+int64(f.Timeout)
	pr.buf = b[:0]
	l.arm(p)
	if n > 0 && (!l.wsFirst(p, 0, n) || l.firstIn(p)) {
		return
	}
	l.readFirst(p)
}

// wsFirst takes apart the n bytes a read put at pr.buf[at:] (pr.buf holds
// the at MQTT bytes before them), leaving the MQTT bytes of their binary
// frames in pr.buf; a control frame is answered. It reports false when
// the connection failed (the Session was told).
func (l *loop) wsFirst(p *Conn, at, n int) bool {
	pr := p.pre
	w := l.ws[p.idx]
	b := pr.buf[:at+n]
	out := at
	for i := at; i < at+n; {
		data, used, op, payload, fail := w.unframe(b[i : at+n])
		out += copy(b[out:], b[i:i+data])
		i += used
		if fail == nil && payload != nil {
			var reply []byte
			var closed bool
			reply, closed, fail = control(op, payload)
			if fail == nil && reply != nil {
				_, _ = writeFD(int(p.fd[client]), reply)
			}
			if fail == nil && closed {
				w.closeSent = true
				pr.buf = b[:out]
				l.firstFailed(p, io.EOF) // closed before its CONNECT
				return false
			}
		}
		if fail != nil {
			if !w.closeSent {
				w.closeSent = true
				_, _ = writeFD(int(p.fd[client]), closeFrame(fail.code, fail.reason))
			}
			pr.buf = b[:out]
			l.firstFailed(p, fail.err)
			return false
		}
	}
	pr.buf = b[:out]
	return true
}

// DetachWebSocket is Detach for a Conn that Upgrade made a WebSocket
// client: it also returns the bytes that resume its frames where the loop
// stopped inside them (wsResume), to be read before the socket's by a
// server-side WebSocket reader (mqttws.NewConn's pending).
func (p *Conn) DetachWebSocket() (*net.TCPConn, []byte, error) {
	if !p.ws {
		return nil, nil, errors.New("epoll: not a WebSocket client")
	}
	l := p.loop.Load()
	resume := wsResume(l.ws[p.idx])
	c, err := p.Detach()
	return c, resume, err
}

// wsResume is what, read before the rest of the client's stream, makes a
// fresh server-side reader of frames see that stream as valid frames
// again from where w is: inside a data frame, a header for the rest of it
// (its mask turned to where the payload is [RFC 6455 5.3]); inside a
// control frame, its header and the payload so far masked again; a header
// cut short, its bytes. Inside a fragmented message the reader is first
// given an empty non-final binary frame, so that the continuations that
// follow are in order [RFC 6455 5.4]; a resumed data frame is sent as a
// binary one for the same reason (MQTT does not see message boundaries
// [MQTT-6.0.0-2]).
func wsResume(w *wsIn) []byte {
	if w == nil {
		return nil
	}
	var b []byte
	switch {
	case w.inFrame && w.op.IsControl():
		if w.frag {
			b = appendMasked(b, ws.OpBinary, false, [4]byte{}, nil, 0)
		}
		payload := append([]byte(nil), w.ctl[:w.cn]...)
		ws.Cipher(payload, w.mask, 0)
		return appendMasked(b, w.op, true, w.mask, payload, uint64(w.cn)+w.left)
	case w.inFrame:
		var m [4]byte
		for i := range m {
			m[i] = w.mask[(int(w.off)+i)&3]
		}
		return appendMasked(b, ws.OpBinary, !w.frag, m, nil, w.left)
	}
	if w.frag {
		b = appendMasked(b, ws.OpBinary, false, [4]byte{}, nil, 0)
	}
	return append(b, w.hdr[:w.hn]...)
}

// appendMasked appends a client's (masked) frame header of length bytes,
// and the first bytes of its payload, masked already.
func appendMasked(b []byte, op ws.OpCode, fin bool, mask [4]byte, payload []byte, length uint64) []byte {
	first := byte(op)
	if fin {
		first |= 0x80
	}
	var h [wsHeadroom]byte
	n := putFrameHeader(h[:], first, 0x80, length)
	b = append(b, h[wsHeadroom-n:]...)
	b = append(b, mask[:]...)
	return append(b, payload...)
}
