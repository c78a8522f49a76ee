package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// fastChecks probes often so tests finish quickly. A probe may take 1 s:
// two slower ones in a row mark a node down, and at 0.2 s a loaded machine
// could do that to a live broker (TestBrokerDies saw probes over 1 s under
// stress), sending its clients elsewhere; a hung broker is found in 2 s.
const fastChecks = `
    checks:
      active:
        type: %s
        timeout: 1
        healthy: {interval: 0.02, successes: 2}
        unhealthy: {interval: 0.02, tcp_failures: 2, timeouts: 2}`

// stopFirst shuts gw down before the brokers started so far are stopped
// (cleanups run last first): a broker started after the gateway would
// otherwise be stopped while probes still connect to it, which races
// inside mochi.
func stopFirst(t *testing.T, gw *gateway) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := gw.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// nodeHealth returns the health of one node as the server reports it.
func nodeHealth(gw *gateway, upstream, addr string) health.Status {
	for _, s := range gw.srv.Health() {
		if s.Upstream == upstream && s.Addr == addr {
			return s
		}
	}
	return health.Status{}
}

// TestHungBrokerSkipped: a broker whose port accepts but never answers is
// marked down by the MQTT probe, and then no client is sent to it; with
// every node down, a client is refused with Server unavailable at once.
func TestHungBrokerSkipped(t *testing.T) {
	t.Parallel()
	live := mqtttest.StartMochi(t)
	hung := mqtttest.SilentPort(t).Addr()
	logs := &mqtttest.LogBuffer{}
	gw := startGatewayLog(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: pair
    type: chash
    nodes: {%q: 1, %q: 1}`+fastChecks+`
  - id: hung
    nodes: {%q: 1}`+fastChecks+`
stream_routes:
  - {id: pair, mqtt_client_id: {prefix: dev-}, upstream_id: pair}
  - {id: hung, mqtt_client_id: {prefix: hung-}, upstream_id: hung}
`, live.Addr(), hung, "mqtt", hung, "mqtt"), logs)
	mqtttest.WaitFor(t, "hung broker marked down", func() bool {
		return !nodeHealth(gw, "pair", hung).Healthy && !nodeHealth(gw, "hung", hung).Healthy
	})
	// Why it went down is in the log line of the change: the status's
	// reason goes on to name each later failure (it did by the time a busy
	// machine read it).
	down := fmt.Sprintf(`msg="node unhealthy" upstream=pair node=%s reason="mqtt probe: 2 timeouts in a row`, hung)
	mqtttest.WaitFor(t, down, func() bool { return strings.Contains(logs.String(), down) })
	if s := nodeHealth(gw, "pair", hung); s.Probe != "mqtt" {
		t.Errorf("health %+v", s)
	}
	if s := nodeHealth(gw, "pair", live.Addr()); !s.Healthy || s.Probes == 0 {
		t.Errorf("live broker: %+v", s)
	}
	// Without the probe, about half of these would hang on the dead port.
	for i := range 20 {
		mqtttest.ConnectOK(t, gw.addr, fmt.Sprintf("dev-%d", i), mqtt.Level311)
	}
	if code := refusedWith(t, gw.addr, "hung-1", "", mqtt.Level5); code != mqtt.ServerUnavailable {
		t.Errorf("all nodes down: code %#x, want 0x88", byte(code))
	}
	if got := gw.srv.Stats().Refused["no_broker"]; got != 1 {
		t.Errorf("refused[no_broker] = %d, want 1", got)
	}
}

// tiersConfig is upstream 1 over a primary node (priority 1) and a backup
// (priority 0) with fastChecks' mqtt probes; checks adds lines to its
// checks (on_marked_up, say).
func tiersConfig(primary, backup, checks string) string {
	return fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    nodes:
      - {host: 127.0.0.1, port: %s, priority: 1}
      - {host: 127.0.0.1, port: %s, priority: 0}`+fastChecks+`
%sstream_routes: [{id: r, upstream_id: 1}]
`, port(primary), port(backup), "mqtt", checks)
}

// TestPriorityTier: backup nodes (a lower priority) take clients only while
// every node of the higher tier is down.
func TestPriorityTier(t *testing.T) {
	t.Parallel()
	primary, backup := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	gw := startGateway(t, tiersConfig(primary.Addr(), backup.Addr(), ""))
	for i := range 5 {
		mqtttest.ConnectOK(t, gw.addr, fmt.Sprintf("a-%d", i), mqtt.Level311)
	}
	primaryAddr := primary.Addr()
	primary.Close()
	mqtttest.WaitFor(t, "primary marked down", func() bool { return !nodeHealth(gw, "1", primaryAddr).Healthy })
	for i := range 5 {
		mqtttest.ConnectOK(t, gw.addr, fmt.Sprintf("b-%d", i), mqtt.Level311)
	}
	restarted := mqtttest.StartMochiAt(t, primaryAddr)
	stopFirst(t, gw)
	mqtttest.WaitFor(t, "primary back", func() bool { return nodeHealth(gw, "1", primaryAddr).Healthy })
	for i := range 5 {
		mqtttest.ConnectOK(t, gw.addr, fmt.Sprintf("c-%d", i), mqtt.Level311)
	}
	count := func(seen []string, prefix string) int {
		n := 0
		for _, id := range seen {
			if strings.HasPrefix(id, prefix) {
				n++
			}
		}
		return n
	}
	if n := count(primary.Seen(), "a-"); n != 5 {
		t.Errorf("primary saw %d of the first 5", n)
	}
	if n := count(backup.Seen(), "b-"); n != 5 || count(backup.Seen(), "a-")+count(backup.Seen(), "c-") != 0 {
		t.Errorf("backup saw %v, want b-* only", backup.Seen())
	}
	if n := count(restarted.Seen(), "c-"); n != 5 {
		t.Errorf("restarted primary saw %v, want the 5 c-*", restarted.Seen())
	}
}

// TestPriorityMoveBack: with on_marked_up: move_back, connections held by a
// backup node while the primary was down are closed when it returns, so
// that their clients reconnect to it.
func TestPriorityMoveBack(t *testing.T) {
	t.Parallel()
	primary, backup := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	gw := startGateway(t, tiersConfig(primary.Addr(), backup.Addr(), "      on_marked_up: move_back\n"))
	primaryAddr := primary.Addr()
	primary.Close()
	mqtttest.WaitFor(t, "primary marked down", func() bool { return !nodeHealth(gw, "1", primaryAddr).Healthy })
	var held []net.Conn
	for i := range 3 {
		held = append(held, holdConn(t, gw.addr, fmt.Sprintf("b-%d", i), ""))
	}
	mqtttest.StartMochiAt(t, primaryAddr)
	stopFirst(t, gw)
	for _, c := range held {
		if pkt := mqtttest.ReadPacket(t, c); pkt != nil {
			t.Errorf("connection on the backup got % x, want it closed", pkt)
		}
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestReloadHealth: a reload keeps the health of nodes that stay, and the
// probes of an upstream it removes stop with it.
func TestReloadHealth(t *testing.T) {
	t.Parallel()
	hungPort, otherPort := mqtttest.SilentPort(t), mqtttest.SilentPort(t)
	hung, other := hungPort.Addr(), otherPort.Addr()
	yml := func(nodes string) string {
		return fmt.Sprintf(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams:
  - id: 1
    nodes: {%s}`+fastChecks+`
stream_routes: [{id: r, upstream_id: 1}]
`, nodes, "mqtt")
	}
	gw := startGateway(t, yml(fmt.Sprintf("%q: 1", hung)))
	mqtttest.WaitFor(t, "hung node down", func() bool { return !nodeHealth(gw, "1", hung).Healthy })
	since := nodeHealth(gw, "1", hung).Since

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
	apply(yml(fmt.Sprintf("%q: 1, %q: 1", hung, other)))
	if s := nodeHealth(gw, "1", hung); s.Healthy || !s.Since.Equal(since) {
		t.Errorf("after a reload that keeps it: %+v, want unhealthy since %v", s, since)
	}
	// Drop the hung node: its probes stop before Apply returns.
	apply(yml(fmt.Sprintf("%q: 1", other)))
	// Its last probes were dialled before then, but a busy machine may run
	// the port's accept loop much later (4 counted after the reload once,
	// at load 24): Settle waits for those, as health's TestUpdate does.
	before := hungPort.Settle(t)
	start := otherPort.Accepted()
	mqtttest.WaitFor(t, "5 more probes of the node that stays", func() bool { return otherPort.Accepted() >= start+5 })
	if after := hungPort.Settle(t); after != before {
		t.Errorf("removed node probed %d times after the reload", after-before)
	}
	if s := nodeHealth(gw, "1", hung); s.Addr != "" {
		t.Errorf("removed node still reported: %+v", s)
	}
}

// TestBoundedLoad: with hash_balance_factor, keys that all hash to one node
// fill it to factor × the average, then spill to their next node; without
// it, the node takes them all.
func TestBoundedLoad(t *testing.T) {
	t.Parallel()
	brokers := []*mqtttest.Mochi{mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)}
	nodes := make([]balance.Node, len(brokers))
	yamlNodes := ""
	for i, b := range brokers {
		nodes[i] = balance.Node{Addr: b.Addr(), Weight: 1}
		yamlNodes += fmt.Sprintf("%q: 1, ", b.Addr())
	}
	// A skewed key set: 60 client ids whose first choice is broker 0.
	bal, err := balance.New(nodes, balance.Options{Type: balance.TypeConsistentHash})
	if err != nil {
		t.Fatal(err)
	}
	var hot []string
	for i := 0; len(hot) < 60; i++ {
		id := fmt.Sprintf("hot-%d", i)
		for first := range bal.Order(id) {
			if first == 0 {
				hot = append(hot, id)
			}
			break
		}
	}
	for _, factor := range []float64{0, 1.25} {
		t.Run(fmt.Sprintf("factor %v", factor), func(t *testing.T) {
			t.Parallel()
			hbf := ""
			if factor > 0 {
				hbf = fmt.Sprintf("hash_balance_factor: %v, ", factor)
			}
			gw := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, type: chash, %snodes: {%s}}]
stream_routes: [{id: r, upstream_id: 1}]
`, hbf, yamlNodes))
			for _, id := range hot {
				holdConn(t, gw.addr, id, "")
			}
			active := map[string]int64{}
			for _, n := range gw.srv.Stats().Nodes {
				active[n.Addr] = n.Active
			}
			t.Logf("connections per node: %v", active)
			onHot := active[brokers[0].Addr()]
			want := int64(len(hot))
			if factor > 0 {
				want = int64(math.Ceil(factor * float64(len(hot)) / 3))
			}
			if onHot != want {
				t.Errorf("hot node holds %d of %d, want %d", onHot, len(hot), want)
			}
		})
	}
}

// TestReloadProbeDialer: a reload that changes only how the nodes are
// reached (proxy_protocol here) reaches the running probes: they dial
// through the upstream's one dialer, the one client connections use.
func TestReloadProbeDialer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var withHeader, without atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				b := make([]byte, 6)
				n, _ := io.ReadFull(c, b)
				if string(b[:n]) == "PROXY " {
					withHeader.Add(1)
				} else {
					without.Add(1)
				}
			}()
		}
	}()
	yml := func(pp string) string {
		return fmt.Sprintf(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams:
  - id: 1
    proxy_protocol: %s
    nodes: {%q: 1}`+fastChecks+`
stream_routes: [{id: r, upstream_id: 1}]
`, pp, ln.Addr().String(), "tcp")
	}
	gw := startGateway(t, yml("null"))
	stopFirst(t, gw)
	mqtttest.WaitFor(t, "a probe without a PROXY header", func() bool { return without.Load() > 0 })
	if n := withHeader.Load(); n != 0 {
		t.Fatalf("%d probes sent a PROXY header before it was configured", n)
	}
	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(yml("v1"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "a probe with the PROXY header after the reload", func() bool { return withHeader.Load() > 0 })
}
