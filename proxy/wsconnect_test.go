package proxy_test

import (
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestWebSocketLoopToGoroutineDial: a ws client whose upgrade and CONNECT
// the loops took, routed to an upstream they do not dial (a node by host
// name), goes on through a goroutine's dial with its WebSocket resumed
// (DetachWebSocket), and exchanges messages with a TCP client; its access
// record is a ws one.
func TestWebSocketLoopToGoroutineDial(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	byName := strings.Replace(broker.Addr(), "127.0.0.1", "localhost", 1)
	g := startGateway(t, `
stream_proxy:
  tcp:
    - {addr: LISTEN, websocket: true}
  connect_timeout: 10s
upstreams:
  - id: 1
    nodes: {"`+byName+`": 1}
stream_routes:
  - id: 1
    upstream_id: 1
`)
	msgsWS, msgsTCP := make(chan message, 10), make(chan message, 10)
	v3 := dialV3URL(t, wsURL(g.addr), "ws-named", 4, msgsWS)
	tcp := dialV3(t, g.addr, "tcp-named", 4, msgsTCP)
	v3.subscribe(t, "to/ws", 1)
	tcp.subscribe(t, "to/tcp", 1)
	tcp.publish(t, "to/ws", 1, false, []byte("from tcp"))
	receive(t, msgsWS, "to/ws", []byte("from tcp"))
	v3.publish(t, "to/tcp", 1, false, []byte("from ws"))
	receive(t, msgsTCP, "to/tcp", []byte("from ws"))
	v3.close()
	rec := g.waitRecord(t, "ws-named's record", func(r map[string]any) bool { return r["client_id"] == "ws-named" })
	if rec["transport"] != "ws" {
		t.Errorf("access record %v", rec)
	}
}
