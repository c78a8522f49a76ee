package proxy_test

import (
	"fmt"
	"io"
	"net"
	"slices"
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

// rebalanceConfig is a chash upstream by client id over brokers, paced at
// rebalance.rate 300; extra goes into the upstream (checks, say). Each
// client must land on the node its id hashes to, or a rebalance rightly
// moves it too: a CONNACK slower than the default timeout.connack (5 s,
// seen under saturation) sent a client to the next node, and NGINX's
// default passive counting, which applies without checks, took a node out
// for 10 s after one such failure, its clients' ids going elsewhere
// meanwhile (TestRebalanceAddedNode's one unexplained failure). So the
// answer may take 30 s, and without extra no failure is counted.
func rebalanceConfig(listen, extra string, brokers ...*mqtttest.Mochi) string {
	var addrs []string
	for _, b := range brokers {
		addrs = append(addrs, b.Addr())
	}
	return rebalanceConfigAt(listen, extra, addrs...)
}

// rebalanceConfigAt is rebalanceConfig over the brokers at addrs.
func rebalanceConfigAt(listen, extra string, addrs ...string) string {
	if extra == "" {
		extra = "    checks: {passive: false}\n"
	}
	extra = "    timeout: {connack: 30s}\n" + extra
	nodes := ""
	for _, a := range addrs {
		nodes += fmt.Sprintf("      - {host: 127.0.0.1, port: %s, weight: 1}\n", port(a))
	}
	return fmt.Sprintf(`stream_proxy: {tcp: [%s]}
rebalance: {rate: 300}
upstreams:
  - id: 1
    type: chash
    key: mqtt_client_id
%s    nodes:
%sstream_routes: [{id: r, upstream_id: 1}]
`, listen, extra, nodes)
}

// apply reloads g with yml, as a SIGHUP or a file change does.
func (g *gateway) apply(t *testing.T, yml string) {
	t.Helper()
	cfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(yml)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
}

// connectFleet connects n 5.0 clients prefix-000... through g and waits
// until the connection table has them all.
func connectFleet(t *testing.T, g *gateway, prefix string, n int) map[string]net.Conn {
	t.Helper()
	conns := make(map[string]net.Conn, n)
	for i := range n {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		conns[id] = connect5(t, g.addr, id)
	}
	mqtttest.WaitFor(t, "every client in the table", func() bool {
		_, total := g.srv.Connections(proxy.ConnFilter{}, 1)
		return total == n
	})
	return conns
}

func connect5(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	conn, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: id})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != 0 {
		t.Fatalf("%s: CONNACK % x: %v %v", id, ack, code, err)
	}
	return conn
}

// hashedTo returns the ids whose first node, by chash over brokers with
// equal weights, is brokers[i]: the balancer asked on its own.
func hashedTo(t *testing.T, ids []string, i int, brokers ...*mqtttest.Mochi) map[string]bool {
	t.Helper()
	var addrs []string
	for _, br := range brokers {
		addrs = append(addrs, br.Addr())
	}
	return hashedToAddrs(t, ids, i, addrs...)
}

// hashedToAddrs is hashedTo over the brokers at addrs.
func hashedToAddrs(t *testing.T, ids []string, i int, addrs ...string) map[string]bool {
	t.Helper()
	var nodes []balance.Node
	for _, a := range addrs {
		nodes = append(nodes, balance.Node{Addr: a, Weight: 1})
	}
	bal, err := balance.New(nodes, balance.Options{Type: balance.TypeConsistentHash})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, id := range ids {
		for first := range bal.Order(id) {
			if first == i {
				out[id] = true
			}
			break
		}
	}
	// The ring's shares move with the brokers' random ports (46 of 194 ids
	// on one of two brokers once), so a share is not checked; a broker
	// that owns none of many ids is.
	if len(out) == 0 && len(ids) >= 10*len(addrs) {
		t.Fatalf("none of %d clients hash to broker %d", len(ids), i)
	}
	return out
}

// moveWatch reads, in the background, all that each of the clients to be
// moved receives until its connection closes, and when it closed.
type moveWatch struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	got map[string][]byte
	at  []time.Time
}

func watchMoves(conns map[string]net.Conn, ids map[string]bool) *moveWatch {
	w := &moveWatch{got: map[string][]byte{}}
	for id := range ids {
		conn := conns[id]
		w.wg.Go(func() {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, _ := io.ReadAll(conn)
			conn.Close() // as a client does when the server closed
			w.mu.Lock()
			w.got[id], w.at = b, append(w.at, time.Now())
			w.mu.Unlock()
		})
	}
	return w
}

// check waits for every watched client and checks it read exactly want
// before its connection closed.
func (w *moveWatch) check(t *testing.T, want string) {
	t.Helper()
	w.wg.Wait()
	for id, b := range w.got {
		if string(b) != want {
			t.Errorf("%s (to be moved): got % x, want % x", id, b, want)
		}
	}
}

// report logs the pace a job achieved, measured two ways: by the job
// (first to last close, from its status) and by the clients (first to
// last DISCONNECT read). n closes at a rate r take (n-1)/r seconds. It
// asserts nothing about time: the machine's load decides it.
func (w *moveWatch) report(t *testing.T, what string, st *proxy.RebalanceStatus) {
	t.Helper()
	n := len(w.at)
	if n < 2 || st == nil || st.Finished == nil {
		return
	}
	slices.SortFunc(w.at, func(a, b time.Time) int { return a.Compare(b) })
	byJob := float64(st.Moved-1) / st.Finished.Sub(st.Since).Seconds()
	byClients := float64(n-1) / w.at[n-1].Sub(w.at[0]).Seconds()
	t.Logf("%s: %d moved at rebalance.rate %g: %.0f/s by the job (%+.0f%%), %.0f/s as the clients read their DISCONNECTs (%+.0f%%)",
		what, st.Moved, st.Rate, byJob, 100*(byJob/st.Rate-1), byClients, 100*(byClients/st.Rate-1))
}

// checkUntouched checks that every client not in moved still has its first
// connection: its first packet is the PINGRESP to its PINGREQ.
func checkUntouched(t *testing.T, conns map[string]net.Conn, moved map[string]bool) {
	t.Helper()
	for id, conn := range conns {
		if moved[id] {
			continue
		}
		if _, err := conn.Write([]byte{0xc0, 0}); err != nil {
			t.Fatalf("%s: PINGREQ: %v", id, err)
		}
		if p := mqtttest.ReadPacket(t, conn); string(p) != "\xd0\x00" {
			t.Fatalf("%s (not to be moved): got % x, want PINGRESP", id, p)
		}
	}
}

// checkJob checks the last job's status and the metric's count.
func checkJob(t *testing.T, g *gateway, reason, upstream string, moved int) *proxy.RebalanceStatus {
	t.Helper()
	st, total := g.srv.RebalanceState()
	if st == nil || st.State != proxy.RebalanceDone || st.Reason != reason || st.Upstream != upstream ||
		st.Total != moved || st.Moved != moved || st.Skipped != 0 || total != uint64(moved) || st.Pending() != 0 {
		t.Errorf("job = %+v, %d moved in all; want %s of %q done, %d of %d moved, none skipped", st, total, reason, upstream, moved, moved)
	}
	return st
}

func ids(conns map[string]net.Conn) []string {
	var out []string
	for id := range conns {
		out = append(out, id)
	}
	return out
}

// TestRebalanceAddedNode: 600 5.0 clients on two brokers by client id; a
// reload adds a third. The clients whose id hashes to the new broker now,
// and only they, are moved, paced at rebalance.rate, each told 0x9C Use
// another server; the others' connections go on. It logs the rate
// achieved (run with -v).
func TestRebalanceAddedNode(t *testing.T) {
	t.Parallel()
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startGateway(t, rebalanceConfig("LISTEN", "", a, b))
	conns := connectFleet(t, g, "rb", 600)
	want := hashedTo(t, ids(conns), 2, a, b, c)
	w := watchMoves(conns, want)

	g.apply(t, rebalanceConfig(`"127.0.0.1:0"`, "", a, b, c))
	w.check(t, "\xe0\x01\x9c")
	st := checkJob(t, g, proxy.ReasonNodeAdded, "1", len(want))
	w.report(t, fmt.Sprintf("node added: %d of %d clients", len(want), len(conns)), st)
	checkUntouched(t, conns, want)
	mqtttest.WaitFor(t, "a rebalanced access record per moved client", func() bool {
		return countLines(g.access.Lines(), `"end":"rebalanced"`) == len(want)
	})
}

// TestRebalanceAddedNodeKeepsOutNode: 400 5.0 clients on two brokers by
// client id, one of them (b, behind a relay) taken out by passive counting
// while its clients stay connected: it closes every new connection, and
// one client whose id hashes to it fails over. A reload adds a third
// broker. The balancer's order skips b now, so every key of b's clients
// looks misplaced, but they stay where they are: what becomes of an out
// node's clients is on_marked_down's (keep). Only the clients on a whose
// id hashes to the new broker, among the nodes in service, are moved.
func TestRebalanceAddedNodeKeepsOutNode(t *testing.T) {
	t.Parallel()
	a, bb, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	b := mqtttest.StartRelay(t, bb.Addr())
	const passive = "    checks: {passive: {unhealthy: {tcp_failures: 1}, fail_timeout: 3600s}}\n"
	g := startGateway(t, rebalanceConfigAt("LISTEN", passive, a.Addr(), b.Addr()))
	conns := connectFleet(t, g, "ko", 400)
	onB := hashedToAddrs(t, ids(conns), 1, a.Addr(), b.Addr())

	b.Refuse()
	var probe string
	for i := 0; probe == ""; i++ {
		if id := fmt.Sprintf("ko-probe-%d", i); len(hashedToAddrs(t, []string{id}, 1, a.Addr(), b.Addr())) == 1 {
			probe = id
		}
	}
	conns[probe] = connect5(t, g.addr, probe) // b closes it, a takes it
	if s := nodeHealth(g, "1", b.Addr()); s.Healthy {
		t.Fatalf("b after a failed dial: %+v, want out by passive counting", s)
	}
	onA := map[string]bool{}
	list, _ := g.srv.Connections(proxy.ConnFilter{}, 0)
	for _, ci := range list {
		switch {
		case ci.Node == a.Addr():
			onA[ci.ClientID] = true
		case !onB[ci.ClientID]:
			t.Fatalf("%s is on %s, want a (%s)", ci.ClientID, ci.Node, a.Addr())
		}
	}
	if len(onA)+len(onB) != len(conns) || !onA[probe] {
		t.Fatalf("%d clients on a (probe %v), %d on b, want %d in all", len(onA), onA[probe], len(onB), len(conns))
	}
	var fromA []string
	for id := range onA {
		fromA = append(fromA, id)
	}
	want := hashedToAddrs(t, fromA, 1, a.Addr(), c.Addr())
	w := watchMoves(conns, want)

	g.apply(t, rebalanceConfigAt(`"127.0.0.1:0"`, passive, a.Addr(), b.Addr(), c.Addr()))
	w.check(t, "\xe0\x01\x9c")
	checkJob(t, g, proxy.ReasonNodeAdded, "1", len(want))
	checkUntouched(t, conns, want) // b's clients included: the relay passes their PINGREQs on
}

// TestPacedDrain: 600 5.0 clients on three brokers; a reload removes the
// third and drains. Its clients, and only they, are moved by the same
// pacer at rebalance.rate, each told 0x9C with the Server Reference; the
// others' connections go on.
func TestPacedDrain(t *testing.T) {
	t.Parallel()
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	withRef := func(yml string) string {
		return strings.Replace(yml, "stream_proxy: {tcp: [", "stream_proxy: {server_reference: mqgate-2.example:1883, tcp: [", 1)
	}
	g := startGateway(t, withRef(rebalanceConfig("LISTEN", "", a, b, c)))
	conns := connectFleet(t, g, "dr", 600)
	want := hashedTo(t, ids(conns), 2, a, b, c)
	w := watchMoves(conns, want)

	g.apply(t, withRef(rebalanceConfig(`"127.0.0.1:0"`, "", a, b)))
	if n := g.srv.DrainRemoved(0); n != len(want) {
		t.Fatalf("DrainRemoved = %d, want the removed node's %d", n, len(want))
	}
	w.check(t, string(mqtt.AppendServerDisconnect(nil, mqtt.UseAnotherServer, "mqgate-2.example:1883")))
	st := checkJob(t, g, proxy.ReasonDrain, "", len(want))
	w.report(t, fmt.Sprintf("drain: the removed node's %d of %d clients", len(want), len(conns)), st)
	checkUntouched(t, conns, want)
	mqtttest.WaitFor(t, "a drained access record per moved client", func() bool {
		return countLines(g.access.Lines(), `"end":"drained"`) == len(want)
	})
}

// TestPacedMoveBack: 600 5.0 clients on three brokers with
// on_marked_up: move_back and no move_back_rate. The third broker dies,
// its clients reconnect to the other two; when it is back and healthy
// they, and only they, are moved back at rebalance.rate, each told 0x9C.
func TestPacedMoveBack(t *testing.T) {
	t.Parallel()
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	// Refused connections mark the dead broker down at once; probe
	// timeouts are for hung brokers, and kept lax so that a busy machine
	// does not mark a survivor down (see TestBrokerDies).
	const checks = `    checks:
      active:
        type: mqtt
        timeout: 2
        healthy: {interval: 0.1, successes: 2}
        unhealthy: {interval: 0.1, tcp_failures: 2, timeouts: 10}
      on_marked_up: move_back
`
	g := startGateway(t, rebalanceConfig("LISTEN", checks, a, b, c))
	conns := connectFleet(t, g, "mb", 600)
	want := hashedTo(t, ids(conns), 2, a, b, c)

	dead := c.Addr()
	gone := watchMoves(conns, want)
	c.Close()
	gone.check(t, "") // the broker closed: no DISCONNECT of mqgate's
	health := func(addr string) string {
		for _, n := range g.srv.Stats().Nodes {
			if n.Addr == addr {
				return n.Health
			}
		}
		return ""
	}
	mqtttest.WaitFor(t, "the dead broker marked down", func() bool { return health(dead) == proxy.HealthUnhealthy })
	for id := range want {
		conns[id] = connect5(t, g.addr, id) // to a or b now
	}
	waitFor(t, "every client in the table again", func() bool {
		_, total := g.srv.Connections(proxy.ConnFilter{}, 1)
		return total == len(conns)
	}, func() {
		list, total := g.srv.Connections(proxy.ConnFilter{}, 0)
		byNode := map[string]int{}
		for _, ci := range list {
			byNode[ci.Node]++
		}
		t.Logf("%d in the table: %v", total, byNode)
	})
	w := watchMoves(conns, want)

	mqtttest.StartMochiAt(t, dead)
	w.check(t, "\xe0\x01\x9c")
	st := checkJob(t, g, proxy.ReasonMoveBack, "1", len(want))
	if st != nil && st.Rate != 300 {
		t.Errorf("move_back paced at %g/s, want rebalance.rate's 300", st.Rate)
	}
	w.report(t, fmt.Sprintf("move_back: %d of %d clients", len(want), len(conns)), st)
	checkUntouched(t, conns, want)
	mqtttest.WaitFor(t, "a moved_back access record per moved client", func() bool {
		return countLines(g.access.Lines(), `"end":"moved_back"`) == len(want)
	})
}

// TestPacedJobsTakeOver: one job runs at a time and a new one takes over
// the moves its predecessor had not made: a slow drain, replaced by the
// rebalance that adding a node starts, still moves every drained client
// (as drained); pause, resume and cancel act on a drain as on a
// rebalance; drain_window sets a drain's rate.
func TestPacedJobsTakeOver(t *testing.T) {
	t.Parallel()
	a, b, c, d := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	slow := func(brokers ...*mqtttest.Mochi) string {
		return strings.Replace(rebalanceConfig(`"127.0.0.1:0"`, "", brokers...), "rate: 300", "rate: 10", 1)
	}
	g := startGateway(t, slow(a, b, c))
	conns := connectFleet(t, g, "to", 120)
	drained := hashedTo(t, ids(conns), 2, a, b, c)
	w := watchMoves(conns, drained)

	g.apply(t, slow(a, b))
	if n := g.srv.DrainRemoved(0); n != len(drained) {
		t.Fatalf("DrainRemoved = %d, want %d", n, len(drained))
	}
	p, err := g.srv.PauseRebalance()
	if err != nil || p.State != proxy.RebalancePaused || p.Reason != proxy.ReasonDrain || p.Rate != 10 {
		t.Fatalf("pause the drain: %+v, %v; want it paused, at rebalance.rate 10", p, err)
	}
	if r, err := g.srv.ResumeRebalance(); err != nil || r.State != proxy.RebalanceRunning {
		t.Fatalf("resume the drain: %+v, %v", r, err)
	}
	mqtttest.WaitFor(t, "the drain under way", func() bool {
		st, _ := g.srv.RebalanceState()
		return st.Moved >= 2
	})

	// d hashes some of a's and b's clients to it: a rebalance starts and
	// takes the drain's moves over.
	g.apply(t, slow(a, b, d))
	st, _ := g.srv.RebalanceState()
	if st == nil || st.Reason != proxy.ReasonNodeAdded || st.Carried == 0 || st.Carried > len(drained)-2 {
		t.Fatalf("after adding a node: %+v; want node_added carrying the drain's remaining moves", st)
	}
	carried := st.Carried
	if _, err := g.srv.CancelRebalance(); err != nil {
		t.Fatal(err)
	}
	left := 0
	for id := range drained {
		if _, total := g.srv.Connections(proxy.ConnFilter{ClientID: id}, 1); total == 1 {
			left++
		}
	}
	if left == 0 {
		t.Fatal("cancelled, but every drained client is gone")
	}
	// Started again by hand, the drain moves the rest, within the window.
	n := g.srv.DrainRemoved(time.Second)
	st, _ = g.srv.RebalanceState()
	if n != left || st.Reason != proxy.ReasonDrain || st.Rate != float64(n) {
		t.Errorf("drain again: %d, %+v; want the %d left at %d/s (drain_window 1s)", n, st, left, left)
	}
	w.check(t, "\xe0\x01\x9c")
	mqtttest.WaitFor(t, "a drained access record per drained client", func() bool {
		return countLines(g.access.Lines(), `"end":"drained"`) == len(drained)
	})
	t.Logf("%d drained, %d of them carried over by the node_added rebalance, %d left at its cancel", len(drained), carried, left)
}

// TestRebalancePauseCancel: a rebalance can be paused, resumed and
// cancelled; one started again moves only the connections still
// misplaced.
func TestRebalancePauseCancel(t *testing.T) {
	t.Parallel()
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	slow := func(listen string, brokers ...*mqtttest.Mochi) string {
		return strings.Replace(rebalanceConfig(listen, "", brokers...), "rate: 300", "rate: 5", 1)
	}
	g := startGateway(t, slow("LISTEN", a, b))
	for i := range 60 {
		connectRaw(t, g.addr, fmt.Sprintf("rp-%02d", i), "")
	}
	mqtttest.WaitFor(t, "every client in the table", func() bool {
		_, n := g.srv.Connections(proxy.ConnFilter{}, 1)
		return n == 60
	})
	g.apply(t, slow(`"127.0.0.1:0"`, a, b, c))
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
	if err != nil || again.Reason != proxy.ReasonAdmin || again.State != proxy.RebalanceRunning || again.Total != cancelled.Total-cancelled.Moved || again.Carried != 0 {
		t.Errorf("started again: %+v, %v; want the %d left, running, none carried from the cancelled one", again, err, cancelled.Total-cancelled.Moved)
	}
	if _, err := g.srv.Rebalance("nope"); err == nil {
		t.Error("rebalance of an unknown upstream: no error")
	}
	g.srv.CancelRebalance()
}
