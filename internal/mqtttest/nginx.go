package mqtttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NGINXJS is the njs preread handler that puts an MQTT CONNECT's client id
// in $mqtt_client_id (bench's, the one the benchmark runs NGINX with).
func NGINXJS(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "bench", "configs", "mqtt.js")
}

// StartNGINX runs a real NGINX, with the stream and njs stream modules
// loaded, until the test ends, and returns the address it listens on.
// stream is the body of the stream block; LISTEN in it becomes the listen
// address. The test fails when NGINX is not installed: the test command
// installs it.
func StartNGINX(t testing.TB, stream string) string {
	t.Helper()
	return startNGINX(t, "stream {\n"+stream+"\n}")
}

// StartNGINXHTTP is StartNGINX with an http block of body instead (its
// stub_status, say, to compare mqgate's with).
func StartNGINXHTTP(t testing.TB, body string) string {
	t.Helper()
	return startNGINX(t, "http {\naccess_log off;\nclient_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;\n"+body+"\n}")
}

// startNGINX runs NGINX with blocks after its events block.
func startNGINX(t testing.TB, blocks string) string {
	t.Helper()
	const jsModule = "/usr/lib/nginx/modules/ngx_stream_js_module.so"
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	if _, err := os.Stat(jsModule); err != nil {
		t.Fatalf("nginx with the njs stream module is not installed (apt-get install nginx libnginx-mod-stream libnginx-mod-stream-js): %v", err)
	}
	dir := t.TempDir()
	var lastErr error
	// The port is drawn free and bound by NGINX a moment later; another
	// process may take it in between, so try a few times.
	for range 5 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
load_module %[2]s;
events { worker_connections 1024; }
%[3]s
`, dir, jsModule, strings.ReplaceAll(blocks, "LISTEN", addr))
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
		// A test binary that dies takes its NGINX along.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if err := waitListening(addr, exited, 10*time.Second); err != nil {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			lastErr = fmt.Errorf("%v; stderr: %s; error.log: %s", err, stderr.String(), log)
			continue
		}
		t.Cleanup(stop)
		return addr
	}
	t.Fatalf("nginx did not start: %v", lastErr)
	return ""
}

// waitListening polls addr until it accepts a connection, the process
// exits or limit passes.
func waitListening(addr string, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s", addr, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
