package metrics_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// Scrape returns the metric families a real HTTP client reads from h,
// parsed by Prometheus's own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return families
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("no %s", name)
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s%v", name, want)
	return 0
}

func TestMetricsParse(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	cfg, err := config.Parse(config.Document{Name: "t.yaml", Data: []byte(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams: [{id: up, nodes: {"` + broker.Addr() + `": 1}}]
stream_routes:
  - {id: sensors, upstream_id: up, mqtt_client_id: {prefix: sensor-}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtttest.StartProxy(t, cfg, proxy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var addr string
	for _, a := range srv.ListenerAddrs() {
		addr = a.String()
	}
	m := metrics.New(metrics.Sources{
		Proxy:        srv.Stats,
		Reloads:      func() ([]metrics.Reload, float64) { return []metrics.Reload{{"sighup", "refused", 2}}, 1.7e9 },
		AuthFailures: func() map[string]uint64 { return map[string]uint64{"wrong_key": 3} },
	})
	hs := httptest.NewServer(m.Handler())
	t.Cleanup(hs.Close)

	mqtttest.ConnectOK(t, addr, "sensor-1", mqtt.Level5)
	live, _ := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "sensor-2"})
	_, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: "other"})
	if len(ack) != 4 || ack[3] != 3 {
		t.Fatalf("unrouted client: CONNACK % x, want server unavailable", ack)
	}
	if c, err := netDial(addr); err == nil {
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		io.Copy(io.Discard, c)
		c.Close()
	}
	mqtttest.WaitFor(t, "the connections to settle", func() bool {
		st := srv.Stats()
		return st.Active == 1 && st.ParseErrors["not_mqtt"] == 1
	})
	_ = live

	f := scrape(t, hs.URL)
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mqgate_connections_active", nil, 1},
		{"mqgate_connections_accepted_total", nil, 4},
		{"mqgate_connections_proxied_total", nil, 2},
		{"mqgate_connections_refused_total", map[string]string{"reason": "no_route"}, 1},
		{"mqgate_connect_errors_total", map[string]string{"kind": "not_mqtt"}, 1},
		{"mqgate_dial_duration_seconds", nil, 2},
		{"mqgate_route_connections_active", map[string]string{"route": "sensors"}, 1},
		{"mqgate_route_connections_total", map[string]string{"route": "sensors"}, 2},
		{"mqgate_node_connections_active", map[string]string{"upstream": "up", "node": broker.Addr()}, 1},
		{"mqgate_node_connections_total", map[string]string{"upstream": "up", "node": broker.Addr()}, 2},
		{"mqgate_node_dial_failures_total", map[string]string{"upstream": "up", "node": broker.Addr()}, 0},
		{"mqgate_node_health", map[string]string{"upstream": "up", "node": broker.Addr(), "state": "healthy"}, 1},
		{"mqgate_config_reloads_total", map[string]string{"source": "sighup", "result": "refused"}, 2},
		{"mqgate_config_last_reload_success_timestamp_seconds", nil, 1.7e9},
		{"mqgate_admin_auth_failures_total", map[string]string{"reason": "wrong_key"}, 3},
	} {
		if got := value(t, f, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if v := value(t, f, "mqgate_go_goroutines", nil); v <= 0 {
		t.Errorf("mqgate_go_goroutines = %v", v)
	}
	for _, dir := range []string{"up", "down"} {
		if v := value(t, f, "mqgate_bytes_total", map[string]string{"direction": dir}); v <= 0 {
			t.Errorf("mqgate_bytes_total{direction=%q} = %v", dir, v)
		}
		if v := value(t, f, "mqgate_node_bytes_total", map[string]string{"direction": dir, "node": broker.Addr()}); v <= 0 {
			t.Errorf("mqgate_node_bytes_total{direction=%q} = %v", dir, v)
		}
	}
	for name := range f {
		if !strings.HasPrefix(name, "mqgate_") {
			t.Errorf("metric %s lacks the mqgate_ prefix", name)
		}
		for _, m := range f[name].Metric {
			for _, l := range m.Label {
				if strings.Contains(l.GetValue(), "sensor-") {
					t.Errorf("%s has a client id in label %s", name, l.GetName())
				}
			}
		}
	}
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
