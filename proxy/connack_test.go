package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// failoverNodes are three nodes that fail a CONNECT, each its own way, in
// front of a Mosquitto that accepts it, in that order of priority.
type failoverNodes struct {
	silent   string        // accepts TCP and never answers (timeout.connack)
	refusing string        // answers 0x88 Server unavailable (3.x: 0x03)
	closing  string        // closes after the CONNECT
	refused  *atomic.Int64 // CONNECTs the refusing node read
	closed   *atomic.Int64 // and the closing one
	broker   mqtttest.Broker
}

func startFailoverNodes(t *testing.T) failoverNodes {
	t.Helper()
	var n failoverNodes
	n.silent = mqtttest.SilentPort(t).Addr()
	n.refusing, n.refused = mqtttest.RefusingPort(t, mqtt.ServerUnavailable)
	n.closing, n.closed = mqtttest.AnsweringPort(t, func([]byte) []byte { return nil })
	n.broker = mqtttest.StartMosquitto(t, "")
	return n
}

// upstream is upstream 1 over the four nodes, tried in order (no passive
// checks: every client walks the failing nodes), with timeout.connack
// connack, and a route to it.
func (n failoverNodes) upstream(connack string) string {
	return fmt.Sprintf(`upstreams:
  - id: 1
    checks: {passive: false} # every client walks the failing nodes: the walk is tested, not health
    timeout: {connack: %s}
    nodes:
      - {host: 127.0.0.1, port: %s, priority: 3}
      - {host: 127.0.0.1, port: %s, priority: 2}
      - {host: 127.0.0.1, port: %s, priority: 1}
      - {host: 127.0.0.1, port: %s, priority: 0}
stream_routes: [{id: r, upstream_id: 1}]
`, connack, port(n.silent), port(n.refusing), port(n.closing), port(n.broker.Addr()))
}

// TestConnackFailover: nodes that accept TCP and then fail the CONNECT are
// passed over: one never answers (timeout.connack), one answers 0x88
// Server unavailable (3.x: 0x03), one closes after the CONNECT. Clients of
// every level get the CONNACK of the node that accepted, the same CONNECT
// went to each node, the access record's detail names the nodes tried and why, and
// each failure counts against its node.
func TestConnackFailover(t *testing.T) {
	t.Parallel()
	nodes := startFailoverNodes(t)
	// timeout.connack applies to the accepting broker too: 2 s, so that a
	// loaded machine's Mosquitto answers within it (0.3 s failed one full
	// -race run at load 6 with "no broker accepted the CONNECT").
	g := startGateway(t, "stream_proxy: {tcp: [LISTEN]}\n"+nodes.upstream("2"))

	for _, level := range []byte{mqtt.Level31, mqtt.Level311, mqtt.Level5} {
		id := fmt.Sprintf("failover-%d", level)
		mqtttest.ConnectOK(t, g.addr, id, level)
		rec := g.accessRecord(t, id)
		tried, _ := rec["detail"].(string)
		if rec["node"] != nodes.broker.Addr() || !strings.HasPrefix(tried, "tried "+nodes.silent+": no CONNACK within 2s") ||
			!strings.Contains(tried, nodes.refusing+": CONNACK") || !strings.Contains(tried, nodes.closing+": closed the connection after the CONNECT") {
			t.Errorf("level %d: access record node %v, tried %q; want %s after the three failing nodes", level, rec["node"], tried, nodes.broker.Addr())
		}
	}
	if nodes.refused.Load() != 3 || nodes.closed.Load() != 3 {
		t.Errorf("the refusing node read %d CONNECTs, the closing one %d; want 3 each", nodes.refused.Load(), nodes.closed.Load())
	}
	fails := map[string]uint64{}
	for _, n := range g.srv.Stats().Nodes {
		fails[n.Addr] = n.DialFailures
	}
	if fails[nodes.silent] != 3 || fails[nodes.refusing] != 3 || fails[nodes.closing] != 3 || fails[nodes.broker.Addr()] != 0 {
		t.Errorf("failures by node = %v; want 3 for each failing node, 0 for the broker", fails)
	}
}

// TestConnackFailoverNoneAccepts: when every node refuses, the client gets
// mqgate's own refusal, not a broker's.
func TestConnackFailoverNoneAccepts(t *testing.T) {
	t.Parallel()
	busy := func(connect []byte) []byte {
		return mqtt.AppendConnack(nil, mqtt.Level5, mqtt.ServerBusy, "busy broker")
	}
	a, _ := mqtttest.AnsweringPort(t, busy)
	b, _ := mqtttest.AnsweringPort(t, busy)
	g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, nodes: {%q: 1, %q: 1}}]
stream_routes: [{upstream_id: 1}]
`, a, b))
	_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: "none"})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != mqtt.ServerUnavailable || !strings.Contains(string(ack), "no broker accepted the CONNECT") {
		t.Errorf("CONNACK % x (%v, %v); want mqgate's 0x88 \"no broker accepted the CONNECT\"", ack, code, err)
	}
}

// connackWithReference is a 5.0 CONNACK refusing with code and naming ref
// as Server Reference (property 0x1C), as EMQX answers when it evacuates
// a node (5.0 section 4.11).
func connackWithReference(code mqtt.ReasonCode, ref string) []byte {
	props := append([]byte{0x1c, byte(len(ref) >> 8), byte(len(ref))}, ref...)
	body := append([]byte{0x00, byte(code), byte(len(props))}, props...)
	return append([]byte{0x20, byte(len(body))}, body...)
}

// TestConnackServerReference: a node that refuses the CONNECT with 0x9C
// Use another server or 0x9D Server moved and a Server Reference naming
// another node of the upstream sends the client there next, ahead of the
// balancer's order; a reference mqgate cannot use (not a node of the
// upstream, or none) and a 3.x refusal, which has no reference, go to the
// next node in order. A paho.golang 5.0 client and a 3.1.1 client see only
// the CONNACK of the node that accepted.
func TestConnackServerReference(t *testing.T) {
	t.Parallel()
	next := mqtttest.StartMosquitto(t, "") // next in the balancer's order
	named := mqtttest.StartMochi(t)        // last in order; the reference names it
	redirecting, asked := mqtttest.AnsweringPort(t, func(connect []byte) []byte {
		c, err := mqtt.ParseConnect(connect)
		switch {
		case err != nil:
			return nil
		case c.Level != mqtt.Level5:
			return mqtt.AppendConnack(nil, c.Level, 0x03, "") // 3.x: server unavailable, no reference
		case strings.HasPrefix(c.ClientID, "unknown-"):
			return connackWithReference(mqtt.ServerMoved, "elsewhere.example:1883")
		case strings.HasPrefix(c.ClientID, "noref-"):
			return mqtt.AppendConnack(nil, mqtt.Level5, mqtt.UseAnotherServer, "")
		case strings.HasPrefix(c.ClientID, "moved-"):
			return connackWithReference(mqtt.ServerMoved, named.Addr())
		}
		return connackWithReference(mqtt.UseAnotherServer, named.Addr())
	})
	g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    checks: {passive: false} # every client walks the failing nodes: the walk is tested, not health
    nodes:
      - {host: 127.0.0.1, port: %s, priority: 3}
      - {host: 127.0.0.1, port: %s, priority: 2}
      - {host: 127.0.0.1, port: %s, priority: 1}
stream_routes: [{id: r, upstream_id: 1}]
`, port(redirecting), port(next.Addr()), port(named.Addr())))

	for _, tc := range []struct {
		id    string
		level byte
		want  string // the node that should accept
		why   string // in the access record's detail
	}{
		{"use-another-1", mqtt.Level5, named.Addr(), "CONNACK 0x9C"},
		{"moved-1", mqtt.Level5, named.Addr(), "CONNACK 0x9D"},
		{"unknown-1", mqtt.Level5, next.Addr(), "CONNACK 0x9D"},
		{"noref-1", mqtt.Level5, next.Addr(), "CONNACK 0x9C"},
		{"v311-1", mqtt.Level311, next.Addr(), "CONNACK 0x03"},
	} {
		if tc.level == mqtt.Level5 {
			w := dialWatched(t, g.addr, tc.id, nil) // fails the test unless paho's CONNACK succeeds
			_ = w.c.Disconnect(&paho.Disconnect{})  // the access record is written at the end
		} else {
			mqtttest.ConnectOK(t, g.addr, tc.id, tc.level)
		}
		rec := g.accessRecord(t, tc.id)
		tried, _ := rec["detail"].(string)
		if rec["node"] != tc.want || !strings.HasPrefix(tried, "tried "+redirecting+": "+tc.why) || strings.Contains(tried, ", ") {
			t.Errorf("%s: on %v after %q; want on %s after only %s: %s", tc.id, rec["node"], tried, tc.want, redirecting, tc.why)
		}
	}
	if asked.Load() != 5 {
		t.Errorf("the redirecting node read %d CONNECTs, want 5", asked.Load())
	}
	if ids := named.Seen(); !slices.Equal(ids, []string{"use-another-1", "moved-1"}) {
		t.Errorf("the named node saw %v, want the two clients sent there by reference", ids)
	}
}

// TestConnackFailoverTLSAndWebSocket: the CONNACK failover of
// TestConnackFailover, a silent node, a 0x88 (3.x 0x03) node and a node
// that closes after the CONNECT before Mosquitto, for clients over a TLS
// listener, a WebSocket one and a TLS WebSocket (wss) one: Paho 3.1.1
// with its own TLS and WebSocket dialers, and paho.golang 5.0 over a TLS
// or WebSocket net.Conn, each get Mosquitto's CONNACK, and the access
// record names the nodes tried.
func TestConnackFailoverTLSAndWebSocket(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	nodes := startFailoverNodes(t)
	// timeout.connack is longer than TestConnackFailover's: six clients
	// connect at once here, and Mosquitto must answer within it too.
	upstream := nodes.upstream("1")
	ws := startGateway(t, "stream_proxy: {tcp: [{addr: LISTEN, websocket: true}]}\n"+upstream)
	secure := startTLSGateway(t, fmt.Sprintf(`stream_proxy: {tcp: [{addr: LISTEN, tls: true, websocket: true}]}
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
`, p.dir)+upstream)
	tlsCfg := p.clientTLS("a.example", nil)

	v3 := func(url string, tlsCfg *tls.Config) func(t *testing.T, id string) {
		return func(t *testing.T, id string) {
			opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).SetTLSConfig(tlsCfg).
				SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
				SetConnectTimeout(15 * time.Second)
			c := pahov3.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				t.Fatalf("paho 3.1.1 to %s through mqgate: %v", url, tok.Error())
			}
			c.Disconnect(100)
		}
	}
	v5 := func(dial func(t *testing.T) net.Conn) func(t *testing.T, id string) {
		return func(t *testing.T, id string) {
			c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: dial(t)})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
				t.Fatalf("paho.golang 5.0 through mqgate: %v (CONNACK %+v)", err, ack)
			}
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}
	wsURL, wssURL := "ws://"+ws.addr+"/mqtt", "wss://"+secure.addr+"/mqtt"
	for _, tc := range []struct {
		id        string
		transport string // the access record's; "" for MQTT over TLS
		access    *mqtttest.LogBuffer
		connect   func(t *testing.T, id string)
	}{
		{"ws-v3", "ws", ws.access, v3(wsURL, nil)},
		{"ws-v5", "ws", ws.access, v5(func(t *testing.T) net.Conn { return mqtttest.MustDialWS(t, wsURL, mqtttest.WSOptions{}) })},
		{"tls-v3", "", secure.access, v3("tls://"+secure.addr, tlsCfg)},
		{"tls-v5", "", secure.access, v5(func(t *testing.T) net.Conn {
			c, err := tls.Dial("tcp", secure.addr, tlsCfg)
			if err != nil {
				t.Fatal(err)
			}
			return c
		})},
		{"wss-v3", "wss", secure.access, v3(wssURL, tlsCfg)},
		{"wss-v5", "wss", secure.access, v5(func(t *testing.T) net.Conn {
			return mqtttest.MustDialWS(t, wssURL, mqtttest.WSOptions{TLS: tlsCfg})
		})},
	} {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			tc.connect(t, tc.id)
			rec := waitAccessRecord(t, tc.access, tc.id+"'s record", func(r map[string]any) bool { return r["client_id"] == tc.id })
			tried, _ := rec["detail"].(string)
			if rec["node"] != nodes.broker.Addr() || !strings.HasPrefix(tried, "tried "+nodes.silent+": no CONNACK within 1s") ||
				!strings.Contains(tried, nodes.refusing+": CONNACK") || !strings.Contains(tried, nodes.closing+": closed the connection after the CONNECT") {
				t.Errorf("on %v, tried %q; want %s after the three failing nodes", rec["node"], tried, nodes.broker.Addr())
			}
			if tr, _ := rec["transport"].(string); tr != tc.transport {
				t.Errorf("transport %q, want %q", tr, tc.transport)
			}
			if tc.transport != "ws" && rec["ssl_server_name"] != "a.example" {
				t.Errorf("ssl_server_name %v, want a.example", rec["ssl_server_name"])
			}
		})
	}
	t.Cleanup(func() {
		if got := nodes.refused.Load(); got != 6 {
			t.Errorf("the refusing node read %d CONNECTs, want one per client, 6", got)
		}
	})
}

// TestConnackNotAConnack: a node whose first packet is no CONNACK (the
// reserved type 0's `00 00`, a PUBLISH, or AUTH to a 3.1.1 client) is
// passed over as a failed node, and the client gets the CONNACK of the
// broker behind it, on whichever data path the suite runs.
func TestConnackNotAConnack(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	for _, tc := range []struct {
		name   string
		answer []byte
		level  byte
	}{
		{"reserved type 0", []byte{0x00, 0x00}, mqtt.Level5},
		{"PUBLISH", []byte{0x30, 0x03, 0x00, 0x01, 'x'}, mqtt.Level5},
		{"AUTH to 3.1.1", []byte{0xF0, 0x00}, mqtt.Level311},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			odd, asked := mqtttest.AnsweringPort(t, func([]byte) []byte { return tc.answer })
			g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    checks: {passive: false}
    nodes:
      - {host: 127.0.0.1, port: %s, priority: 1}
      - {host: 127.0.0.1, port: %s, priority: 0}
stream_routes: [{upstream_id: 1}]
`, port(odd), port(broker.Addr())))
			_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: tc.level, CleanStart: true, ClientID: "odd-" + strings.ReplaceAll(tc.name, " ", "-")})
			if _, code, err := mqtt.ParseConnack(ack, tc.level); err != nil || code != mqtt.Success {
				t.Errorf("client read % x (%v, %v); want the broker's CONNACK", ack, code, err)
			}
			if asked.Load() != 1 {
				t.Errorf("the odd node read %d CONNECTs, want 1", asked.Load())
			}
		})
	}
}
