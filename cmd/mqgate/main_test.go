package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestMain lets the test binary stand in for the mqgate binary: a child
// started with MQGATE_TEST_MAIN=1 runs main with its arguments.
func TestMain(m *testing.M) {
	if os.Getenv("MQGATE_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestCheckReportsEveryErrorWithFileAndLine(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "-c", "testdata/bad.yaml"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		`testdata/bad.yaml:6: stream_routes[0].upstrem_id: unknown key (did you mean "upstream_id"?)`,
		`testdata/bad.yaml:11: upstreams[0].nodes`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestCheckAcceptsAPISIXFiles(t *testing.T) {
	t.Parallel()
	dir := seedFiles(t, 9000, []string{"127.0.0.1:1883", "127.0.0.1:1884", "127.0.0.1:1885"})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "-c", filepath.Join(dir, "config.yaml"), "-c", filepath.Join(dir, "apisix.yaml")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "configuration OK:") || strings.Count(stdout.String(), "\n") != 1 {
		t.Errorf("want a one-line summary, got %q", stdout.String())
	}
}

// seedFiles writes the seed's APISIX config.yaml and apisix.yaml with the
// listener port and broker addresses filled in.
func seedFiles(t *testing.T, port int, brokers []string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"config.yaml", "apisix.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata/seed000", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "LISTEN_PORT", strconv.Itoa(port))
		for i, a := range brokers {
			s = strings.ReplaceAll(s, fmt.Sprintf("BROKER%d", i+1), a)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// process is an mqgate child process.
type process struct {
	cmd    *exec.Cmd
	stdout *mqtttest.LogBuffer
	stderr *mqtttest.LogBuffer
	done   chan struct{}
	err    error
}

func startMQGate(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcess(t, []string{os.Args[0]}, args...)
}

// startProcess runs mqgate's arguments after argv, which ends in the test
// binary and may start with a wrapper that execs it (prlimit).
func startProcess(t *testing.T, argv []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	cmd.Env = append(os.Environ(), "MQGATE_TEST_MAIN=1")
	p := &process{cmd: cmd, stdout: &mqtttest.LogBuffer{}, stderr: &mqtttest.LogBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("mqgate did not stop on SIGTERM; stderr:\n%s", p.stderr.String())
	}
	if p.err != nil {
		t.Errorf("mqgate exited with %v; stderr:\n%s", p.err, p.stderr.String())
	}
}

func waitListening(t *testing.T, addr string, p *process) {
	t.Helper()
	mqtttest.WaitFor(t, "mqgate to listen on "+addr, func() bool {
		select {
		case <-p.done:
			t.Fatalf("mqgate exited: %v; stderr:\n%s", p.err, p.stderr.String())
		default:
		}
		return strings.Contains(p.stderr.String(), "msg=listening")
	})
}

// TestTwoProcessesRouteAlike runs two mqgate processes from the seed's APISIX
// files on one port (SO_REUSEPORT shares it between them) in front of three
// Mosquitto brokers: every client id reaches the same broker whichever
// process takes its connection.
func TestTwoProcessesRouteAlike(t *testing.T) {
	t.Parallel()
	brokers := []mqtttest.Broker{mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, "")}
	port := mqtttest.FreePort(t)
	dir := seedFiles(t, port, []string{brokers[0].Addr(), brokers[1].Addr(), brokers[2].Addr()})
	args := []string{"run", "-c", filepath.Join(dir, "config.yaml"), "-c", filepath.Join(dir, "apisix.yaml")}
	a, b := startMQGate(t, args...), startMQGate(t, args...)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitListening(t, addr, a)
	waitListening(t, addr, b)

	const rounds = 4
	var ids []string
	for i := range 50 {
		ids = append(ids, fmt.Sprintf("sensor-%02d", i))
	}
	for round := range rounds {
		for _, id := range ids {
			mqtttest.ConnectOK(t, addr, id, mqtt.Level5)
		}
		mqtttest.WaitFor(t, "brokers to log the connects", mqtttest.SeenTotal(brokers, (round+1)*len(ids)))
	}
	perBroker := make([]int, len(brokers))
	for _, bi := range mqtttest.Owners(t, brokers, ids, rounds) {
		perBroker[bi]++
	}
	for bi, n := range perBroker {
		if n == 0 {
			t.Errorf("broker %d got no client (per broker: %v)", bi, perBroker)
		}
	}
	for name, p := range map[string]*process{"first": a, "second": b} {
		if n := strings.Count(p.stdout.String(), `"msg":"connection"`); n == 0 {
			t.Errorf("the %s process served no connection; the kernel should spread them", name)
		}
	}
	a.stop(t)
	b.stop(t)
}

// TestReloadKeepsLastGoodConfig: SIGHUP with a broken file is refused with
// the errors logged, and mqgate keeps serving with the last good one; a good
// file is applied to new connections while a live one keeps flowing.
func TestReloadKeepsLastGoodConfig(t *testing.T) {
	t.Parallel()
	one, two := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	file := filepath.Join(t.TempDir(), "mqgate.yaml")
	write := func(broker string) {
		cfg := fmt.Sprintf("stream_proxy:\n  tcp: [%q]\nupstreams:\n  - id: 1\n    nodes: {%q: 1}\nstream_routes:\n  - upstream_id: 1\n", addr, broker)
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(one.Addr())
	p := startMQGate(t, "run", "-c", file)
	waitListening(t, addr, p)

	// A live connection, kept across both reloads.
	live, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "live"}))
	r := bufio.NewReader(live)
	expectBytes(t, r, []byte{0x20, 0x02, 0x00, 0x00})

	if err := os.WriteFile(file, []byte("stream_proxy:\n  tcp: [1883]\nupstreams: [{id: 1, nodes: {}}]\nstream_routes:\n  - upstream_id: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, "the refused reload to be logged", func() bool {
		return strings.Contains(p.stderr.String(), "reload refused")
	})
	mqtttest.ConnectOK(t, addr, "after-bad-reload", mqtt.Level311)
	mqtttest.WaitFor(t, "the old broker to get the client", func() bool { return slices.Contains(one.Seen(), "after-bad-reload") })

	write(two.Addr())
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, "the reload to be applied", func() bool { return strings.Contains(p.stderr.String(), "msg=reloaded") })
	mqtttest.ConnectOK(t, addr, "after-good-reload", mqtt.Level311)
	mqtttest.WaitFor(t, "the new broker to get the client", func() bool { return slices.Contains(two.Seen(), "after-good-reload") })

	// The live connection still talks to its broker: PINGREQ, PINGRESP.
	live.Write([]byte{0xc0, 0x00})
	expectBytes(t, r, []byte{0xd0, 0x00})
	live.Close()
	p.stop(t)
}

func expectBytes(t *testing.T, r *bufio.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read % x (%v), want % x", got, err, want)
	}
}
