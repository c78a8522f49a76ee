// Command tlsbench measures how many TLS handshakes per second mqgate
// sustains: ECDSA P-256 certificate, TLS 1.3, full handshakes and resumed
// ones (session tickets), each followed by an MQTT CONNECT/CONNACK through
// mqgate to a Mosquitto broker, so a handshake counts only when the client
// is really connected.
//
//	go build -o /tmp/mqgate ./cmd/mqgate
//	go run ./bench/cmd/tlsbench -mqgate /tmp/mqgate -c 8 -d 10s
//
// It makes a CA and certificates in a temporary directory, starts
// Mosquitto and mqgate as child processes on loopback ports, runs each
// phase for -d with -c concurrent clients (at most -n connections), prints
// the rate, the handshake latency and the CPU seconds mqgate used, and
// stops both children. Client and server share the machine: the figure
// per mqgate CPU second is the one to compare across machines.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/mqtt"
)

func main() {
	mqgateBin := flag.String("mqgate", "mqgate", "mqgate binary")
	conc := flag.Int("c", 8, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration of each phase")
	maxConns := flag.Int("n", 1_000_000, "at most this many connections per phase")
	x25519 := flag.Bool("x25519", false, "offer only X25519 (the classic key exchange) instead of Go's default, which prefers X25519MLKEM768")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "tlsbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ca := certtest.NewCA(fatal{}, "tlsbench CA")
	ca.Server(fatal{}, certtest.ECDSA, "mqtt.bench").WriteFiles(fatal{}, dir, "server")

	brokerPort, gatePort := freePort(), freePort()
	conf := filepath.Join(dir, "mosquitto.conf")
	write(conf, fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\nlog_dest none\nmax_keepalive 65535\n", brokerPort))
	mosq := start(mosquittoPath(), "-c", conf)
	defer stop(mosq)
	waitListening(brokerPort)

	cfgPath := filepath.Join(dir, "mqgate.yaml")
	write(cfgPath, fmt.Sprintf(`stream_proxy:
  tcp: [{addr: "127.0.0.1:%d", tls: true}]
log: {level: warn, access_log: "off"}
ssls:
  - {id: bench, snis: [mqtt.bench], cert: server.crt, key: server.key}
stream_routes:
  - upstream: {nodes: {"127.0.0.1:%d": 1}}
`, gatePort, brokerPort))
	gate := start(*mqgateBin, "run", "-c", cfgPath)
	defer stop(gate)
	waitListening(gatePort)

	addr := fmt.Sprintf("127.0.0.1:%d", gatePort)
	fmt.Printf("mqgate %s, ECDSA P-256, TLS 1.3, %d clients, %v per phase, %d CPUs\n", addr, *conc, *dur, numCPU())
	for _, resume := range []bool{false, true} {
		run(addr, ca, resume, *x25519, *conc, *dur, *maxConns, gate.Process.Pid)
	}
}

// run is one phase: clients connect, handshake, CONNECT, read the CONNACK
// and disconnect, as fast as they can.
func run(addr string, ca *certtest.CA, resume, x25519 bool, conc int, dur time.Duration, maxConns int, pid int) {
	var (
		done, resumed, failed atomic.Int64
		started               atomic.Int64
		mu                    sync.Mutex
		latencies             []time.Duration
		groups                sync.Map
	)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	cpu0 := cpuSeconds(pid)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			cfg := &tls.Config{ServerName: "mqtt.bench", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
			if x25519 {
				cfg.CurvePreferences = []tls.CurveID{tls.X25519}
			}
			if resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			var local []time.Duration
			for i := 0; ctx.Err() == nil && started.Add(1) <= int64(maxConns); i++ {
				hs, cs, err := connect(addr, cfg, fmt.Sprintf("bench-%d-%d", w, i))
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
				if cs.DidResume {
					resumed.Add(1)
				}
				groups.Store(cs.CurveID.String(), true)
				local = append(local, hs)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	cpu := cpuSeconds(pid) - cpu0
	slices.Sort(latencies)
	var names []string
	groups.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	kind := "full"
	if resume {
		kind = "resumed"
	}
	n := done.Load()
	fmt.Printf("%-8s %7d connections in %.1fs = %6.0f handshakes/s; mqgate CPU %.1fs = %6.0f handshakes per CPU-second; handshake p50 %v p99 %v; resumed %d, failed %d; key exchange %s\n",
		kind, n, elapsed, float64(n)/elapsed, cpu, float64(n)/max(cpu, 0.001),
		pct(latencies, 50), pct(latencies, 99), resumed.Load(), failed.Load(), strings.Join(names, ","))
}

// connect makes one MQTT-over-TLS connection and returns how long the TLS
// handshake took. Reading the CONNACK also reads the session ticket.
func connect(addr string, cfg *tls.Config, id string) (time.Duration, tls.ConnectionState, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, tls.ConnectionState{}, err
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t := time.Now()
	if err := c.Handshake(); err != nil {
		return 0, tls.ConnectionState{}, err
	}
	hs := time.Since(t)
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
		return 0, tls.ConnectionState{}, err
	}
	var ack [4]byte
	if _, err := c.Read(ack[:]); err != nil {
		return 0, tls.ConnectionState{}, err
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return 0, tls.ConnectionState{}, fmt.Errorf("CONNACK % x", ack)
	}
	_, _ = c.Write(mqtt.AppendDisconnect(nil, mqtt.Level311, 0, ""))
	return hs, c.ConnectionState(), nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100].Round(10 * time.Microsecond)
}

// cpuSeconds is the user+system CPU time of process pid (/proc/pid/stat).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which ends with ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

type fatal struct{}

func (fatal) Helper()           {}
func (fatal) Fatal(args ...any) { log.Fatal(args...) }

func write(path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		log.Fatal(err)
	}
}

func start(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if filepath.Base(bin) != "mosquitto" { // it warns that it runs as root
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", bin, err)
	}
	return cmd
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(port int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatal(errors.New("nothing listening on port " + strconv.Itoa(port)))
}
