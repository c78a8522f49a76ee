package proxy_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	proxyproto "github.com/pires/go-proxyproto"
)

// TestWebSocketUpstreamForwardedFor: the WebSocket handshake to a ws
// upstream carries the client's address in X-Real-IP and X-Forwarded-For
// (here the address a PROXY header gave, not mqgate's loopback one), as
// NGINX's usual proxy_set_header lines send it, so a broker such as EMQX
// (proxy_address_header) sees the device; a health probe's handshake
// carries neither. The broker is mochi-mqtt's WebSocket listener behind a
// reverse proxy that records each upgrade request's headers.
func TestWebSocketUpstreamForwardedFor(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochiWS(t, nil)
	type seen struct{ realIP, forwardedFor string }
	var mu sync.Mutex
	var upgrades []seen
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: broker.Addr()})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upgrades = append(upgrades, seen{r.Header.Get("X-Real-IP"), r.Header.Get("X-Forwarded-For")})
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	g := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, proxy_protocol: true, real_ip_from: [127.0.0.0/8]}]
upstreams:
  - id: emqx
    scheme: ws
    nodes: {%[1]q: 1}
    checks: {active: {type: mqtt, client_id: probe-, healthy: {interval: 0.05, successes: 1}}}
stream_routes: [{upstream_id: emqx}]
`, front.Listener.Addr().String()))

	raw, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	header, err := proxyproto.HeaderProxyFromAddrs(1, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40001}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1883}).Format()
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(header)
	raw.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, ClientID: "device-1"}))
	if ack := mqtttest.ReadPacket(t, raw); len(ack) != 4 || ack[3] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	mqtttest.WaitFor(t, "a probe's handshake and the device's", func() bool {
		mu.Lock()
		defer mu.Unlock()
		var probe, device bool
		for _, u := range upgrades {
			probe = probe || u == seen{}
			device = device || u == seen{"203.0.113.7", "203.0.113.7"}
		}
		return probe && device
	})
	mu.Lock()
	defer mu.Unlock()
	for _, u := range upgrades {
		if u != (seen{}) && u != (seen{"203.0.113.7", "203.0.113.7"}) {
			t.Errorf("an upgrade with X-Real-IP %q, X-Forwarded-For %q", u.realIP, u.forwardedFor)
		}
	}
}
