package config

import (
	"fmt"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultWebSocketPath is where a websocket listener takes MQTT over
// WebSocket unless it says otherwise; seed 004's NGINX and most brokers
// use it.
const DefaultWebSocketPath = "/mqtt"

// WebSocket is how a listener takes MQTT over WebSocket (websocket: true,
// or a map of these keys).
type WebSocket struct {
	// Path is the request path of the upgrade; any other path is answered
	// 404 (or by an HTTP route, on a port that has them).
	Path string
	// Origins are the browser origins allowed to connect, as
	// "scheme://host[:port]", "*" for any, or with a leading "*." in the
	// host for its subdomains. Empty allows any. A request without an
	// Origin header (a device, not a browser) is never refused for it.
	Origins []string
}

func webSocketSection() section[WebSocket] {
	return section[WebSocket]{
		name: "stream_proxy",
		fields: []field[WebSocket]{
			{name: "path", def: "`" + DefaultWebSocketPath + "`", decode: func(d *decoder, kv keyValue, p string, v *WebSocket) {
				s, ok := d.str(kv.val, p)
				if !ok {
					return
				}
				if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, "?# \t") {
					d.errorf(kv.val, p, `must be a URL path starting with "/", without query, got %q`, s)
					return
				}
				v.Path = s
			}},
			{name: "origins", def: "any", decode: func(d *decoder, kv keyValue, p string, v *WebSocket) {
				for i, item := range d.items(kv.val, p) {
					ip := index(p, i)
					s, ok := d.str(item, ip)
					if !ok {
						continue
					}
					if msg := checkOrigin(s); msg != "" {
						d.errorf(item, ip, "%s", msg)
						continue
					}
					v.Origins = append(v.Origins, strings.ToLower(s))
				}
			}},
		},
	}
}

// websocket decodes a listener's websocket: true | false | {path, origins}.
// It returns nil when the listener takes no WebSocket.
func (d *decoder) websocket(n *yaml.Node, path string) *WebSocket {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		on, ok := d.bool(n, path)
		if !ok || !on {
			return nil
		}
		return &WebSocket{Path: DefaultWebSocketPath}
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be true, false or {path, origins}, got %s", describe(n))
		return nil
	}
	ws := &WebSocket{Path: DefaultWebSocketPath}
	webSocketSection().decode(d, n, path, ws)
	return ws
}

// checkOrigin accepts what a browser sends as Origin (RFC 6454), with "*"
// and a "*." host prefix as wildcards. It returns why not, or "".
func checkOrigin(s string) string {
	if s == "*" {
		return ""
	}
	u, err := url.Parse(strings.Replace(s, "://*.", "://wildcard.", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Sprintf(`must be an origin like "https://app.example.com" or "https://*.example.com", or "*", got %q`, s)
	}
	return ""
}

// AllowsOrigin reports whether a browser's Origin header may connect.
// An empty origin (no header: not a browser) is allowed.
func (w *WebSocket) AllowsOrigin(origin string) bool {
	if origin == "" || len(w.Origins) == 0 {
		return true
	}
	origin = strings.ToLower(origin)
	for _, o := range w.Origins {
		if o == "*" || o == origin {
			return true
		}
		if scheme, host, ok := strings.Cut(o, "://*."); ok {
			rest, found := strings.CutPrefix(origin, scheme+"://")
			if found && strings.HasSuffix(rest, "."+host) {
				return true
			}
		}
	}
	return false
}
