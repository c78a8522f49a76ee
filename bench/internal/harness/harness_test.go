package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
)

func sampleSettings(dir string) proxySettings {
	return proxySettings{
		Dir:    dir,
		Listen: "127.0.0.1:21000",
		Brokers: []brokerAddr{
			{Name: "broker1", Addr: "127.0.0.1:21001"},
			{Name: "broker2", Addr: "127.0.0.1:21002"},
			{Name: "broker3", Addr: "127.0.0.1:21003"},
		},
		MaxConn:           9950,
		NoFile:            20000,
		WorkerConnections: 19900,
		Threads:           2,
		TLSListen:         "127.0.0.1:21004",
		TLS:               tlsFiles{CA: dir + "/ca.crt", Cert: dir + "/server.crt", Key: dir + "/server.key", PEM: dir + "/server.pem"},
		WSListen:          "127.0.0.1:21005",
		WSSListen:         "127.0.0.1:21006",
		WSPort:            21005,
		WSSPort:           21006,
		WSPath:            wsPath,
		WSBrokerTCP:       "127.0.0.1:21007",
		WSBrokerWS:        "127.0.0.1:21008",
	}
}

func TestTemplatesRender(t *testing.T) {
	dir := t.TempDir()
	s := sampleSettings(dir)
	for _, tc := range []struct {
		name string
		data any
		want []string
	}{
		{"haproxy.cfg.tmpl", s, []string{"balance hash var(sess.clid)", "hash-type consistent", "server broker3 127.0.0.1:21003", "nbthread 2"}},
		{"nginx.conf.tmpl", s, []string{"hash $mqtt_client_id consistent;", "server 127.0.0.1:21002;", "worker_processes 2;", "js_preread mqtt.preread;",
			"location /mqtt {", "server 127.0.0.1:21008;", "listen 127.0.0.1:21006 ssl reuseport;", `proxy_set_header Connection "Upgrade";`}},
		{"mqgate.yaml.tmpl", s, []string{`"127.0.0.1:21000"`, "key: mqtt_client_id", `"127.0.0.1:21001": 1`,
			`{addr: "127.0.0.1:21005", websocket: {path: "/mqtt"}}`, "server_port: 21006", `"127.0.0.1:21007": 1`}},
		{"mosquitto.conf.tmpl", struct {
			Index   int
			Port    int
			LogFile string
		}{1, 21001, ""}, []string{"listener 21001 127.0.0.1", "user root", "log_dest none"}},
	} {
		path := filepath.Join(dir, tc.name)
		if err := renderTemplate(tc.name, path, tc.data); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q:\n%s", tc.name, w, b)
			}
		}
	}
}

// TestPeersAcceptConfigs asks HAProxy and NGINX themselves to check the
// rendered configurations; each is skipped, saying so, where the peer is not
// installed (bench/run.sh installs both).
func TestPeersAcceptConfigs(t *testing.T) {
	dir := t.TempDir()
	s := sampleSettings(dir)
	certs, err := makeCerts(dir) // the peers open the TLS listener's files
	if err != nil {
		t.Fatal(err)
	}
	s.TLS = certs
	t.Run("haproxy", func(t *testing.T) {
		if _, err := exec.LookPath("haproxy"); err != nil {
			t.Skip("haproxy is not installed (apt-get install haproxy)")
		}
		if err := renderTemplate("haproxy.cfg.tmpl", filepath.Join(dir, "haproxy.cfg"), s); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("haproxy", "-c", "-q", "-f", filepath.Join(dir, "haproxy.cfg")).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c: %v\n%s", err, out)
		}
	})
	t.Run("nginx", func(t *testing.T) {
		if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_js_module.so"); err != nil {
			t.Skip("nginx with the njs stream module is not installed (apt-get install nginx libnginx-mod-stream libnginx-mod-stream-js)")
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := renderTemplate("nginx.conf.tmpl", conf, s); err != nil {
			t.Fatal(err)
		}
		js, _ := os.ReadFile("../../configs/mqtt.js")
		if err := os.WriteFile(filepath.Join(dir, "mqtt.js"), js, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "err.log"), "-t", "-q").CombinedOutput()
		if err != nil {
			t.Errorf("nginx -t: %v\n%s", err, out)
		}
	})
	t.Run("mqgate", func(t *testing.T) {
		conf := filepath.Join(dir, "mqgate.yaml")
		if err := renderTemplate("mqgate.yaml.tmpl", conf, s); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(conf)
		if err != nil {
			t.Fatalf("mqgate refuses its benchmark configuration: %v", err)
		}
		if n := len(cfg.StreamProxy.TCP); n != 4 {
			t.Errorf("%d listeners, want MQTT, TLS, WebSocket and WSS", n)
		}
		// Without the WebSocket phases (mqgate-1), the same template.
		s.WSListen = ""
		if err := renderTemplate("mqgate.yaml.tmpl", conf, s); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(conf); err != nil {
			t.Fatalf("mqgate refuses its benchmark configuration without WebSocket: %v", err)
		}
	})
}

func TestReadUsageOfSelf(t *testing.T) {
	start := readUsage([]int{os.Getpid()})
	// Busy until the CPU time read back grows (it counts in clock ticks):
	// 200 ms of wall time was not enough on a machine busy with other
	// work (the test failed under stress -c 2). The deadline only bounds
	// a readUsage that never sees the CPU spent.
	var u usage
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		for spin := time.Now().Add(50 * time.Millisecond); time.Now().Before(spin); {
		}
		if u = readUsage([]int{os.Getpid(), 1 << 30}); u.CPU > start.CPU { // the second pid does not exist
			break
		}
	}
	if u.RSSKB <= 0 {
		t.Errorf("RSS = %d KB", u.RSSKB)
	}
	if u.CPU <= start.CPU {
		t.Errorf("CPU did not grow over a busy loop: %v then %v", start.CPU, u.CPU)
	}
	if u.Sys < 0 || u.Sys > u.CPU {
		t.Errorf("system time %v of CPU %v", u.Sys, u.CPU)
	}
	if m := readMachineCPU(); m.total <= 0 || m.busy > m.total {
		t.Errorf("machine CPU %+v", m)
	}
}

func TestFreePortsBelowEphemeralRange(t *testing.T) {
	ports, err := freePorts(6, time.Now().UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 1024 || p >= 32768 || seen[p] {
			t.Errorf("bad port %d in %v", p, ports)
		}
		seen[p] = true
	}
}

func TestDefaultPlanFitsFileLimit(t *testing.T) {
	p := DefaultPlan(false, 20000)
	if p.IdleClients != 9900 {
		t.Errorf("IdleClients = %d for 20000 files, want 9900", p.IdleClients)
	}
	if q := DefaultPlan(true, 20000); q.Rounds != 1 || q.WindowSeconds >= p.WindowSeconds {
		t.Errorf("quick plan %+v is not smaller", q)
	}
}
