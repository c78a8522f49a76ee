package mqttws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gobwas/ws"
)

// DialError is a broker's answer to the WebSocket handshake that is not an
// upgrade: its HTTP status (404 for a wrong path, say), or why the answer
// was not a WebSocket one.
type DialError struct {
	URL    string
	Status int // the HTTP status, 0 when the answer was not HTTP or broke off
	Err    error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("WebSocket handshake with %s: %v", e.URL, e.Err)
}
func (e *DialError) Unwrap() error { return e.Err }

// Dial does the client side of the WebSocket handshake on c, a connection
// to a broker (TLS already done for wss), asking for path with host as the
// Host header and offering protocol as the subprotocol ("mqtt" as EMQX and
// the spec want [MQTT-6.0.0-3]); "" offers none. It returns c as MQTT
// bytes, framed and masked as a client must, before ctx's deadline:
//
//	bc, err := mqttws.Dial(ctx, tcp, "broker:8083", "/mqtt", "mqtt")
//	bc.Write(connect) // one masked binary frame
//
// A broker that echoes another subprotocol is refused; one that echoes
// none is taken, as browsers and MQTT.js take it.
func Dial(ctx context.Context, c net.Conn, host, path, protocol string) (*Conn, error) {
	return DialHeader(ctx, c, host, path, protocol, nil)
}

// DialHeader is Dial with header added to the handshake request (the
// proxy's X-Real-IP and X-Forwarded-For, say); nil adds nothing.
func DialHeader(ctx context.Context, c net.Conn, host, path, protocol string, header http.Header) (*Conn, error) {
	u := &url.URL{Scheme: "ws", Host: host}
	if ref, err := url.ParseRequestURI(path); err == nil {
		u.Path, u.RawPath, u.RawQuery = ref.Path, ref.RawPath, ref.RawQuery
	} else {
		u.Path = path
	}
	d := ws.Dialer{}
	if len(header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	if protocol != "" {
		d.Protocols = []string{protocol}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Time{}
	}
	_ = c.SetDeadline(deadline)
	// A cancelled dial (a shutdown) must not wait for its deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	br, hs, err := d.Upgrade(c, u)
	stop()
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		if br != nil {
			ws.PutReader(br)
		}
		de := &DialError{URL: u.String(), Err: err}
		var se ws.StatusError
		if errors.As(err, &se) {
			de.Status = int(se)
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			de.Err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, de
	}
	var pending []byte
	if br != nil {
		// Frames the broker sent right after its 101, read with it.
		p, _ := br.Peek(br.Buffered())
		pending = append([]byte(nil), p...)
		ws.PutReader(br)
	}
	return newConn(c, hs.Protocol, pending, ws.StateClientSide), nil
}

// SetLinger is the socket's, when the connection is plain TCP: a health
// probe that only checks the WebSocket opens closes it with a reset, so
// that no TIME_WAIT holds a local port for a minute per probe.
func (c *Conn) SetLinger(sec int) error {
	if tc, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return tc.SetLinger(sec)
	}
	return nil
}
