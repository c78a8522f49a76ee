package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestAccessLogFormatAndReopen: seed 003's log_format written as
// log.access_log_format gives its line for mosquitto_pub through mqgate to
// Mosquitto; after logrotate's rename, SIGUSR1 makes mqgate write to a new
// file at the path, with no reload and nothing lost.
func TestAccessLogFormatAndReopen(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("mosquitto_pub missing: bash scripts/test.sh installs mosquitto-clients")
	}
	broker := mqtttest.StartMosquitto(t, "")
	port := mqtttest.FreePort(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mqtt_access.log")
	conf := filepath.Join(dir, "mqgate.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`stream_proxy: {tcp: ["127.0.0.1:%d"]}
log:
  access_log: %s
  access_log_format: '$remote_addr [$time_local] $protocol $status $bytes_received $bytes_sent $upstream_addr $mqtt_client_id'
upstreams: [{id: hive_mq, nodes: {%q: 1}}]
stream_routes: [{upstream_id: hive_mq}]
`, port, logPath, broker.Addr())), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startMQGate(t, "run", "-c", conf)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitListening(t, addr, p)

	pub := func(id string) {
		t.Helper()
		out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "topic/test", "-m", "test123", "-i", id).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub -i %s: %v\n%s", id, err, out)
		}
	}
	lines := func(path string) []string {
		b, _ := os.ReadFile(path)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	pub("thing001")
	mqtttest.WaitFor(t, "the access log line", func() bool { return strings.Contains(lines(logPath)[0], "thing001") })
	// CONNECT 22 bytes (3.1.1, id thing001), PUBLISH 21 (topic/test,
	// test123), DISCONNECT 2; the CONNACK is 4.
	line := regexp.MustCompile(`^127\.0\.0\.1 \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] TCP 200 45 4 ` + regexp.QuoteMeta(broker.Addr()) + ` thing001$`)
	if got := lines(logPath); len(got) != 1 || !line.MatchString(got[0]) {
		t.Fatalf("access log:\n%s\nwant one line matching %s", strings.Join(got, "\n"), line)
	}
	t.Logf("seed 003's line, written by mqgate: %s", lines(logPath)[0])

	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "access log reopened", func() bool { return strings.Contains(p.stderr.String(), `msg="access log reopened"`) })
	pub("foo")
	mqtttest.WaitFor(t, "a line in the new file", func() bool { return strings.Contains(lines(logPath)[0], " foo") })
	if old := lines(logPath + ".1"); len(old) != 1 || !strings.HasSuffix(old[0], " thing001") {
		t.Errorf("rotated file: %q, want only thing001's line", old)
	}
	if cur := lines(logPath); len(cur) != 1 {
		t.Errorf("new file: %q, want only foo's line", cur)
	}
	if strings.Contains(p.stderr.String(), "reload") {
		t.Errorf("SIGUSR1 reloaded the configuration:\n%s", p.stderr)
	}

	// A reload applies a new format to the lines after it.
	yml, _ := os.ReadFile(conf)
	yml = []byte(strings.Replace(string(yml), "access_log_format: '$remote_addr [$time_local]", "access_log_format: 'v2 $mqtt_client_id $status $end [$time_local]", 1))
	if err := os.WriteFile(conf, yml, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the reload", func() bool { return strings.Contains(p.stderr.String(), `msg=reloaded source=sighup`) })
	pub("bar")
	mqtttest.WaitFor(t, "a line in the new format", func() bool { return len(lines(logPath)) == 2 })
	if got := lines(logPath)[1]; !strings.HasPrefix(got, "v2 bar 200 client_closed [") {
		t.Errorf("after the reload: %q", got)
	}
	p.stop(t)
}
