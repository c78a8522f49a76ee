package proxy_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestRefusals: a well-formed CONNECT that mqgate cannot serve gets a CONNACK
// with the reason code of the client's version, then the connection closes.
func TestRefusals(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	dead := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [LISTEN]
upstreams:
  - id: live
    nodes: {%q: 1}
  - id: dead
    nodes: {%q: 1}
    timeout: {connect: 1}
stream_routes:
  - id: v5-only
    mqtt_client_id: {prefix: "v5-"}
    upstream_id: live
    plugins:
      mqtt-proxy: {protocol_name: MQTT, protocol_level: 5}
  - id: to-dead
    mqtt_client_id: {prefix: "dead-"}
    upstream_id: dead
  - id: private-net-only
    remote_addr: 10.0.0.0/8
    upstream_id: live
`, broker.Addr(), dead))

	tests := []struct {
		name     string
		connect  mqtt.Connect
		wantCode mqtt.ReasonCode // as the client's version encodes it
		wantText string          // in the 5.0 Reason String
	}{
		{"3.1.1 on a 5.0-only route", mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: "v5-a"}, 0x01, ""},
		{"3.1 on a 5.0-only route", mqtt.Connect{ProtocolName: "MQIsdp", Level: 3, CleanStart: true, ClientID: "v5-b"}, 0x01, ""},
		{"5.0 with no broker reachable", mqtt.Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, ClientID: "dead-a"}, mqtt.ServerUnavailable, "no broker reachable"},
		{"3.1.1 with no broker reachable", mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: "dead-b"}, 0x03, ""},
		{"5.0 with no route", mqtt.Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, ClientID: "other"}, mqtt.ServerUnavailable, "no route"},
		{"3.1.1 with no route", mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: "other"}, 0x03, ""},
		// [MQTT-3.1.2-2] the server answers an unsupported level with 0x01 and closes.
		{"unknown level 6", mqtt.Connect{ProtocolName: "MQTT", Level: 6, CleanStart: true, ClientID: "v5-c"}, 0x01, ""},
		// [MQTT-3.1.3-8] 3.1.1: empty client id needs CleanSession=1, else 0x02.
		{"3.1.1 empty id without clean session", mqtt.Connect{ProtocolName: "MQTT", Level: 4, ClientID: ""}, 0x02, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, ack := mqtttest.Connect(t, gw.addr, &tt.connect)
			if ack == nil {
				t.Fatal("closed without a CONNACK")
			}
			level := tt.connect.Level
			if level != mqtt.Level5 {
				level = mqtt.Level311
			}
			_, code, err := mqtt.ParseConnack(ack, level)
			if err != nil {
				t.Fatalf("CONNACK % x: %v", ack, err)
			}
			if code != tt.wantCode {
				t.Errorf("CONNACK code %#x, want %#x (packet % x)", byte(code), byte(tt.wantCode), ack)
			}
			if tt.wantText != "" && !bytes.Contains(ack, []byte(tt.wantText)) {
				t.Errorf("CONNACK % x has no reason string %q", ack, tt.wantText)
			}
			if rest := mqtttest.ReadPacket(t, conn); rest != nil {
				t.Errorf("after the CONNACK got % x, want the connection closed", rest)
			}
		})
	}
	if seen := broker.Seen(); len(seen) != 0 {
		t.Errorf("refused clients reached the broker: %v", seen)
	}
	// A refused connection is logged once the client has closed it.
	mqtttest.WaitFor(t, fmt.Sprintf("%d refused records in the access log", len(tests)), func() bool {
		refused := 0
		for _, l := range gw.access.Lines() {
			if strings.Contains(l, `"end":"refused"`) {
				refused++
			}
		}
		return refused == len(tests)
	})
}
