package proxy_test

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// TestReloadNamesTheBoundPort: a reload from "127.0.0.1:0" to the port that
// listener got keeps its socket. A client that connected before the reload
// and sends its CONNECT after it is served: a new socket would have been
// bound beside the old one, and closing the old one resets the connections
// waiting in its queue (an empty CONNACK, seen in admin's
// TestReloadKeepsAdminObjects).
func TestReloadNamesTheBoundPort(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	yml := fmt.Sprintf("stream_proxy: {tcp: [LISTEN]}\nstream_routes: [{id: r, upstream: {nodes: {%q: 1}}}]\n", broker.Addr())
	g := startGateway(t, yml)
	bound := g.srv.ListenerAddrs()["127.0.0.1:0"]
	if bound == nil {
		t.Fatalf("listeners: %v", g.srv.ListenerAddrs())
	}
	// Connected, its CONNECT not sent: with TCP_DEFER_ACCEPT the
	// connection waits in the listening socket's queue.
	waiting, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()

	cfg, err := config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.ReplaceAll(yml, "LISTEN", fmt.Sprintf("%q", g.addr)))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := g.srv.ListenerAddrs(); len(got) != 1 || got[g.addr] == nil || got[g.addr].String() != bound.String() {
		t.Errorf("listeners after the reload: %v, want %s at %s", got, g.addr, bound)
	}
	if _, err := waiting.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "waiting"})); err != nil {
		t.Fatal(err)
	}
	if ack := mqtttest.ReadPacket(t, waiting); len(ack) != 4 || ack[3] != 0 {
		t.Errorf("the client that connected before the reload: CONNACK % x, want 20 02 00 00", ack)
	}
	connectRaw(t, g.addr, "after", "")
	mqtttest.WaitFor(t, "the broker to see both clients", func() bool {
		return slices.Contains(broker.Seen(), "waiting") && slices.Contains(broker.Seen(), "after")
	})

	// Its settings follow the configuration under its new address: with
	// proxy_protocol on, a CONNECT without the header is not served.
	cfg, err = config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.ReplaceAll(yml, "LISTEN", fmt.Sprintf("{addr: %q, proxy_protocol: true, real_ip_from: [127.0.0.0/8]}", g.addr)))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "no-header"})
	if len(ack) != 0 {
		t.Errorf("a CONNECT without a PROXY header on a proxy_protocol listener: % x, want the connection closed", ack)
	}
	if got := g.srv.ListenerAddrs(); len(got) != 1 || got[g.addr] == nil || got[g.addr].String() != bound.String() {
		t.Errorf("listeners after turning proxy_protocol on: %v, want %s at %s", got, g.addr, bound)
	}

	// Back to port 0: that is a new listener, the renamed one closes.
	cfg, err = config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.ReplaceAll(yml, "LISTEN", `"127.0.0.1:0"`))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	got := g.srv.ListenerAddrs()
	if len(got) != 1 || got["127.0.0.1:0"] == nil {
		t.Fatalf("listeners after the reload back to port 0: %v", got)
	}
	connectRaw(t, got["127.0.0.1:0"].String(), "back", "")
}

// TestRenamedListenerCounts: a listener a reload names by the port it is
// bound to keeps its counts under the new address: one row in the stats,
// counting the connections of before and after the reload, its active
// count going down as a connection of before ends, and no row left under
// "127.0.0.1:0".
func TestRenamedListenerCounts(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	yml := fmt.Sprintf("stream_proxy: {tcp: [LISTEN]}\nstream_routes: [{id: r, upstream: {nodes: {%q: 1}}}]\n", broker.Addr())
	g := startGateway(t, yml)
	before := connectRaw(t, g.addr, "before", "")
	cfg, err := config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.ReplaceAll(yml, "LISTEN", fmt.Sprintf("%q", g.addr)))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	connectRaw(t, g.addr, "after", "")
	row := func() (proxy.ListenerStats, bool) {
		ls := g.srv.Stats().Listeners
		if len(ls) != 1 {
			t.Fatalf("listener rows %+v, want one, under %s", ls, g.addr)
		}
		return ls[0], ls[0].Addr == g.addr && ls[0].Bound == g.addr && ls[0].Accepted == 2
	}
	mqtttest.WaitFor(t, "both connections counted under the new address", func() bool {
		r, ok := row()
		return ok && r.Active == 2
	})
	before.Close()
	mqtttest.WaitFor(t, "the connection of before the reload to leave the same row", func() bool {
		r, ok := row()
		return ok && r.Active == 1
	})
	rec := g.accessRecord(t, "before")
	if rec["listener"] != g.addr {
		t.Errorf("record of the connection of before the reload: %v, want listener %s", rec, g.addr)
	}
}
