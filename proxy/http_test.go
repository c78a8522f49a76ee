package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// echoUpstream is a Go HTTP server that answers with its name and the
// headers the proxy set, and counts its requests.
type echoUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	count int
}

func startEcho(t *testing.T, name string) *echoUpstream {
	return startEchoHealth(t, name, http.StatusOK)
}

// startEchoHealth is startEcho whose /healthz answers health.
func startEchoHealth(t *testing.T, name string, health int) *echoUpstream {
	t.Helper()
	e := &echoUpstream{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(health)
			return
		}
		if r.URL.Path == "/echo" {
			// A WebSocket echo: what the client sends comes back.
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return
			}
			defer conn.Close()
			for {
				msg, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					return
				}
				if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
					return
				}
			}
		}
		e.mu.Lock()
		e.count++
		e.mu.Unlock()
		fmt.Fprintf(w, "%s host=%s xff=%s real=%s proto=%s path=%s", name, r.Host, r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Real-IP"), r.Header.Get("X-Forwarded-Proto"), r.URL.Path)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *echoUpstream) requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count
}

func get(t *testing.T, url, host string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHTTPRoutesOnTheMQTTPort: one port listed in stream_proxy.tcp and in
// node_listen serves MQTT, MQTT over WebSocket and HTTP routes by host and
// uri; the api upstream balances over two Go servers and fails over when
// one is gone; the upstream sees X-Forwarded-For and X-Real-IP; a
// WebSocket echo passes through a route with enable_websocket.
func TestHTTPRoutesOnTheMQTTPort(t *testing.T) {
	t.Parallel()
	api1, api2, web := startEcho(t, "api1"), startEcho(t, "api2"), startEcho(t, "web")
	sick := startEchoHealth(t, "sick", http.StatusServiceUnavailable)
	broker := mqtttest.StartMochi(t)
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	g := startGateway(t, fmt.Sprintf(`
apisix:
  node_listen: [LISTEN]
stream_proxy:
  tcp: [{addr: LISTEN, websocket: true}]
stream_routes:
  - {id: mqtt, upstream: {nodes: {%[1]q: 1}}}
upstreams:
  - id: api
    scheme: http
    type: roundrobin
    nodes: {%[2]q: 1, %[3]q: 1, %[5]q: 1}
    checks:
      active: {type: http, http_path: /healthz, healthy: {interval: 0.1, successes: 1}, unhealthy: {interval: 0.1, http_failures: 1}}
routes:
  - {id: api, uri: "/api/*", host: api.example, methods: [GET, POST], upstream_id: api}
  - {id: web, hosts: ["*.example"], uris: ["/", "/index.html"], pass_host: node, upstream: {scheme: http, nodes: {%[4]q: 1}}}
  - {id: echo, uri: /echo, enable_websocket: true, upstream: {scheme: http, nodes: {%[4]q: 1}}}
  - {id: no-ws, uri: /plain, upstream: {scheme: http, nodes: {%[4]q: 1}}}
`, broker.Addr(), host(api1.Server), host(api2.Server), host(web.Server), host(sick.Server)))
	base := "http://" + g.addr

	// The HTTP active check (checks.active.type http) marks the node whose
	// /healthz answers 503 down: the balancer leaves it out.
	mqtttest.WaitFor(t, "the sick node marked unhealthy", func() bool {
		for _, n := range g.srv.Stats().Nodes {
			if n.Addr == host(sick.Server) && n.Health == proxy.HealthUnhealthy {
				return true
			}
		}
		return false
	})

	// Routed by host and uri; the upstream sees who the client is.
	for range 4 {
		code, body := get(t, base+"/api/v1/x", "api.example", nil)
		if code != 200 || !strings.HasPrefix(body, "api") || !strings.Contains(body, "xff=127.0.0.1 real=127.0.0.1 proto=http path=/api/v1/x") {
			t.Fatalf("GET /api/v1/x: %d %q", code, body)
		}
	}
	if api1.requests() != 2 || api2.requests() != 2 || sick.requests() != 0 {
		t.Errorf("roundrobin over the two healthy nodes: %d, %d and %d (sick) requests, want 2, 2 and 0", api1.requests(), api2.requests(), sick.requests())
	}
	if code, body := get(t, base+"/api/x", "api.example", http.Header{"X-Forwarded-For": {"203.0.113.5"}}); code != 200 || !strings.Contains(body, "xff=203.0.113.5, 127.0.0.1 ") {
		t.Errorf("X-Forwarded-For appended: %d %q", code, body)
	}
	if code, body := get(t, base+"/", "www.example", nil); code != 200 || !strings.HasPrefix(body, "web host="+host(web.Server)) {
		t.Errorf("GET / on www.example (pass_host: node): %d %q", code, body)
	}
	for _, tc := range []struct{ path, host string }{{"/api/x", "other.test"}, {"/nothing", "www.example"}, {"/", "example"}} {
		if code, body := get(t, base+tc.path, tc.host, nil); code != 404 || !strings.Contains(body, "no route") {
			t.Errorf("GET %s on %s: %d %q, want 404 no route", tc.path, tc.host, code, body)
		}
	}

	// Failover: with one api node gone, every request lands on the other.
	api2.Close()
	before := api1.requests()
	for range 4 {
		if code, body := get(t, base+"/api/x", "api.example", nil); code != 200 || !strings.HasPrefix(body, "api1") {
			t.Fatalf("with api2 down: %d %q", code, body)
		}
	}
	if api1.requests() != before+4 {
		t.Errorf("api1 served %d of 4 after api2 went down", api1.requests()-before)
	}

	// MQTT and MQTT over WebSocket on the same port.
	mqtttest.ConnectOK(t, g.addr, "same-port", mqtt.Level311)
	c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{})
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, KeepAlive: 30, ClientID: "same-port-ws"})); err != nil {
		t.Fatal(err)
	}
	if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), mqtt.Level5); err != nil || code != 0 {
		t.Fatalf("MQTT over WebSocket on the HTTP port: code %v, err %v", code, err)
	}

	// A WebSocket echo through enable_websocket; refused on a route without it.
	echo := mqtttest.MustDialWS(t, "ws://"+g.addr+"/echo", mqtttest.WSOptions{})
	if _, err := echo.Write([]byte("ping through mqgate")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := echo.Read(buf)
	if err != nil || string(buf[:n]) != "ping through mqgate" {
		t.Errorf("WebSocket echo: %q, %v", buf[:n], err)
	}
	if c, err := mqtttest.DialWS(t.Context(), "ws://"+g.addr+"/plain", mqtttest.WSOptions{}); err == nil {
		c.Close()
		t.Error("upgrade on a route without enable_websocket went through")
	} else if !strings.Contains(err.Error(), "enable_websocket") {
		t.Errorf("upgrade on /plain: %v", err)
	}
}
