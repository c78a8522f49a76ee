package proxy_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestFlapGuard: a client id that connects more than max_connects times
// within the window is refused for the back-off: a paho.golang 5.0 client
// through mqgate to Mosquitto gets 0x9F Connection rate exceeded, a 3.1.1
// client 0x03; other client ids go on connecting.
func TestFlapGuard(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMosquitto(t, "")
	g := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes:
  - id: r
    upstream_id: 1
    plugins:
      flap-guard: {max_connects: 3, window: 60, backoff: 60}
`, broker.Addr()))
	for range 3 {
		c := dialWatched(t, g.addr, "flappy-5", nil)
		_ = c.c.Disconnect(&paho.Disconnect{})
	}
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{ClientID: "flappy-5", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: "flappy-5", CleanStart: true, KeepAlive: 30})
	if err == nil || ack == nil || mqtt.ReasonCode(ack.ReasonCode) != mqtt.ConnectionRateExceeded || ack.Properties == nil || ack.Properties.ReasonString != "reconnecting too often" {
		t.Fatalf("4th connect within the window: %v (CONNACK %+v), want 0x9F Connection rate exceeded", err, ack)
	}

	for range 3 {
		mqtttest.ConnectOK(t, g.addr, "flappy-311", mqtt.Level311)
	}
	if code := refusedWith(t, g.addr, "flappy-311", "", mqtt.Level311); code != 0x03 {
		t.Errorf("3.1.1: 4th connect got code 0x%02X, want 0x03 server unavailable", byte(code))
	}
	mqtttest.ConnectOK(t, g.addr, "steady", mqtt.Level5)
	mqtttest.WaitFor(t, "refusals counted as flap_guard", func() bool {
		return g.srv.Stats().Refused["flap_guard"] == 2 && strings.Contains(strings.Join(g.access.Lines(), "\n"), `"detail":"reconnecting too often"`)
	})
}
