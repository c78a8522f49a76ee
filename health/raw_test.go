package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// nginxSend is the match block's send of NGINX's "Load Balancing MQTT"
// post (seed 003), as written there: an MQTT 3.1 CONNECT with the client id
// "nginx health check"; nginxExpect is its expect, a CONNACK accepting it.
const (
	nginxSend   = `\x10\x20\x00\x06\x4d\x51\x49\x73\x64\x70\x03\x02\x00\x3c\x00\x12\x6e\x67\x69\x6e\x78\x20\x68\x65\x61\x6c\x74\x68\x20\x63\x68\x65\x63\x6b`
	nginxExpect = `\x20\x02\x00\x00`
)

func rawCheck(t *testing.T, send, expect string) *config.ActiveCheck {
	t.Helper()
	a := fast(config.ProbeTCP)
	var err error
	if send != "" {
		if a.Send, err = config.ParseProbeBytes(send); err != nil {
			t.Fatal(err)
		}
	}
	if expect != "" {
		if a.Expect, err = config.ParseProbeBytes(expect); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// TestRawSendExpect: a tcp check with send and expect (NGINX's match,
// HAProxy's tcp-check send-binary/expect binary) passes against a real
// Mosquitto when the answer begins with the expected bytes, fails with
// both byte strings in the reason when it does not, and counts a port that
// accepts and never answers as timeouts.
func TestRawSendExpect(t *testing.T) {
	t.Parallel()
	m := mqtttest.StartMosquitto(t, "")
	silent := mqtttest.SilentPort(t)
	hc, logs := newChecker(t)
	good := rawCheck(t, nginxSend, nginxExpect)
	// The same CONNECT in HAProxy's hex; a CONNACK refusing it (0x02
	// identifier rejected) is what this check wants, so the real one fails.
	silentCheck := rawCheck(t, nginxSend, nginxExpect)
	silentCheck.Timeout = 300 * time.Millisecond // the silent port is found by timeouts
	wrong := rawCheck(t, "10 20 00 06 4d 51 49 73 64 70 03 02 00 3c 00 12 6e 67 69 6e 78 20 68 65 61 6c 74 68 20 63 68 65 63 6b", "20 02 00 02")
	hc.Update([]health.Target{
		{Upstream: "good", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{good}}},
		{Upstream: "wrong", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{wrong}}},
		{Upstream: "silent", Addrs: []string{silent.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{silentCheck}}},
	})
	n := hc.Node("good", m.Addr())
	mqtttest.WaitFor(t, "3 raw probes", func() bool { return n.Status().Probes >= 3 })
	if s := n.Status(); !s.Healthy || s.ProbeFailures != 0 || s.Probe != "tcp" {
		t.Errorf("good: %+v", s)
	}
	mqtttest.WaitFor(t, "Mosquitto saw the NGINX probe's client id", func() bool {
		return strings.Contains(strings.Join(m.Seen(), " "), "nginx health check")
	})

	w := hc.Node("wrong", m.Addr())
	mqtttest.WaitFor(t, "wrong expect marks the node down", func() bool { return !w.Healthy() })
	// The reason names the last probe's error from then on; the change
	// was logged with the count that tipped it.
	if s := w.Status(); !strings.Contains(s.Reason, "tcp probe: ") || !strings.Contains(s.Reason, "expected 20 02 00 02, got 20 02 00 00") {
		t.Errorf("wrong: reason %q", s.Reason)
	}
	if !strings.Contains(logs.String(), `reason="tcp probe: 3 failures in a row: expected 20 02 00 02, got 20 02 00 00"`) {
		t.Errorf("the change of state is not logged with its count:\n%s", logs)
	}
	sl := hc.Node("silent", silent.Addr())
	mqtttest.WaitFor(t, "silent port marked down", func() bool { return !sl.Healthy() })
	if s := sl.Status(); !strings.Contains(s.Reason, "no answer within 300ms, expected 20 02 00 00") {
		t.Errorf("silent: reason %q", s.Reason)
	}
	if !strings.Contains(logs.String(), "node="+silent.Addr()+` reason="tcp probe: 2 timeouts in a row: no answer within 300ms, expected 20 02 00 00`) {
		t.Errorf("the silent port's change of state is not logged with its count:\n%s", logs)
	}
}

// TestLongProbeClientID: a probe client_id prefix longer than 15
// characters works with MQTT 3.1.1 and 5.0 (brokers may accept more than
// 23 [MQTT-3.1.3-5], Mosquitto does), with the 8 random hex digits after it.
func TestLongProbeClientID(t *testing.T) {
	t.Parallel()
	m := mqtttest.StartMosquitto(t, "")
	hc, _ := newChecker(t)
	const prefix = "mqgate-health-check-eu-west-1-"
	v4, v5 := fast(config.ProbeMQTT), fast(config.ProbeMQTT)
	v4.ClientID = prefix
	v5.ClientID, v5.ProtocolLevel = prefix, 5
	hc.Update([]health.Target{
		{Upstream: "v4", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{v4}}},
		{Upstream: "v5", Addrs: []string{m.Addr()}, Checks: &config.Checks{Active: []*config.ActiveCheck{v5}}},
	})
	for _, up := range []string{"v4", "v5"} {
		n := hc.Node(up, m.Addr())
		mqtttest.WaitFor(t, up+": 3 probes", func() bool { return n.Status().Probes >= 3 })
		if s := n.Status(); !s.Healthy || s.ProbeFailures != 0 {
			t.Errorf("%s: %+v", up, s)
		}
	}
	var long int
	for _, id := range m.Seen() {
		if strings.HasPrefix(id, prefix) && len(id) == len(prefix)+8 {
			long++
		}
	}
	if long < 6 {
		t.Errorf("Mosquitto saw %d probe ids of %d characters with the prefix, want 6: %q", long, len(prefix)+8, m.Seen())
	}
}
