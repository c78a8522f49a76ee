package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// holdConn connects through addr with level 3.1.1 and keeps the
// connection open, failing the test unless the broker accepts it.
func holdConn(t *testing.T, addr, id, user string) net.Conn {
	t.Helper()
	c := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 60, ClientID: id}
	if user != "" {
		c.Username, c.HasUsername = user, true
	}
	conn, ack := mqtttest.Connect(t, addr, c)
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level311); err != nil || code != 0 {
		t.Fatalf("%s: CONNACK % x: code %v, err %v", id, ack, code, err)
	}
	// Runs before Connect's cleanup closes it: a reset leaves no TIME_WAIT
	// behind to hold a local port on a machine that runs many tests.
	t.Cleanup(func() { noLinger(conn) })
	return conn
}

// noLinger makes closing c send a reset instead of a FIN.
func noLinger(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// refusedWith connects id at level and returns the CONNACK's code, failing
// the test when there is none or the connection stays open after it.
func refusedWith(t *testing.T, addr, id, user string, level byte) mqtt.ReasonCode {
	t.Helper()
	c := &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 60, ClientID: id}
	if user != "" {
		c.Username, c.HasUsername = user, true
	}
	conn, ack := mqtttest.Connect(t, addr, c)
	if ack == nil {
		t.Fatalf("%s: closed without a CONNACK", id)
	}
	_, code, err := mqtt.ParseConnack(ack, level)
	if err != nil {
		t.Fatalf("%s: CONNACK % x: %v", id, ack, err)
	}
	if code != 0 {
		if rest := mqtttest.ReadPacket(t, conn); rest != nil {
			t.Errorf("%s: after a refusing CONNACK got % x, want the connection closed", id, rest)
		}
	}
	return code
}

// TestLimits: every limit refuses a well-formed CONNECT over it with its
// reason code (5.0) or return code (3.1.1), counts it under its reason, and
// lets other clients through.
func TestLimits(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	type hold struct{ id, user string }
	tests := []struct {
		name        string
		streamProxy string // extra stream_proxy keys
		plugins     string
		hold        []hold // connections taken first, all accepted
		try         hold   // then refused at 5.0 and at 3.1.1
		code5       mqtt.ReasonCode
		code311     mqtt.ReasonCode
		reason      string
		allowed     *hold // and then accepted
	}{
		{name: "ip-restriction blacklist", plugins: `ip-restriction: {blacklist: [127.0.0.0/8]}`,
			try: hold{"x", ""}, code5: mqtt.Banned, code311: 0x05, reason: "ip_restriction"},
		{name: "ip-restriction whitelist", plugins: `ip-restriction: {whitelist: [10.0.0.0/8, "::1"], message: "only the plant network"}`,
			try: hold{"x", ""}, code5: mqtt.Banned, code311: 0x05, reason: "ip_restriction"},
		{name: "max_connections", streamProxy: `max_connections: 2`,
			hold: []hold{{"a", ""}, {"b", ""}}, try: hold{"c", ""}, code5: mqtt.QuotaExceeded, code311: 0x03, reason: "max_connections"},
		{name: "limit-conn by client id", plugins: `limit-conn: {conn: 1, key: mqtt_client_id}`,
			hold: []hold{{"a", ""}}, try: hold{"a", ""}, code5: mqtt.QuotaExceeded, code311: 0x03, reason: "limit_conn", allowed: &hold{"b", ""}},
		{name: "limit-conn by user name with burst", plugins: `limit-conn: {conn: 1, burst: 1, key: mqtt_username, rejected_msg: "one per user"}`,
			hold: []hold{{"a", "u"}, {"b", "u"}}, try: hold{"c", "u"}, code5: mqtt.QuotaExceeded, code311: 0x03, reason: "limit_conn", allowed: &hold{"d", "v"}},
		{name: "limit-conn by client address", plugins: `limit-conn: {conn: 2}`,
			hold: []hold{{"a", ""}, {"b", ""}}, try: hold{"c", ""}, code5: mqtt.QuotaExceeded, code311: 0x03, reason: "limit_conn"},
		{name: "limit-conn per route", plugins: `limit-conn: {conn: 1, key: route_id}`,
			hold: []hold{{"a", ""}}, try: hold{"b", ""}, code5: mqtt.QuotaExceeded, code311: 0x03, reason: "limit_conn"},
		{name: "limit-req", plugins: `limit-req: {rate: 0.001, burst: 1}`,
			hold: []hold{{"a", ""}, {"b", ""}}, try: hold{"c", ""}, code5: mqtt.ConnectionRateExceeded, code311: 0x03, reason: "limit_req"},
		{name: "duplicate client id, keep_oldest", streamProxy: `on_duplicate_client_id: keep_oldest`,
			hold: []hold{{"a", ""}}, try: hold{"a", ""}, code5: mqtt.ClientIdentifierNotValid, code311: 0x02, reason: "duplicate_client_id", allowed: &hold{"b", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plugins := ""
			if tt.plugins != "" {
				plugins = "    plugins:\n      " + tt.plugins + "\n"
			}
			gw := startGateway(t, fmt.Sprintf("stream_proxy:\n  tcp: [LISTEN]\n  %s\nupstreams:\n  - id: 1\n    nodes: {%q: 1}\nstream_routes:\n  - id: r\n    upstream_id: 1\n%s",
				tt.streamProxy, broker.Addr(), plugins))
			for _, h := range tt.hold {
				holdConn(t, gw.addr, h.id, h.user)
			}
			if code := refusedWith(t, gw.addr, tt.try.id, tt.try.user, mqtt.Level5); code != tt.code5 {
				t.Errorf("5.0: code %#x %s, want %#x %s", byte(code), code, byte(tt.code5), tt.code5)
			}
			if code := refusedWith(t, gw.addr, tt.try.id, tt.try.user, mqtt.Level311); code != tt.code311 {
				t.Errorf("3.1.1: return code %#x, want %#x", byte(code), byte(tt.code311))
			}
			if got := gw.srv.Stats().Refused[tt.reason]; got != 2 {
				t.Errorf("refused[%s] = %d, want 2 (stats %v)", tt.reason, got, gw.srv.Stats().Refused)
			}
			if tt.allowed != nil {
				holdConn(t, gw.addr, tt.allowed.id, tt.allowed.user)
			}
		})
	}
}

// TestLimitReleased: a connection that ends gives its place back.
func TestLimitReleased(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN], max_connections: 1}
upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes: [{id: r, upstream_id: 1, plugins: {limit-conn: {conn: 1, key: mqtt_client_id}}}]
`, broker.Addr()))
	for i := range 3 {
		c := holdConn(t, gw.addr, "a", "")
		c.Close()
		mqtttest.WaitFor(t, fmt.Sprintf("connection %d ended", i), func() bool { return gw.srv.Stats().Active == 0 })
	}
}

// TestDuplicateKeepNewest: a client id that connects again through mqgate
// closes its older connection, as a broker's session takeover does. Round
// robin sends the two to different brokers, so only mqgate can close it.
func TestDuplicateKeepNewest(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN], on_duplicate_client_id: keep_newest}
upstreams: [{id: 1, nodes: {%q: 1, %q: 1}}]
stream_routes: [{id: r, upstream_id: 1}]
`, a.Addr(), b.Addr()))
	old := holdConn(t, gw.addr, "dev-1", "")
	newer := holdConn(t, gw.addr, "dev-1", "")
	other := holdConn(t, gw.addr, "dev-2", "")
	if pkt := mqtttest.ReadPacket(t, old); pkt != nil {
		t.Errorf("older connection got % x, want it closed", pkt)
	}
	// The newer connection and the other client still work.
	for _, c := range []net.Conn{newer, other} {
		if _, err := c.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
			t.Fatal(err)
		}
		if pkt := mqtttest.ReadPacket(t, c); len(pkt) != 2 || pkt[0] != 0xD0 {
			t.Errorf("PINGRESP: got % x", pkt)
		}
	}
	mqtttest.WaitFor(t, "a taken_over access record", func() bool {
		for _, l := range gw.access.Lines() {
			if strings.Contains(l, `"end":"taken_over"`) && strings.Contains(l, `"client_id":"dev-1"`) {
				return true
			}
		}
		return false
	})
}

// TestLimitAcrossReload: a reload that keeps a route's limit keeps its
// counts (the limit still holds for connections made before it); one that
// changes the limit starts it afresh.
func TestLimitAcrossReload(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	yml := func(conn int) string {
		return fmt.Sprintf(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes: [{id: r, upstream_id: 1, plugins: {limit-conn: {conn: %d, key: route_id}}}]
`, broker.Addr(), conn)
	}
	gw := startGateway(t, yml(1))
	apply := func(yml string) {
		t.Helper()
		cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(yml)})
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.srv.Apply(cfg); err != nil {
			t.Fatal(err)
		}
	}
	holdConn(t, gw.addr, "a", "")
	apply(yml(1))
	if code := refusedWith(t, gw.addr, "b", "", mqtt.Level5); code != mqtt.QuotaExceeded {
		t.Errorf("after a reload with the same limit: code %#x, want 0x97", byte(code))
	}
	apply(yml(2))
	holdConn(t, gw.addr, "c", "")
}
