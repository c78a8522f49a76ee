package proxy_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/proxy"
)

// silentWSBroker takes MQTT over WebSocket on /mqtt (404 elsewhere; the
// subprotocol "mqtt" required, as mqttws's server side requires it), reads
// each CONNECT, sends its client id on connects and never answers: a hung
// broker behind a working WebSocket. With tlsCfg it is wss.
func silentWSBroker(t *testing.T, tlsCfg *tls.Config) (port int, connects chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	connects = make(chan string, 16)
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mqtt" {
			http.NotFound(w, r)
			return
		}
		c, err := mqttws.Upgrader{}.Upgrade(w, r)
		if err != nil {
			return
		}
		defer c.Close()
		pkt := mqtttest.ReadPacket(t, c)
		if cn, err := mqtt.ParseConnect(pkt); err == nil {
			connects <- cn.ClientID
		}
		_, _ = io.Copy(io.Discard, c) // until mqgate gives up on it
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, connects
}

// TestUpstreamWebSocket: an upstream with scheme ws or wss reaches brokers
// that take MQTT over WebSocket only (mochi-mqtt's WebSocket listener, as
// EMQX's 8083 and 8084), for clients over TCP and over WebSocket alike,
// through the upstream's one dialer: the client dials, the CONNACK
// failover from a broker that upgrades and never answers to the next
// node, and the MQTT health probes.
func TestUpstreamWebSocket(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			var brokerTLS *tls.Config
			tlsYAML := ""
			if scheme == "wss" {
				brokerTLS = &tls.Config{Certificates: []tls.Certificate{p.a.TLS}}
				tlsYAML = fmt.Sprintf("\n    tls: {ca: %s, server_name: a.example}", p.path("ca.pem"))
			}
			broker := mqtttest.StartMochiWS(t, brokerTLS)
			silent, connects := silentWSBroker(t, brokerTLS)
			logs := &mqtttest.LogBuffer{}
			g := startGatewayLog(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, websocket: true}]
  connect_timeout: 10s
upstreams:
  - id: emqx
    scheme: %[1]s
    websocket: {path: /mqtt, subprotocol: mqtt}%[2]s
    timeout: {connack: 3}
    nodes:
      - {host: 127.0.0.1, port: %[3]d, priority: 1}
      - {host: 127.0.0.1, port: %[4]s}
  - id: probed
    scheme: %[1]s%[2]s
    nodes: {"127.0.0.1:%[4]s": 1}
    checks:
      active:
        type: mqtt
        client_id: probe-
        timeout: 1
        healthy: {interval: 0.05, successes: 1}
stream_routes: [{id: r, upstream_id: emqx}]
`, scheme, tlsYAML, silent, port(broker.Addr())), logs)
			stopFirst(t, g)

			msgsWS, msgsTCP := make(chan message, 4), make(chan message, 4)
			tcp := dialV3(t, g.addr, "up-tcp-v3", 4, msgsTCP)
			ws := dialV5Conn(t, mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{}), "up-ws-v5", msgsWS)
			// Before the clients' own cleanups close them: what each side
			// held when the test failed (a SUBACK that never came, once in
			// a CI run, and not again in 300 runs under load).
			t.Cleanup(func() {
				if !t.Failed() {
					return
				}
				conns, _ := g.srv.Connections(proxy.ConnFilter{}, 0)
				t.Logf("connections through mqgate: %+v\nthe broker's clients:\n%s\nstats: %+v\nprocess log:\n%s\naccess log:\n%s",
					conns, broker.Clients(), g.srv.Stats(), logs, g.access)
			})
			tcp.subscribe(t, "to/tcp", 1)
			ws.subscribe(t, "to/ws", 1)
			big := strings.Repeat("frame ", 30000) // 180 kB: several WebSocket frames each way
			tcp.publish(t, "to/ws", 1, false, []byte(big))
			receive(t, msgsWS, "to/ws", []byte(big))
			ws.publish(t, "to/tcp", 1, false, []byte("over "+scheme))
			receive(t, msgsTCP, "to/tcp", []byte("over "+scheme))

			// The higher-priority node upgraded, got the CONNECT in
			// WebSocket frames, and never answered: the next node got it.
			if id := <-connects; id != "up-tcp-v3" {
				t.Errorf("the silent broker got the CONNECT of %q first, want up-tcp-v3", id)
			}
			for _, id := range []string{"up-tcp-v3", "up-ws-v5"} {
				if !slices.Contains(broker.Seen(), id) {
					t.Errorf("the WebSocket broker never saw %s: %v", id, broker.Seen())
				}
			}
			mqtttest.WaitFor(t, "an MQTT probe over "+scheme+" at the broker", func() bool {
				return slices.ContainsFunc(broker.Seen(), func(id string) bool { return strings.HasPrefix(id, "probe-") })
			})
			if os.Getenv(dataPathEnv) == "" || os.Getenv(dataPathEnv) == config.DataPathEpoll {
				// The ws client parks: no loop takes a ws or wss broker.
				if st := g.srv.Stats(); st.WebSocketUpstreamParked != 1 || st.WebSocketParked != 0 || st.WebSocketLooped != 0 {
					t.Errorf("ws pairs parked for their upstream %d, parked %d, looped %d; want 1, 0, 0",
						st.WebSocketUpstreamParked, st.WebSocketParked, st.WebSocketLooped)
				}
			}
			tcp.close()
			ws.close()
			rec := g.waitRecord(t, "up-tcp-v3's record", func(r map[string]any) bool { return r["client_id"] == "up-tcp-v3" })
			silentAddr := "127.0.0.1:" + strconv.Itoa(silent)
			if rec["node"] != broker.Addr() || !strings.Contains(fmt.Sprint(rec["detail"]), silentAddr+": no CONNACK within") {
				t.Errorf("record %v: want node %s after no CONNACK from %s", rec, broker.Addr(), silentAddr)
			}
			rec = g.waitRecord(t, "up-ws-v5's record", func(r map[string]any) bool { return r["client_id"] == "up-ws-v5" })
			if rec["transport"] != "ws" || rec["node"] != broker.Addr() {
				t.Errorf("record %v", rec)
			}
		})
	}
}

// TestUpstreamWebSocketRefused: a broker that answers the handshake with
// an HTTP error (a wrong path) is a failed dial, said in the access
// record, and the client gets Server unavailable.
func TestUpstreamWebSocketRefused(t *testing.T) {
	t.Parallel()
	silent, _ := silentWSBroker(t, nil)
	g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: emqx
    scheme: ws
    websocket: {path: /wrong}
    nodes: {"127.0.0.1:%d": 1}
stream_routes: [{id: r, upstream_id: emqx}]
`, silent))
	_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, KeepAlive: 30, ClientID: "lost"})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != mqtt.ServerUnavailable {
		t.Fatalf("CONNACK % x: code %v, err %v; want Server unavailable", ack, code, err)
	}
	rec := g.waitRecord(t, "lost's record", func(r map[string]any) bool { return r["client_id"] == "lost" })
	if d := fmt.Sprint(rec["detail"]); !strings.Contains(d, "/wrong") || !strings.Contains(d, "404") {
		t.Errorf("detail %q: want the path and the broker's 404", d)
	}
}

// TestUpstreamWebSocketReload: a reload that turns an upstream's scheme
// from tcp to ws gives its probes (and dials) the WebSocket handshake: the
// MQTT probe that failed against a WebSocket-only broker passes, as the
// broker sees it.
func TestUpstreamWebSocketReload(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochiWS(t, nil)
	// Over tcp the probes fail by timeouts, one enough, so they are short;
	// over ws they must pass until the client's CONNECT, so a probe may
	// take 5 s and three slow ones in a row are needed (0.5 s and one
	// could mark the broker down on a loaded machine, refusing the client).
	yml := func(scheme string) string {
		unhealthy := "timeout: 0.5\n        unhealthy: {interval: 0.05, timeouts: 1, tcp_failures: 1}"
		if scheme == "ws" {
			unhealthy = "timeout: 5\n        unhealthy: {interval: 0.05, timeouts: 3, tcp_failures: 1}"
		}
		return fmt.Sprintf(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams:
  - id: emqx
    scheme: %s
    nodes: {%q: 1}
    checks:
      active:
        type: mqtt
        client_id: probe-
        healthy: {interval: 0.05, successes: 1}
        %s
stream_routes: [{id: r, upstream_id: emqx}]
`, scheme, broker.Addr(), unhealthy)
	}
	g := startGateway(t, yml("tcp"))
	stopFirst(t, g)
	mqtttest.WaitFor(t, "plain MQTT probes failing against the WebSocket broker", func() bool {
		s := nodeHealth(g, "emqx", broker.Addr())
		return s.Addr != "" && !s.Healthy
	})
	probed := func() bool {
		return slices.ContainsFunc(broker.Seen(), func(id string) bool { return strings.HasPrefix(id, "probe-") })
	}
	if probed() {
		t.Fatalf("the broker saw a probe over plain MQTT: %v", broker.Seen())
	}
	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(yml("ws"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "a probe over WebSocket after the reload", probed)
	mqtttest.WaitFor(t, "the node healthy", func() bool { return nodeHealth(g, "emqx", broker.Addr()).Healthy })
	mqtttest.ConnectOK(t, g.addr, "after-reload", mqtt.Level5)
}
