package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/etcdtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// sink records the snapshots a provider applies.
type sink struct {
	mu    sync.Mutex
	snaps []Snapshot
}

func (s *sink) apply(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, snap)
}

func (s *sink) last() (Snapshot, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) == 0 {
		return Snapshot{}, 0
	}
	return s.snaps[len(s.snaps)-1], len(s.snaps)
}

func (s *sink) has(keys ...string) func() bool {
	return func() bool {
		snap, _ := s.last()
		for _, k := range keys {
			if !slices.ContainsFunc(snap.Objects, func(o Object) bool { return o.Key == k }) {
				return false
			}
		}
		return true
	}
}

func startProvider(t *testing.T, endpoint string, coalesce time.Duration, name string) (*Provider, *sink) {
	t.Helper()
	s := &sink{}
	p, err := New(Options{
		Settings: &config.Etcd{Hosts: []string{endpoint}, Prefix: "/apisix", Timeout: 2 * time.Second},
		Kinds:    []string{"stream_routes", "upstreams", "ssls"},
		Name:     name,
		Apply:    s.apply,
		Coalesce: coalesce,
		Log:      slog.New(slog.DiscardHandler),
		Instance: func() Instance { return Instance{Role: "traditional"} },
		Kick:     func(id string) any { return []string{"closed " + id} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		p.Close()
	})
	return p, s
}

// TestBurstIsOneSnapshot: twenty writes in a row become far fewer
// snapshots, the last holding them all; keys outside APISIX's kinds and
// the kinds' directory keys are not objects.
func TestBurstIsOneSnapshot(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ctx := context.Background()
	for _, k := range []string{"/apisix/upstreams", "/apisix/plugins/x", "/apisix/stream_routes/a/b"} {
		if _, err := cli.Put(ctx, k, "init_dir"); err != nil {
			t.Fatal(err)
		}
	}
	_, s := startProvider(t, e.Endpoint(), time.Second, "a")
	mqtttest.WaitFor(t, "the first read", func() bool { _, n := s.last(); return n == 1 })
	var keys []string
	for i := range 20 {
		k := fmt.Sprintf("/apisix/upstreams/%d", i)
		keys = append(keys, k)
		if _, err := cli.Put(ctx, k, `{"nodes": {"127.0.0.1:1883": 1}}`); err != nil {
			t.Fatal(err)
		}
	}
	mqtttest.WaitFor(t, "all twenty in a snapshot", s.has(keys...))
	snap, n := s.last()
	if n-1 >= 20 {
		t.Errorf("20 writes made %d snapshots; want them coalesced", n-1)
	}
	if len(snap.Objects) != 20 {
		t.Errorf("snapshot has %d objects, want the 20 upstreams only: %v", len(snap.Objects), snap.Objects)
	}
	if snap.Objects[0].ID != "0" || snap.Objects[19].ID != "19" {
		t.Errorf("objects not in creation order: %v ... %v", snap.Objects[0].Key, snap.Objects[19].Key)
	}
	t.Logf("20 writes: %d snapshots", n-1)
}

// TestCompactionPastRevision: an instance cut off from etcd while others
// write and etcd compacts past its revision reads everything again when it
// is back, and holds what was written meanwhile.
func TestCompactionPastRevision(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	relay := etcdtest.StartRelay(t, e)
	cli := e.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/apisix/upstreams/1", `{"nodes": {"127.0.0.1:1883": 1}}`); err != nil {
		t.Fatal(err)
	}
	p, s := startProvider(t, relay.Endpoint(), 50*time.Millisecond, "cut-off")
	mqtttest.WaitFor(t, "the first read", s.has("/apisix/upstreams/1"))
	relay.Cut()
	mqtttest.WaitFor(t, "the provider to see etcd unreachable", func() bool { return !p.Status().Connected })
	for i := range 5 {
		if _, err := cli.Put(ctx, "/apisix/upstreams/1", fmt.Sprintf(`{"nodes": {"127.0.0.1:%d": 1}}`, 1884+i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/apisix/upstreams/1"); err != nil {
		t.Fatal(err)
	}
	put, err := cli.Put(ctx, "/apisix/upstreams/2", `{"nodes": {"127.0.0.1:1890": 1}}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	relay.Restore()
	mqtttest.WaitFor(t, "the provider to catch up", func() bool {
		snap, _ := s.last()
		return len(snap.Objects) == 1 && snap.Objects[0].Key == "/apisix/upstreams/2"
	})
	if st := p.Status(); st.Reads < 2 || !st.Connected || st.Revision != put.Header.Revision {
		t.Errorf("after the compaction: %+v; want a second read, connected, revision %d", st, put.Header.Revision)
	}
}

// TestFleetAndKick: two providers register, see each other, and a kick
// from one is carried out and answered by the other.
func TestFleetAndKick(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	a, _ := startProvider(t, e.Endpoint(), 50*time.Millisecond, "a")
	b, _ := startProvider(t, e.Endpoint(), 50*time.Millisecond, "b")
	mqtttest.WaitFor(t, "both in the fleet", func() bool {
		fa, fb := a.FleetStatus(), b.FleetStatus()
		return len(fa.Instances) == 2 && len(fb.Instances) == 2 && fa.InSync
	})
	answers, err := a.Kick(context.Background(), "meter-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 1 || string(answers["b"]) != `["closed meter-1"]` {
		t.Errorf("kick answers: %s", answers)
	}
}

// startTLSEtcd starts an etcd that requires TLS with a client certificate,
// its certificates written to dir, and returns it with the client's
// certificate, key and the CA file.
func startTLSEtcd(t *testing.T, dir string) (e *etcdtest.Etcd, cliCert, cliKey, caFile string) {
	t.Helper()
	ca := certtest.NewCA(t, "etcd CA")
	srvCert, srvKey := ca.Server(t, certtest.ECDSA, "127.0.0.1").WriteFiles(t, dir, "etcd")
	cliCert, cliKey = ca.Client(t, "mqgate").WriteFiles(t, dir, "mqgate")
	caFile = filepath.Join(dir, "ca.pem")
	certtest.WriteFile(t, caFile, ca.CertPEM)
	e = etcdtest.StartTLS(t, &etcdtest.TLS{Cert: srvCert, Key: srvKey, CA: caFile, ClientCert: cliCert, ClientKey: cliKey})
	return e, cliCert, cliKey, caFile
}

// TestTLSAndAuth: the provider reaches an etcd that requires TLS with a
// client certificate and a user and password, as deployment.etcd.tls and
// user/password configure it; a wrong password is reported, not hung on.
func TestTLSAndAuth(t *testing.T) {
	t.Parallel()
	e, cliCert, cliKey, caFile := startTLSEtcd(t, t.TempDir())
	cli := e.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/apisix/upstreams/1", `{"nodes": {"127.0.0.1:1883": 1}}`); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "s3cret-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	settings := func(password string) *config.Etcd {
		return &config.Etcd{Hosts: []string{e.Endpoint()}, Prefix: "/apisix", Timeout: 2 * time.Second, User: "root", Password: password,
			TLS: &config.EtcdTLS{Cert: cliCert, Key: cliKey, CA: caFile, Verify: true}}
	}
	p, err := New(Options{Settings: settings("s3cret-pw"), Kinds: []string{"upstreams"}, Apply: func(Snapshot) {}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	snap, err := p.Load(ctx)
	if err != nil || len(snap.Objects) != 1 {
		t.Fatalf("Load over TLS with a user: %v %v", snap, err)
	}
	bad, err := New(Options{Settings: settings("wrong"), Kinds: []string{"upstreams"}, Apply: func(Snapshot) {}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Load(ctx); err == nil || bad.Status().LastError == "" {
		t.Errorf("a wrong password: Load = %v, status %+v", err, bad.Status())
	}
}

// TestTLSPathsRelativeToFile: deployment.etcd.tls's relative paths are
// the file's, not the working directory's: a configuration in another
// directory naming its certificates relative to itself reaches an etcd that
// requires a client certificate.
func TestTLSPathsRelativeToFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	e, cliCert, cliKey, caFile := startTLSEtcd(t, certs)
	if _, err := e.Client(t).Put(context.Background(), "/apisix/upstreams/1", `{"nodes": {"127.0.0.1:1883": 1}}`); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	rel := func(p string) string { return "../certs/" + filepath.Base(p) }
	file := filepath.Join(conf, "mqgate.yaml")
	yml := fmt.Sprintf("stream_proxy: {tcp: [1883]}\ndeployment:\n  etcd:\n    host: [%q]\n    timeout: 2\n    tls: {cert: %s, key: %s, ca: %s}\n",
		e.Endpoint(), rel(cliCert), rel(cliKey), rel(caFile))
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Deployment.Etcd.TLS; got.Cert != cliCert || got.Key != cliKey || got.CA != caFile {
		t.Errorf("tls paths %+v, want %s, %s, %s", got, cliCert, cliKey, caFile)
	}
	p, err := New(Options{Settings: cfg.Deployment.Etcd, Kinds: []string{"upstreams"}, Apply: func(Snapshot) {}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if snap, err := p.Load(context.Background()); err != nil || len(snap.Objects) != 1 {
		t.Fatalf("Load over TLS with the file's relative paths: %v %v", snap, err)
	}
}

// TestAuthWithEtcdDown: with a user and password, the client's first call
// needs etcd; a provider made while etcd is down still starts, and its
// first read fails (bounded by the timeout) instead of blocking the start.
func TestAuthWithEtcdDown(t *testing.T) {
	t.Parallel()
	p, err := New(Options{
		Settings: &config.Etcd{Hosts: []string{fmt.Sprintf("http://127.0.0.1:%d", mqtttest.FreePort(t))}, Prefix: "/apisix", Timeout: 500 * time.Millisecond, User: "root", Password: "pw"},
		Kinds:    []string{"upstreams"}, Apply: func(Snapshot) {}, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Load(context.Background()); err == nil || p.Status().Connected {
		t.Errorf("Load with etcd down = %v, status %+v", err, p.Status())
	}
	if _, _, err := p.Put(context.Background(), "upstreams", "1", []byte("{}")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put with etcd down = %v, want ErrUnavailable", err)
	}
}
