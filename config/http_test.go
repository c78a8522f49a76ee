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
  - {id: mqtt, scheme: tcp, nodes: {"127.0.0.1:1883": 1}}
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
		`h.yaml:8: stream route "route-0": upstream "web" has scheme http and HTTP routes use it: its nodes speak HTTP, a stream route needs MQTT brokers (scheme tcp, tls, ws or wss); give the stream route an upstream of its own`,
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

// TestAPISIXUpstreamDefaults loads upstreams as APISIX writes and stores
// them: no scheme on an HTTP route's upstream (APISIX's default is http),
// and the filled-in "scheme": "http", "pass_host": "pass" on the upstream
// of a stream route, which APISIX's stream proxy ignores.
func TestAPISIXUpstreamDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "a.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
node_listen: 9080
upstreams:
  - {id: web, nodes: {"127.0.0.1:8080": 1}, pass_host: rewrite, upstream_host: in.example}
  - {id: brokers, type: chash, key: mqtt_client_id, scheme: http, pass_host: pass, hash_on: vars, nodes: {"127.0.0.1:1883": 1}}
stream_routes:
  - {id: mqtt, upstream_id: brokers}
  - {id: inline, upstream: {scheme: http, pass_host: pass, nodes: {"127.0.0.1:1884": 1}}}
routes:
  - {id: site, uri: /*, upstream_id: web}
  - {id: own, uri: /own, pass_host: node, upstream_id: web}
  - {id: inline, uri: /in, upstream: {nodes: {"127.0.0.1:8081": 1}}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	schemes := map[string]string{}
	for _, u := range cfg.Upstreams {
		schemes[u.ID] = u.Scheme
	}
	if schemes["web"] != "http" || schemes["brokers"] != "tcp" {
		t.Errorf("schemes %v, want web http (APISIX's default), brokers tcp (stream routes ignore http)", schemes)
	}
	if s := cfg.StreamRoutes[1].Upstream.Scheme; s != "tcp" {
		t.Errorf("inline stream upstream scheme %q, want tcp", s)
	}
	if s := cfg.Routes[2].Upstream.Scheme; s != "http" {
		t.Errorf("inline HTTP upstream scheme %q, want http", s)
	}
	// The upstream's pass_host applies to a route without its own.
	if r := cfg.Routes[0]; r.PassHost != PassHostRewrite || r.UpstreamHost != "in.example" {
		t.Errorf("route site: pass_host %q upstream_host %q, want the upstream's rewrite in.example", r.PassHost, r.UpstreamHost)
	}
	if r := cfg.Routes[1]; r.PassHost != PassHostNode {
		t.Errorf("route own: pass_host %q, want its own node", r.PassHost)
	}
	if r := cfg.Routes[2]; r.PassHost != PassHostPass {
		t.Errorf("route inline: pass_host %q, want pass", r.PassHost)
	}
	// An upstream only an HTTP route uses is used (not warned about).
	for _, w := range cfg.Warnings {
		t.Errorf("unexpected warning %v", w)
	}
	ignored := strings.Join(cfg.Ignored, "\n")
	for _, want := range []string{"a.yaml:5: upstreams[1].scheme", "a.yaml:8: stream_routes[1].upstream.scheme"} {
		if !strings.Contains(ignored, want) {
			t.Errorf("ignored list lacks %q:\n%s", want, ignored)
		}
	}
}

func TestAPISIXUpstreamSchemeErrors(t *testing.T) {
	t.Parallel()
	_, err := Parse(Document{Name: "s.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
node_listen: 9080
upstreams:
  - {id: tlsy, scheme: https, nodes: {"127.0.0.1:8883": 1}}
  - {id: shared, nodes: {"127.0.0.1:1883": 1}}
  - {id: rw, pass_host: rewrite, nodes: {"127.0.0.1:8080": 1}}
stream_routes:
  - {id: a, upstream_id: tlsy}
  - {id: b, upstream_id: shared}
routes:
  - {id: r, uri: /*, upstream_id: shared}
`)})
	want := []string{
		`s.yaml:6: upstreams[2].upstream_host: required with pass_host: rewrite`,
		`s.yaml:8: stream route "a": upstream "tlsy" has scheme https (HTTP over TLS): a stream route's brokers speak MQTT; write scheme: tls for MQTT over TLS to them`,
		`s.yaml:11: routes[0]: upstream "shared" has scheme tcp: an HTTP route needs scheme http or https`,
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

// TestOnlyFalseDefaultsNodeListen: APISIX's `only: false` without
// node_listen serves HTTP on its default node_listen, 9080.
func TestOnlyFalseDefaultsNodeListen(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "c.yaml", Data: []byte(`apisix:
  stream_proxy:
    only: false
    tcp: [9000]
upstreams:
  - {id: web, nodes: {"127.0.0.1:8080": 1}}
  - {id: mqtt, nodes: {"127.0.0.1:1883": 1}}
stream_routes: [{id: m, upstream_id: mqtt}]
routes: [{id: w, uri: /*, upstream_id: web}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range cfg.StreamProxy.TCP {
		got = append(got, fmt.Sprintf("%s http=%t only=%t line=%d", l.Addr, l.HTTP, l.HTTPOnly, l.Line))
	}
	want := []string{":9000 http=false only=false line=4", ":9080 http=true only=true line=3"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("listeners %q, want %q", got, want)
	}
	for _, w := range cfg.Warnings {
		t.Errorf("unexpected warning %v", w)
	}
}
