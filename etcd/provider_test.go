package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
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
