package config

import (
	"strings"
	"testing"
)

// TestUpstreamWebSocket: scheme ws and wss take a websocket map whose keys
// default to EMQX's /mqtt and the spec's "mqtt" subprotocol; wss verifies
// the broker as tls does; the map and tls are refused where the scheme
// does not use them.
func TestUpstreamWebSocket(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "u.yaml", Data: []byte(`stream_proxy: {tcp: [1883]}
upstreams:
  - {id: plain, scheme: ws, nodes: {"10.0.0.1:8083": 1}}
  - {id: secure, scheme: wss, websocket: {path: "/mqtt?tenant=a", subprotocol: mqttv3.1}, tls: {server_name: emqx.internal}, nodes: {"10.0.0.1:8084": 1}}
  - {id: none, scheme: ws, websocket: {subprotocol: ""}, nodes: {"10.0.0.1:8083": 1}}
stream_routes: [{upstream_id: plain}, {upstream_id: secure}, {upstream_id: none}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams
	if w := u[0].WebSocket; w == nil || w.Path != "/mqtt" || w.Subprotocol != "mqtt" || u[0].TLS != nil {
		t.Errorf("ws defaults: %+v, tls %+v", w, u[0].TLS)
	}
	if w := u[1].WebSocket; w == nil || w.Path != "/mqtt?tenant=a" || w.Subprotocol != "mqttv3.1" || u[1].TLS == nil || !u[1].TLS.Verify || u[1].TLS.ServerName != "emqx.internal" {
		t.Errorf("wss: %+v, tls %+v", w, u[1].TLS)
	}
	if w := u[2].WebSocket; w == nil || w.Subprotocol != "" {
		t.Errorf("no subprotocol: %+v", w)
	}

	_, err = Parse(Document{Name: "u.yaml", Data: []byte(`stream_proxy: {tcp: [1883]}
node_listen: 9080
upstreams:
  - {id: a, scheme: tcp, websocket: {path: /mqtt}, nodes: {"10.0.0.1:1883": 1}}
  - {id: b, scheme: ws, tls: {verify: true}, nodes: {"10.0.0.1:8083": 1}}
  - {id: c, scheme: ws, websocket: {path: mqtt, subprotocol: "mqtt, wamp"}, nodes: {"10.0.0.1:8083": 1}}
  - {id: d, scheme: wss, websocket: {paht: /mqtt}, nodes: {"10.0.0.1:8084": 1}}
  - {id: e, scheme: websocket, nodes: {"10.0.0.1:8084": 1}}
stream_routes: [{upstream_id: a}]
routes: [{uri: /x, upstream_id: b}]
`)})
	want := []string{
		`u.yaml:4: upstreams[0].websocket: only used with scheme: ws or wss`,
		`u.yaml:5: upstreams[1].tls: only used with scheme: tls, wss or https`,
		`u.yaml:6: upstreams[2].websocket.path: must be a request path starting with "/" (a query may follow), got "mqtt"`,
		`u.yaml:6: upstreams[2].websocket.subprotocol: must be one subprotocol name such as "mqtt" (or "" for none), got "mqtt, wamp"`,
		`u.yaml:7: upstreams[3].websocket.paht: unknown key (did you mean "path"?)`,
		`u.yaml:8: upstreams[4].scheme: must be tcp, tls, ws, wss, http or https, got "websocket"`,
		`routes[0]: upstream "b" has scheme ws: an HTTP route needs scheme http or https`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
