package proxy_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// rebalanceConfig is a chash upstream by client id over brokers.
func rebalanceConfig(listen string, brokers ...*mqtttest.Mochi) string {
	nodes := ""
	for _, b := range brokers {
		nodes += fmt.Sprintf("      - {host: 127.0.0.1, port: %s, weight: 1}\n", port(b.Addr()))
	}
	return fmt.Sprintf(`stream_proxy: {tcp: [%s]}
rebalance: {rate: 300}
upstreams:
  - id: 1
    type: chash
    key: mqtt_client_id
    nodes:
%sstream_routes: [{id: r, upstream_id: 1}]
`, listen, nodes)
}

// TestRebalanceAddedNode: 600 5.0 clients on two brokers by client id; a
// reload adds a third. The clients whose id hashes to the new broker now,
// and only they, are moved, paced at rebalance.rate, each told 0x9C Use
// another server; the others' connections go on. It logs the rate
// measured (run with -v).
func TestRebalanceAddedNode(t *testing.T) {
	t.Parallel()
	const clients = 600
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startGateway(t, rebalanceConfig("LISTEN", a, b))

	conns := make(map[string]net.Conn, clients)
	for i := range clients {
		id := fmt.Sprintf("rb-%03d", i)
		conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: id})
		if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != 0 {
			t.Fatalf("%s: CONNACK % x: %v %v", id, ack, code, err)
		}
		conns[id] = conn
	}
	mqtttest.WaitFor(t, "every client in the table", func() bool {
		_, n := g.srv.Connections(proxy.ConnFilter{}, 1)
		return n == clients
	})

	// Which clients hash to the new broker, by the balancer on its own.
	var nodes []balance.Node
	for _, br := range []*mqtttest.Mochi{a, b, c} {
		nodes = append(nodes, balance.Node{Addr: br.Addr(), Weight: 1})
	}
	bal, err := balance.New(nodes, balance.Options{Type: balance.TypeConsistentHash})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for id := range conns {
		for first := range bal.Order(id) {
			if first == 2 {
				want[id] = true
			}
			break
		}
	}
	if len(want) < clients/6 {
		t.Fatalf("only %d of %d clients hash to the new broker", len(want), clients)
	}

	// The moved ones read a DISCONNECT and then EOF.
	var mu sync.Mutex
	got := map[string][]byte{}
	var wg sync.WaitGroup
	for id := range want {
		conn := conns[id]
		wg.Go(func() {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, _ := io.ReadAll(conn)
			mu.Lock()
			got[id] = b
			mu.Unlock()
		})
	}

	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(rebalanceConfig(`"127.0.0.1:0"`, a, b, c))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	done := time.Now()
	for id := range want {
		if string(got[id]) != "\xe0\x01\x9c" {
			t.Errorf("%s (hashes to the new broker): got % x, want DISCONNECT 0x9C", id, got[id])
		}
	}
	st, moved := g.srv.RebalanceState()
	if st == nil || st.State != proxy.RebalanceDone || st.Total != len(want) || st.Moved != len(want) || moved != uint64(len(want)) || st.Reason != "node_added" {
		t.Errorf("rebalance = %+v, %d moved in all; want done, %d of %d, node_added", st, moved, len(want), len(want))
	}
	if st != nil {
		took := done.Sub(st.Since)
		t.Logf("%d of %d clients moved in %v at rebalance.rate 300: %.0f/s (up to the last DISCONNECT read)",
			len(want), clients, took.Round(time.Millisecond), float64(len(want))/took.Seconds())
	}
	// The others are untouched: their first packet is the PINGRESP.
	for id, conn := range conns {
		if want[id] {
			continue
		}
		if _, err := conn.Write([]byte{0xc0, 0}); err != nil {
			t.Fatalf("%s: PINGREQ: %v", id, err)
		}
		if p := mqtttest.ReadPacket(t, conn); string(p) != "\xd0\x00" {
			t.Fatalf("%s (stays on its broker): got % x, want PINGRESP", id, p)
		}
	}
	mqtttest.WaitFor(t, "a rebalanced access record per moved client", func() bool {
		return countLines(g.access.Lines(), `"end":"rebalanced"`) == len(want)
	})
}

// TestRebalancePauseCancel: a rebalance can be paused, resumed and
// cancelled; one started again moves only the connections still
// misplaced.
func TestRebalancePauseCancel(t *testing.T) {
	t.Parallel()
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	slow := func(listen string, brokers ...*mqtttest.Mochi) string {
		return strings.Replace(rebalanceConfig(listen, brokers...), "rate: 300", "rate: 5", 1)
	}
	g := startGateway(t, slow("LISTEN", a, b))
	for i := range 60 {
		connectRaw(t, g.addr, fmt.Sprintf("rp-%02d", i), "")
	}
	mqtttest.WaitFor(t, "every client in the table", func() bool {
		_, n := g.srv.Connections(proxy.ConnFilter{}, 1)
		return n == 60
	})
	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(slow(`"127.0.0.1:0"`, a, b, c))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	st, _ := g.srv.RebalanceState()
	if st == nil || st.State != proxy.RebalanceRunning || st.Total < 5 || st.Rate != 5 {
		t.Fatalf("after adding a node: %+v, want a running rebalance at 5/s", st)
	}
	if p, err := g.srv.PauseRebalance(); err != nil || p.State != proxy.RebalancePaused {
		t.Fatalf("pause: %+v, %v", p, err)
	}
	if _, err := g.srv.PauseRebalance(); err == nil {
		t.Error("pausing a paused rebalance: no error")
	}
	if r, err := g.srv.ResumeRebalance(); err != nil || r.State != proxy.RebalanceRunning {
		t.Fatalf("resume: %+v, %v", r, err)
	}
	mqtttest.WaitFor(t, "one connection moved", func() bool {
		st, _ := g.srv.RebalanceState()
		return st.Moved >= 1
	})
	cancelled, err := g.srv.CancelRebalance()
	if err != nil || cancelled.State != proxy.RebalanceCancelled || cancelled.Moved >= cancelled.Total {
		t.Fatalf("cancel: %+v, %v; want cancelled before the end", cancelled, err)
	}
	again, err := g.srv.Rebalance("1")
	if err != nil || again.Reason != "admin" || again.State != proxy.RebalanceRunning || again.Total != cancelled.Total-cancelled.Moved {
		t.Errorf("started again: %+v, %v; want the %d left, running", again, err, cancelled.Total-cancelled.Moved)
	}
	if _, err := g.srv.Rebalance("nope"); err == nil {
		t.Error("rebalance of an unknown upstream: no error")
	}
	g.srv.CancelRebalance()
}
