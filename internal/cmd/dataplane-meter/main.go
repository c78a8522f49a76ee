// Command dataplane-meter measures what a proxy's data path costs: the
// memory and file descriptors of idle proxied connections, the CPU per
// message and the CPU per connect. It runs the proxy under test as a child
// process between its own clients and an in-process broker stand-in (a
// sink that answers CONNECT with CONNACK and then echoes), and reads the
// child's /proc entries.
//
//	go run ./internal/cmd/dataplane-meter -data-path epoll -n 5000
//	go run ./internal/cmd/dataplane-meter -data-path goroutines -n 5000
//	go run ./internal/cmd/dataplane-meter -target haproxy -n 5000
//	go run ./internal/cmd/dataplane-meter -transport ws -target mqgate,nginx -n 5000
//	go run ./internal/cmd/dataplane-meter -transport wss -target mqgate,nginx -n 5000
//
// With -transport ws or wss the clients speak MQTT over WebSocket (wss:
// over TLS, with a certificate made for the run) to the path /mqtt. mqgate
// ends the WebSocket and dials the sink in plain MQTT; NGINX, configured as
// seed 004 proxies MQTT over WebSocket to EMQX's port 8083, passes the
// WebSocket through to the sink, which then speaks WebSocket too (as a
// broker's WebSocket listener does). NGINX's figures are its master and
// workers together.
//
// Figures, per line: RSS and descriptors per idle connection (the delta
// over n connections, after the process has settled), CPU microseconds
// per 64-byte message round trip, and CPU milliseconds per 1,000
// connect → CONNACK → disconnect cycles.
//
// Clients, sink and proxy all use loopback; every phase is bounded in count
// and time. With the file limit at 20,000 per process, n up to about 9,000
// fits: the proxy holds 2n descriptors, this process 2n.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/mqttws"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane-meter:", err)
		os.Exit(1)
	}
}

type settings struct {
	target, dataPath, mqgate string
	transport                string
	certFile, keyFile        string
	env                      string
	n, msgs, connects        int
	workers                  int
	limit, hold              time.Duration
}

func run() error {
	var s settings
	flag.StringVar(&s.target, "target", "mqgate", "proxies to measure, comma-separated, one after the other: mqgate, haproxy (tcp only), nginx (ws, wss)")
	flag.StringVar(&s.transport, "transport", "tcp", "what clients speak: tcp (MQTT), ws (MQTT over WebSocket) or wss (over TLS)")
	flag.StringVar(&s.dataPath, "data-path", "epoll", "mqgate's stream_proxy.data_path: epoll or goroutines")
	flag.StringVar(&s.mqgate, "mqgate", "", "mqgate binary (default: build ./cmd/mqgate)")
	flag.IntVar(&s.n, "n", 5000, "idle connections to hold")
	flag.IntVar(&s.msgs, "msgs", 200000, "64-byte message round trips for the CPU figure (0 skips)")
	flag.IntVar(&s.connects, "connects", 20000, "connect cycles for the CPU figure (0 skips)")
	flag.IntVar(&s.workers, "workers", 32, "concurrent clients in the message and connect phases")
	flag.StringVar(&s.env, "env", "", "extra environment for the proxy, as KEY=VALUE (GODEBUG=gctrace=1, GOGC=50)")
	flag.DurationVar(&s.limit, "phase-limit", time.Minute, "upper bound on each phase")
	flag.DurationVar(&s.hold, "hold", 0, "keep the idle connections open this long after measuring them (to profile the proxy)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "dataplane-meter")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if s.transport == "wss" {
		if s.certFile, s.keyFile, err = writeCert(dir); err != nil {
			return err
		}
	}
	for _, target := range strings.Split(s.target, ",") {
		s.target = target
		if err := measure(s, dir); err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
	}
	return nil
}

// measure runs every phase against one target.
func measure(s settings, dir string) error {
	sink, err := startSink()
	if err != nil {
		return err
	}
	defer sink.close()
	proxyAddr, err := freeAddr()
	if err != nil {
		return err
	}
	proc, err := startProxy(s, dir, proxyAddr, sink.addr())
	if err != nil {
		return err
	}
	defer proc.stop()
	if err := waitListening(proxyAddr, 10*time.Second); err != nil {
		return err
	}
	label := s.target
	if s.target == "mqgate" && s.transport == "tcp" {
		label += " (" + s.dataPath + ")"
	}
	if s.transport != "tcp" {
		label += " " + s.transport
	}
	dial := dialer(s, proxyAddr)

	// Warm up: start whatever the proxy starts lazily (event loops, pools).
	warm, err := openIdle(dial, 200, s.workers)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	closeAll(warm)
	if err := sink.waitActive(0, 10*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	settle(proc.pid)

	// Idle connections.
	rss0, fds0, err := usage(proc.pid)
	if err != nil {
		return err
	}
	conns, err := openIdle(dial, s.n, s.workers)
	if err != nil {
		return fmt.Errorf("idle phase: %w", err)
	}
	defer closeAll(conns)
	if err := sink.waitActive(s.n, s.limit); err != nil {
		return err
	}
	settle(proc.pid)
	rss1, fds1, err := usage(proc.pid)
	if err != nil {
		return err
	}
	fmt.Printf("%-22s idle: %d connections, RSS %+.1f MiB = %.0f B per connection, %.2f fds per connection\n",
		label, s.n, float64(rss1-rss0)/(1<<20), float64(rss1-rss0)/float64(s.n), float64(fds1-fds0)/float64(s.n))

	time.Sleep(s.hold)

	// Messages over some of the idle connections.
	if s.msgs > 0 {
		cpu0, err := cpuTime(proc.pid)
		if err != nil {
			return err
		}
		start := time.Now()
		done, err := roundTrips(conns[:min(s.workers, len(conns))], s.msgs, s.limit)
		if err != nil {
			return fmt.Errorf("message phase: %w", err)
		}
		wall := time.Since(start)
		cpu1, _ := cpuTime(proc.pid)
		fmt.Printf("%-22s messages: %d round trips of 64 B in %v (%.0f/s), proxy CPU %v = %.2f µs per round trip\n",
			label, done, wall.Round(time.Millisecond), float64(done)/wall.Seconds(), (cpu1 - cpu0).Round(time.Millisecond),
			float64((cpu1-cpu0).Microseconds())/float64(done))
	}
	closeAll(conns)
	conns = nil
	if err := sink.waitActive(0, s.limit); err != nil {
		return err
	}

	// Connect cycles.
	if s.connects > 0 {
		cpu0, err := cpuTime(proc.pid)
		if err != nil {
			return err
		}
		start := time.Now()
		done, err := connectCycles(dial, s.connects, s.workers, s.limit)
		if err != nil {
			return fmt.Errorf("connect phase: %w", err)
		}
		if err := sink.waitActive(0, s.limit); err != nil {
			return err
		}
		wall := time.Since(start)
		cpu1, _ := cpuTime(proc.pid)
		fmt.Printf("%-22s connects: %d cycles in %v (%.0f/s), proxy CPU %v = %.1f ms per 1,000 connects\n",
			label, done, wall.Round(time.Millisecond), float64(done)/wall.Seconds(), (cpu1 - cpu0).Round(time.Millisecond),
			float64((cpu1-cpu0).Microseconds())/float64(done))
	}
	return nil
}

// connectPacket is the CONNECT every client sends: MQTT 3.1.1, keepalive
// 300 s, so the proxy's idle limit (450 s) never fires during a run.
func connectPacket(id string) []byte {
	return mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 300, ClientID: id})
}

// openIdle opens n connections through the proxy, each with its CONNECT
// answered.
func openIdle(dial dialFunc, n, workers int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := connect(dial, fmt.Sprintf("idle-%d", i))
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func connect(dial dialFunc, id string) (net.Conn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(connectPacket(id)); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK for %s: %w", id, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// roundTrips sends total 64-byte PUBLISH packets, spread over conns, each
// echoed by the sink, one in flight per connection.
func roundTrips(conns []net.Conn, total int, limit time.Duration) (int, error) {
	var pub [64]byte
	pub[0], pub[1] = 0x30, 62 // PUBLISH QoS 0, remaining length 62
	pub[3] = 4                // topic length
	copy(pub[4:], "t/xx")
	deadline := time.Now().Add(limit)
	var done atomic.Int64
	errs := make(chan error, len(conns))
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var in [64]byte
			c.SetDeadline(deadline)
			defer c.SetDeadline(time.Time{})
			for i := w; i < total; i += len(conns) {
				if _, err := c.Write(pub[:]); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, in[:]); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return int(done.Load()), <-errs
}

// connectCycles runs connect → CONNACK → DISCONNECT → close, total times.
func connectCycles(dial dialFunc, total, workers int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				c, err := connect(dial, "cycle-"+strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				c.Write([]byte{0xe0, 0x00})
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return min(int(next.Load()), total), <-errs
}

// sink stands in for a broker: it answers a CONNECT with CONNACK, then
// echoes whatever comes.
type sink struct {
	ln     net.Listener
	active atomic.Int64
	wg     sync.WaitGroup
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.active.Add(1)
			go s.serve(c)
		}
	}()
	return s, nil
}

func (s *sink) addr() string { return s.ln.Addr().String() }
func (s *sink) close()       { s.ln.Close(); s.wg.Wait() }

func (s *sink) serve(c net.Conn) {
	defer s.active.Add(-1)
	defer c.Close()
	br := bufio.NewReaderSize(c, 512)
	var r interface {
		io.Reader
		io.ByteReader
	} = br
	var w io.Writer = c
	if first, err := br.Peek(1); err == nil && first[0] == 'G' {
		// A WebSocket, as NGINX passes it through: upgrade, then MQTT
		// bytes in binary frames, as a broker's WebSocket listener.
		u := ws.Upgrader{Protocol: func(p []byte) bool { return string(p) == mqttws.ProtocolMQTT }}
		if _, err := u.Upgrade(struct {
			io.Reader
			io.Writer
		}{br, c}); err != nil {
			return
		}
		wc := mqttws.NewConn(bufferedConn{c, br}, mqttws.ProtocolMQTT, nil)
		r, w = bufio.NewReaderSize(wc, 512), wc
	}
	var head []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		head = append(head, b)
		if n, err := mqtt.FrameLen(head); err == nil {
			if _, err := io.CopyN(io.Discard, r, int64(n-len(head))); err != nil {
				return
			}
			break
		} else if !errors.Is(err, mqtt.ErrIncomplete) {
			return
		}
	}
	if _, err := w.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil {
		return
	}
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// bufferedConn reads through the reader that the upgrade read from.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialFunc opens one client connection to the proxy, ready for MQTT bytes.
type dialFunc func() (net.Conn, error)

func dialer(s settings, addr string) dialFunc {
	switch s.transport {
	case "ws", "wss":
		url := s.transport + "://" + addr + "/mqtt"
		o := mqtttest.WSOptions{}
		if s.transport == "wss" {
			o.TLS = &tls.Config{ServerName: "mqtt.example", InsecureSkipVerify: true} // the run's own certificate
		}
		return func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return mqtttest.DialWS(ctx, url, o)
		}
	}
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 10*time.Second) }
}

// panicT makes certtest usable outside tests.
type panicT struct{}

func (panicT) Helper()           {}
func (panicT) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// writeCert makes a server certificate for the run's wss listeners.
func writeCert(dir string) (certFile, keyFile string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("certificate: %v", r)
		}
	}()
	ca := certtest.NewCA(panicT{}, "dataplane-meter CA")
	certFile, keyFile = ca.Server(panicT{}, certtest.ECDSA, "mqtt.example", "127.0.0.1").WriteFiles(panicT{}, dir, "server")
	return certFile, keyFile, nil
}

// waitActive waits until the sink holds n connections.
func (s *sink) waitActive(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for s.active.Load() != int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("sink holds %d connections after %v, want %d", s.active.Load(), limit, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

type proxyProc struct {
	cmd *exec.Cmd
	pid int
}

// stop asks the proxy to end (NGINX's master then stops its workers,
// which a kill would leave behind), and kills it after 5 s.
func (p *proxyProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func startProxy(s settings, dir, addr, sinkAddr string) (*proxyProc, error) {
	var cmd *exec.Cmd
	switch s.target {
	case "mqgate":
		bin := s.mqgate
		if bin == "" {
			bin = filepath.Join(dir, "mqgate")
			build := exec.Command("go", "build", "-o", bin, "github.com/mqgate/mqgate/cmd/mqgate")
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				return nil, fmt.Errorf("build mqgate: %w", err)
			}
		}
		cfg := filepath.Join(dir, "mqgate.yaml")
		listener, ssls := fmt.Sprintf("%q", addr), ""
		switch s.transport {
		case "ws":
			listener = fmt.Sprintf("{addr: %q, websocket: true}", addr)
		case "wss":
			listener = fmt.Sprintf("{addr: %q, websocket: true, tls: true}", addr)
			ssls = fmt.Sprintf("ssls: [{id: 1, cert: %q, key: %q, snis: [mqtt.example]}]\n", s.certFile, s.keyFile)
		}
		yml := fmt.Sprintf(`stream_proxy:
  tcp: [%s]
  data_path: %s
log: {level: warn, access_log: "off"}
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
%s`, listener, s.dataPath, sinkAddr, ssls)
		if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "run", "-c", cfg)
	case "haproxy":
		cfg := filepath.Join(dir, "haproxy.cfg")
		conf := fmt.Sprintf(`global
  maxconn 9500
defaults
  mode tcp
  timeout connect 5s
  timeout client 450s
  timeout server 450s
frontend mqtt
  bind %s
  default_backend brokers
backend brokers
  server sink %s
`, addr, sinkAddr)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command("haproxy", "-db", "-f", cfg)
	case "nginx":
		if s.transport == "tcp" {
			return nil, errors.New("nginx: measured for -transport ws and wss (bench/ has its stream figures)")
		}
		cfg := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(cfg, []byte(nginxConf(s, dir, addr, sinkAddr)), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command("nginx", "-p", dir, "-c", cfg)
	default:
		return nil, fmt.Errorf("unknown target %q", s.target)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if s.env != "" {
		cmd.Env = append(os.Environ(), s.env)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proxyProc{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// nginxConf is seed 004's "Reverse Proxy for MQTT WebSocket" block (and its
// SSL variant for wss), with the run's addresses and two workers as the
// machine has two cores.
func nginxConf(s settings, dir, addr, sinkAddr string) string {
	listen := addr
	tlsLines := ""
	if s.transport == "wss" {
		listen += " ssl"
		tlsLines = fmt.Sprintf(`        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 10m;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers HIGH:!aNULL:!MD5;
`, s.certFile, s.keyFile)
	}
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 20000;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream mqtt_websocket_servers {
        server %[3]s;
    }
    server {
        listen %[2]s reuseport;
        server_name mqtt.example.com;
%[4]s        location /mqtt {
            proxy_pass http://mqtt_websocket_servers;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "Upgrade";
            proxy_buffering off;
            proxy_connect_timeout 10s;
            proxy_send_timeout 3600s;
            proxy_read_timeout 3600s;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header REMOTE-HOST $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
`, dir, listen, sinkAddr, tlsLines)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitListening(addr string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy not listening on %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// settle waits until the process's RSS stops moving (a garbage collection,
// the scavenger), at most 15 s.
func settle(pid int) {
	prev, _, _ := usage(pid)
	for range 15 {
		time.Sleep(time.Second)
		cur, _, _ := usage(pid)
		if d := cur - prev; d < 64<<10 && d > -64<<10 {
			return
		}
		prev = cur
	}
}

// usage returns the resident set in bytes and the open descriptors of the
// process and its children (NGINX's workers).
func usage(pid int) (rss int64, fds int, err error) {
	rss, fds, err = usage1(pid)
	if err != nil {
		return 0, 0, err
	}
	for _, child := range children(pid) {
		r, f, err := usage(child)
		if err == nil {
			rss, fds = rss+r, fds+f
		}
	}
	return rss, fds, nil
}

// children lists a process's child processes.
func children(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func usage1(pid int) (rss int64, fds int, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range bytes.Lines(status) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, 0, err
			}
			rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents), err
}

// cpuTime is the user + system CPU the process and its children have used.
func cpuTime(pid int) (time.Duration, error) {
	total, err := cpuTime1(pid)
	if err != nil {
		return 0, err
	}
	for _, child := range children(pid) {
		if c, err := cpuTime(child); err == nil {
			total += c
		}
	}
	return total, nil
}

func cpuTime1(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
