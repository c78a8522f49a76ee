package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/internal/packettest"
	"github.com/mqgate/mqgate/mqtt"
)

// wsConfig is one listener taking MQTT and MQTT over WebSocket, routed by
// client id over brokers; extra goes into the listener's map.
func wsConfig(extra string, brokers ...mqtttest.Broker) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream_proxy:\n  tcp:\n    - {addr: LISTEN, websocket: true%s}\n  connect_timeout: 10s\nupstreams:\n  - id: 1\n    type: chash\n    key: mqtt_client_id\n    nodes:\n", extra)
	for _, br := range brokers {
		fmt.Fprintf(&b, "      %q: 1\n", br.Addr())
	}
	b.WriteString("stream_routes:\n  - id: 1\n    upstream_id: 1\n")
	return b.String()
}

func wsURL(addr string) string { return "ws://" + addr + "/mqtt" }

// TestWebSocketPubSub: Paho 3.1.1 over ws:// (its own WebSocket dialer)
// and paho.golang 5.0 over a WebSocket net.Conn exchange messages through
// mqgate with a client on plain MQTT, all on the same port.
func TestWebSocketPubSub(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, wsConfig("", broker))

	msgs3, msgs5, msgsTCP := make(chan message, 10), make(chan message, 10), make(chan message, 10)
	v3 := dialV3URL(t, wsURL(g.addr), "ws-v3", 4, msgs3)
	v5 := dialV5Conn(t, mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{}), "ws-v5", msgs5)
	tcp := dialV3(t, g.addr, "tcp-v3", 4, msgsTCP)
	v3.subscribe(t, "to/v3", 1)
	v5.subscribe(t, "to/v5", 1)
	tcp.subscribe(t, "to/tcp", 1)

	big := bytes.Repeat([]byte("0123456789"), 20000) // 200 kB: many frames' worth of TCP segments
	v5.publish(t, "to/v3", 1, false, big)
	receive(t, msgs3, "to/v3", big)
	tcp.publish(t, "to/v5", 1, false, []byte("from tcp"))
	receive(t, msgs5, "to/v5", []byte("from tcp"))
	v3.publish(t, "to/tcp", 0, false, []byte("from ws"))
	receive(t, msgsTCP, "to/tcp", []byte("from ws"))

	v3.close()
	rec := g.waitRecord(t, "ws-v3's record", func(r map[string]any) bool { return r["client_id"] == "ws-v3" })
	if rec["transport"] != "ws" || rec["node"] != broker.Addr() {
		t.Errorf("access record %v", rec)
	}
}

// TestWebSocketSameBroker: a client id lands on the same broker of three
// whether it comes over TCP or WebSocket, as the brokers see it.
func TestWebSocketSameBroker(t *testing.T) {
	t.Parallel()
	brokers := []mqtttest.Broker{mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)}
	g := startGateway(t, wsConfig("", brokers...))
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("meter-%d", i)
		ids = append(ids, id)
		mqtttest.ConnectOK(t, g.addr, id, mqtt.Level311)
		c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{})
		if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
			t.Fatal(err)
		}
		if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), mqtt.Level5); err != nil || code != 0 {
			t.Fatalf("%s over WebSocket: CONNACK code %v, err %v", id, code, err)
		}
		c.Close()
	}
	mqtttest.WaitFor(t, "24 connects at the brokers", mqtttest.SeenTotal(brokers, 24))
	where := mqtttest.Owners(t, brokers, ids, 2) // fails when an id reached two brokers
	used := map[int]bool{}
	for _, b := range where {
		used[b] = true
	}
	if len(used) < 2 {
		t.Errorf("12 ids all went to one broker: %v", where)
	}
}

// subscribe311 subscribes to topic at QoS 0 with packet id 1.
func subscribe311(topic string) []byte {
	body := binary.BigEndian.AppendUint16([]byte{0, 1}, uint16(len(topic)))
	body = append(append(body, topic...), 0)
	return append(packettest.AppendLength([]byte{0x82}, len(body)), body...)
}

// TestWebSocketFraming [MQTT-6.0.0-2]: the CONNECT split over three binary
// messages, SUBSCRIBE and PUBLISH in one frame, and a 100 kB PUBLISH in 101
// continuation frames with a ping between them all pass intact; framing
// towards the client is mqgate's own.
func TestWebSocketFraming(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, wsConfig("", broker))
	c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{})
	if c.Protocol != "mqtt" {
		t.Errorf("subprotocol %q, want mqtt [MQTT-6.0.0-4]", c.Protocol)
	}

	connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "framed"})
	for _, part := range [][]byte{connect[:1], connect[1:7], connect[7:]} {
		if err := c.WriteFrame(ws.OpBinary, true, part); err != nil {
			t.Fatal(err)
		}
	}
	if ack := mqtttest.ReadPacket(t, c); !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK % x", ack)
	}

	// Two packets in one frame.
	if err := c.WriteFrame(ws.OpBinary, true, append(subscribe311("f/#"), packettest.Publish("f/one", []byte("one frame"))...)); err != nil {
		t.Fatal(err)
	}
	if suback := mqtttest.ReadPacket(t, c); len(suback) == 0 || suback[0] != 0x90 {
		t.Fatalf("SUBACK % x", suback)
	}
	if got, want := mqtttest.ReadPacket(t, c), packettest.Publish("f/one", []byte("one frame")); !bytes.Equal(got, want) {
		t.Fatalf("PUBLISH back % x, want % x", got, want)
	}

	// One packet in 101 fragments, a ping in the middle [RFC 6455 5.4].
	big := packettest.Publish("f/big", bytes.Repeat([]byte{0xA5}, 100_000))
	for i, off := 0, 0; off < len(big); i++ {
		end := min(off+1000, len(big))
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpBinary
		}
		if err := c.WriteFrame(op, end == len(big), big[off:end]); err != nil {
			t.Fatal(err)
		}
		if i == 50 {
			if err := c.WriteFrame(ws.OpPing, true, []byte("are you there")); err != nil {
				t.Fatal(err)
			}
		}
		off = end
	}
	if got := mqtttest.ReadPacket(t, c); !bytes.Equal(got, big) {
		t.Fatalf("100 kB PUBLISH back: %d bytes, want %d (differ)", len(got), len(big))
	}
}

// TestWebSocketRefusals: a text frame, a missing subprotocol, a bad
// Origin, a request that is no upgrade and a path that is not the
// WebSocket's are refused, each saying why; a CONNECT the route refuses
// gets its CONNACK in a binary frame.
func TestWebSocketRefusals(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp:
    - {addr: LISTEN, websocket: {path: /ws, origins: ["https://app.example", "https://*.devices.example"]}}
stream_routes:
  - {id: v5-only, plugins: {mqtt-proxy: {protocol_level: 5}}, upstream: {nodes: {%q: 1}}}
`, broker.Addr()))
	url := "ws://" + g.addr + "/ws"

	// [MQTT-6.0.0-1] a text frame closes the connection with 1003.
	c := mqtttest.MustDialWS(t, url, mqtttest.WSOptions{Header: http.Header{"Origin": {"https://app.example"}}})
	if err := c.WriteFrame(ws.OpText, true, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.ReadCloseFrame(t); code != ws.StatusUnsupportedData || !strings.Contains(reason, "MQTT-6.0.0-1") {
		t.Errorf("text frame: close %d %q, want 1003 citing MQTT-6.0.0-1", code, reason)
	}
	g.waitRecord(t, "the text frame's record", func(r map[string]any) bool { return r["end"] == "websocket_text_frame" })

	// An unmasked frame breaks RFC 6455 5.1: 1002.
	c = mqtttest.MustDialWS(t, url, mqtttest.WSOptions{})
	if err := ws.WriteFrame(c.Conn, ws.NewBinaryFrame([]byte{0x10, 0})); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.ReadCloseFrame(t); code != ws.StatusProtocolError {
		t.Errorf("unmasked frame: close %d, want 1002", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, url string
		o         mqtttest.WSOptions
		want      string
	}{
		{"no subprotocol", url, mqtttest.WSOptions{Protocols: []string{}}, `"mqtt" must be offered [MQTT-6.0.0-3]`},
		{"other subprotocol", url, mqtttest.WSOptions{Protocols: []string{"graphql-ws"}}, `"mqtt" must be offered`},
		{"bad origin", url, mqtttest.WSOptions{Header: http.Header{"Origin": {"https://evil.example"}}}, `origin "https://evil.example" is not allowed`},
		{"other path", "ws://" + g.addr + "/mqtt", mqtttest.WSOptions{}, "MQTT over WebSocket is at /ws"},
	} {
		if c, err := mqtttest.DialWS(ctx, tc.url, tc.o); err == nil {
			c.Close()
			t.Errorf("%s: upgraded", tc.name)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Origins that pass: a listed one, a subdomain of the wildcard, none.
	for _, origin := range []string{"https://app.example", "https://a.devices.example", ""} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		mqtttest.MustDialWS(t, url, mqtttest.WSOptions{Header: h}).Close()
	}
	// MQTT 3.1 clients offer mqttv3.1 and get it.
	if c := mqtttest.MustDialWS(t, url, mqtttest.WSOptions{Protocols: []string{"mqttv3.1"}}); c.Protocol != "mqttv3.1" {
		t.Errorf("mqttv3.1 offered, %q chosen", c.Protocol)
	}
	// A plain GET on the WebSocket path.
	resp, err := http.Get("http://" + g.addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %s, want 426", resp.Status)
	}
	// Each refused upgrade has its HTTP record in the access log: status,
	// why, and the kind the websocket counters use.
	for _, want := range []struct {
		status float64
		kind   string // "": none
		detail string
	}{
		{400, "subprotocol", `"mqtt" must be offered [MQTT-6.0.0-3]`},
		{403, "origin", `origin "https://evil.example" is not allowed`},
		{404, "", "MQTT over WebSocket is at /ws"},
		{426, "not_websocket", "a GET with Upgrade: websocket"},
	} {
		g.waitRecord(t, fmt.Sprintf("the %v refusal's record", want.status), func(r map[string]any) bool {
			kind, _ := r["error_kind"].(string)
			detail, _ := r["detail"].(string)
			return r["msg"] == "http_request" && r["status"] == want.status && kind == want.kind && strings.Contains(detail, want.detail) && r["method"] == "GET"
		})
	}

	// The route takes 5.0 only: a 3.1.1 CONNECT is refused with a CONNACK
	// in a binary frame, then a close frame.
	c = mqtttest.MustDialWS(t, url, mqtttest.WSOptions{})
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 30, ClientID: "old"})); err != nil {
		t.Fatal(err)
	}
	if ack := mqtttest.ReadPacket(t, c); !bytes.Equal(ack, []byte{0x20, 2, 0, 1}) {
		t.Errorf("refusing CONNACK % x, want 20 02 00 01", ack)
	}
	if code, _ := c.ReadCloseFrame(t); code != ws.StatusNormalClosure {
		t.Errorf("after the CONNACK: close %d", code)
	}
	rec := g.waitRecord(t, "the refusal's record", func(r map[string]any) bool { return r["client_id"] == "old" })
	if rec["end"] != "refused" || rec["transport"] != "ws" {
		t.Errorf("refusal record %v", rec)
	}
	st := g.srv.Stats()
	for _, result := range []string{"upgraded", "origin", "subprotocol", "not_websocket"} {
		if st.WebSocket[result] == 0 {
			t.Errorf("websocket %s not counted: %v", result, st.WebSocket)
		}
	}
}

// TestWebSocketForwardedFor: X-Forwarded-For and X-Real-IP give the client
// address only when the peer is in real_ip_from.
func TestWebSocketForwardedFor(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	for _, tc := range []struct {
		name, trusted string
		header        http.Header
		want          string
	}{
		{"X-Forwarded-For from a trusted proxy", "127.0.0.1/32", http.Header{"X-Forwarded-For": {"203.0.113.9, 198.51.100.7"}}, "198.51.100.7"},
		{"X-Real-IP from a trusted proxy", "127.0.0.0/8", http.Header{"X-Real-IP": {"198.51.100.8"}, "X-Forwarded-For": {"192.0.2.1"}}, "198.51.100.8"},
		{"from a peer not trusted", "10.0.0.0/8", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, wsConfig(fmt.Sprintf(", real_ip_from: [%q]", tc.trusted), broker))
			c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{Header: tc.header})
			if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 30, ClientID: "fwd"})); err != nil {
				t.Fatal(err)
			}
			mqtttest.ReadPacket(t, c)
			c.Close()
			rec := g.waitRecord(t, "the record", func(r map[string]any) bool { return r["client_id"] == "fwd" })
			if client, _ := rec["client"].(string); !strings.HasPrefix(client, tc.want+":") {
				t.Errorf("client %v, want %s (record %v)", rec["client"], tc.want, rec)
			}
			if _, ok := rec["forwarded_by"]; ok != (tc.want != "127.0.0.1") {
				t.Errorf("forwarded_by in %v", rec)
			}
		})
	}
}

// TestWebSocketTLS: one tls listener takes MQTT over TLS and wss:// on the
// same port; Paho 3.1.1 uses wss://.
func TestWebSocketTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true, websocket: true}]
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: 1, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr()))
	tlsCfg := p.clientTLS("a.example", nil)

	opts := pahov3.NewClientOptions().AddBroker("wss://" + g.addr + "/mqtt").SetClientID("wss-v3").SetTLSConfig(tlsCfg).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	v3 := pahov3.NewClient(opts)
	if tok := v3.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("paho over wss://: %v", tok.Error())
	}
	got := make(chan []byte, 1)
	if tok := v3.Subscribe("secure/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	plain, err := connectV3TLS(g.addr, "tls-v3", tlsCfg)
	if err != nil {
		t.Fatalf("MQTT over TLS on the same port: %v", err)
	}
	if tok := plain.Publish("secure/x", 1, false, "over tls"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if string(m) != "over tls" {
			t.Errorf("got %q", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no message over wss://")
	}
	plain.Disconnect(100)
	v3.Disconnect(100)
	rec := g.waitRecord(t, "wss-v3's record", func(r map[string]any) bool { return r["client_id"] == "wss-v3" })
	if rec["transport"] != "wss" || rec["ssl_server_name"] != "a.example" {
		t.Errorf("record %v", rec)
	}
	if !slices.Contains(broker.Seen(), "tls-v3") {
		t.Errorf("broker saw %v", broker.Seen())
	}
}

// TestWebSocketSurvivesReload: a reload that changes the listener's
// WebSocket settings applies to the next upgrade; a WebSocket client
// already connected goes on.
func TestWebSocketSurvivesReload(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, wsConfig("", broker))
	c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{})
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 30, ClientID: "stays"})); err != nil {
		t.Fatal(err)
	}
	mqtttest.ReadPacket(t, c)

	yml := strings.Replace(wsConfig(", websocket: {path: /v2}", broker), "websocket: true, websocket:", "websocket:", 1)
	yml = strings.ReplaceAll(yml, "LISTEN", `"`+g.addr+`"`)
	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(yml)})
	if err != nil {
		t.Fatalf("%v\n%s", err, yml)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0xc0, 0}); err != nil { // PINGREQ
		t.Fatal(err)
	}
	if resp := mqtttest.ReadPacket(t, c); !bytes.Equal(resp, []byte{0xd0, 0}) {
		t.Errorf("PINGRESP after the reload: % x", resp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := mqtttest.DialWS(ctx, wsURL(g.addr), mqtttest.WSOptions{}); err == nil {
		c.Close()
		t.Error("the old path still upgrades after the reload")
	}
	mqtttest.MustDialWS(t, "ws://"+g.addr+"/v2", mqtttest.WSOptions{}).Close()
}
