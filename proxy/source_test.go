package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// sourcesConfig is one listener and one upstream with the one broker,
// dialled from source_addresses, with extra upstream keys.
func sourcesConfig(broker mqtttest.Broker, extra string) string {
	return fmt.Sprintf(`stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    nodes: {%q: 1}
    source_addresses: [127.0.0.2, 127.0.0.3, 127.0.0.4]
%s
stream_routes: [{upstream_id: 1}]
`, broker.Addr(), extra)
}

// brokerSources counts the broker's live clients by the address they came
// from, as the broker sees them.
func brokerSources(m *mqtttest.Mochi) map[string]int {
	out := map[string]int{}
	for _, cl := range m.Server.Clients.GetAll() {
		if cl.Closed() {
			continue
		}
		host, _, _ := net.SplitHostPort(cl.Net.Remote)
		out[host]++
	}
	return out
}

func connectOpen(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	c, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 60, ClientID: id})
	if len(ack) != 4 || ack[3] != 0 {
		t.Fatalf("%s: CONNACK % x", id, ack)
	}
	return c
}

func sourcesOf(st proxy.StatsSnapshot) map[string]int64 {
	out := map[string]int64{}
	for _, s := range st.Sources {
		out[s.Source] = s.Active
	}
	return out
}

// TestSourceAddressesSpread: 30 clients through an upstream with three
// source addresses reach the broker 10 from each, and the counts per
// source and broker say so.
func TestSourceAddressesSpread(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, sourcesConfig(broker, ""))
	for i := range 30 {
		connectOpen(t, g.addr, fmt.Sprintf("spread-%d", i))
	}
	want := map[string]int{"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 10}
	mqtttest.WaitFor(t, "30 clients on the broker", func() bool { return fmt.Sprint(brokerSources(broker)) == fmt.Sprint(want) })
	t.Logf("the broker sees its clients from %v", brokerSources(broker))
	if got := sourcesOf(g.srv.Stats()); fmt.Sprint(got) != fmt.Sprint(map[string]int64{"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 10}) {
		t.Errorf("counts per source: %v", got)
	}
}

// TestSourceHashKey: with source_hash_key a client comes from the same
// source address every time it connects, and the clients spread over all
// of them.
func TestSourceHashKey(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGateway(t, sourcesConfig(broker, "    source_hash_key: mqtt_client_id"))
	first := map[string]string{}
	used := map[string]bool{}
	for round := range 3 {
		for i := range 20 {
			id := fmt.Sprintf("meter-%d", i)
			c := connectOpen(t, g.addr, id)
			mqtttest.WaitFor(t, id+" on the broker", func() bool {
				cl, ok := broker.Server.Clients.Get(id)
				return ok && !cl.Closed()
			})
			cl, _ := broker.Server.Clients.Get(id)
			src, _, _ := net.SplitHostPort(cl.Net.Remote)
			if round == 0 {
				first[id] = src
				used[src] = true
			} else if src != first[id] {
				t.Errorf("%s came from %s, then from %s", id, first[id], src)
			}
			c.Close()
			mqtttest.WaitFor(t, id+" gone", func() bool { cl, ok := broker.Server.Clients.Get(id); return !ok || cl.Closed() })
		}
	}
	if len(used) != 3 {
		t.Errorf("20 client ids used sources %v, want all three", used)
	}
}

// TestSourceOutOfPorts: with one local port per source (source_port_range),
// each source carries one connection to the broker; the next client finds
// every source out of ports, which is logged and counted, and is refused
// with "server unavailable" rather than left hanging.
func TestSourceOutOfPorts(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	// One even port of the kernel's ephemeral range (a per-socket range
	// only narrows it): connect(2) takes even ports of a range first, so a
	// range of one odd port would hold no connection at all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port &^ 1
	ln.Close()
	logs := &mqtttest.LogBuffer{}
	g := startGatewayLog(t, sourcesConfig(broker, fmt.Sprintf("    source_port_range: \"%d-%d\"", port, port)), logs)
	for i := range 3 {
		connectOpen(t, g.addr, fmt.Sprintf("held-%d", i))
	}
	mqtttest.WaitFor(t, "three on the broker", func() bool { return len(brokerSources(broker)) == 3 })
	for _, cl := range broker.Server.Clients.GetAll() {
		if _, p, _ := net.SplitHostPort(cl.Net.Remote); p != fmt.Sprint(port) {
			t.Errorf("a connection from %s, want port %d", cl.Net.Remote, port)
		}
	}
	_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, KeepAlive: 60, ClientID: "one-too-many"})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != mqtt.ServerUnavailable {
		t.Fatalf("fourth client: CONNACK % x (%v), want 0x88 server unavailable", ack, err)
	}
	var exhausted uint64
	for _, s := range g.srv.Stats().Sources {
		exhausted += s.Exhausted
	}
	if exhausted != 3 {
		t.Errorf("exhausted dials %d, want 3 (one per source): %+v", exhausted, g.srv.Stats().Sources)
	}
	if n := strings.Count(logs.String(), "source address out of ports"); n != 3 {
		t.Errorf("%d log lines about ports, want one per source:\n%s", n, logs)
	}
}
