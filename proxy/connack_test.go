package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestConnackFailover: nodes that accept TCP and then fail the CONNECT are
// passed over: one never answers (timeout.connack), one answers 0x88
// Server unavailable (3.x: 0x03), one closes after the CONNECT. Clients of
// every level get the CONNACK of the node that accepted, the same CONNECT
// went to each node, the access record's detail names the nodes tried and why, and
// each failure counts against its node.
func TestConnackFailover(t *testing.T) {
	t.Parallel()
	silent := mqtttest.SilentPort(t).Addr()
	refusing, refused := mqtttest.AnsweringPort(t, func(connect []byte) []byte {
		c, err := mqtt.ParseConnect(connect)
		if err != nil {
			return nil
		}
		return mqtt.AppendConnack(nil, c.Level, mqtt.ServerUnavailable, "")
	})
	closing, closed := mqtttest.AnsweringPort(t, func([]byte) []byte { return nil })
	broker := mqtttest.StartMosquitto(t, "")
	g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    timeout: {connack: 0.3}
    nodes:
      - {host: 127.0.0.1, port: %s, priority: 3}
      - {host: 127.0.0.1, port: %s, priority: 2}
      - {host: 127.0.0.1, port: %s, priority: 1}
      - {host: 127.0.0.1, port: %s, priority: 0}
stream_routes: [{id: r, upstream_id: 1}]
`, port(silent), port(refusing), port(closing), port(broker.Addr())))

	for _, level := range []byte{mqtt.Level31, mqtt.Level311, mqtt.Level5} {
		id := fmt.Sprintf("failover-%d", level)
		mqtttest.ConnectOK(t, g.addr, id, level)
		rec := g.accessRecord(t, id)
		tried, _ := rec["detail"].(string)
		if rec["node"] != broker.Addr() || !strings.HasPrefix(tried, "tried "+silent+": no CONNACK within 300ms") ||
			!strings.Contains(tried, refusing+": CONNACK") || !strings.Contains(tried, closing+": closed the connection after the CONNECT") {
			t.Errorf("level %d: access record node %v, tried %q; want %s after the three failing nodes", level, rec["node"], tried, broker.Addr())
		}
	}
	if refused.Load() != 3 || closed.Load() != 3 {
		t.Errorf("the refusing node read %d CONNECTs, the closing one %d; want 3 each", refused.Load(), closed.Load())
	}
	fails := map[string]uint64{}
	for _, n := range g.srv.Stats().Nodes {
		fails[n.Addr] = n.DialFailures
	}
	if fails[silent] != 3 || fails[refusing] != 3 || fails[closing] != 3 || fails[broker.Addr()] != 0 {
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
