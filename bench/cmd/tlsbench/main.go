// Command tlsbench measures how many TLS handshakes per second mqgate
// sustains: ECDSA P-256 certificate, TLS 1.3, full handshakes and resumed
// ones (session tickets), each followed by an MQTT CONNECT/CONNACK through
// mqgate to a Mosquitto broker, so a handshake counts only when the client
// is really connected.
//
//	go build -o /tmp/mqgate ./cmd/mqgate
//	go run ./bench/cmd/tlsbench -mqgate /tmp/mqgate -c 8 -d 10s
//	go run ./bench/cmd/tlsbench -mqgate /tmp/mqgate -haproxy /usr/sbin/haproxy -c 8 -d 5s -rounds 3 -x25519
//	go run ./bench/cmd/tlsbench -mqgate /tmp/mqgate -haproxy /usr/sbin/haproxy -nagle 20
//	MQGATE_CPUPROFILE=/tmp/hs.pprof go run ./bench/cmd/tlsbench -mqgate /tmp/mqgate -x25519 -d 10s
//
// It makes a CA and certificates in a temporary directory, starts
// Mosquitto and mqgate as child processes on loopback ports, runs each
// phase for -d with -c concurrent clients (at most -n connections), prints
// the rate, the handshake latency and the CPU seconds mqgate used, and
// stops the children. Client and server share the machine: the figure
// per proxy CPU second is the one to compare across machines.
//
// With -haproxy it also starts HAProxy (nbthread 2, mode tcp, the same
// certificate, default tune.ssl settings and session tickets) in front of
// the same broker, runs the same phases in ABBA order (full: mqgate,
// HAProxy; resumed: HAProxy, mqgate), -rounds times with the first target
// alternating, and prints the ratios mqgate/HAProxy from the totals.
// HAProxy 2.6 with OpenSSL 3.0 has no ML-KEM, so only with -x25519 do both
// run the same key exchange: that is the ratio that counts. -procs 1 runs
// mqgate with GOMAXPROCS=1 and HAProxy with nbthread 1 (bench's mqgate-1
// and haproxy-1), to see what a second core costs per handshake.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
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
	"syscall"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/mqtt"
)

func main() {
	mqgateBin := flag.String("mqgate", "mqgate", "mqgate binary")
	haproxyBin := flag.String("haproxy", "", "also measure this HAProxy binary (e.g. /usr/sbin/haproxy) in the same run, same certificate and broker, and print mqgate/HAProxy ratios")
	conc := flag.Int("c", 8, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration of each phase")
	maxConns := flag.Int("n", 1_000_000, "at most this many connections per phase")
	idle := flag.Int("idle", 0, "then hold this many idle TLS connections open and report mqgate's memory per connection")
	rounds := flag.Int("rounds", 1, "with -haproxy: repeat the phases this many times, alternating which target goes first; ratios are from the totals")
	nagle := flag.Int("nagle", 0, "only measure CONNECT->CONNACK for this many fresh clients with Nagle's algorithm on (the socket default of C, Python, Java and most embedded TLS stacks), one at a time, and print the median per target")
	x25519 := flag.Bool("x25519", false, "offer only X25519 (the classic key exchange) instead of Go's default, which prefers X25519MLKEM768")
	procs := flag.Int("procs", 2, "run mqgate with GOMAXPROCS=procs and HAProxy with nbthread procs")
	flag.Parse()
	log.SetFlags(0)
	defer stopAll()

	dir, err := os.MkdirTemp("", "tlsbench")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	ca := certtest.NewCA(fatal{}, "tlsbench CA")
	pair := ca.Server(fatal{}, certtest.ECDSA, "mqtt.bench")
	pair.WriteFiles(fatal{}, dir, "server")

	brokerPort, gatePort := freePort(), freePort()
	conf := filepath.Join(dir, "mosquitto.conf")
	write(conf, fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\nlog_dest none\nmax_keepalive 65535\n", brokerPort))
	start(mosquittoPath(), "-c", conf)
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
	gate := startEnv([]string{fmt.Sprintf("GOMAXPROCS=%d", *procs)}, *mqgateBin, "run", "-c", cfgPath)
	waitListening(gatePort)
	targets := []target{{"mqgate", fmt.Sprintf("127.0.0.1:%d", gatePort), gate.Process.Pid}}

	if *haproxyBin != "" {
		// Same certificate and key, in the one file HAProxy's crt takes;
		// session tickets are on by default; tune.ssl.* left at defaults.
		pem := filepath.Join(dir, "server.pem")
		write(pem, string(pair.CertPEM)+string(pair.KeyPEM))
		haPort := freePort()
		hacfg := filepath.Join(dir, "haproxy.cfg")
		write(hacfg, fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend mqtt_tls
  bind 127.0.0.1:%d ssl crt %s ssl-min-ver TLSv1.2
  default_backend broker
backend broker
  server mosquitto 127.0.0.1:%d
`, *procs, haPort, pem, brokerPort))
		ha := start(*haproxyBin, "-db", "-f", hacfg) // foreground, one process with -procs threads
		waitListening(haPort)
		targets = append(targets, target{"haproxy", fmt.Sprintf("127.0.0.1:%d", haPort), ha.Process.Pid})
	}

	var names []string
	for _, t := range targets {
		names = append(names, t.name+" "+t.addr)
	}
	kx := "Go's default key exchange (X25519MLKEM768 preferred)"
	if *x25519 {
		kx = "client offers X25519 only"
	}
	fmt.Printf("%s; ECDSA P-256, TLS 1.3, %s; %d clients, %v per phase, %d CPUs, mqgate GOMAXPROCS=%d\n",
		strings.Join(names, ", "), kx, *conc, *dur, numCPU(), *procs)

	if *nagle > 0 {
		nagleProbe(targets, ca, *nagle)
		if pub, err := exec.LookPath("mosquitto_pub"); err == nil {
			caFile := filepath.Join(dir, "ca.crt")
			write(caFile, string(ca.CertPEM))
			mosquittoPubProbe(targets, pub, caFile, *nagle)
		}
		return
	}

	// Phases in ABBA order (full: mqgate then HAProxy; resumed: HAProxy
	// then mqgate; the next round starts with HAProxy) so drift in the
	// machine's load hits both alike.
	if len(targets) == 1 {
		*rounds = 1
	}
	res := map[string]map[bool]*result{}
	for round := range *rounds {
		for i, resume := range []bool{false, true} {
			order := slices.Clone(targets)
			if (round+i)%2 == 1 {
				slices.Reverse(order)
			}
			for _, t := range order {
				r := run(t, ca, resume, *x25519, *conc, *dur, *maxConns)
				if res[t.name] == nil {
					res[t.name] = map[bool]*result{}
				}
				if tot := res[t.name][resume]; tot == nil {
					res[t.name][resume] = &r
				} else {
					tot.n, tot.secs, tot.cpu = tot.n+r.n, tot.secs+r.secs, tot.cpu+r.cpu
				}
			}
		}
	}
	if len(targets) > 1 {
		for _, resume := range []bool{false, true} {
			g, h := res["mqgate"][resume], res["haproxy"][resume]
			if *rounds > 1 {
				for _, t := range []struct {
					name string
					r    *result
				}{{"mqgate", g}, {"haproxy", h}} {
					fmt.Printf("total    %-7s %-7s %7d connections in %.1fs = %6.0f handshakes/s; CPU %.1fs = %6.0f handshakes per CPU-second\n",
						kind(resume), t.name, t.r.n, t.r.secs, t.r.rate(), t.r.cpu, t.r.perCPU())
				}
			}
			note := "like-for-like: both " + h.kx
			if g.kx != h.kx {
				note = fmt.Sprintf("NOT like-for-like: mqgate %s, HAProxy %s (no ML-KEM in HAProxy 2.6/OpenSSL 3.0); the ratio that counts is with -x25519", g.kx, h.kx)
			}
			fmt.Printf("ratio    %-7s mqgate/HAProxy: handshakes/s %.2fx, per CPU-second %.2fx (%s)\n",
				kind(resume), g.rate()/h.rate(), g.perCPU()/h.perCPU(), note)
		}
	}
	if *idle > 0 {
		idleMemory(targets[0].addr, ca, *idle, gate.Process.Pid)
	}
}

// target is a TLS-terminating proxy in front of the broker.
type target struct {
	name string
	addr string
	pid  int // its CPU time is read from /proc/pid/stat (all threads)
}

type result struct {
	n         int64   // connections made
	secs, cpu float64 // wall-clock and the target's CPU seconds
	kx        string  // key exchanges seen, e.g. "X25519"
}

func (r *result) rate() float64   { return float64(r.n) / r.secs }
func (r *result) perCPU() float64 { return float64(r.n) / max(r.cpu, 0.001) }

func kind(resume bool) string {
	if resume {
		return "resumed"
	}
	return "full"
}

// idleMemory opens n MQTT-over-TLS connections, leaves them idle, and
// reports how much mqgate's resident memory grew per connection.
func idleMemory(addr string, ca *certtest.CA, n int, pid int) {
	cfg := &tls.Config{ServerName: "mqtt.bench", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
	before := rssKB(pid)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := holdOpen(addr, cfg, fmt.Sprintf("idle-%d", i))
		if err != nil {
			log.Printf("idle connection %d: %v", i, err)
			break
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the handshakes' garbage be collected before reading RSS
	after := rssKB(pid)
	fmt.Printf("idle     %d TLS connections held: mqgate RSS %d KB -> %d KB = %.1f KB per connection (both sides: client TLS + broker TCP)\n",
		len(conns), before, after, float64(after-before)/float64(max(len(conns), 1)))
}

// holdOpen connects like connect but keeps the connection open.
func holdOpen(addr string, cfg *tls.Config, id string) (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 0, ClientID: id})); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := c.Read(ack[:]); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rssKB is the resident memory of process pid (/proc/pid/status VmRSS).
func rssKB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

// run is one phase: clients connect, handshake, CONNECT, read the CONNACK
// and disconnect, as fast as they can.
func run(t target, ca *certtest.CA, resume, x25519 bool, conc int, dur time.Duration, maxConns int) result {
	var (
		done, resumed, failed atomic.Int64
		started               atomic.Int64
		mu                    sync.Mutex
		latencies             []time.Duration
		groups                sync.Map
	)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	cpu0 := cpuSeconds(t.pid)
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
				hs, cs, err := connect(t.addr, cfg, fmt.Sprintf("bench-%d-%d", w, i))
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
	cpu := cpuSeconds(t.pid) - cpu0
	slices.Sort(latencies)
	var names []string
	groups.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	slices.Sort(names)
	n := done.Load()
	r := result{n: n, secs: elapsed, cpu: cpu, kx: strings.Join(names, ",")}
	fmt.Printf("%-8s %-7s %7d connections in %.1fs = %6.0f handshakes/s; CPU %.1fs = %6.0f handshakes per CPU-second; handshake p50 %v p99 %v; resumed %d, failed %d; key exchange %s\n",
		kind(resume), t.name, n, elapsed, r.rate(), cpu, r.perCPU(),
		pct(latencies, 50), pct(latencies, 99), resumed.Load(), failed.Load(), r.kx)
	return r
}

// nagleProbe measures, for n fresh connections per target made one at a
// time and alternating between targets, the time from the CONNECT written
// right after the handshake to its CONNACK, with Nagle's algorithm on in
// the client (Go turns it off by default; C, Python, Java and most embedded
// TLS stacks leave it on). A proxy whose side of the handshake leaves the
// client's Finished unacknowledged makes such a client hold its CONNECT
// until the proxy's delayed ACK fires, about 40 ms on Linux.
func nagleProbe(targets []target, ca *certtest.CA, n int) {
	cfg := &tls.Config{ServerName: "mqtt.bench", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
	lat := make(map[string][]time.Duration)
	for i := range n {
		for _, t := range targets {
			d, err := nagleConnect(t.addr, cfg, fmt.Sprintf("nagle-%d", i))
			if err != nil {
				fatalf("%s: %v", t.name, err)
			}
			lat[t.name] = append(lat[t.name], d)
		}
	}
	for _, t := range targets {
		l := lat[t.name]
		slices.Sort(l)
		fmt.Printf("nagle    %-7s CONNECT->CONNACK with Nagle on, %d fresh connections: median %v, min %v, max %v\n",
			t.name, len(l), pct(l, 50), l[0].Round(10*time.Microsecond), l[len(l)-1].Round(10*time.Microsecond))
	}
	if g, h := lat["mqgate"], lat["haproxy"]; g != nil && h != nil {
		fmt.Printf("nagle    mqgate - HAProxy median: %v (target: at most 1ms)\n", (pct(g, 50) - pct(h, 50)).Round(10*time.Microsecond))
	}
}

// mosquittoPubProbe times n runs of mosquitto_pub over TLS (libmosquitto
// with OpenSSL, Nagle on) per target, alternating: connect, publish one
// QoS 0 message, disconnect.
func mosquittoPubProbe(targets []target, pub, caFile string, n int) {
	total := make(map[string]time.Duration)
	for i := range n {
		for _, t := range targets {
			host, port, _ := net.SplitHostPort(t.addr)
			cmd := exec.Command(pub, "-h", host, "-p", port, "--cafile", caFile, "--insecure",
				"-i", fmt.Sprintf("pub-%d", i), "-t", "nagle/probe", "-m", "x")
			cmd.Stderr = os.Stderr
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				fatalf("mosquitto_pub through %s: %v", t.name, err)
			}
			total[t.name] += time.Since(t0)
		}
	}
	for _, t := range targets {
		fmt.Printf("nagle    %-7s %d runs of mosquitto_pub over TLS: %v in all\n", t.name, n, total[t.name].Round(time.Millisecond))
	}
}

// nagleConnect makes one connection with Nagle's algorithm on and returns
// the time from writing the CONNECT (right after the handshake) to reading
// the CONNACK.
func nagleConnect(addr string, cfg *tls.Config, id string) (time.Duration, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	if err := raw.(*net.TCPConn).SetNoDelay(false); err != nil {
		raw.Close()
		return 0, err
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	t := time.Now()
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
		return 0, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, err
	}
	d := time.Since(t)
	if ack[0] != 0x20 || ack[3] != 0 {
		return 0, fmt.Errorf("CONNACK % x", ack)
	}
	_, _ = c.Write(mqtt.AppendDisconnect(nil, mqtt.Level311, 0, ""))
	return d, nil
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
func (fatal) Fatal(args ...any) { fatalf("%s", fmt.Sprint(args...)) }

// children are the processes this command started; stopAll stops them by
// pid, also on a fatal error.
var children []*exec.Cmd

// stopAll stops the children, newest first: SIGTERM, then SIGKILL if one
// has not exited 5 s later. A terminated mqgate shuts down as it does in
// service, so that a CPU profile it was asked for (MQGATE_CPUPROFILE in
// tlsbench's environment, which the children inherit) is written out.
func stopAll() {
	for _, c := range slices.Backward(children) {
		_ = c.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { _ = c.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-exited
		}
	}
	children = nil
}

func fatalf(format string, args ...any) {
	stopAll()
	log.Fatalf(format, args...)
}

func write(path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		fatalf("%v", err)
	}
}

func start(bin string, args ...string) *exec.Cmd { return startEnv(nil, bin, args...) }

// startEnv starts bin with env added to this process's environment.
func startEnv(env []string, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if filepath.Base(bin) != "mosquitto" { // it warns that it runs as root
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		fatalf("start %s: %v", bin, err)
	}
	children = append(children, cmd)
	return cmd
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
		fatalf("%v", err)
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
	fatalf("nothing listening on port %d", port)
}
