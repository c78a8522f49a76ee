package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/mqgate/mqgate/config"
)

// BenchmarkStats reads the counters with 9,000 proxied connections held,
// as a /metrics scrape does, while connections come and go beside it.
//
//	go test -run '^$' -bench Stats ./proxy/
func BenchmarkStats(b *testing.B) {
	s := heldServer(b, 9000)
	b.ResetTimer()
	for b.Loop() {
		if st := s.Stats(); st.Routes[0].Active != 9000 {
			b.Fatalf("%d active", st.Routes[0].Active)
		}
	}
}

// BenchmarkTrackWhileScraping is what an accept and a close pay to the
// live-connection set while Stats runs back to back, 9,000 connections
// held.
func BenchmarkTrackWhileScraping(b *testing.B) {
	s := heldServer(b, 9000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				s.Stats()
			}
		}
	}()
	b.ResetTimer()
	for b.Loop() {
		lc := &liveConn{srv: s}
		if !s.track(lc) {
			b.Fatal("not tracked")
		}
		s.untrack(lc)
	}
	b.StopTimer()
	close(stop)
	<-done
}

// heldServer is a Server with n proxied connections in its tables, no
// sockets.
func heldServer(b *testing.B, n int) *Server {
	cfg, err := config.Parse(config.Document{Name: "bench.yaml", Data: []byte(`
stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams: [{id: 1, nodes: {"127.0.0.1:1883": 1, "127.0.0.1:1884": 1}}]
stream_routes: [{id: r, upstream_id: 1}]
`)})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	snap := s.snap.Load()
	hold := func(i int) *liveConn {
		lc := &liveConn{srv: s, rec: record{clientID: fmt.Sprintf("c-%d", i)}}
		if !s.track(lc) {
			b.Fatal("not tracked")
		}
		node := snap.upstreams[0].nodes[i%2]
		node.active.Add(1)
		lc.node = node
		lc.rec.route = snap.stats[0]
		lc.piping(&lc.rec, 100)
		return lc
	}
	for i := range n {
		hold(i)
	}
	return s
}
