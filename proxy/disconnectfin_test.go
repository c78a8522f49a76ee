package proxy_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// disconnectWithReason is a 5.0 DISCONNECT, Normal disconnection, with a
// Reason String (5.0 section 3.14.2.2.3).
const disconnectWithReason = "\xe0\x08\x00\x06\x1f\x00\x03bye"

// TestDisconnectThenFINNoWill: on both data paths, a client with a will
// sends DISCONNECT and then its FIN through mqgate to Mosquitto (a 5.0 one
// with properties too, and one at the end of a read that began inside a
// packet, or inside the DISCONNECT itself). The client has closed
// [MQTT-3.14.4-1], and mqgate closes both sides at once rather than wait
// for the broker's FIN (pipe and pipe/epoll's TestDisconnectThenFIN
// show that with a broker that stays); the broker must still get the
// DISCONNECT before the connection ends, so it discards the will
// [MQTT-3.14.4-3]: a subscriber to will/# sees none. The control, a client
// that closes without a DISCONNECT, has its will published. Which FIN
// reaches mqgate first, the client's or Mosquitto's, is a race either way:
// the record's end is one of the two.
func TestDisconnectThenFINNoWill(t *testing.T) {
	t.Parallel()
	home := mqtttest.StartMosquitto(t, "")
	w := watchWills(t, home.Addr())
	for _, dp := range dataPaths {
		t.Run(dp, func(t *testing.T) {
			t.Parallel()
			g := gatewayOn(t, dp, home, 0)
			dial := func(t *testing.T, id string, level byte) *net.TCPConn {
				conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 30, ClientID: id,
					Will: &mqtt.Will{QoS: 1, Topic: "will/" + id, Payload: []byte(id + " is gone")}})
				if len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0 {
					t.Fatalf("%s: CONNACK = % x", id, ack)
				}
				return conn.(*net.TCPConn)
			}
			for _, tt := range []struct {
				level byte
				bye   []byte
				// cut > 0: the first cut bytes of bye go first, and the rest
				// only once mqgate has passed them on (its byte count says
				// so), so that its last read begins inside a packet.
				cut int
			}{
				{level: mqtt.Level311, bye: []byte{0xe0, 0x00}},
				{level: mqtt.Level5, bye: []byte{0xe0, 0x01, 0x00}},     // Normal disconnection
				{level: mqtt.Level5, bye: []byte{0xe0, 0x00}},           // the same, its Reason Code left out (5.0 section 3.14.2.1)
				{level: mqtt.Level5, bye: []byte(disconnectWithReason)}, // with a property
				{level: mqtt.Level5, bye: []byte(disconnectWithReason), cut: 4},
				{level: mqtt.Level311, bye: []byte{0x30, 0x05, 0x00, 0x01, 't', 'h', 'i', 0xe0, 0x00}, cut: 4}, // a PUBLISH's tail, then DISCONNECT
			} {
				id := fmt.Sprintf("fin-%s-%d-%d-%d", dp, tt.level, len(tt.bye), tt.cut)
				conn := dial(t, id, tt.level)
				rest := tt.bye
				if tt.cut > 0 {
					before := g.srv.Stats().BytesUp
					if _, err := conn.Write(tt.bye[:tt.cut]); err != nil {
						t.Fatal(err)
					}
					mqtttest.WaitFor(t, id+"'s first bytes passed on", func() bool { return g.srv.Stats().BytesUp >= before+int64(tt.cut) })
					rest = tt.bye[tt.cut:]
				}
				if _, err := conn.Write(rest); err != nil {
					t.Fatal(err)
				}
				if err := conn.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if p := mqtttest.ReadPacket(t, conn); p != nil {
					t.Fatalf("%s: got % x after DISCONNECT, want EOF", id, p)
				}
				rec := g.accessRecord(t, id)
				if rec["end"] != "client_closed" && rec["end"] != "broker_closed" {
					t.Errorf("%s: record %v; want end client_closed or broker_closed", id, rec)
				}
				w.notPublished(t, id, "DISCONNECT then FIN on "+dp)
			}
			id := "fin-control-" + dp
			dial(t, id, mqtt.Level311).Close()
			w.published(t, id, "closed without DISCONNECT on "+dp)
		})
	}
}
