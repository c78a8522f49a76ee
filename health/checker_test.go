package health_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// fast are probe settings for tests: intervals short enough to finish in
// well under a second, failure counts above 1 so counting is exercised.
// fast probes often. Its timeout is long: tests check that probes of a
// live broker never fail, and under -race on a loaded machine a probe's
// answer took over 300 ms; a test that wants timeouts (a silent port)
// sets a short one on its check.
func fast(typ string) *config.ActiveCheck {
	return &config.ActiveCheck{
		Type: typ, Timeout: 5 * time.Second, Concurrency: 4,
		HealthyInterval: 20 * time.Millisecond, Successes: 2,
		UnhealthyInterval: 20 * time.Millisecond, TCPFailures: 3, Timeouts: 2,
		ProtocolLevel: 4,
	}
}

func newChecker(t *testing.T) (*health.Checker, *mqtttest.LogBuffer) {
	t.Helper()
	logs := &mqtttest.LogBuffer{}
	hc := health.NewChecker(slog.New(slog.NewTextHandler(logs, nil)), nil)
	t.Cleanup(hc.Close)
	return hc, logs
}

// TestBrokerStopsAndReturns: a stopped broker is marked down after
// unhealthy.tcp_failures failed probes in a row, and healthy again after
// healthy.successes good ones from the broker started in its place; each
// change is logged once.
func TestBrokerStopsAndReturns(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	addr := broker.Addr()
	hc, logs := newChecker(t)
	hc.Update([]health.Target{{Upstream: "u", Addrs: []string{addr}, Checks: &config.Checks{Active: []*config.ActiveCheck{fast(config.ProbeMQTT)}}}})
	n := hc.Node("u", addr)
	mqtttest.WaitFor(t, "a successful probe", func() bool { s := n.Status(); return s.Probes > 0 && s.LastProbeError == "" })
	if !n.Healthy() {
		t.Fatalf("node unhealthy while its broker runs: %+v", n.Status())
	}

	stopped := time.Now()
	broker.Close()
	mqtttest.WaitFor(t, "node marked unhealthy", func() bool { return !n.Healthy() })
	down := n.Status()
	t.Logf("marked down %v after the broker stopped (interval 20ms x 3 failures): %s", time.Since(stopped).Round(time.Millisecond), down.Reason)
	// Once down, the node's reason names the last probe's error; the
	// change itself is logged with the count that tipped it.
	if !strings.Contains(down.Reason, "mqtt probe: ") {
		t.Errorf("reason %q, want the mqtt probe's", down.Reason)
	}
	if !strings.Contains(logs.String(), `reason="mqtt probe: 3 failures in a row`) {
		t.Errorf("the change of state is not logged with its count:\n%s", logs)
	}

	mqtttest.StartMochiAt(t, addr)
	mqtttest.WaitFor(t, "node healthy again", n.Healthy)
	if up := n.Status(); !strings.Contains(up.Reason, "mqtt probe: 2 successes in a row") || !up.Since.After(down.Since) {
		t.Errorf("after recovery: %+v", up)
	}
	if got := strings.Count(logs.String(), `msg="node unhealthy"`); got != 1 {
		t.Errorf("logged unhealthy %d times, want once", got)
	}
	if got := strings.Count(logs.String(), `msg="node healthy"`); got != 1 {
		t.Errorf("logged healthy %d times, want once", got)
	}
}

// TestSilentPort: a port that accepts but never speaks MQTT is marked down
// by the mqtt probe (by timeouts) and not by the tcp probe.
func TestSilentPort(t *testing.T) {
	t.Parallel()
	addr := mqtttest.SilentPort(t).Addr()
	mqttCheck := fast(config.ProbeMQTT)
	mqttCheck.Timeout = 50 * time.Millisecond
	hc, logs := newChecker(t)
	hc.Update([]health.Target{
		{Upstream: "mqtt", Addrs: []string{addr}, Checks: &config.Checks{Active: []*config.ActiveCheck{mqttCheck}}},
		{Upstream: "tcp", Addrs: []string{addr}, Checks: &config.Checks{Active: []*config.ActiveCheck{fast(config.ProbeTCP)}}},
	})
	byMQTT, byTCP := hc.Node("mqtt", addr), hc.Node("tcp", addr)
	mqtttest.WaitFor(t, "mqtt probe marks the silent port down", func() bool { return !byMQTT.Healthy() })
	// Once down, the node's reason names the last probe's error, which may
	// already be the next probe's; the count that tipped it is in the log.
	if s := byMQTT.Status(); !strings.Contains(s.Reason, "no CONNACK") {
		t.Errorf("mqtt reason %q", s.Reason)
	}
	if !strings.Contains(logs.String(), "2 timeouts in a row") {
		t.Errorf("the change of state is not logged with its count:\n%s", logs)
	}
	// The tcp probe has run as often by now; give it 5 probes in all.
	mqtttest.WaitFor(t, "5 tcp probes", func() bool { return byTCP.Status().Probes >= 5 })
	if s := byTCP.Status(); !s.Healthy || s.ProbeFailures != 0 {
		t.Errorf("tcp probe: %+v, want healthy without failures", s)
	}
}

// TestProbeRefused: a broker that answers the probe's CONNECT with a
// refusal (mosquitto without anonymous access) is unhealthy, and the
// reason says so; with credentials it accepts, the probe passes.
func TestProbeRefused(t *testing.T) {
	t.Parallel()
	pwfile := t.TempDir() + "/passwd"
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwfile, "probe", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	m := mqtttest.StartMosquitto(t, "allow_anonymous false\npassword_file "+pwfile)
	hc, _ := newChecker(t)
	anon := fast(config.ProbeMQTT)
	anon.ProtocolLevel = 5
	withCreds := fast(config.ProbeMQTT)
	withCreds.Username, withCreds.Password = "probe", "s3cret"
	v5 := fast(config.ProbeMQTT)
	v5.ProtocolLevel, v5.Username, v5.Password = 5, "probe", "s3cret"
	v31 := fast(config.ProbeMQTT)
	v31.ProtocolLevel, v31.ClientID, v31.Username, v31.Password = 3, "mqgate-", "probe", "s3cret"
	hc.Update([]health.Target{
		{Upstream: "anon", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{anon}}},
		{Upstream: "creds", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{withCreds}}},
		{Upstream: "v31", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{v31}}},
		{Upstream: "v5", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{v5}}},
	})
	mqtttest.WaitFor(t, "anonymous probe refused", func() bool { return !hc.Node("anon", m.Addr()).Healthy() })
	if s := hc.Node("anon", m.Addr()).Status(); !strings.Contains(s.Reason, "CONNACK refused the probe: 0x87 Not authorized") {
		t.Errorf("reason %q", s.Reason)
	}
	for _, up := range []string{"creds", "v31", "v5"} {
		n := hc.Node(up, m.Addr())
		mqtttest.WaitFor(t, up+": 3 probes", func() bool { return n.Status().Probes >= 3 })
		if s := n.Status(); !s.Healthy || s.ProbeFailures != 0 {
			t.Errorf("%s: %+v", up, s)
		}
	}
	if seen := strings.Join(m.Seen(), " "); !strings.Contains(seen, "mqgate-") {
		t.Errorf("3.1 probe client ids %q lack the prefix", seen)
	}
}

// TestUpdate: nodes that stay keep their state across an Update; probes of
// removed upstreams stop before Update returns (no goroutine left behind).
func TestUpdate(t *testing.T) {
	t.Parallel()
	deadAddr := closedPort(t)
	live, other := mqtttest.SilentPort(t), mqtttest.SilentPort(t)
	liveAddr, otherAddr := live.Addr(), other.Addr()
	tcp := &config.Checks{Active: []*config.ActiveCheck{fast(config.ProbeTCP)}}
	hc, _ := newChecker(t)
	hc.Update([]health.Target{{Upstream: "u", Addrs: []string{deadAddr, liveAddr}, Checks: tcp}})
	dead := hc.Node("u", deadAddr)
	mqtttest.WaitFor(t, "dead node down", func() bool { return !dead.Healthy() })
	since := dead.Status().Since

	// A reload that keeps the node (and changes another setting) keeps its state.
	changed := &config.Checks{Active: []*config.ActiveCheck{fast(config.ProbeTCP)}}
	changed.Active[0].Successes = 3
	hc.Update([]health.Target{{Upstream: "u", Addrs: []string{deadAddr, liveAddr}, Checks: changed}})
	if s := hc.Node("u", deadAddr).Status(); s.Healthy || !s.Since.Equal(since) {
		t.Errorf("state after reload: %+v, want unhealthy since %v", s, since)
	}
	if got := hc.Probing(); got != 2 {
		t.Errorf("%d probes running, want 2", got)
	}

	// Removing the upstream stops its probes before Update returns.
	hc.Update([]health.Target{{Upstream: "other", Addrs: []string{otherAddr}, Checks: tcp}})
	if got := hc.Probing(); got != 1 {
		t.Fatalf("%d probes running after the upstream went, want 1", got)
	}
	// Every probe of the removed node was dialled before Update returned;
	// the port's accept loop may take them much later on a busy machine,
	// which Settle waits for. While the other upstream is probed 5 times,
	// the removed node must not be dialled once.
	before := live.Settle(t)
	mqtttest.WaitFor(t, "other upstream probed 5 times", func() bool { return other.Accepted() >= 5 })
	if after := live.Settle(t); after != before {
		t.Errorf("removed node probed %d more times", after-before)
	}
	if len(hc.Statuses()) != 1 {
		t.Errorf("statuses %+v, want the remaining node only", hc.Statuses())
	}
	hc.Close()
	if got := hc.Probing(); got != 0 {
		t.Errorf("%d probes running after Close", got)
	}
}

// TestPassiveStatus: a node's status names the passive counting in force
// and what the current fail_timeout window counted so far, below the
// threshold (one failure of two); a node without it says none.
func TestPassiveStatus(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	hc := health.NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	t.Cleanup(hc.Close)
	passive := &config.PassiveCheck{TCPFailures: 2, Timeouts: 5, FailTimeout: time.Hour}
	hc.Update([]health.Target{
		{Upstream: "u", Addrs: []string{addr}, Checks: &config.Checks{Passive: passive}},
		{Upstream: "none", Addrs: []string{addr}},
	})
	n := hc.Node("u", addr)
	_, err := net.Dial("tcp", addr)
	if err == nil {
		t.Fatal("dialled a closed port")
	}
	n.ReportDial(err)
	st := n.Status()
	if !st.Healthy || st.Passive != "tcp_failures=2 timeouts=5 fail_timeout=1h0m0s" || st.PassiveFailures != 1 || st.PassiveTimeouts != 0 {
		t.Errorf("after one failure: %+v", st)
	}
	if st := hc.Node("none", addr).Status(); st.Passive != "" || st.PassiveFailures != 0 {
		t.Errorf("without passive checks: %+v", st)
	}
}

// TestPassive: dial failures of real connections take a node out for
// fail_timeout; then it is back on trial, where one failure takes it out
// again and one success proves it.
func TestPassive(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	logs := &mqtttest.LogBuffer{}
	changes := make(chan health.Status, 10)
	hc := health.NewChecker(slog.New(slog.NewTextHandler(logs, nil)), func(s health.Status) { changes <- s })
	t.Cleanup(hc.Close)
	passive := &config.PassiveCheck{TCPFailures: 2, Timeouts: 5, FailTimeout: 50 * time.Millisecond}
	hc.Update([]health.Target{{Upstream: "u", Addrs: []string{addr}, Checks: &config.Checks{Passive: passive}}})
	n := hc.Node("u", addr)
	dial := func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	n.ReportDial(dial())
	if !n.Healthy() {
		t.Fatal("down after 1 failure, want 2")
	}
	n.ReportDial(dial())
	if n.Healthy() {
		t.Fatal("healthy after 2 failures")
	}
	if r := n.Status().Reason; !strings.Contains(r, "passive: 2 dial failures within 50ms") || !strings.Contains(r, "refused") {
		t.Errorf("reason %q", r)
	}
	mqtttest.WaitFor(t, "back on trial", n.Healthy)
	if !n.Status().OnTrial {
		t.Errorf("status %+v, want on trial", n.Status())
	}
	n.ReportDial(dial())
	if n.Healthy() {
		t.Fatal("healthy after failing on trial")
	}
	if r := n.Status().Reason; !strings.Contains(r, "failed on trial") {
		t.Errorf("reason %q", r)
	}
	mqtttest.WaitFor(t, "back on trial again", n.Healthy)
	n.ReportDial(nil)
	n.ReportDial(dial()) // one failure after a proven success is counted afresh
	if !n.Healthy() {
		t.Errorf("down after 1 failure following a success: %+v", n.Status())
	}
	if got := strings.Count(logs.String(), `msg="node unhealthy"`); got != 2 {
		t.Errorf("logged unhealthy %d times, want 2", got)
	}
	// Down, on trial, down, on trial: four changes reported.
	var down, up int
	for range 4 {
		select {
		case s := <-changes:
			if s.Healthy {
				up++
			} else {
				down++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d changes reported, want 4", down+up)
		}
	}
	if down != 2 || up != 2 || len(changes) != 0 {
		t.Errorf("changes reported: %d down, %d up, %d more; want 2 and 2", down, up, len(changes))
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
}

// countingConn reports its Close once.
type countingConn struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *countingConn) Close() error {
	c.once.Do(c.closed)
	return c.Conn.Close()
}

// TestProbeConcurrency: at most checks.active.concurrency probes of an
// upstream are in flight at once, however many nodes it has.
func TestProbeConcurrency(t *testing.T) {
	t.Parallel()
	var addrs []string
	for range 8 {
		addr := mqtttest.SilentPort(t).Addr()
		addrs = append(addrs, addr)
	}
	var inFlight, most, probes atomic.Int64
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		probes.Add(1)
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		return &countingConn{Conn: c, closed: func() { inFlight.Add(-1) }}, nil
	}
	check := fast(config.ProbeMQTT)
	check.Concurrency, check.Timeout = 2, 30*time.Millisecond
	hc, _ := newChecker(t)
	hc.Update([]health.Target{{Upstream: "u", Addrs: addrs, Checks: &config.Checks{Active: []*config.ActiveCheck{check}}, Dial: dial}})
	mqtttest.WaitFor(t, "24 probes", func() bool { return probes.Load() >= 24 })
	if m := most.Load(); m != 2 {
		t.Errorf("at most %d probes in flight, want 2", m)
	}
}
