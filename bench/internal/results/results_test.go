package results

import (
	"bytes"
	"image/png"
	"math"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/bench/internal/loadgen"
)

// containsAll fails the test for each of wants that md lacks, showing md.
func containsAll(t *testing.T, md string, wants []string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{3, math.NaN(), 1, 2})
	if s.n != 3 || s.median != 2 || s.low != 1 || s.high != 3 {
		t.Errorf("summarize = %+v", s)
	}
	if got := s.spread(); got != 50 {
		t.Errorf("spread = %v, want 50", got)
	}
	if summarize([]float64{math.NaN()}).ok() {
		t.Error("all-NaN summary must not be ok")
	}
	if s := summarize([]float64{1, 2, 3, 4}); s.median != 2.5 {
		t.Errorf("even median = %v", s.median)
	}
}

// sampleRun has HAProxy at 1000 connects/s and mqgate at 900 and 1100 in two
// rounds; nginx failed its hashing check.
func sampleRun() *Run {
	phase := func(rate float64, cpu float64) *Phase {
		return &Phase{Load: loadgen.Result{Ops: uint64(rate * 5), PerSec: rate, P50us: 500, P99us: 2000}, ProxyCPU: cpu, WindowSeconds: 5}
	}
	round := func(i int, rate, cpu float64) Round {
		return Round{Index: i, Phases: map[string]*Phase{PhaseConnect: phase(rate, cpu)}}
	}
	return &Run{
		Date:    "2026-01-01 00:00 UTC",
		Command: "bash bench/run.sh",
		Machine: Machine{CPUs: 2, CPUModel: "test"},
		Plan:    Plan{Rounds: 2},
		Targets: []*Target{
			{Name: "no-proxy", Verify: &Verify{OK: true, IDs: 3, PerBroker: []int{1, 1, 1}}, Rounds: []Round{round(0, 2000, 0), round(1, 2000, 0)}},
			{Name: "haproxy", Verify: &Verify{OK: true, IDs: 3, PerBroker: []int{1, 1, 1}}, Rounds: []Round{round(0, 1000, 1), round(1, 1000, 1)}},
			{Name: "nginx", Verify: &Verify{OK: false, Problems: []string{"broker 2 got no client"}}, Rounds: []Round{round(0, 800, 1), round(1, 800, 1)}},
			{Name: "mqgate", Verify: &Verify{OK: true, IDs: 3, PerBroker: []int{1, 1, 1}}, Rounds: []Round{round(0, 900, 1), round(1, 1100, 1)},
				Idle: &Idle{Wanted: 10, Connected: 10, RSSPerConnKB: 4}},
		},
	}
}

func TestMarkdown(t *testing.T) {
	md := sampleRun().Markdown()
	containsAll(t, md, []string{
		"| CONNECT: connects/s ↑ | 2,000 ±0% | 1,000 ±0% | 800 ±0% | 1,000 ±10% | **0.80** (0.80–0.80) | **1.00** (0.90–1.10) |",
		"nginx ⚠ HASH CHECK FAILED",
		"**FAILED**: broker 2 got no client",
		"| idle: connections held ↑ | n/a | n/a | n/a | 10 | n/a | n/a |",
		"Command: `bash bench/run.sh`",
	})
}

func TestChartIsPNG(t *testing.T) {
	b, err := sampleRun().Chart()
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if img.Bounds().Dx() != chartWidth {
		t.Errorf("chart width %d", img.Bounds().Dx())
	}
}

// TestMarkdownWebSocketRows: the WebSocket rows divide mqgate by NGINX,
// and the other rows leave that column empty.
func TestMarkdownWebSocketRows(t *testing.T) {
	r := sampleRun()
	ws := func(rate float64) map[string]*Phase {
		return map[string]*Phase{PhaseWSConnect: {Load: loadgen.Result{Ops: uint64(rate * 5), PerSec: rate}, ProxyCPU: 1, WindowSeconds: 5}}
	}
	r.Target("nginx").Rounds = []Round{{Index: 0, Phases: ws(500)}, {Index: 1, Phases: ws(500)}}
	r.Target("mqgate").Rounds = []Round{{Index: 0, Phases: ws(400)}, {Index: 1, Phases: ws(600)}}
	r.Target("nginx").WSSIdle = &Idle{Wanted: 10, Connected: 10, RSSPerConnKB: 40}
	r.Target("mqgate").WSSIdle = &Idle{Wanted: 10, Connected: 10, RSSPerConnKB: 10}
	md := r.Markdown()
	containsAll(t, md, []string{
		"| mqgate/nginx |",
		"| WebSocket: upgrade+CONNECT→CONNACK/s ↑ | n/a | n/a | 500 ±0% | 500 ±20% | n/a | n/a | **1.00** (0.80–1.20) |",
		"| WSS idle: proxy RSS per connection (KB) ↓ | — | n/a | 40.00 | 10.00 | n/a | n/a | **0.25** |",
		"| CONNECT: connects/s ↑ | 2,000 ±0% | 1,000 ±0% | n/a | n/a | n/a | n/a | — |",
	})
	if _, err := r.Chart(); err != nil {
		t.Fatal(err)
	}
}

// TestMarkdownKernelSplit: a run that recorded the proxies' system time
// gets a table of CPU per operation in the kernel and in the process; a
// run without it (before 2026-12-02) gets none.
func TestMarkdownKernelSplit(t *testing.T) {
	r := sampleRun()
	if md := r.Markdown(); strings.Contains(md, "kernel and process") {
		t.Errorf("a run without system times has a kernel table:\n%s", md)
	}
	for _, rd := range r.Target("mqgate").Rounds {
		rd.Phases[PhaseConnect].ProxySysCPU = 0.75 // of 1 s, over 4,500 and 5,500 connects: 167 and 136 ms per 1,000
	}
	for _, rd := range r.Target("haproxy").Rounds {
		rd.Phases[PhaseConnect].ProxySysCPU = 0.8 // of 1 s, over 5,000 connects: 160 ms per 1,000
	}
	containsAll(t, r.Markdown(), []string{
		"## The proxy's CPU per operation: kernel and process",
		"| phase: part | haproxy | nginx | mqgate |",
		"| connect, ms per 1,000 connects: in the kernel | 160 | — | 152 |",
		"| connect, ms per 1,000 connects: in the process | 40.0 | — | 50.5 |",
	})
	if md := r.Markdown(); strings.Contains(md, "| throughput-64B, s per million") {
		t.Errorf("a phase the run did not have has a row:\n%s", md)
	}
}
