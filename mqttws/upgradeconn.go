package mqttws

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Forwarded is what a proxy in front says of the client, read from the
// upgrade request in place: X-Real-IP, and the last entry of the last
// X-Forwarded-For line (the one that proxy added), when they parse.
type Forwarded struct {
	RealIP, ForwardedFor netip.Addr
}

// Addr is the client address the headers give, X-Real-IP first, as
// NGINX's realip module reads them.
func (f Forwarded) Addr() (netip.Addr, bool) {
	switch {
	case f.RealIP.IsValid():
		return f.RealIP, true
	case f.ForwardedFor.IsValid():
		return f.ForwardedFor, true
	}
	return netip.Addr{}, false
}

// maxRequest bounds what UpgradeConn reads of a request before it gives the
// connection up to an HTTP server, which then applies its own limits.
const maxRequest = 16 << 10

// errTooLong ends the handshake's read of a request longer than maxRequest.
var errTooLong = errors.New("upgrade request longer than the WebSocket fast path reads")

// requestPool holds the buffers that keep a request's bytes while it is
// read, so that one not upgraded can be given to an HTTP server whole.
var requestPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// UpgradeConn reads the HTTP request that conn starts with (first: bytes of
// it already read, such as a sniffed first byte) and, when it is a
// WebSocket upgrade for path offering the "mqtt" subprotocol from an
// allowed origin, answers the handshake and returns the connection as MQTT
// bytes, with what the forwarding headers say.
//
// The request is read by github.com/gobwas/ws's Upgrader: through one
// pooled buffer, each header looked at in place, without an http.Request
// or a header map; so an upgrade costs the CPU and memory of the bytes and
// little else. Any other request (another path or method, not an upgrade,
// an origin or subprotocol refused, a malformed one) is not answered: c is
// nil and replay holds every byte read of the connection, to be read again
// by an HTTP server that answers it (net/http, with the messages Upgrade
// gives). err is for a connection that failed meanwhile.
func (u Upgrader) UpgradeConn(conn net.Conn, first []byte, path string) (c *Conn, fwd Forwarded, replay []byte, err error) {
	bp := requestPool.Get().(*[]byte)
	h := &handshake{conn: conn, buf: append((*bp)[:0], first...), path: path, allow: u.AllowOrigin}
	defer func() {
		*bp = h.buf[:0]
		if cap(h.buf) <= maxRequest {
			requestPool.Put(bp)
		}
	}()
	uerr := h.run()
	switch {
	case uerr != nil && h.readErr != nil:
		return nil, fwd, nil, h.readErr // closed, reset or too slow: nothing to answer
	case uerr != nil:
		return nil, fwd, append([]byte(nil), h.buf...), nil
	}
	if u.Timeout > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(u.Timeout))
	}
	if _, err := conn.Write(h.answer.b); err != nil {
		return nil, fwd, nil, err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	var pending []byte
	if end := headerEnd(h.buf); end >= 0 && end < len(h.buf) {
		// A client that did not wait for the 101: its first frames.
		pending = append([]byte(nil), h.buf[end:]...)
	}
	return NewConn(conn, h.proto, pending), h.fwd, nil, nil
}

// Upgrade is an MQTT WebSocket upgrade request that ParseUpgrade accepted.
type Upgrade struct {
	Answer   []byte // the 101 Switching Protocols to send [RFC 6455 4.2.2]
	Protocol string // the subprotocol chosen: ProtocolMQTT or ProtocolMQTT31
	Head     int    // the request head's length: what follows it are the client's first frames
	Fwd      Forwarded
}

// ParseUpgrade checks the request head that req starts with as
// UpgradeConn does (the same code: path, Upgrade, Connection, Version and
// Key [RFC 6455 4.2.1], the "mqtt" subprotocol [MQTT-6.0.0-3], Origin, the
// forwarding headers) without a connection, for an event loop that read
// the head into its own buffer (HeadSize says when it is in):
//
//	if u, ok := mqttws.ParseUpgrade(head, "/mqtt", allow); ok {
//		write(u.Answer) // then the client's frames from head[u.Head:]
//	} // else an HTTP server answers head
//
// A request it does not take (not an upgrade for path, refused, malformed
// or incomplete) reports false: an HTTP server answers it, as it does
// UpgradeConn's replay.
func ParseUpgrade(req []byte, path string, allow func(origin string) bool) (Upgrade, bool) {
	h := &handshake{buf: req, path: path, allow: allow}
	if err := h.run(); err != nil {
		return Upgrade{}, false
	}
	end := headerEnd(req)
	if end < 0 {
		return Upgrade{}, false
	}
	return Upgrade{Answer: append([]byte(nil), h.answer.b...), Protocol: h.proto, Head: end, Fwd: h.fwd}, true
}

// HeadSize is the size of the request head b starts with (its request
// line and headers up to the empty line [RFC 9110 2.1, RFC 9112 2.1]),
// once b holds all of it; 0 until then.
func HeadSize(b []byte) int { return max(headerEnd(b), 0) }

// MaxHead is the most of a request head ParseUpgrade and UpgradeConn read;
// a longer one is an HTTP server's to answer.
const MaxHead = maxRequest

// run reads the request through gobwas/ws's Upgrader and, when it is an
// upgrade this path takes, leaves the answer in h.answer.
func (h *handshake) run() error {
	h.answer.b = h.answerBuf[:0]
	up := ws.Upgrader{
		OnRequest:      h.onRequest,
		OnHeader:       h.onHeader,
		ProtocolCustom: h.protocol,
		// The subprotocol is chosen over all the request's lines, so the
		// Upgrader is told of none and the answer names it here.
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			switch h.proto {
			case ProtocolMQTT:
				return answerMQTT, nil
			case ProtocolMQTT31:
				return answerMQTT31, nil
			}
			return nil, errRefused
		},
	}
	_, err := up.Upgrade(struct {
		io.Reader
		io.Writer
	}{h, &h.answer})
	return err
}

// errRefused is what the handshake's callbacks return for a request the
// fast path does not upgrade; the HTTP server answers it.
var errRefused = errors.New("not an MQTT WebSocket upgrade")

// handshake is one UpgradeConn: the request's bytes as read, and what the
// callbacks found in them.
type handshake struct {
	conn   net.Conn // nil for ParseUpgrade
	buf    []byte   // every byte of the connection read so far
	served int      // how many of buf the Upgrader has read
	path   string
	allow  func(string) bool
	proto  string // the subprotocol to answer with; "" if none offered
	fwd    Forwarded
	// readErr is the connection's read error, which ends the handshake
	// with nothing to answer.
	readErr   error
	answer    appender // the response, written only on success
	answerBuf [256]byte
}

// The 101's subprotocol header [MQTT-6.0.0-4].
var (
	answerMQTT   = ws.HandshakeHeaderString("Sec-WebSocket-Protocol: " + ProtocolMQTT + "\r\n")
	answerMQTT31 = ws.HandshakeHeaderString("Sec-WebSocket-Protocol: " + ProtocolMQTT31 + "\r\n")
)

// Read gives the Upgrader the bytes known first, then the connection's,
// keeping them all.
func (h *handshake) Read(p []byte) (int, error) {
	if h.served < len(h.buf) {
		n := copy(p, h.buf[h.served:])
		h.served += n
		return n, nil
	}
	if h.conn == nil { // ParseUpgrade: the head is all there is
		return 0, io.ErrUnexpectedEOF
	}
	if len(h.buf) >= maxRequest {
		return 0, errTooLong
	}
	p = p[:min(len(p), maxRequest-len(h.buf))]
	n, err := h.conn.Read(p)
	h.buf = append(h.buf, p[:n]...)
	h.served = len(h.buf)
	if err != nil {
		h.readErr = err
	}
	return n, err
}

func (h *handshake) onRequest(uri []byte) error {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	if string(uri) != h.path {
		return errRefused
	}
	return nil
}

// onHeader sees the headers the Upgrader does not check itself, with
// canonical keys.
func (h *handshake) onHeader(key, value []byte) error {
	switch string(key) {
	case "Origin":
		if h.allow != nil && len(value) > 0 && !h.allow(string(value)) {
			return errRefused
		}
	case "X-Real-Ip":
		if a, err := netip.ParseAddr(string(value)); err == nil {
			h.fwd.RealIP = a.Unmap()
		}
	case "X-Forwarded-For":
		if i := bytes.LastIndexByte(value, ','); i >= 0 {
			value = value[i+1:]
		}
		h.fwd.ForwardedFor = netip.Addr{}
		if a, err := netip.ParseAddr(strings.TrimSpace(string(value))); err == nil {
			h.fwd.ForwardedFor = a.Unmap()
		}
	}
	return nil
}

// protocol reads one Sec-WebSocket-Protocol line: "mqtt" wins over
// "mqttv3.1" in any line [MQTT-6.0.0-3] [MQTT-6.0.0-4], as Upgrade picks;
// none at all refuses (OnBeforeUpgrade). It tells the Upgrader of no choice,
// so that it goes on showing it every line.
func (h *handshake) protocol(v []byte) (string, bool) {
	for t := range bytes.SplitSeq(v, []byte(",")) {
		switch t = bytes.TrimSpace(t); {
		case bytes.EqualFold(t, []byte(ProtocolMQTT)):
			h.proto = ProtocolMQTT
		case bytes.EqualFold(t, []byte(ProtocolMQTT31)) && h.proto == "":
			h.proto = ProtocolMQTT31
		}
	}
	return "", true
}

// headerEnd is the offset just past the empty line that ends the request
// head in b (lines end in CRLF or, as the Upgrader also takes, LF), or -1.
func headerEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// appender is an io.Writer appending to b: where the Upgrader writes the
// handshake's answer.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }
