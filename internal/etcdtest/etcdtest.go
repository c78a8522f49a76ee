// Package etcdtest runs a real etcd server (the Debian etcd-server package)
// for tests: one member on loopback ports, its data in the test's temporary
// directory, killed when the test ends. Stop and Start restart it on the same
// ports and data, to test what happens while etcd is away.
//
//	e := etcdtest.Start(t)
//	cli := e.Client(t)
//	_, err := cli.Put(ctx, "/apisix/upstreams/1", `{"nodes": {"127.0.0.1:1883": 1}}`)
//	e.Stop()  // clients see it unreachable
//	e.Start() // same data, same address
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is one etcd member process.
type Etcd struct {
	t         testing.TB
	bin       string
	dir       string
	clientURL string
	peerURL   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *bytes.Buffer
}

// Bin returns the etcd binary, failing the test when it is not installed:
// the test command installs it (apt-get install etcd-server).
func Bin(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"etcd", "/usr/bin/etcd", "/usr/sbin/etcd"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Fatal("etcd is not installed (apt-get install etcd-server)")
	return ""
}

// Start runs etcd on free loopback ports until the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{t: t, bin: Bin(t), dir: t.TempDir()}
	var lastErr error
	// The ports are picked by binding :0 and closing; another process may
	// take one before etcd binds, so try a few times.
	for range 5 {
		e.clientURL = "http://" + freeAddr(t)
		e.peerURL = "http://" + freeAddr(t)
		if lastErr = e.start(); lastErr == nil {
			t.Cleanup(e.Stop)
			return e
		}
		_ = os.RemoveAll(filepath.Join(e.dir, "data"))
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return nil
}

// Endpoint is the client URL, like "http://127.0.0.1:40123".
func (e *Etcd) Endpoint() string { return e.clientURL }

// Addr is the client address, like "127.0.0.1:40123".
func (e *Etcd) Addr() string { return e.clientURL[len("http://"):] }

func (e *Etcd) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		select {
		case <-e.exited:
		default:
			return nil // running
		}
	}
	cmd := exec.Command(e.bin,
		"--name", "test",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "test="+e.peerURL,
		"--log-level", "error",
	)
	// A test binary that dies (a panic, a timeout) takes its etcd along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &bytes.Buffer{}
	cmd.Stderr, cmd.Stdout = &lockedWriter{b: stderr}, nil
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	e.cmd, e.exited, e.stderr = cmd, exited, stderr
	if err := e.waitReady(exited, 15*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; stderr: %s", err, stderr.String())
	}
	return nil
}

// waitReady polls etcd until it answers a read (it has a leader), bounded.
func (e *Etcd) waitReady(exited chan struct{}, limit time.Duration) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.clientURL}, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("etcd exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err = cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by deadline
	}
	return fmt.Errorf("etcd not ready on %s after %v: %v", e.clientURL, limit, err)
}

// Stop kills etcd, as a crash or a partition would look to clients.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Kill()
	<-e.exited
}

// Restart starts a stopped etcd again with the same data and address.
func (e *Etcd) Restart() {
	e.t.Helper()
	if err := e.start(); err != nil {
		e.t.Fatalf("restart etcd: %v", err)
	}
}

// Client is an etcd client for the test, closed when it ends.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.clientURL}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

type lockedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
