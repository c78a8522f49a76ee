package health_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// fastHTTP is an http(s) check of port, EMQX-style, with fast().
func fastHTTP(typ string, port int) *config.ActiveCheck {
	c := fast(typ)
	c.Timeout = 5 * time.Second // a TLS handshake under -race on a busy machine; probes that fail fail fast
	c.Port, c.HTTPPath, c.Host = port, "/api/v5/status", "broker.internal"
	c.ReqHeaders = []string{"Authorization: Bearer probe-token"}
	c.HTTPSVerify = true
	c.HealthyStatuses, c.UnhealthyStatuses, c.HTTPFailures = []int{200}, []int{500, 503}, 2
	return c
}

// statusEndpoint is a broker's status endpoint whose status the test sets,
// checking the probe's request as it comes.
type statusEndpoint struct {
	status atomic.Int64
	bad    atomic.Value // the last malformed request, as a string
}

func (e *statusEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v5/status" || r.Host != "broker.internal" || r.Header.Get("Authorization") != "Bearer probe-token" {
		e.bad.Store(r.Method + " " + r.Host + r.URL.Path + " " + r.Header.Get("Authorization"))
	}
	w.WriteHeader(int(e.status.Load()))
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

func portOf(t *testing.T, url string) int {
	t.Helper()
	p, err := strconv.Atoi(url[strings.LastIndex(url, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHTTPCheckWithMQTT: a Mosquitto broker with a status endpoint beside
// it, checked by both an mqtt and an http probe. The node goes down when
// the endpoint answers 503 though MQTT still works, comes back when it
// answers 200, goes down again when the broker stops though the endpoint
// says 200: a node must pass both. A status in neither list counts
// neither way.
func TestHTTPCheckWithMQTT(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMosquitto(t, "")
	ep := &statusEndpoint{}
	ep.status.Store(200)
	web := httptest.NewServer(ep)
	t.Cleanup(web.Close)

	mqttCheck := fast(config.ProbeMQTT)
	mqttCheck.Timeout = 5 * time.Second
	hc, logs := newChecker(t)
	addr := broker.Addr()
	hc.Update([]health.Target{{Upstream: "u", Addrs: []string{addr}, Checks: &config.Checks{
		Active: []*config.ActiveCheck{mqttCheck, fastHTTP(config.ProbeHTTP, portOf(t, web.URL))},
	}}})
	n := hc.Node("u", addr)
	mqtttest.WaitFor(t, "probes of both kinds", func() bool { s := n.Status(); return s.Probes >= 4 && s.LastProbeError == "" })
	if s := n.Status(); !s.Healthy || s.Probe != "mqtt+http" {
		t.Fatalf("both checks pass, node: %+v", s)
	}

	ep.status.Store(503)
	mqtttest.WaitFor(t, "node down by its status endpoint", func() bool { return !n.Healthy() })
	if r := n.Status().Reason; !strings.Contains(r, "http probe: 2 HTTP failures in a row: status 503") {
		t.Errorf("reason %q", r)
	}
	ep.status.Store(200)
	mqtttest.WaitFor(t, "node up when the endpoint says 200", n.Healthy)
	if r := n.Status().Reason; !strings.Contains(r, "http probe: 2 successes in a row") {
		t.Errorf("reason %q", r)
	}

	ep.status.Store(418) // neither healthy nor unhealthy
	before := n.Status().ProbeFailures
	mqtttest.WaitFor(t, "a probe answered 418", func() bool { return strings.Contains(n.Status().LastProbeError, "status 418") })
	seen := n.Status().Probes
	mqtttest.WaitFor(t, "more probes answered 418", func() bool { return n.Status().Probes >= seen+6 })
	if s := n.Status(); !s.Healthy || s.ProbeFailures != before {
		t.Errorf("a status in neither list changed the node: %+v (failures before %d)", s, before)
	}
	ep.status.Store(200)

	broker.Stop()
	mqtttest.WaitFor(t, "node down by MQTT while the endpoint says 200", func() bool { return !n.Healthy() })
	if r := n.Status().Reason; !strings.Contains(r, "mqtt probe") {
		t.Errorf("reason %q", r)
	}
	if v := ep.bad.Load(); v != nil {
		t.Errorf("the probe sent %q, want GET broker.internal/api/v5/status with the header", v)
	}
	if got := strings.Count(logs.String(), `msg="node unhealthy"`); got != 2 {
		t.Errorf("logged unhealthy %d times, want 2:\n%s", got, logs)
	}
}

// TestHTTPSCheck: an https probe verifies the endpoint's certificate unless
// https_verify_certificate is false.
func TestHTTPSCheck(t *testing.T) {
	t.Parallel()
	ep := &statusEndpoint{}
	ep.status.Store(200)
	web := httptest.NewUnstartedServer(ep)
	web.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	web.StartTLS()
	t.Cleanup(web.Close)
	port := portOf(t, web.URL)
	addr := "127.0.0.1:1" // the MQTT port is not probed: only the https check runs
	verify, noVerify := fastHTTP(config.ProbeHTTPS, port), fastHTTP(config.ProbeHTTPS, port)
	noVerify.HTTPSVerify = false

	hc, _ := newChecker(t)
	hc.Update([]health.Target{
		{Upstream: "verify", Addrs: []string{addr}, Checks: &config.Checks{Active: []*config.ActiveCheck{verify}}},
		{Upstream: "no-verify", Addrs: []string{addr}, Checks: &config.Checks{Active: []*config.ActiveCheck{noVerify}}},
	})
	bad, good := hc.Node("verify", addr), hc.Node("no-verify", addr)
	mqtttest.WaitFor(t, "the verifying probe fails", func() bool { return !bad.Healthy() })
	if r := bad.Status().Reason; !strings.Contains(r, "certificate") {
		t.Errorf("reason %q, want a certificate error", r)
	}
	mqtttest.WaitFor(t, "probes without verification", func() bool { s := good.Status(); return s.Probes >= 3 })
	if s := good.Status(); !s.Healthy || s.LastProbeError != "" {
		t.Errorf("https without verification: %+v", s)
	}
}
