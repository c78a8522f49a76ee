package mqttws

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// The subprotocols MQTT over WebSocket is negotiated as: "mqtt" for 3.1.1
// and 5.0 [MQTT-6.0.0-3] [MQTT-6.0.0-4], "mqttv3.1" as MQTT 3.1 clients
// (and MQTT.js with protocolVersion 3) offer it.
const (
	ProtocolMQTT   = "mqtt"
	ProtocolMQTT31 = "mqttv3.1"
)

// Refusal is why Upgrade refused a request, answered to the client with
// Status and Reason as the body.
type Refusal struct {
	Status int
	Kind   string // "not_websocket", "origin", "subprotocol", "handshake"
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// Upgrader checks and upgrades requests for MQTT over WebSocket.
type Upgrader struct {
	// AllowOrigin says whether a browser's Origin may connect; nil allows
	// all. It is not asked for requests without an Origin header.
	AllowOrigin func(origin string) bool
	// Timeout bounds writing the handshake response; zero is no bound.
	Timeout time.Duration
}

// Upgrade answers r with the WebSocket handshake and returns the hijacked
// connection as MQTT bytes. A request that is not a WebSocket upgrade,
// comes from an origin not allowed or does not offer the "mqtt"
// subprotocol is answered with an HTTP error saying so, and the error is a
// *Refusal; the connection then stays with net/http.
func (u Upgrader) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	refuse := func(status int, kind, format string, args ...any) (*Conn, error) {
		ref := &Refusal{Status: status, Kind: kind, Reason: fmt.Sprintf(format, args...)}
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
		}
		w.Header().Set("Connection", "close")
		http.Error(w, ref.Reason, status)
		return nil, ref
	}
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return refuse(http.StatusUpgradeRequired, "not_websocket",
			"this path takes MQTT over WebSocket: a GET with Upgrade: websocket")
	}
	if o := r.Header.Get("Origin"); o != "" && u.AllowOrigin != nil && !u.AllowOrigin(o) {
		return refuse(http.StatusForbidden, "origin", "origin %q is not allowed", o)
	}
	proto := ""
	switch {
	case headerHasToken(r.Header, "Sec-WebSocket-Protocol", ProtocolMQTT):
		proto = ProtocolMQTT
	case headerHasToken(r.Header, "Sec-WebSocket-Protocol", ProtocolMQTT31):
		proto = ProtocolMQTT31
	default:
		return refuse(http.StatusBadRequest, "subprotocol",
			"the WebSocket subprotocol %q must be offered [MQTT-6.0.0-3]; got %q", ProtocolMQTT, r.Header.Values("Sec-WebSocket-Protocol"))
	}
	hu := ws.HTTPUpgrader{Timeout: u.Timeout, Protocol: func(p string) bool { return p == proto }}
	conn, rw, hs, err := hu.Upgrade(r, w)
	if err != nil {
		// gobwas has answered the client (400, 426, ...) on the hijacked
		// connection, which is then ours to close.
		if conn != nil {
			_ = conn.Close()
		}
		var rej *ws.ConnectionRejectedError
		status := http.StatusBadRequest
		if errors.As(err, &rej) {
			status = rej.StatusCode()
		}
		return nil, &Refusal{Status: status, Kind: "handshake", Reason: "WebSocket handshake: " + err.Error()}
	}
	var pending []byte
	if n := rw.Reader.Buffered(); n > 0 {
		// A client that did not wait for the 101 (allowed to pipeline
		// nothing, but some do): those bytes are its first frames.
		p, _ := rw.Reader.Peek(n)
		pending = append([]byte(nil), p...)
	}
	return NewConn(conn, hs.Protocol, pending), nil
}

// IsUpgrade reports whether r asks for a WebSocket (Upgrade: websocket).
func IsUpgrade(r *http.Request) bool { return headerHasToken(r.Header, "Upgrade", "websocket") }

// headerHasToken reports whether a comma-separated header holds token,
// case-insensitively, in any of its lines.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
