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
	"errors"
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

// ConnectPacket is the CONNECT every client sends: MQTT 3.1.1, keepalive
// 300 s, so the proxy's idle limit (450 s) never fires during a run.
func ConnectPacket(id string) []byte {
	return mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 300, ClientID: id})
}

// OpenIdle opens n connections through the proxy, each with its CONNECT
// answered, workers at a time.
func OpenIdle(addr string, n, workers int) ([]net.Conn, error) {
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
				c, err := Connect(addr, fmt.Sprintf("idle-%d", i))
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
		CloseAll(conns)
		return nil, err
	}
	return conns, nil
}

// Connect dials addr, sends a CONNECT for id and waits for its CONNACK.
func Connect(addr, id string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
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

// Stop kills the child and waits for it.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
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

// Usage returns the process's resident set in bytes and its open
// descriptors.
func Usage(pid int) (rss int64, fds int, err error) {
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

// CPUTime is the user + system CPU the process has used.
func CPUTime(pid int) (time.Duration, error) {
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
				start := time.Now()
				c, err := Connect(addr, prefix+strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				if done != nil {
					done(i, time.Since(start))
				}
				_, _ = c.Write([]byte{0xe0, 0x00}) // DISCONNECT
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return min(int(next.Load()), total), <-errs
}
