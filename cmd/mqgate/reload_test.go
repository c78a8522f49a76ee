package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestReloadCommand: `mqgate reload` checks the files first and signals
// nothing when they are invalid (the errors as file:line: path: why);
// with valid files it makes the running mqgate reload through its Admin
// API, or by SIGHUP to the pid of `run --pid-file`, which is removed when
// mqgate stops.
func TestReloadCommand(t *testing.T) {
	t.Parallel()
	one, two := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port, adminPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	file, pidFile := filepath.Join(dir, "mqgate.yaml"), filepath.Join(dir, "mqgate.pid")
	write := func(upstream string) {
		cfg := fmt.Sprintf(`stream_proxy: {tcp: [%q]}
reload: {watch: false}
admin:
  listen: "127.0.0.1:%d"
  keys: [{name: ops, key: 6f1ed002ab5595859014ebf0951522d9}]
upstreams: [%s]
stream_routes: [{upstream_id: 1}]
`, addr, adminPort, upstream)
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	node := func(b *mqtttest.Mochi) string { return fmt.Sprintf("{id: 1, nodes: {%q: 1}}", b.Addr()) }
	write(node(one))
	p := startMQGate(t, "run", "-c", file, "--pid-file", pidFile)
	waitListening(t, addr, p)
	mqtttest.WaitFor(t, "the pid file", func() bool { _, err := os.Stat(pidFile); return err == nil })
	if pid, err := readPid(pidFile); err != nil || pid != p.cmd.Process.Pid {
		t.Fatalf("pid file: %d, %v; want %d", pid, err, p.cmd.Process.Pid)
	}
	reload := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"reload", "-c", file}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	write("{id: 1, nodes: {}}")
	code, _, stderr := reload()
	if want := file + ":6: upstreams[0].nodes: at least one node is required"; code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "not reloaded, the running configuration stays") {
		t.Errorf("reload of a bad file: exit %d, stderr:\n%s\nwant exit 1 with %q", code, stderr, want)
	}
	mqtttest.ConnectOK(t, addr, "after-bad", mqtt.Level311)
	mqtttest.WaitFor(t, "the old broker to get the client", func() bool { return slices.Contains(one.Seen(), "after-bad") })
	if strings.Contains(p.stderr.String(), "reload") {
		t.Errorf("the running mqgate was asked to reload a bad file:\n%s", p.stderr)
	}

	write(node(two))
	if code, stdout, stderr := reload(); code != 0 || !strings.HasPrefix(stdout, "reloaded: ") {
		t.Fatalf("reload through the Admin API: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	mqtttest.ConnectOK(t, addr, "after-admin", mqtt.Level311)
	mqtttest.WaitFor(t, "the new broker to get the client", func() bool { return slices.Contains(two.Seen(), "after-admin") })

	write(node(one))
	if code, stdout, stderr := reload("--pid-file", pidFile); code != 0 || !strings.Contains(stdout, fmt.Sprintf("signalled mqgate (pid %d)", p.cmd.Process.Pid)) {
		t.Fatalf("reload by pid file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	mqtttest.WaitFor(t, "the SIGHUP reload", func() bool { return strings.Contains(p.stderr.String(), "msg=reloaded source=sighup") })
	mqtttest.ConnectOK(t, addr, "after-sighup", mqtt.Level311)
	mqtttest.WaitFor(t, "the first broker to get the client", func() bool { return slices.Contains(one.Seen(), "after-sighup") })

	p.stop(t)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after stop: %v", err)
	}
}
