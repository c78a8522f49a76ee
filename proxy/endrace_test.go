package proxy_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/internal/packettest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestFirstEndWins: when the pipe has closed a connection itself (0x95
// Packet too large, 0x8D Keep alive timeout) and an Admin API kick or a
// drain reaches it while it still lingers (the client has not closed yet),
// the access record names the pipe's reason, decided first, not the later
// one; the kick and the drain still find the connection and say nothing
// to the client.
func TestFirstEndWins(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMosquitto(t, "")
	v5publish := func(topic string, payload []byte) []byte {
		body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
		body = append(append(append(body, topic...), 0), payload...) // no properties
		return append(packettest.AppendLength([]byte{0x30}, len(body)), body...)
	}
	for _, tc := range []struct {
		id, want string
		timeout  string // the upstream's timeout, empty for none
		code     mqtt.ReasonCode
		then     func(g *gateway, id string) int // the later close; how many it reached
	}{
		{id: "big-kick", want: "packet_too_large", code: mqtt.PacketTooLarge, then: func(g *gateway, id string) int { return len(g.srv.CloseClient(id)) }},
		// The idle limit comes from timeout.read, not from a short
		// keepalive: the broker would apply that keepalive too, send its
		// own DISCONNECT 0x8D and close, racing the pipe's.
		{id: "idle-kick", want: "idle_timeout", timeout: "timeout: {read: 1s}, ", code: mqtt.KeepAliveTimeout, then: func(g *gateway, id string) int { return len(g.srv.CloseClient(id)) }},
		{id: "big-drain", want: "packet_too_large", code: mqtt.PacketTooLarge, then: func(g *gateway, _ string) int { return g.srv.DrainAll(0) }},
	} {
		t.Run(tc.id, func(t *testing.T) {
			g := startGateway(t, fmt.Sprintf(`stream_proxy:
  tcp: [LISTEN]
  max_packet_size: 4096
upstreams: [{id: 1, %snodes: {%q: 1}}]
stream_routes: [{id: all, upstream_id: 1}]
`, tc.timeout, broker.Addr()))
			conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, KeepAlive: 30, ClientID: tc.id})
			if ack == nil {
				t.Fatal("no CONNACK")
			}
			defer conn.Close()
			if tc.code == mqtt.PacketTooLarge {
				if _, err := conn.Write(v5publish("big", make([]byte, 5000))); err != nil {
					t.Fatal(err)
				}
			}
			// The pipe's own goodbye (the idle one after timeout.read).
			got := mqtttest.ReadPacket(t, conn)
			if len(got) < 3 || got[0] != 0xE0 || mqtt.ReasonCode(got[2]) != tc.code {
				t.Fatalf("read % x, want a DISCONNECT 0x%02X", got, byte(tc.code))
			}
			// The connection lingers (pipe.Linger) until the client
			// closes: a kick or a drain reaches it now.
			if n := tc.then(g, tc.id); n != 1 {
				t.Fatalf("the later close reached %d connections, want 1 (the lingering one)", n)
			}
			if rest := packettest.ReadToEOF(t, conn); len(rest) != 0 {
				t.Errorf("after the goodbye the client read % x, want nothing", rest)
			}
			if rec := g.accessRecord(t, tc.id); rec["end"] != tc.want {
				t.Errorf("access record end %v, want %s (decided first)", rec["end"], tc.want)
			}
		})
	}
}
