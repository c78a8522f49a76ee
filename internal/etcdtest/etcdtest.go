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
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// Etcd is one etcd member process.
type Etcd struct {
	t         testing.TB
	bin       string
	dir       string
	clientURL string
	peerURL   string
	tls       *TLS
	tlsConfig *tls.Config // for the test's own clients

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *mqtttest.LogBuffer
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

// TLS makes etcd serve its clients with TLS and require a client
// certificate signed by CA (PEM file paths).
type TLS struct {
	Cert, Key, CA string
	// The test's own clients present this certificate.
	ClientCert, ClientKey string
}

// Start runs etcd on free loopback ports until the test ends.
func Start(t testing.TB) *Etcd { return StartTLS(t, nil) }

// StartTLS is Start with TLS for clients (nil: plain).
func StartTLS(t testing.TB, tc *TLS) *Etcd {
	t.Helper()
	e := &Etcd{t: t, bin: Bin(t), dir: t.TempDir(), tls: tc}
	scheme := "http"
	if tc != nil {
		scheme = "https"
		cert, err := tls.LoadX509KeyPair(tc.ClientCert, tc.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		pem, err := os.ReadFile(tc.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		e.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var lastErr error
	// The ports are picked by binding :0 and closing; another process may
	// take one before etcd binds, so try a few times.
	for range 5 {
		e.clientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, mqtttest.FreePort(t))
		e.peerURL = fmt.Sprintf("http://127.0.0.1:%d", mqtttest.FreePort(t))
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
func (e *Etcd) Addr() string { return e.clientURL[strings.Index(e.clientURL, "//")+2:] }

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
	args := []string{
		"--name", "test",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "test=" + e.peerURL,
		"--log-level", "error",
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.Cert, "--key-file", e.tls.Key, "--trusted-ca-file", e.tls.CA, "--client-cert-auth")
	}
	cmd := exec.Command(e.bin, args...)
	// A test binary that dies (a panic, a timeout) takes its etcd along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &mqtttest.LogBuffer{}
	cmd.Stderr, cmd.Stdout = stderr, nil
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
	cli, err := clientv3.New(e.clientConfig())
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

func (e *Etcd) clientConfig() clientv3.Config {
	return clientv3.Config{Endpoints: []string{e.clientURL}, TLS: e.tlsConfig, Logger: zap.NewNop()}
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
	cli, err := clientv3.New(e.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
