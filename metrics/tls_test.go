package metrics_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/proxy"
)

// TestTLSMetrics: handshakes on a TLS listener are counted by result and
// timed, connections tlsrecord carries counted; PROXY protocol refusals
// are counted; the ws pairs' counts are there at 0.
func TestTLSMetrics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ca.Server(t, certtest.ECDSA, "a.example").WriteFiles(t, dir, "srv")
	certtest.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM)
	cfg, err := config.Parse(config.Document{Name: filepath.Join(dir, "t.yaml"), Data: []byte(`
stream_proxy: {tcp: [{addr: "127.0.0.1:0", tls: true}, {addr: "127.0.0.2:0", proxy_protocol: true, real_ip_from: 10.0.0.0/8}]}
ssls: [{id: 1, snis: [a.example], cert: srv.crt, key: srv.key, client: {ca: ca.pem}}]
stream_routes: [{upstream: {nodes: {"127.0.0.1:1": 1}}}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtttest.StartProxy(t, cfg, proxy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	addrs := srv.ListenerAddrs()
	hs := httptest.NewServer(metrics.New(metrics.Sources{Proxy: srv.Stats}).Handler())
	t.Cleanup(hs.Close)

	good := &tls.Config{ServerName: "a.example", RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "dev").TLS}}
	for range 2 {
		c, err := tls.Dial("tcp", addrs["127.0.0.1:0"].String(), good)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if c, err := tls.Dial("tcp", addrs["127.0.0.1:0"].String(), &tls.Config{ServerName: "a.example", RootCAs: ca.Pool()}); err == nil {
		_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the refusal comes after the handshake
		c.Close()
	}
	if c, err := netDial(addrs["127.0.0.2:0"].String()); err == nil {
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	mqtttest.WaitFor(t, "the handshakes to be counted", func() bool {
		st := srv.Stats()
		return len(st.TLSHandshakes) == 1 && st.TLSHandshakes[0].OK == 2 && st.TLSHandshakes[0].Failed == 1 && st.ProxyProtocolRefused == 1 &&
			st.TLSRecordCarried == 2 // TLS 1.3 AES-GCM: tlsrecord carries both good ones (stream_proxy.tls_record)
	})
	f := scrape(t, hs.URL)
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mqgate_tls_handshakes_total", map[string]string{"listener": "127.0.0.1:0", "result": "ok"}, 2},
		{"mqgate_tls_handshakes_total", map[string]string{"listener": "127.0.0.1:0", "result": "failed"}, 1},
		{"mqgate_tls_handshake_duration_seconds", map[string]string{"listener": "127.0.0.1:0"}, 2},
		{"mqgate_proxy_protocol_refused_total", nil, 1},
		{"mqgate_tls_record_carried_total", nil, 2},
		{"mqgate_tls_record_pairs_total", map[string]string{"path": "looped"}, 0}, // no CONNECT came: no pair
		{"mqgate_tls_record_pairs_total", map[string]string{"path": "parked"}, 0},
		{"mqgate_websocket_pairs_total", map[string]string{"path": "looped"}, 0},
		{"mqgate_websocket_pairs_total", map[string]string{"path": "parked"}, 0},
		{"mqgate_websocket_pairs_total", map[string]string{"path": "upstream_parked"}, 0},
	} {
		if got := value(t, f, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}
