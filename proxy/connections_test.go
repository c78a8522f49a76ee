package proxy_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// connectRaw connects id through addr with a hand-made CONNECT and returns
// the connection once the broker accepted it.
func connectRaw(t *testing.T, addr, id, username string) net.Conn {
	t.Helper()
	conn, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 60, ClientID: id, Username: username, HasUsername: username != ""})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level311); err != nil || code != 0 {
		t.Fatalf("%s: CONNACK % x: %v %v", id, ack, code, err)
	}
	return conn
}

// ping checks that conn still reaches its broker: PINGREQ, PINGRESP.
func ping(t *testing.T, conn net.Conn) {
	t.Helper()
	if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("PINGREQ: %v", err)
	}
	if got := mqtttest.ReadPacket(t, conn); string(got) != "\xd0\x00" {
		t.Fatalf("PINGRESP: got % x", got)
	}
}

// expectClosed checks that the proxy closed conn.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	} else if err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read: %v, want EOF", err)
	}
}

func TestConnectionTableAndClose(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, chashConfig(broker))
	conns := map[string]net.Conn{}
	for _, id := range []string{"meter-1", "meter-2", "pump-1"} {
		conns[id] = connectRaw(t, g.addr, id, "user-"+id[:4])
	}
	mqtttest.WaitFor(t, "three connections in the table", func() bool {
		_, total := g.srv.Connections(proxy.ConnFilter{}, 0)
		return total == 3
	})

	list, total := g.srv.Connections(proxy.ConnFilter{Username: "user-mete"}, 1)
	if total != 2 || len(list) != 1 || list[0].Username != "user-mete" {
		t.Errorf("username filter with limit 1: %d of %d: %+v", len(list), total, list)
	}
	list, _ = g.srv.Connections(proxy.ConnFilter{ClientID: "pump-1", Node: broker.Addr(), Route: "1", Upstream: "1"}, 0)
	if len(list) != 1 {
		t.Fatalf("filter by client id, node, route and upstream: %+v", list)
	}
	ci := list[0]
	if ci.ProtocolLevel != 4 || ci.Client != conns["pump-1"].LocalAddr().String() || ci.Since.IsZero() || ci.BytesUp == 0 || ci.BytesDown > 4 {
		t.Errorf("row: %+v", ci)
	}
	if list, _ := g.srv.Connections(proxy.ConnFilter{Node: "10.9.9.9:1883"}, 0); len(list) != 0 {
		t.Errorf("unknown node matched %+v", list)
	}

	// Bytes show while the connection lives.
	ping(t, conns["pump-1"])
	// The meter counts a write once it returned, which may be just after
	// the client read the bytes.
	mqtttest.WaitFor(t, "the ping's bytes in the table", func() bool {
		list, _ = g.srv.Connections(proxy.ConnFilter{ClientID: "pump-1"}, 0)
		return list[0].BytesUp == ci.BytesUp+2 && list[0].BytesDown == 6
	})

	closed := g.srv.CloseClient("meter-2")
	if len(closed) != 1 || closed[0].ClientID != "meter-2" {
		t.Fatalf("CloseClient: %+v", closed)
	}
	expectClosed(t, conns["meter-2"])
	ping(t, conns["meter-1"])
	ping(t, conns["pump-1"])
	if closed := g.srv.CloseClient("nobody"); len(closed) != 0 {
		t.Errorf("CloseClient(nobody) = %+v", closed)
	}
	mqtttest.WaitFor(t, "the closed client to leave the table", func() bool {
		_, total := g.srv.Connections(proxy.ConnFilter{}, 0)
		return total == 2
	})
	mqtttest.WaitFor(t, "the access log to say why", func() bool {
		for _, l := range g.access.Lines() {
			if strings.Contains(l, `"client_id":"meter-2"`) && strings.Contains(l, `"end":"closed_by_admin"`) {
				return true
			}
		}
		return false
	})

	st := g.srv.Stats()
	if len(st.Routes) != 1 || st.Routes[0].ID != "1" || st.Routes[0].Active != 2 || st.Routes[0].Total != 3 {
		t.Errorf("route stats: %+v", st.Routes)
	}
	if st.BytesUp < 3*ci.BytesUp || st.BytesDown < 3*4 || len(st.Nodes) != 1 || st.Nodes[0].Health != proxy.HealthHealthy {
		t.Errorf("stats: %+v", st)
	}
	if st.Dial.Count != 3 || sum(st.Dial.Counts) != 3 || st.Dial.SumSeconds <= 0 {
		t.Errorf("dial stats: %+v", st.Dial)
	}
}

func sum(xs []uint64) uint64 {
	var n uint64
	for _, x := range xs {
		n += x
	}
	return n
}

// TestDrainRemoved: after a reload drops a node, only the connections on
// that node are closed, and the others keep flowing.
func TestDrainRemoved(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	yml := func(brokers ...mqtttest.Broker) string {
		s := "stream_proxy: {tcp: [LISTEN]}\nupstreams:\n  - id: 1\n    nodes:\n"
		for _, br := range brokers {
			s += fmt.Sprintf("      %q: 1\n", br.Addr())
		}
		return s + "stream_routes: [{id: 1, upstream_id: 1}]\n"
	}
	g := startGateway(t, yml(a, b))
	conns := map[string]net.Conn{}
	for i := range 6 {
		id := fmt.Sprintf("c%d", i)
		conns[id] = connectRaw(t, g.addr, id, "")
	}
	onB, _ := g.srv.Connections(proxy.ConnFilter{Node: b.Addr()}, 0)
	if len(onB) != 3 {
		t.Fatalf("round robin put %d of 6 on the second broker", len(onB))
	}

	cfg, err := config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.ReplaceAll(yml(a), "LISTEN", fmt.Sprintf("%q", g.addr)))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if n := g.srv.DrainRemoved(50 * time.Millisecond); n != 3 {
		t.Fatalf("DrainRemoved = %d, want 3", n)
	}
	for _, ci := range onB {
		expectClosed(t, conns[ci.ClientID])
		delete(conns, ci.ClientID)
	}
	for _, c := range conns {
		ping(t, c)
	}
	if n := g.srv.DrainRemoved(0); n != 0 {
		t.Errorf("a second drain found %d", n)
	}
}

// TestDrainAll closes every connection, each once.
func TestDrainAll(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, chashConfig(broker))
	var conns []net.Conn
	for i := range 4 {
		conns = append(conns, connectRaw(t, g.addr, fmt.Sprintf("d%d", i), ""))
	}
	if n := g.srv.DrainAll(20 * time.Millisecond); n != 4 {
		t.Fatalf("DrainAll = %d, want 4", n)
	}
	for _, c := range conns {
		expectClosed(t, c)
	}
}

// TestInlineUpstreamHealth: a route's inline upstream is watched by the
// health checker like a top-level one, and its state shows in Stats.
func TestInlineUpstreamHealth(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, fmt.Sprintf("stream_proxy: {tcp: [LISTEN]}\nstream_routes: [{id: r1, upstream: {nodes: {%q: 1}}}]\n", broker.Addr()))
	if h := g.srv.Health(); len(h) != 1 || h[0].Upstream != "route:r1" || !h[0].Healthy {
		t.Errorf("Health() = %+v", h)
	}
	connectRaw(t, g.addr, "x", "")
	if n := g.srv.Stats().Nodes; len(n) != 1 || n[0].Health != proxy.HealthHealthy {
		t.Errorf("node stats: %+v", n)
	}
}
