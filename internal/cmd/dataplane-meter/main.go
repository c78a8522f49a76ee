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
//	go run ./internal/cmd/dataplane-meter -transport tls -target mqgate,haproxy -n 5000
//
// With -transport tls the clients speak MQTT over TLS 1.3 (crypto/tls,
// AES-128-GCM as Go's client picks it on AES-NI, a certificate made for
// the run); mqgate and HAProxy end it and dial the sink in plain MQTT.
// With -transport ws or wss the clients speak MQTT over WebSocket (wss:
// over TLS, with a certificate made for the run) to the path /mqtt. mqgate
// ends the WebSocket and dials the sink in plain MQTT; NGINX, configured as
// seed 004 proxies MQTT over WebSocket to EMQX's port 8083, passes the
// WebSocket through to the sink, which then speaks WebSocket too (as a
// broker's WebSocket listener does). NGINX's figures are its master and
// workers together. Targets given as a list run one after the other.
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
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/meter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane-meter:", err)
		os.Exit(1)
	}
}

type settings struct {
	meter.Common
	target, transport string
	certFile, keyFile string
	accessLog         string
	loopAffinity      string
	env               string
	msgs, connects    int
	workers           int
	hold              time.Duration
	idleAfter         time.Duration
}

func run() error {
	var s settings
	s.Register(flag.CommandLine, 5000, time.Minute)
	flag.StringVar(&s.target, "target", "mqgate", "proxies to measure, comma-separated, one after the other: mqgate, haproxy (tcp only), nginx (ws, wss)")
	flag.StringVar(&s.transport, "transport", "tcp", "what clients speak: tcp (MQTT), tls (MQTT over TLS 1.3), ws (MQTT over WebSocket) or wss (over TLS)")
	flag.StringVar(&s.accessLog, "access-log", "off", "mqgate's log.access_log: off, or a file to write it to (the default, stdout, goes to the meter's log file)")
	flag.StringVar(&s.loopAffinity, "loop-affinity", "broker", "mqgate's stream_proxy.loop_affinity: broker or connection (the meter has one broker)")
	flag.IntVar(&s.msgs, "msgs", 200000, "64-byte message round trips for the CPU figure (0 skips)")
	flag.IntVar(&s.connects, "connects", 20000, "connect cycles for the CPU figure (0 skips)")
	flag.IntVar(&s.workers, "workers", 32, "concurrent clients in the message and connect phases")
	flag.StringVar(&s.env, "env", "", "extra environment for the proxy, as KEY=VALUE (GODEBUG=gctrace=1, GOGC=50)")
	flag.DurationVar(&s.idleAfter, "idle-after", 0, "read the idle RSS no sooner than this after the last idle connection is up (bench/ reads it 10 s after its ramp; mqgate hands TLS pairs to its loops once they have stayed, a fraction of a second)")
	flag.DurationVar(&s.hold, "hold", 0, "keep the idle connections open this long after measuring them (to profile the proxy)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "dataplane-meter")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if s.transport == "wss" || s.transport == "tls" {
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
	sink, err := meter.StartSink()
	if err != nil {
		return err
	}
	defer sink.Close()
	proxyAddr, err := meter.FreeAddr()
	if err != nil {
		return err
	}
	proc, err := startProxy(s, dir, proxyAddr, sink.Addr())
	if err != nil {
		return err
	}
	defer proc.Stop()
	if err := meter.WaitListening(proxyAddr, 10*time.Second); err != nil {
		return err
	}
	label := s.target
	if s.target == "mqgate" && s.transport == "tcp" {
		label += " (" + s.DataPath + ", loop_affinity " + s.loopAffinity + ")"
	}
	dial := meter.TCP(proxyAddr)
	switch s.transport {
	case "tcp":
	case "tls":
		label += " tls"
		if s.target == "mqgate" {
			label += " (" + s.DataPath + ")"
		}
		cfg := &tls.Config{ServerName: "mqtt.example", InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} // the run's own certificate
		dial = func() (net.Conn, error) {
			d := &net.Dialer{Timeout: 10 * time.Second}
			c, err := tls.DialWithDialer(d, "tcp", proxyAddr, cfg)
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	default:
		label += " " + s.transport
		var tlsCfg *tls.Config
		if s.transport == "wss" {
			tlsCfg = &tls.Config{ServerName: "mqtt.example", InsecureSkipVerify: true} // the run's own certificate
		}
		dial = meter.WebSocket(s.transport+"://"+proxyAddr+"/mqtt", tlsCfg)
	}

	// Warm up: start whatever the proxy starts lazily (event loops, pools).
	warm, err := meter.OpenIdleWith(dial, 200, s.workers)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	meter.CloseAll(warm)
	if err := sink.WaitActive(0, 10*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	meter.Settle(proc.Pid)

	// Idle connections.
	rss0, fds0, err := meter.Usage(proc.Pid)
	if err != nil {
		return err
	}
	conns, err := meter.OpenIdleWith(dial, s.N, s.workers)
	if err != nil {
		return fmt.Errorf("idle phase: %w", err)
	}
	defer meter.CloseAll(conns)
	if err := sink.WaitActive(s.N, s.Limit); err != nil {
		return err
	}
	up := time.Now()
	meter.Settle(proc.Pid)
	if wait := s.idleAfter - time.Since(up); wait > 0 {
		time.Sleep(wait)
		meter.Settle(proc.Pid)
	}
	rss1, fds1, err := meter.Usage(proc.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("%-22s idle: %d connections, RSS %+.1f MiB = %.0f B per connection, %.2f fds per connection\n",
		label, s.N, float64(rss1-rss0)/(1<<20), float64(rss1-rss0)/float64(s.N), float64(fds1-fds0)/float64(s.N))

	time.Sleep(s.hold)

	// Messages over some of the idle connections.
	if s.msgs > 0 {
		cpu0, err := meter.CPUTime(proc.Pid)
		if err != nil {
			return err
		}
		start := time.Now()
		done, err := roundTrips(conns[:min(s.workers, len(conns))], s.msgs, s.Limit)
		if err != nil {
			return fmt.Errorf("message phase: %w", err)
		}
		wall := time.Since(start)
		cpu1, _ := meter.CPUTime(proc.Pid)
		fmt.Printf("%-22s messages: %d round trips of 64 B in %v (%.0f/s), proxy CPU %v = %.2f µs per round trip\n",
			label, done, wall.Round(time.Millisecond), float64(done)/wall.Seconds(), (cpu1 - cpu0).Round(time.Millisecond),
			float64((cpu1-cpu0).Microseconds())/float64(done))
	}
	meter.CloseAll(conns)
	conns = nil
	if err := sink.WaitActive(0, s.Limit); err != nil {
		return err
	}

	// Connect cycles.
	if s.connects > 0 {
		cpu0, err := meter.CPUTime(proc.Pid)
		if err != nil {
			return err
		}
		start := time.Now()
		done, err := meter.ConnectCyclesWith(dial, "cycle-", s.connects, s.workers, s.Limit, nil)
		if err != nil {
			return fmt.Errorf("connect phase: %w", err)
		}
		if err := sink.WaitActive(0, s.Limit); err != nil {
			return err
		}
		wall := time.Since(start)
		cpu1, _ := meter.CPUTime(proc.Pid)
		fmt.Printf("%-22s connects: %d cycles in %v (%.0f/s), proxy CPU %v = %.1f ms per 1,000 connects\n",
			label, done, wall.Round(time.Millisecond), float64(done)/wall.Seconds(), (cpu1 - cpu0).Round(time.Millisecond),
			float64((cpu1-cpu0).Microseconds())/float64(done))
	}
	return nil
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

func startProxy(s settings, dir, addr, sinkAddr string) (*meter.Proc, error) {
	var env []string
	if s.env != "" {
		env = append(env, s.env)
	}
	switch s.target {
	case "mqgate":
		listener, ssls := fmt.Sprintf("%q", addr), ""
		switch s.transport {
		case "ws":
			listener = fmt.Sprintf("{addr: %q, websocket: true}", addr)
		case "wss":
			listener = fmt.Sprintf("{addr: %q, websocket: true, tls: true}", addr)
			ssls = fmt.Sprintf("ssls: [{id: 1, cert: %q, key: %q, snis: [mqtt.example]}]\n", s.certFile, s.keyFile)
		case "tls":
			listener = fmt.Sprintf("{addr: %q, tls: true}", addr)
			ssls = fmt.Sprintf("ssls: [{id: 1, cert: %q, key: %q, snis: [mqtt.example]}]\n", s.certFile, s.keyFile)
		}
		yml := fmt.Sprintf(`stream_proxy:
  tcp: [%s]
  data_path: %s
  loop_affinity: %s
log: {level: warn, access_log: %q}
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
%s`, listener, s.DataPath, s.loopAffinity, s.accessLog, sinkAddr, ssls)
		return meter.StartMqgate(dir, s.Mqgate, yml, env...)
	case "haproxy":
		bindTLS := ""
		if s.transport == "tls" {
			// HAProxy takes the certificate and key in one file.
			pem := filepath.Join(dir, "haproxy.pem")
			var b []byte
			for _, f := range []string{s.certFile, s.keyFile} {
				part, err := os.ReadFile(f)
				if err != nil {
					return nil, err
				}
				b = append(b, part...)
			}
			if err := os.WriteFile(pem, b, 0o600); err != nil {
				return nil, err
			}
			bindTLS = " ssl crt " + pem
		} else if s.transport != "tcp" {
			return nil, errors.New("haproxy: measured for -transport tcp and tls")
		}
		cfg := filepath.Join(dir, "haproxy.cfg")
		conf := fmt.Sprintf(`global
  maxconn 9500
defaults
  mode tcp
  timeout connect 5s
  timeout client 450s
  timeout server 450s
frontend mqtt
  bind %s%s
  default_backend brokers
backend brokers
  server sink %s
`, addr, bindTLS, sinkAddr)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		return meter.Start(exec.Command("haproxy", "-db", "-f", cfg), env...)
	case "nginx":
		if s.transport == "tcp" || s.transport == "tls" {
			return nil, errors.New("nginx: measured for -transport ws and wss (bench/ has its stream figures)")
		}
		cfg := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(cfg, []byte(nginxConf(s, dir, addr, sinkAddr)), 0o600); err != nil {
			return nil, err
		}
		return meter.Start(exec.Command("nginx", "-p", dir, "-c", cfg), env...)
	}
	return nil, fmt.Errorf("unknown target %q", s.target)
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
