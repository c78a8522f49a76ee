package proxy_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestWSSLoop: on data_path epoll a wss pair (WebSocket frames inside
// tlsrecord-carried TLS 1.3 records) is carried by an event loop, counted
// as looped in both the WebSocket and the TLS record counts, and what the
// loop decides itself is what the goroutine path (mqttws.Conn over
// tlsrecord.Conn, data_path goroutines here) does, with the same
// access-log end and detail: Paho over wss:// through to Mosquitto
// publishes 100 KB to itself; a ping gets its pong [RFC 6455 5.5.2]; a
// frame header cut into a record per byte and a message fragmented over
// two frames [RFC 6455 5.2, 5.4] still parse; a close gets its close
// [RFC 6455 5.5.1]; a text frame 1003 [MQTT-6.0.0-1], an unmasked one
// 1002 [RFC 6455 5.1]; a record that does not open its alert [RFC 8446
// 6.2]; a 5.0 client kicked by a newer one with its id
// gets DISCONNECT 0x8E in a binary frame, then a close frame.
func TestWSSLoop(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMosquitto(t, "")
	ends := map[string]map[string]string{}
	for _, dp := range []string{config.DataPathEpoll, config.DataPathGoroutines} {
		g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true, websocket: true}]
  data_path: %[3]s
  on_duplicate_client_id: keep_newest
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr(), dp))
		tlsCfg := p.clientTLS("a.example", nil)
		url := "wss://" + g.addr + "/mqtt"
		looped := 0
		inLoop := func(id string) {
			t.Helper()
			if dp != config.DataPathEpoll {
				return
			}
			looped++
			mqtttest.WaitFor(t, id+" in an event loop", func() bool {
				st := g.srv.Stats()
				return st.WebSocketLooped == uint64(looped) && st.TLSRecordLooped == uint64(looped)
			})
		}
		dial := func(id string, level byte) *mqtttest.WSConn {
			t.Helper()
			c := mqtttest.MustDialWS(t, url, mqtttest.WSOptions{TLS: tlsCfg})
			if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
				t.Fatal(err)
			}
			if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), level); err != nil || code != 0 {
				t.Fatalf("%s: CONNACK code %v, err %v", id, code, err)
			}
			inLoop(id)
			return c
		}
		end := func(id string) map[string]string {
			t.Helper()
			rec := g.waitRecord(t, dp+": the record of "+id, func(r map[string]any) bool { return r["client_id"] == id && r["end"] != nil })
			if rec["transport"] != "wss" {
				t.Errorf("%s: transport %v, want wss", id, rec["transport"])
			}
			return map[string]string{"end": fmt.Sprint(rec["end"]), "detail": fmt.Sprint(rec["detail"])}
		}

		// Paho over wss://, 100 KB to itself and back.
		got := make(chan []byte, 1)
		opts := pahov3.NewClientOptions().AddBroker(url).SetClientID("wss-paho").SetTLSConfig(tlsCfg).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
		pc := pahov3.NewClient(opts)
		if tok := pc.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("paho over wss://: %v", tok.Error())
		}
		inLoop("wss-paho")
		if tok := pc.Subscribe("wss/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		big := strings.Repeat("z", 100<<10)
		if tok := pc.Publish("wss/x", 1, false, big); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		select {
		case m := <-got:
			if string(m) != big {
				t.Errorf("got %d bytes back, want the %d sent", len(m), len(big))
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the PUBLISH did not come back over wss://")
		}
		pc.Disconnect(100)
		end("wss-paho") // client_closed or broker_closed: Paho's close races Mosquitto's

		// A ping, a PINGREQ whose frame header comes in a record per byte,
		// a PINGREQ fragmented over two frames.
		c := dial("wss-ping", mqtt.Level311)
		if err := c.WriteFrame(ws.OpPing, true, []byte("are you there")); err != nil {
			t.Fatal(err)
		}
		if h, p := c.ReadFrame(t); h.OpCode != ws.OpPong || string(p) != "are you there" || h.Masked {
			t.Fatalf("answer to a ping: %v %q, want an unmasked pong echoing it", h.OpCode, p)
		}
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewBinaryFrame([]byte{0xc0, 0}))); err != nil {
			t.Fatal(err)
		}
		for _, x := range b.Bytes() {
			if _, err := c.Conn.Write([]byte{x}); err != nil { // a TLS record each
				t.Fatal(err)
			}
		}
		if h, p := c.ReadFrame(t); h.OpCode != ws.OpBinary || !bytes.Equal(p, []byte{0xd0, 0}) {
			t.Fatalf("PINGRESP: %v % x", h.OpCode, p)
		}
		if err := c.WriteFrame(ws.OpBinary, false, []byte{0xc0}); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteFrame(ws.OpContinuation, true, []byte{0}); err != nil {
			t.Fatal(err)
		}
		if h, p := c.ReadFrame(t); h.OpCode != ws.OpBinary || !bytes.Equal(p, []byte{0xd0, 0}) {
			t.Fatalf("PINGRESP to a fragmented PINGREQ: %v % x", h.OpCode, p)
		}
		// DISCONNECT: the broker closes [MQTT-3.14.4-1], a close frame
		// 1000 says so (then close_notify).
		if _, err := c.Write([]byte{0xe0, 0}); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after DISCONNECT: read %d, %v; want EOF (a close frame)", n, err)
		}
		c.Close()
		ends[dp+"/ping"] = end("wss-ping")

		// A close.
		c = dial("wss-close", mqtt.Level311)
		if err := c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")); err != nil {
			t.Fatal(err)
		}
		h, pl := c.ReadFrame(t)
		if code, _ := ws.ParseCloseFrameData(pl); h.OpCode != ws.OpClose || code != ws.StatusGoingAway {
			t.Fatalf("answer to a close: %v %d, want close 1001", h.OpCode, code)
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after the close: read %d, %v; want EOF", n, err)
		}
		ends[dp+"/close"] = end("wss-close")

		// Frames MQTT over WebSocket does not allow.
		for _, tc := range []struct {
			name, reasonHas string
			code            ws.StatusCode
			send            func(*mqtttest.WSConn) error
		}{
			{"text", "MQTT-6.0.0-1", ws.StatusUnsupportedData,
				func(c *mqtttest.WSConn) error { return c.WriteFrame(ws.OpText, true, []byte("hello")) }},
			{"unmasked", "masked", ws.StatusProtocolError,
				func(c *mqtttest.WSConn) error { return ws.WriteFrame(c.Conn, ws.NewBinaryFrame([]byte{0xc0, 0})) }},
		} {
			id := "wss-" + tc.name
			c := dial(id, mqtt.Level311)
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			if code, reason := c.ReadCloseFrame(t); code != tc.code || !strings.Contains(reason, tc.reasonHas) {
				t.Errorf("%s, %s frame: close %d %q, want %d citing %q", dp, tc.name, code, reason, tc.code, tc.reasonHas)
			}
			ends[dp+"/"+tc.name] = end(id)
		}

		// A record that does not open: its alert, no close frame (nothing
		// could carry one) [RFC 8446 5.2, 6.2].
		bad := dial("wss-bad", mqtt.Level311)
		tc, ok := bad.Conn.(*tls.Conn)
		if !ok {
			t.Fatalf("the wss client's connection is a %T, want a *tls.Conn", bad.Conn)
		}
		if _, err := netConnOf(t, tc).Write([]byte{23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}); err != nil {
			t.Fatal(err)
		}
		_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "bad record MAC") {
			t.Fatalf("%s: after a bad record the client read %v, want the bad_record_mac alert", dp, err)
		}
		ends[dp+"/bad"] = end("wss-bad")

		// A kick: DISCONNECT 0x8E in a binary frame, then a close frame.
		older := dial("wss-kick", mqtt.Level5)
		dial("wss-kick", mqtt.Level5)
		if h, p := older.ReadFrame(t); h.OpCode != ws.OpBinary || !bytes.Equal(p, []byte{0xe0, 1, byte(mqtt.SessionTakenOver)}) {
			t.Fatalf("%s: the older connection read %v % x, want DISCONNECT 0x8E in a binary frame", dp, h.OpCode, p)
		}
		if h, _ := older.ReadFrame(t); h.OpCode != ws.OpClose {
			t.Fatalf("%s: after the DISCONNECT: %v, want a close frame", dp, h.OpCode)
		}
		ends[dp+"/kick"] = end("wss-kick")

		if st := g.srv.Stats(); dp == config.DataPathEpoll && (st.WebSocketParked != 0 || st.TLSRecordParked != 0 || st.WebSocketLooped != 8 || st.TLSRecordLooped != 8) {
			t.Errorf("wss pairs looped %d (ws) and %d (records), parked %d and %d; want all 8 looped in both",
				st.WebSocketLooped, st.TLSRecordLooped, st.WebSocketParked, st.TLSRecordParked)
		}
	}
	for _, k := range []string{"ping", "close", "text", "unmasked", "bad", "kick"} {
		if e, g := ends["epoll/"+k], ends["goroutines/"+k]; e["end"] != g["end"] || e["detail"] != g["detail"] {
			t.Errorf("%s: the loop ended %v, the goroutine path %v", k, e, g)
		}
	}
}
