package results

import (
	"path/filepath"
	"testing"
	"time"
)

func spreadFixtures(t *testing.T, names ...string) []SpreadRun {
	t.Helper()
	var runs []SpreadRun
	for _, n := range names {
		f := filepath.Join("testdata", "spread", n)
		r, err := ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, SpreadRun{File: f, Run: r})
	}
	return runs
}

// TestSpread folds three small runs: run1 with two rounds of every kind of
// metric, run2 with one round, a skipped NGINX and a problem, and a QUICK
// run with mqgate alone.
func TestSpread(t *testing.T) {
	md := Spread(spreadFixtures(t, "run1.json", "run2.json", "quick.json"))
	containsAll(t, md, []string{
		"# mqgate benchmark: spread over 3 runs",
		"| 1 | run1.json | 2026-12-01 15:00 UTC | aaaaaaa | `bash bench/run.sh` | 0.10 0.20 0.30 / 1.00 0.50 0.40 | 0.00 / 0.00 | none |",
		// other tenants: 0.5 and 1 core-seconds over two 5 s windows.
		"| 2 | run2.json | 2026-12-01 15:20 UTC | bbbbbbb | `bash bench/run.sh` | 0.05 0.10 0.20 / 0.90 0.40 0.30 | 0.15 / 0.20 | **1**: nginx: hashing check failed |",
		"| 3 | quick.json | 2026-12-01 15:40 UTC | ? | `QUICK=1 bash bench/run.sh` (QUICK: not quotable) | n/a | 0.00 / 0.00 | none |",

		// The targets: per-round ratios 1.2 and 1.4 (median 1.3) meet
		// ≥ 1.2; run 2's one round, 1.1, does not; the QUICK run has no
		// HAProxy and does not count.
		"| CONNECTs/s ≥ 1.2× HAProxy | mqgate/haproxy ≥ 1.20 | 1.30 (1.20–1.40): yes | 1.10 (1,100 vs 1,000): no | n/a | 1.10–1.30 | 1 of 2 |",
		// mqgate's 0.3 s of CPU over 6,000 and 7,000 connects in run 1
		// (50 and 42.9 ms per 1,000) against HAProxy's 100 ms; in run 2
		// 0.5 s over 5,500.
		"| proxy CPU per 1,000 connects ≤ 0.8× HAProxy | mqgate/haproxy ≤ 0.80 | 0.46 (0.43–0.50): yes | 0.91 (90.9 vs 100): no | n/a | 0.46–0.91 | 1 of 2 |",
		// Against no proxy, a base other than HAProxy.
		"| messages/s, 64 B ≥ 0.9× no proxy | mqgate/no-proxy ≥ 0.90 | 0.50 (0.45–0.55): no | n/a | n/a | 0.50–0.50 | 0 of 1 |",
		// Ordering compares the counts: 3 misses against HAProxy's 0
		// (no ratio) fails; 4 against 4 passes.
		"| ordering probe: misses ≤ HAProxy's | mqgate ≤ haproxy | — (3 vs 0): no | 1.00 (4 vs 4): yes | n/a | 1.00–1.00 | 1 of 2 |",
		"| RSS per idle connection ≤ 0.25× HAProxy | mqgate/haproxy ≤ 0.25 | 0.25 (1.00 vs 4.00): yes | 0.20 (0.80 vs 4.00): yes | n/a | 0.20–0.25 | 2 of 2 |",
		// WebSocket targets divide by NGINX; run 2's NGINX was skipped.
		"| WebSocket messages/s ≥ 1.0× NGINX | mqgate/nginx ≥ 1.00 | 1.00 (0.90–1.10): yes | n/a | n/a | 1.00–1.00 | 1 of 1 |",
		"| TLS full handshakes/s ≥ 1.1× HAProxy | mqgate/haproxy ≥ 1.10 | n/a | n/a | n/a | n/a | n/a |",

		// One table per metric, with each ratio column and the target.
		"### CONNECT: connects/s ↑\n\n| run | nginx/haproxy | mqgate/haproxy | mqgate-1/haproxy-1 | #14: mqgate/haproxy ≥ 1.20 |\n|--:|--:|--:|--:|--:|\n" +
			"| 1 | 0.80 (0.80–0.80) | 1.30 (1.20–1.40) | n/a | yes |\n" +
			"| 2 | n/a | 1.10 (1,100 vs 1,000) | n/a | **no** |\n" +
			"| 3 | n/a | n/a | n/a | n/a |\n" +
			"| min–max | 0.80–0.80 | 1.10–1.30 | n/a | met in 1 of 2 |\n",
		"### QoS 0, 64 B: messages/s ↑\n\n| run | nginx/haproxy | mqgate/haproxy | mqgate-1/haproxy-1 | #14: mqgate/haproxy ≥ 1.10 | #14: mqgate/no-proxy ≥ 0.90 |\n",
		// WebSocket rows have the mqgate/nginx column only.
		"### WebSocket, QoS 0, 64 B: messages/s ↑\n\n| run | mqgate/nginx | #14: mqgate/nginx ≥ 1.00 |\n|--:|--:|--:|\n| 1 | 1.00 (0.90–1.10) | yes |\n",
		"### WebSocket: dial→CONNACK p99 (ms) ↓\n\n| run | mqgate/nginx |\n",
	})
}

// TestGoalsNameMetrics: every target of issue #14 names a metric of the
// summary table, so that renaming a row cannot drop its target silently.
func TestGoalsNameMetrics(t *testing.T) {
	have := map[string]bool{}
	for _, m := range metrics() {
		have[m.key()] = true
	}
	for _, g := range goals() {
		if !have[g.metric] {
			t.Errorf("goal %q names no metric %q", g.text, g.metric)
		}
	}
}

// TestWriteHistory: the kept run reads back as it was, under a name that
// sorts by time.
func TestWriteHistory(t *testing.T) {
	dir := t.TempDir()
	r := spreadFixtures(t, "run1.json")[0].Run
	path, err := r.WriteHistory(filepath.Join(dir, "runs"), time.Date(2026, 12, 1, 15, 7, 9, 0, time.FixedZone("CET", 3600)))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "runs", "2026-12-01T14-07-09Z.json"); path != want {
		t.Errorf("kept as %s, want %s", path, want)
	}
	back, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Date != r.Date || len(back.Targets) != len(r.Targets) || back.Target("mqgate").Order.Misses != 3 {
		t.Errorf("read back %+v", back)
	}
}
