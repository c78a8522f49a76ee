package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/certtest"
)

// TestHTTPRoutes: node_listen merges with a stream_proxy.tcp entry on the
// same address into one listener serving both; routes decode in APISIX's
// shape.
func TestHTTPRoutes(t *testing.T) {
	t.Parallel()
	certFile, keyFile := certtest.NewCA(t, "CA").Server(t, certtest.ECDSA, "a.example").WriteFiles(t, t.TempDir(), "server")
	cfg, err := Parse(Document{Name: "h.yaml", Data: []byte(fmt.Sprintf(`
apisix:
  node_listen: [9000, {ip: 127.0.0.1, port: 9080}]
  ssl: {enable: true, listen: [{port: 9443}]}
stream_proxy:
  tcp: [{addr: 9000, websocket: true}]
ssls: [{id: 1, cert: %s, key: %s, snis: [a.example]}]
upstreams:
  - {id: web, scheme: http, nodes: {"127.0.0.1:8080": 1}}
  - {id: mqtt, nodes: {"127.0.0.1:1883": 1}}
stream_routes: [{upstream_id: mqtt}]
routes:
  - {uri: "/api/*", hosts: [api.example, "*.api.example"], methods: [get], upstream_id: web, priority: 2}
  - {id: site, uris: [/, /index.html], pass_host: rewrite, upstream_host: in.example, upstream: {scheme: https, nodes: {"127.0.0.1:8443": 1}}}
`, certFile, keyFile))})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range cfg.StreamProxy.TCP {
		got = append(got, l.Addr+map[bool]string{true: " http", false: ""}[l.HTTP]+map[bool]string{true: "-only", false: ""}[l.HTTPOnly]+map[bool]string{true: " tls", false: ""}[l.TLS])
	}
	if want := ":9000 http|127.0.0.1:9080 http-only|:9443 http-only tls"; strings.Join(got, "|") != want {
		t.Errorf("listeners %q, want %q", strings.Join(got, "|"), want)
	}
	if len(cfg.Routes) != 2 || cfg.Routes[0].ID != "http-route-0" || cfg.Routes[0].Methods[0] != "GET" ||
		cfg.Routes[1].Upstream.ID != "http-route:site" || cfg.Routes[1].Upstream.TLS == nil {
		t.Errorf("routes %+v", cfg.Routes)
	}
}

func TestHTTPRouteErrors(t *testing.T) {
	t.Parallel()
	_, err := Parse(Document{Name: "h.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
node_listen: 9000
apisix: {ssl: {listen: [9000]}}
upstreams:
  - {id: mqtt, nodes: {"127.0.0.1:1883": 1}}
  - {id: web, scheme: http, nodes: {"127.0.0.1:8080": 1}}
  - {id: probed, scheme: http, nodes: {"127.0.0.1:8081": 1}, checks: {active: {type: mqtt}}}
stream_routes: [{upstream_id: web}]
routes:
  - {uri: api, upstream_id: mqtt}
  - {uri: /x, pass_host: rewrite, upstream_id: web}
  - {uri: /y, host: "a/b", methods: [FETCH], upstream_id: nope}
`)})
	want := []string{
		`h.yaml:3: apisix.ssl.listen[0]: listener ":9000" is tls: false in h.yaml:1 but HTTPS here: a port is TLS or not for every protocol on it`,
		`h.yaml:7: upstream "probed" has scheme http: its active checks need type tcp, http or https (an MQTT probe of an HTTP server fails)`,
		`h.yaml:8: stream route "route-0": upstream "web" has scheme http: a stream route needs scheme tcp, tls, ws or wss`,
		`h.yaml:10: routes[0]: upstream "mqtt" has scheme tcp: an HTTP route needs scheme http or https`,
		`h.yaml:10: routes[0].uri: must be a path starting with "/", a prefix ending in "/*", got "api"`,
		`h.yaml:11: routes[1].upstream_host: required with pass_host: rewrite`,
		`h.yaml:12: routes[2].host: must be a host name like "api.example.com" or "*.example.com", got "a/b"`,
		`h.yaml:12: routes[2].methods: unknown method "FETCH"`,
		`h.yaml:12: routes[2].upstream_id: no upstream with id "nope"`,
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
