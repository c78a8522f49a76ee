// Package meter holds what the measuring commands under internal/cmd share:
// an in-process broker stand-in, a proxy run as a child process, MQTT
// clients that hold connections, and /proc readings of the child.
//
//	sink, _ := meter.StartSink()
//	defer sink.Close()
//	addr, _ := meter.FreeAddr()
//	proc, _ := meter.StartMqgate(dir, "", yaml, nil)
//	defer proc.Stop()
//	_ = meter.WaitListening(addr, 10*time.Second)
//	conns, _ := meter.OpenIdle(addr, 5000, 32)
//	defer meter.CloseAll(conns)
//
// Everything is loopback and bounded in count and time.
package meter

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

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/mqttws"
)

// Common is what every meter is told on its command line: which mqgate,
// on which data path, how many connections to hold, how long a phase may
// take.
type Common struct {
	Mqgate   string
	DataPath string
	N        int
	Limit    time.Duration
}

// Register adds -mqgate, -data-path, -n and -phase-limit to fs, with n and
// limit as their defaults.
func (c *Common) Register(fs *flag.FlagSet, n int, limit time.Duration) {
	fs.StringVar(&c.Mqgate, "mqgate", "", "mqgate binary (default: build ./cmd/mqgate)")
	fs.StringVar(&c.DataPath, "data-path", "epoll", "mqgate's stream_proxy.data_path: epoll or goroutines")
	fs.IntVar(&c.N, "n", n, "connections to hold")
	fs.DurationVar(&c.Limit, "phase-limit", limit, "upper bound on each phase")
}

// ConnectPacket is the CONNECT every client sends: MQTT 3.1.1, keepalive
// 300 s, so the proxy's idle limit (450 s) never fires during a run.
func ConnectPacket(id string) []byte {
	return mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 300, ClientID: id})
}

// Dial opens one client connection to the proxy, ready for MQTT bytes:
// TCP, or a WebSocket (see WebSocket).
type Dial func() (net.Conn, error)

// TCP dials addr in plain TCP.
func TCP(addr string) Dial {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 10*time.Second) }
}

// WebSocket dials MQTT over WebSocket at url (ws:// or wss://, with tlsCfg).
func WebSocket(url string, tlsCfg *tls.Config) Dial {
	return func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return mqtttest.DialWS(ctx, url, mqtttest.WSOptions{TLS: tlsCfg})
	}
}

// OpenIdle opens n connections through the proxy, each with its CONNECT
// answered, workers at a time.
func OpenIdle(addr string, n, workers int) ([]net.Conn, error) {
	return OpenIdleWith(TCP(addr), n, workers)
}

// OpenIdleWith is OpenIdle with connections that dial opens.
func OpenIdleWith(dial Dial, n, workers int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	_, err := parallel(n, workers, time.Time{}, func(i int) error {
		c, err := ConnectWith(dial, fmt.Sprintf("idle-%d", i))
		conns[i] = c
		return err
	})
	if err != nil {
		CloseAll(conns)
		return nil, err
	}
	return conns, nil
}

// parallel calls f for 0..total-1, workers at a time, until deadline (zero:
// none); a worker stops at its first error. It returns how many calls
// started and the first error.
func parallel(total, workers int, deadline time.Time, f func(i int) error) (int, error) {
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline.IsZero() || time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return min(int(next.Load()), total), <-errs
}

// Connect dials addr, sends a CONNECT for id and waits for its CONNACK.
func Connect(addr, id string) (net.Conn, error) { return ConnectWith(TCP(addr), id) }

// ConnectWith is Connect over a connection that dial opens.
func ConnectWith(dial Dial, id string) (net.Conn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(ConnectPacket(id)); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK for %s: %w", id, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// CloseAll closes every non-nil connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// Sink stands in for a broker: it answers a CONNECT with CONNACK, then
// echoes whatever comes.
type Sink struct {
	ln     net.Listener
	active atomic.Int64
	wg     sync.WaitGroup
}

// StartSink listens on a loopback port and serves until Close.
func StartSink() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln}
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

// Addr is the address the sink listens on.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Close stops accepting; connections end when their clients close.
func (s *Sink) Close() { s.ln.Close(); s.wg.Wait() }

func (s *Sink) serve(c net.Conn) {
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
		// bytes in binary frames, as a broker's WebSocket listener does.
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

// bufferedConn reads through the reader the upgrade read from.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// WaitActive waits until the sink holds n connections, at most limit.
func (s *Sink) WaitActive(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for s.active.Load() != int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("sink holds %d connections after %v, want %d", s.active.Load(), limit, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Proc is a proxy running as a child process.
type Proc struct {
	cmd *exec.Cmd
	Pid int
}

// Stop asks the child to end (NGINX's master then stops its workers,
// which a kill would leave behind) and kills it after 5 s.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// Start runs the command with its output on this process's stderr and env
// added to the environment.
func Start(cmd *exec.Cmd, env ...string) (*Proc, error) {
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Proc{cmd: cmd, Pid: cmd.Process.Pid}, nil
}

// StartMqgate writes yml to dir/mqgate.yaml and runs `mqgate run` on it:
// bin, or a binary built from this module into dir when bin is empty.
func StartMqgate(dir, bin, yml string, env ...string) (*Proc, error) {
	if bin == "" {
		bin = filepath.Join(dir, "mqgate")
		build := exec.Command("go", "build", "-o", bin, "github.com/mqgate/mqgate/cmd/mqgate")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("build mqgate: %w", err)
		}
	}
	cfg := filepath.Join(dir, "mqgate.yaml")
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		return nil, err
	}
	return Start(exec.Command(bin, "run", "-c", cfg), env...)
}

// FreeAddr returns a loopback address with a port free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitListening waits until addr accepts a TCP connection, at most limit.
func WaitListening(addr string, limit time.Duration) error {
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

// Settle waits until the process's RSS stops moving (a garbage collection,
// the scavenger), at most 15 s.
func Settle(pid int) {
	prev, _, _ := Usage(pid)
	for range 15 {
		time.Sleep(time.Second)
		cur, _, _ := Usage(pid)
		if d := cur - prev; d < 64<<10 && d > -64<<10 {
			return
		}
		prev = cur
	}
}

// Usage returns the resident set in bytes and the open descriptors of the
// process and its children (NGINX's workers).
func Usage(pid int) (rss int64, fds int, err error) {
	rss, fds, err = usage1(pid)
	if err != nil {
		return 0, 0, err
	}
	for _, child := range children(pid) {
		if r, f, err := Usage(child); err == nil {
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

// CPUTime is the user + system CPU the process and its children have used.
func CPUTime(pid int) (time.Duration, error) {
	total, err := cpuTime1(pid)
	if err != nil {
		return 0, err
	}
	for _, child := range children(pid) {
		if c, err := CPUTime(child); err == nil {
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

// ConnectCycles runs total connect → CONNACK → DISCONNECT → close cycles
// with client ids prefix0, prefix1, ..., workers at a time, for at most
// limit. It reports each cycle's time from dial to CONNACK to done (when
// not nil) and returns how many cycles ran.
func ConnectCycles(addr, prefix string, total, workers int, limit time.Duration, done func(i int, d time.Duration)) (int, error) {
	return ConnectCyclesWith(TCP(addr), prefix, total, workers, limit, done)
}

// ConnectCyclesWith is ConnectCycles over connections that dial opens.
func ConnectCyclesWith(dial Dial, prefix string, total, workers int, limit time.Duration, done func(i int, d time.Duration)) (int, error) {
	return parallel(total, workers, time.Now().Add(limit), func(i int) error {
		start := time.Now()
		c, err := ConnectWith(dial, prefix+strconv.Itoa(i))
		if err != nil {
			return err
		}
		if done != nil {
			done(i, time.Since(start))
		}
		_, _ = c.Write([]byte{0xe0, 0x00}) // DISCONNECT
		c.Close()
		return nil
	})
}
