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
	"time"

	"github.com/mqgate/mqgate/mqtt"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane-meter:", err)
		os.Exit(1)
	}
}

type settings struct {
	target, dataPath, mqgate string
	env                      string
	n, msgs, connects        int
	workers                  int
	limit, hold              time.Duration
}

func run() error {
	var s settings
	flag.StringVar(&s.target, "target", "mqgate", "proxy to measure: mqgate or haproxy")
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
	if s.target == "mqgate" {
		label += " (" + s.dataPath + ")"
	}

	// Warm up: start whatever the proxy starts lazily (event loops, pools).
	warm, err := openIdle(proxyAddr, 200, s.workers)
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
	conns, err := openIdle(proxyAddr, s.n, s.workers)
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
		done, err := connectCycles(proxyAddr, s.connects, s.workers, s.limit)
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
func openIdle(addr string, n, workers int) ([]net.Conn, error) {
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
				c, err := connect(addr, fmt.Sprintf("idle-%d", i))
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

func connect(addr, id string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
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
func connectCycles(addr string, total, workers int, limit time.Duration) (int, error) {
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
				c, err := connect(addr, "cycle-"+strconv.Itoa(i))
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
	r := bufio.NewReaderSize(c, 512)
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
	if _, err := c.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil {
		return
	}
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
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

func (p *proxyProc) stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
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
		yml := fmt.Sprintf(`stream_proxy:
  tcp: [%q]
  data_path: %s
log: {level: warn, access_log: "off"}
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, addr, s.dataPath, sinkAddr)
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

// usage returns the process's resident set in bytes and its open
// descriptors.
func usage(pid int) (rss int64, fds int, err error) {
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

// cpuTime is the user + system CPU the process has used.
func cpuTime(pid int) (time.Duration, error) {
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
