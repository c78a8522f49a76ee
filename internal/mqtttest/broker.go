// Package mqtttest starts real MQTT brokers for tests: mochi-mqtt in
// process, and Mosquitto (the Debian package) as a child process, each on a
// loopback port, each stopped when the test ends. Both report which client
// ids connected to them, so a test can see routing from the broker's side.
//
//	b := mqtttest.StartMochi(t)
//	m := mqtttest.StartMosquitto(t, "")
//	... connect through the proxy ...
//	mqtttest.WaitFor(t, func() bool { return slices.Contains(b.Seen(), "meter-1") })
package mqtttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is what tests need of any broker.
type Broker interface {
	Addr() string   // "127.0.0.1:port"
	Seen() []string // client ids that have connected, in order, repeats kept
}

// Mochi is an in-process mochi-mqtt broker.
type Mochi struct {
	Server *mochi.Server
	addr   string
	seen   *seenHook
	conns  *trackingListener // a TCP broker's
	ws     *wsTracker        // a WebSocket broker's (StartMochiWS)
	close  sync.Once
}

// StartMochi starts a mochi-mqtt broker that allows every client.
func StartMochi(t testing.TB) *Mochi {
	t.Helper()
	return StartMochiAt(t, "127.0.0.1:0")
}

func (m *Mochi) Addr() string   { return m.addr }
func (m *Mochi) Seen() []string { return m.seen.ids() }

// Clients describes the broker's clients as it sees them now, one line
// each (id, remote address, closed or not, subscriptions): for a test's
// log when it fails.
func (m *Mochi) Clients() string {
	var lines []string
	for id, cl := range m.Server.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		subs := slices.Sorted(maps.Keys(cl.State.Subscriptions.GetAll()))
		lines = append(lines, fmt.Sprintf("%s from %s closed=%v subscriptions=%v", id, cl.Net.Remote, cl.Closed(), subs))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// Close stops the broker as a crash does, to test failover: the port
// refuses connections first, then every client connection drops (see
// stop in faults.go).
func (m *Mochi) Close() { m.close.Do(m.stop) }

type seenHook struct {
	mochi.HookBase
	mu  sync.Mutex
	all []string
}

func (h *seenHook) ID() string { return "brokertest-seen" }
func (h *seenHook) Provides(b byte) bool {
	return b == mochi.OnConnect
}
func (h *seenHook) OnConnect(cl *mochi.Client, _ packets.Packet) error {
	h.mu.Lock()
	h.all = append(h.all, cl.ID)
	h.mu.Unlock()
	return nil
}
func (h *seenHook) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.all)
}

// Mosquitto is a mosquitto broker process.
type Mosquitto struct {
	addr    string
	logPath string
	bin     string
	conf    string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// StartMosquitto starts mosquitto on a free loopback port with anonymous
// access and extra appended to its configuration. The test fails when
// mosquitto is not installed: the test command installs it.
func StartMosquitto(t testing.TB, extra string) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, serr := os.Stat(bin); serr != nil {
			t.Fatalf("mosquitto is not installed (apt-get install mosquitto): %v", err)
		}
	}
	dir := t.TempDir()
	var lastErr error
	// The port is picked by binding :0 and closing; another process may
	// take it before mosquitto binds, so try a few times.
	for range 5 {
		port := FreePort(t)
		m := &Mosquitto{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), logPath: filepath.Join(dir, "mosquitto.log"), exited: make(chan struct{})}
		conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\nlog_dest file %s\nlog_type all\nconnection_messages true\nmax_keepalive 65535\n%s\n",
			port, m.logPath, extra)
		confPath := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(m.logPath)
		m.bin, m.conf = bin, confPath
		var stderr bytes.Buffer
		if err := m.start(&stderr); err != nil {
			t.Fatalf("start mosquitto: %v", err)
		}
		if err := m.waitReady(20*time.Second, 0); err != nil {
			m.stop()
			log, _ := os.ReadFile(m.logPath)
			lastErr = fmt.Errorf("%v; stderr: %s; log: %s", err, stderr.String(), log)
			continue
		}
		t.Cleanup(m.stop)
		return m
	}
	t.Fatalf("mosquitto did not start: %v", lastErr)
	return nil
}

func (m *Mosquitto) start(stderr io.Writer) error {
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	// A test binary that dies (a panic, a timeout) takes its broker along.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m.cmd.Stderr = stderr
	m.exited = make(chan struct{})
	if err := m.cmd.Start(); err != nil {
		return err
	}
	exited := m.exited
	go func() { _ = m.cmd.Wait(); close(exited) }()
	return nil
}

// Restart starts a stopped (killed) mosquitto again on the same address,
// as a broker comes back after a crash: without the sessions it had.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.stop()
	var stderr bytes.Buffer
	var err error
	// The port may still be held a moment by the dead process's sockets.
	for range 20 {
		var logged int64
		if fi, serr := os.Stat(m.logPath); serr == nil {
			logged = fi.Size()
		}
		if err = m.start(&stderr); err != nil {
			t.Fatalf("restart mosquitto: %v", err)
		}
		if err = m.waitReady(20*time.Second, logged); err == nil {
			return
		}
		m.stop()
	}
	t.Fatalf("mosquitto did not restart on %s: %v; stderr: %s", m.addr, err, stderr.String())
}

// waitReady waits until this mosquitto says in its log, past the first
// logged bytes, that it runs (it has bound its listener then), and its
// address takes a connection. A dial alone could reach another process
// that took the port first, while this one fails to bind and exits. A
// mosquitto that exits fails at once; the limit is for one that hangs.
func (m *Mosquitto) waitReady(limit time.Duration, logged int64) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			return errors.New("mosquitto exited")
		default:
		}
		if b, _ := os.ReadFile(m.logPath); int64(len(b)) <= logged || !bytes.Contains(b[logged:], []byte(" running")) {
			time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by deadline
			continue
		}
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by deadline
	}
	return fmt.Errorf("mosquitto not listening on %s after %v", m.addr, limit)
}

func (m *Mosquitto) Addr() string { return m.addr }

// Stop kills mosquitto (to test failover); the test's cleanup does it too.
func (m *Mosquitto) Stop() { m.stop() }

func (m *Mosquitto) stop() {
	select {
	case <-m.exited:
		return
	default:
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// Client ids may hold spaces (NGINX's probe is "nginx health check").
var newClientLine = regexp.MustCompile(`New client connected from \S+ as (.+) \(p\d`)

// Seen parses mosquitto's log for the client ids that connected.
func (m *Mosquitto) Seen() []string {
	b, _ := os.ReadFile(m.logPath)
	var ids []string
	for _, sm := range newClientLine.FindAllSubmatch(b, -1) {
		ids = append(ids, string(sm[1]))
	}
	return ids
}

// FreePort returns a TCP port that was free a moment ago on every address,
// for programs that cannot be told to listen on port 0. It is drawn below
// the kernel's ephemeral range (32768-60999 here): a port from there can be
// taken at any moment by an outgoing connection of a parallel test (a flood
// test uses thousands), which makes a later bind fail at random.
func FreePort(t testing.TB) int {
	t.Helper()
	const lowest, ceiling = 10000, 32768
	for range 1000 {
		port := lowest + rand.IntN(ceiling-lowest)
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue // in use; draw again
		}
		ln.Close()
		return port
	}
	t.Fatal("FreePort: no free port below the ephemeral range after 1000 draws")
	return 0
}

// WaitFor polls cond until it holds or 10 s pass, then fails the test.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
