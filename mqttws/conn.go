// Package mqttws carries MQTT over WebSocket (MQTT 5.0 chapter 6, the same
// in 3.1.1): it upgrades an HTTP request and turns the WebSocket into a
// net.Conn of MQTT bytes, so that the proxy reads the CONNECT and pipes the
// session exactly as it does for TCP.
//
//	u := mqttws.Upgrader{AllowOrigin: func(o string) bool { return o == "https://app.example" }}
//	// On a connection that starts with an HTTP request (one byte sniffed):
//	c, fwd, replay, err := u.UpgradeConn(conn, first, "/mqtt")
//	// c: upgraded; replay: any other request, for an HTTP server to answer.
//
//	// Or from an HTTP server's handler:
//	http.HandleFunc("/mqtt", func(w http.ResponseWriter, r *http.Request) {
//		c, err := u.Upgrade(w, r) // refusals are answered with an HTTP status and a reason
//		if err != nil {
//			return
//		}
//		defer c.Close()
//		io.Copy(broker, c) // MQTT bytes, whatever the framing
//	})
//
// Dial is the other side, for brokers that take MQTT over WebSocket only
// (an upstream with scheme ws or wss): on a connection to the broker it
// asks for the path and subprotocol and returns a Conn that masks what it
// sends, as a client must.
//
// Framing, masking and the handshake are github.com/gobwas/ws's: it reads
// frames straight from the socket without a buffer per connection and
// (UpgradeConn) upgrades without net/http or copying headers, so an idle connection costs its socket,
// its TLS state if any and a few words here. What this package adds are the
// MQTT rules: binary frames only [MQTT-6.0.0-1], a packet may span frames
// and a frame may hold several packets [MQTT-6.0.0-2] (so the framing is
// invisible to readers), and the "mqtt" subprotocol [MQTT-6.0.0-3]
// [MQTT-6.0.0-4] (or "mqttv3.1", which MQTT 3.1 clients offer).
package mqttws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// ErrTextFrame is returned by Read when the client sent a text frame; the
// connection has been sent a close frame 1003 [MQTT-6.0.0-1].
var ErrTextFrame = errors.New("MQTT over WebSocket takes binary frames only [MQTT-6.0.0-1], got a text frame")

// FrameError is a WebSocket protocol violation by the client (unmasked
// frame, reserved opcode, bad close code, ...); the connection has been
// sent a close frame 1002.
type FrameError struct{ Err error }

func (e *FrameError) Error() string { return "WebSocket: " + e.Err.Error() }
func (e *FrameError) Unwrap() error { return e.Err }

// Conn is a WebSocket as a stream of MQTT bytes: Read returns the payloads
// of binary frames in order, answering pings and a close by itself; Write
// sends each call as one binary frame. Deadlines, addresses and Close are
// the underlying connection's. NewConn makes the server side of one (a
// client's connection to mqgate), Dial the client side (mqgate's to a
// broker that wants WebSocket), which masks what it sends [RFC 6455 5.3].
type Conn struct {
	net.Conn
	// Protocol is the subprotocol agreed on: "mqtt" or "mqttv3.1" (on the
	// client side, what the broker echoed, "" when it echoed none).
	Protocol string
	client   bool // the client side: frames sent are masked, frames read are not

	src    source        // the socket, after what the handshake read ahead
	rd     wsutil.Reader // frame headers and unmasking, no buffer of its own
	inData bool          // rd is inside a data message
	broken error         // a read failed inside a frame header: the stream is lost
	later  error         // a frame's error, for the Read after the bytes before it

	wmu       sync.Mutex
	closeSent bool
	// finRead: the peer's TCP stream ended between frames, without a
	// close frame. The WebSocket is closed then [RFC 6455 7.1.4], so
	// CloseWrite sends only the FIN: a close frame would go to a peer
	// that has stopped speaking WebSocket (and costs a write per pair).
	finRead bool
}

// source is the socket as the frame reader sees it: first the bytes the
// handshake read past the request, then the connection. It counts what it
// delivers so that a deadline inside a frame header is told from one
// between frames.
//
// The frame reader asks for a frame's header in pieces of 2 to 12 bytes,
// and for a small packet's payload in a few more: one system call each.
// So small reads are served from what one read of the socket brought: at a
// frame's start, where a connection waits while it is idle, into a few
// bytes of its own (a PINGREQ's or DISCONNECT's whole frame, a larger
// frame's header); inside a frame, into a buffer taken from a pool and
// given back as soon as it is empty, which is at once when the bytes were
// one frame or a few. Large reads (payloads) go straight to the caller's
// buffer. An idle connection holds no buffer.
type source struct {
	pending []byte
	ahead   []byte  // unread bytes of the last small read, in small or *pooled
	pooled  *[]byte // the pool's buffer ahead is in, if any
	inPlace bool    // ahead is in the buffer of the Read that runs (Conn.Read)
	small   [32]byte
	conn    net.Conn
	n       int
	// head keeps the first bytes delivered since n was reset (a frame's
	// start), so that a header cut short by a read that would block (a
	// parked connection, pipe.Park) can be read again whole.
	head [ws.MaxHeaderSize]byte
}

// delivered counts and keeps what Read gives the frame reader.
func (s *source) delivered(p []byte) {
	if s.n < len(s.head) {
		copy(s.head[s.n:], p)
	}
	s.n += len(p)
}

// rewind makes the bytes delivered since the frame's start the next to be
// read again, when they are all kept; it reports whether it could.
func (s *source) rewind() bool {
	if s.n > len(s.head) || len(s.pending) > 0 || len(s.ahead) > 0 {
		return false
	}
	s.pending = append([]byte(nil), s.head[:s.n]...)
	s.n = 0
	return true
}

// readAheadSize is the pooled read-ahead buffer, a few MQTT packets' frames.
const readAheadSize = 2048

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

func (s *source) Read(p []byte) (int, error) {
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		s.delivered(p[:n])
		return n, nil
	}
	if len(s.ahead) == 0 {
		if len(p) >= readAheadSize/4 {
			n, err := s.conn.Read(p)
			s.delivered(p[:n])
			return n, err
		}
		b := s.small[:]
		if s.n > 0 { // inside a frame: the rest of it, and what follows
			s.pooled = readAheadPool.Get().(*[]byte)
			b = *s.pooled
		}
		m, err := s.conn.Read(b)
		if m == 0 {
			s.release()
			return 0, err
		}
		// Bytes came with err: the next read from the socket returns it again.
		s.ahead, s.inPlace = b[:m], false
	}
	n := copy(p, s.ahead)
	s.ahead = s.ahead[n:]
	s.delivered(p[:n])
	if len(s.ahead) == 0 {
		s.release()
	}
	return n, nil
}

// directMin is the smallest buffer Read reads the socket into directly:
// a few small frames.
const directMin = 128

// own copies what is left read ahead in the caller's buffer (a frame the
// Read stopped at) into the source's own, before the caller uses its
// buffer again.
func (s *source) own() {
	if !s.inPlace {
		return // ahead is the source's own (or empty)
	}
	s.inPlace = false
	if len(s.ahead) == 0 {
		s.ahead = nil
		return
	}
	var b []byte
	switch {
	case len(s.ahead) <= len(s.small):
		b = s.small[:]
	case len(s.ahead) <= readAheadSize:
		s.pooled = readAheadPool.Get().(*[]byte)
		b = *s.pooled
	default: // a Read stopped before many frames: rare enough to allocate
		b = make([]byte, len(s.ahead))
	}
	s.ahead = b[:copy(b, s.ahead)]
}

// release gives the pooled buffer back, once ahead is empty.
func (s *source) release() {
	if s.pooled != nil {
		readAheadPool.Put(s.pooled)
		s.pooled = nil
	}
	s.ahead = nil
}

// NewConn wraps c, on which a WebSocket handshake has been completed as the
// server; pending are bytes read past the handshake (may be nil).
func NewConn(c net.Conn, protocol string, pending []byte) *Conn {
	return newConn(c, protocol, pending, ws.StateServerSide)
}

func newConn(c net.Conn, protocol string, pending []byte, state ws.State) *Conn {
	wc := &Conn{Conn: c, Protocol: protocol, src: source{pending: pending, conn: c}, client: state.ClientSide()}
	wc.rd = wsutil.Reader{
		Source: &wc.src,
		State:  state,
		// Control frames between the fragments of a message.
		OnIntermediate: func(h ws.Header, r io.Reader) error { return wc.control(h, r) },
	}
	return wc
}

// Buffered reports how many bytes read from the socket wait in c for a
// Read, or 1 when c is inside a frame or holds an error for the next Read
// (pipe.Buffered: a parked connection with none need not be drained before
// it waits for the socket).
func (c *Conn) Buffered() int {
	n := len(c.src.pending) + len(c.src.ahead)
	if n == 0 && (c.inData || c.src.n != 0 || c.later != nil || c.broken != nil) {
		n = 1
	}
	return n
}

// Detachable returns the connection under c when another reader can carry
// the WebSocket from here on (an event loop that frames on its own,
// pipe/epoll): c is the server side, at a message boundary with nothing
// read ahead and no error waiting, and no close frame was sent. Then c is
// not to be used again; else ok is false and c is as it was.
func (c *Conn) Detachable() (under net.Conn, ok bool) {
	c.wmu.Lock()
	closed := c.closeSent
	c.wmu.Unlock()
	if c.client || closed || c.inData || c.later != nil || c.broken != nil || len(c.src.pending)+len(c.src.ahead) > 0 {
		return nil, false
	}
	return c.Conn, true
}

// Read reads MQTT bytes: what the current frame has up to len(p), then the
// payloads of the binary frames that came with it, as long as they are
// read already (no wait for the socket). So a burst of small frames (a
// client sends each packet in a frame of its own) reaches the broker in
// one write, not one per frame. It returns io.EOF when the client closed
// the WebSocket or the socket.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) >= directMin && !c.inData && c.later == nil && c.broken == nil && len(c.src.pending) == 0 && len(c.src.ahead) == 0 {
		// At a message boundary with nothing read ahead, where an idle
		// connection waits: read the socket into p itself and take the
		// frames apart there, each payload moved down over the headers
		// before it (one read, no copy into a buffer of the source's).
		m, err := c.src.conn.Read(p)
		if m == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			if err == io.EOF {
				c.sawFIN()
			}
			return 0, err
		}
		// Bytes came with err: the next read from the socket returns it again.
		c.src.ahead, c.src.inPlace = p[:m], true
		defer c.src.own()
	}
	n, err := c.readFrame(p)
	for err == nil && n > 0 && n < len(p) && !c.inData {
		// At a message boundary: take the next frame when its header and
		// some of its payload are read ahead already.
		k := c.src.readyPayload(c.client)
		if k == 0 {
			break
		}
		m, rerr := c.readFrame(p[n : n+min(k, len(p)-n)])
		n += m
		if rerr != nil {
			// No socket read happened, so this is the frame's own error
			// (c.broken holds it when the connection is lost): the bytes
			// before it go first.
			c.later = rerr
			break
		}
	}
	return n, err
}

// readyPayload is how many payload bytes of the next frame the frame
// reader can take without reading the socket, when that frame is a
// well-formed binary frame (fin or not) whose header is read ahead whole,
// with at least one of its payload bytes; else 0, and the next Read takes
// the frame as it comes. Control and text frames are left to that Read:
// they may answer or fail, which waits on the socket.
func (s *source) readyPayload(client bool) int {
	b := s.pending
	if len(b) == 0 {
		b = s.ahead
	}
	if len(b) < 2 || b[0]&0x7f != byte(ws.OpBinary) || (b[1]&0x80 != 0) == client {
		return 0 // short, not a plain binary frame, or masked the wrong way (a protocol error)
	}
	hlen, length := 2, int64(b[1]&0x7f)
	switch length {
	case 126:
		hlen += 2
	case 127:
		hlen += 8
	}
	if !client {
		hlen += 4 // the mask
	}
	if len(b) <= hlen {
		return 0
	}
	switch length {
	case 126:
		length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		length = int64(binary.BigEndian.Uint64(b[2:10]))
	}
	if length <= 0 {
		return 0 // empty (or an impossible length): the next Read skips or refuses it
	}
	return int(min(length, int64(len(b)-hlen)))
}

// readFrame reads MQTT bytes, as many as the current frame has up to
// len(p), reading frame headers and answering control frames as they come.
func (c *Conn) readFrame(p []byte) (int, error) {
	if c.later != nil {
		err := c.later
		c.later = nil
		return 0, err
	}
	if c.broken != nil {
		return 0, c.broken
	}
	for {
		if c.inData {
			n, err := c.rd.Read(p)
			if err == io.EOF { // the message ended; the next one may follow
				c.inData = false
				if n > 0 {
					return n, nil
				}
				continue
			}
			if err == nil && n == 0 {
				continue // a fragment ended; rd reads the next one's header
			}
			return n, c.readErr(err)
		}
		c.src.n = 0
		hdr, err := c.rd.NextFrame()
		if err != nil {
			var te interface{ Temporary() bool }
			if c.src.n > 0 && errors.As(err, &te) && te.Temporary() && !errors.Is(err, os.ErrDeadlineExceeded) && c.src.rewind() {
				// A parked read with the rest of the header still to come:
				// the next Read parses it again from its first byte.
				return 0, err
			}
			if c.src.n > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				// Part of a header was consumed: a retry would read garbage.
				c.broken = fmt.Errorf("WebSocket frame header cut short: %w", err)
				return 0, c.broken
			}
			if err == io.EOF { // between frames (inside one it is ErrUnexpectedEOF)
				c.sawFIN()
			}
			return 0, c.readErr(err)
		}
		switch {
		case hdr.OpCode.IsControl():
			if err := c.control(hdr, &c.rd); err != nil {
				return 0, err
			}
			if err := c.rd.Discard(); err != nil {
				return 0, c.readErr(err)
			}
		case hdr.OpCode == ws.OpText:
			return 0, c.fail(ws.StatusUnsupportedData, "binary frames only [MQTT-6.0.0-1]", ErrTextFrame)
		default: // binary: its payload, and its continuations', are the stream [MQTT-6.0.0-2]
			c.inData = true
		}
	}
}

// readErr turns a frame reader's protocol error into a FrameError after
// telling the client why; I/O errors pass as they are.
func (c *Conn) readErr(err error) error {
	var pe ws.ProtocolError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe), errors.Is(err, wsutil.ErrFrameTooLarge), errors.Is(err, wsutil.ErrMessageTooLarge),
		// gobwas's header errors are plain errors, not ProtocolErrors; a
		// 64-bit length with its top bit set breaks RFC 6455 5.2 all the
		// same, and the event loop closes it with 1002 (pipe/epoll/ws.go).
		errors.Is(err, ws.ErrHeaderLengthMSB), errors.Is(err, ws.ErrHeaderLengthUnexpected):
		return c.fail(ws.StatusProtocolError, err.Error(), &FrameError{Err: err})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("WebSocket closed inside a frame: %w", err)
	}
	return err
}

// control answers a control frame whose payload r holds (unmasked).
func (c *Conn) control(h ws.Header, r io.Reader) error {
	var buf [ws.MaxControlFramePayloadSize]byte
	p := buf[:h.Length] // CheckHeader bounds it to 125 bytes
	if _, err := io.ReadFull(r, p); err != nil {
		return c.readErr(err)
	}
	switch h.OpCode {
	case ws.OpPing:
		return c.writeFrame(ws.OpPong, p)
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		if len(p) == 1 {
			code, reason = 0, "" // too short for a code: a protocol error below
		}
		if err := ws.CheckCloseFrameData(code, reason); len(p) > 0 && err != nil {
			return c.fail(ws.StatusProtocolError, err.Error(), &FrameError{Err: err})
		}
		if code.Empty() {
			code = ws.StatusNormalClosure
		}
		c.sendClose(code, "")
		c.broken = io.EOF
		return io.EOF // the client closed: as a FIN on TCP
	}
	return nil // pong: nothing to do
}

// Write sends p as one binary frame; a frame may hold several MQTT packets
// or part of one [MQTT-6.0.0-2].
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.writeFrame(ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// framePool holds frames for writing header and payload in one write (one
// TLS record, one segment) for the usual MQTT burst.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10+ws.MaxHeaderSize); return &b }}

// writeFrame sends one final frame: unmasked from the server side, masked
// with a fresh key from the client side [RFC 6455 5.1].
func (c *Conn) writeFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return net.ErrClosed
	}
	if op == ws.OpClose {
		c.closeSent = true
	}
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p)), Masked: c.client}
	if c.client {
		h.Mask = ws.NewMask()
	}
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	b := appendHeader((*bp)[:0], h)
	if c.client {
		return c.writeMasked(b, p, h.Mask)
	}
	if len(b)+len(p) > cap(b) {
		_, err := (&net.Buffers{b, p}).WriteTo(c.Conn)
		return err
	}
	_, err := c.Conn.Write(append(b, p...))
	return err
}

// appendHeader appends h as RFC 6455 5.2 lays a frame header out, as
// ws.WriteHeader writes it but without its two allocations per frame (an
// io.Writer and the header's bytes escape through it): a frame each time
// the pipe passes a burst to the client.
func appendHeader(b []byte, h ws.Header) []byte {
	b0 := byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var mask byte
	if h.Masked {
		mask = 0x80
	}
	switch {
	case h.Length < 126:
		b = append(b, b0, mask|byte(h.Length))
	case h.Length <= 0xffff:
		b = append(b, b0, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(h.Length))
	default:
		b = append(b, b0, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(h.Length))
	}
	if h.Masked {
		b = append(b, h.Mask[:]...)
	}
	return b
}

// writeMasked sends the frame whose header buf holds with payload p masked
// in buf, chunk by chunk, so that the caller's bytes stay as they are.
func (c *Conn) writeMasked(buf, p []byte, mask [4]byte) error {
	for off := 0; ; buf = buf[:0] {
		n := min(len(p)-off, cap(buf)-len(buf))
		start := len(buf)
		buf = append(buf, p[off:off+n]...)
		ws.Cipher(buf[start:], mask, off)
		if _, err := c.Conn.Write(buf); err != nil {
			return err
		}
		if off += n; off == len(p) {
			return nil
		}
	}
}

// failLinger bounds how long a failing connection waits for the client to
// answer its close frame.
const failLinger = 2 * time.Second

// fail ends a connection the client broke: a close frame saying why, then
// the client's remaining input is read (briefly) and dropped, because
// closing a socket with unread input resets it and could destroy the close
// frame in flight. Reads return err from then on.
func (c *Conn) fail(code ws.StatusCode, reason string, err error) error {
	c.broken = err
	c.sendClose(code, reason)
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(failLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
	return err
}

// sendClose sends a close frame once; errors do not matter, the connection
// is ending.
func (c *Conn) sendClose(code ws.StatusCode, reason string) {
	if len(reason) > ws.MaxControlFramePayloadSize-2 {
		reason = reason[:ws.MaxControlFramePayloadSize-2]
	}
	_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// sawFIN notes that the peer's stream ended between frames (finRead).
func (c *Conn) sawFIN() {
	c.wmu.Lock()
	c.finRead = true
	c.wmu.Unlock()
}

// CloseWrite ends the stream towards the client: a close frame 1000, then
// a FIN (or TLS close_notify) when the connection can half-close. After the
// client's FIN without a close frame only the FIN is sent (finRead); after
// its close frame, the close frame that answered it was the last.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	fin := c.finRead
	if fin {
		c.closeSent = true // nothing more goes to the client
	}
	c.wmu.Unlock()
	if !fin {
		c.sendClose(ws.StatusNormalClosure, "")
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
