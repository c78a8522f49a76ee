package proxy_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/internal/packettest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestTLSRecordLoop: on data_path epoll a tlsrecord-carried TLS 1.3 pair
// is carried by an event loop (the Stats say so) and ends as on the
// goroutine path, real crypto/tls clients through to Mosquitto: the same
// access-log end, detail and byte counts when the client sends DISCONNECT
// [MQTT-3.14.4-1], when a newer client with its id kicks a 5.0 client
// (DISCONNECT 0x8E in a record, then close_notify [RFC 8446 6.1]), and
// when it sends a record that does not open (bad_record_mac [RFC 8446
// 5.2, 6.2]).
func TestTLSRecordLoop(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMosquitto(t, "")
	ends := map[string]map[string]string{}
	for _, dp := range []string{config.DataPathEpoll, config.DataPathGoroutines} {
		g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
  data_path: %[3]s
  on_duplicate_client_id: keep_newest
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr(), dp))
		looped := 0
		dial := func(id string, level byte) *tls.Conn {
			t.Helper()
			c, err := tls.Dial("tcp", g.addr, p.clientTLS("a.example", nil))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
				t.Fatal(err)
			}
			if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), level); err != nil || code != 0 {
				t.Fatalf("%s: CONNACK code %v, err %v", id, code, err)
			}
			if dp == config.DataPathEpoll {
				looped++
				mqtttest.WaitFor(t, id+" in an event loop", func() bool { return g.srv.Stats().TLSRecordLooped == uint64(looped) })
			}
			return c
		}
		end := func(id string) map[string]string {
			rec := g.waitRecord(t, "the record of "+id, func(r map[string]any) bool { return r["client_id"] == id && r["end"] != nil })
			return map[string]string{"end": fmt.Sprint(rec["end"]), "detail": fmt.Sprint(rec["detail"]),
				"up": fmt.Sprint(rec["bytes_up"]), "down": fmt.Sprint(rec["bytes_down"])}
		}

		// DISCONNECT after PINGs, a 100 KB PUBLISH each way.
		c := dial("tl-bye", mqtt.Level311)
		for range 3 {
			if _, err := c.Write([]byte{0xc0, 0x00}); err != nil {
				t.Fatal(err)
			}
			if pk := mqtttest.ReadPacket(t, c); len(pk) != 2 || pk[0] != 0xd0 {
				t.Fatalf("PINGRESP = % x", pk)
			}
		}
		if _, err := c.Write(subscribePacket("tl/#")); err != nil {
			t.Fatal(err)
		}
		if pk := mqtttest.ReadPacket(t, c); len(pk) == 0 || pk[0] != 0x90 {
			t.Fatalf("SUBACK = % x", pk)
		}
		big := publishPacket("tl/x", strings.Repeat("y", 100<<10))
		if _, err := c.Write(big); err != nil {
			t.Fatal(err)
		}
		if pk := mqtttest.ReadPacket(t, c); len(pk) != len(big) {
			t.Fatalf("the PUBLISH came back as %d bytes, want %d", len(pk), len(big))
		}
		if _, err := c.Write([]byte{0xe0, 0x00}); err != nil {
			t.Fatal(err)
		}
		if pk := mqtttest.ReadPacket(t, c); pk != nil {
			t.Fatalf("got % x after DISCONNECT, want EOF", pk)
		}
		c.Close()
		ends[dp+"/bye"] = end("tl-bye")

		// A kick: DISCONNECT 0x8E, then close_notify (EOF to crypto/tls).
		old := dial("tl-kick", mqtt.Level5)
		dial("tl-kick", mqtt.Level5)
		if pk := mqtttest.ReadPacket(t, old); len(pk) < 3 || pk[0] != 0xe0 || pk[2] != byte(mqtt.SessionTakenOver) {
			t.Fatalf("kicked client read % x, want DISCONNECT 0x8E", pk)
		}
		if pk := mqtttest.ReadPacket(t, old); pk != nil {
			t.Fatalf("got % x after the DISCONNECT, want EOF (close_notify)", pk)
		}
		ends[dp+"/kick"] = end("tl-kick") // bytes_down without the proxy's DISCONNECT on both paths

		// A record that does not open: the server's alert comes back.
		bad := dial("tl-bad", mqtt.Level311)
		raw := netConnOf(t, bad)
		if _, err := raw.Write([]byte{23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}); err != nil {
			t.Fatal(err)
		}
		_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := bad.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "bad record MAC") {
			t.Fatalf("after a bad record the client read %v, want the bad_record_mac alert", err)
		}
		ends[dp+"/bad"] = end("tl-bad")
	}
	for _, k := range []string{"bye", "kick", "bad"} {
		e, gr := ends[config.DataPathEpoll+"/"+k], ends[config.DataPathGoroutines+"/"+k]
		if fmt.Sprint(e) != fmt.Sprint(gr) {
			t.Errorf("%s: the loop's record %v, the goroutines' %v: want the same", k, e, gr)
		}
	}
}

// netConnOf is the TCP connection under a client's tls.Conn.
func netConnOf(t *testing.T, c *tls.Conn) net.Conn {
	t.Helper()
	return c.NetConn()
}

// publishPacket is a QoS 0 PUBLISH of payload to topic (3.1.1).
func publishPacket(topic, payload string) []byte { return packettest.Publish(topic, []byte(payload)) }

// subscribePacket is a 3.1.1 SUBSCRIBE to filter at QoS 0, packet id 1.
func subscribePacket(filter string) []byte {
	body := append([]byte{0, 1, byte(len(filter) >> 8), byte(len(filter))}, filter...)
	body = append(body, 0)
	return append(packettest.AppendLength([]byte{0x82}, len(body)), body...)
}

// TestTLSLoopAfterStaying: a TLS pair is handed to an event loop only once
// it has stayed (tlsLoopAfter old, with both
// directions parked), so a short session, CONNECT, CONNACK, DISCONNECT,
// ends parked and is counted so, while one that stays moves, still
// answers PINGREQ [MQTT-3.12.4-1] from the loop, and is logged with the
// bytes of both paths.
func TestTLSLoopAfterStaying(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
  data_path: epoll
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr()))
	connect := func(id string) (*tls.Conn, int) {
		t.Helper()
		c, err := tls.Dial("tcp", g.addr, p.clientTLS("a.example", nil))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		pkt := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: id})
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), mqtt.Level311); err != nil || code != 0 {
			t.Fatalf("%s: CONNACK code %v, err %v", id, code, err)
		}
		return c, len(pkt)
	}
	ping := func(c *tls.Conn) {
		t.Helper()
		if _, err := c.Write([]byte{0xc0, 0x00}); err != nil {
			t.Fatal(err)
		}
		if pk := mqtttest.ReadPacket(t, c); len(pk) != 2 || pk[0] != 0xd0 {
			t.Fatalf("PINGRESP = % x", pk)
		}
	}
	bye := func(c *tls.Conn, id string) map[string]any {
		t.Helper()
		if _, err := c.Write([]byte{0xe0, 0x00}); err != nil {
			t.Fatal(err)
		}
		if pk := mqtttest.ReadPacket(t, c); pk != nil {
			t.Fatalf("%s: got % x after DISCONNECT, want EOF", id, pk)
		}
		c.Close()
		return g.waitRecord(t, "the record of "+id, func(r map[string]any) bool { return r["client_id"] == id && r["end"] != nil })
	}
	counts := func() (looped, parked uint64) {
		st := g.srv.Stats()
		return st.TLSRecordLooped, st.TLSRecordParked
	}

	// Short: it ends parked, never handed over.
	c, _ := connect("short")
	bye(c, "short")
	if l, pk := counts(); l != 0 || pk != 1 {
		t.Fatalf("after a short session: looped %d, parked %d; want 0 and 1", l, pk)
	}

	// Long: handed over once it has stayed, and carried on by the loop.
	c, n := connect("long")
	ping(c)
	mqtttest.WaitFor(t, "the staying pair in an event loop", func() bool { l, _ := counts(); return l == 1 })
	ping(c)
	rec := bye(c, "long")
	if l, pk := counts(); l != 1 || pk != 1 {
		t.Fatalf("after the long session: looped %d, parked %d; want 1 and 1", l, pk)
	}
	// Up: CONNECT, two PINGREQs, DISCONNECT; down: CONNACK, two PINGRESPs.
	if up, down := fmt.Sprint(rec["bytes_up"]), fmt.Sprint(rec["bytes_down"]); up != fmt.Sprint(n+6) || down != "8" {
		t.Errorf("long session logged bytes up %s, down %s; want %d and 8", up, down, n+6)
	}
}

// TestTLSLoopWhileBusy: a TLS or wss pair that never pauses (a client
// publishing to itself in bursts, the next burst as soon as the last came
// back, so neither direction waits lingerFor with nothing read) still
// moves into an event loop once it has stayed, between a burst's answers
// and the next burst, and every message of the stream comes back once, in
// order, across the move.
func TestTLSLoopWhileBusy(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	for _, transport := range []string{"tls", "wss"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			ws := ""
			if transport == "wss" {
				ws = ", websocket: true"
			}
			g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true%[3]s}]
  data_path: epoll
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr(), ws))
			var c net.Conn
			if transport == "wss" {
				c = mqtttest.MustDialWS(t, "wss://"+g.addr+"/mqtt", mqtttest.WSOptions{TLS: p.clientTLS("a.example", nil)})
			} else {
				tc, err := tls.Dial("tcp", g.addr, p.clientTLS("a.example", nil))
				if err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			defer c.Close()
			id := "busy-" + transport
			connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: id})
			if _, err := c.Write(append(connect, subscribePacket(id)...)); err != nil {
				t.Fatal(err)
			}
			if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), mqtt.Level311); err != nil || code != 0 {
				t.Fatalf("CONNACK code %v, err %v", code, err)
			}
			if pk := mqtttest.ReadPacket(t, c); len(pk) == 0 || pk[0] != 0x90 {
				t.Fatalf("SUBACK = % x", pk)
			}
			looped := func() bool {
				st := g.srv.Stats()
				return st.TLSRecordLooped == 1 && (transport != "wss" || st.WebSocketLooped == 1)
			}

			const burst = 16
			seq, after := 0, -1 // after: bursts left once the pair moved
			deadline := time.Now().Add(30 * time.Second)
			for after != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("still parked after %d bursts without a pause (stats %+v)", seq/burst, g.srv.Stats())
				}
				var out []byte
				for i := range burst {
					out = append(out, publishPacket(id, strconv.Itoa(seq+i))...)
				}
				if _, err := c.Write(out); err != nil {
					t.Fatal(err)
				}
				for range burst {
					pk := mqtttest.ReadPacket(t, c)
					if want := publishPacket(id, strconv.Itoa(seq)); !bytes.Equal(pk, want) {
						t.Fatalf("message %d: got % x, want % x", seq, pk, want)
					}
					seq++
				}
				switch {
				case after > 0:
					after--
				case looped():
					after = 50 // carried on by the loop
				}
			}
			if st := g.srv.Stats(); st.TLSRecordParked != 0 {
				t.Errorf("parked pairs ended %d, want 0", st.TLSRecordParked)
			}
		})
	}
}
