package main

import (
	"testing"
	"time"
)

// TestRampSettles: memory is given back once a ramp has risen by
// giveBackBurst and a quarter, then stayed flat (within rampJitter) for
// rampSettle; not while it still grows, not after a small rise, and not
// twice for one ramp.
func TestRampSettles(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * rampCheck) }
	if rampSettle != 2*rampCheck {
		t.Fatalf("the cases below count rampSettle as two checks: it is %v, a check %v", rampSettle, rampCheck)
	}
	for _, tc := range []struct {
		name  string
		loads []uint64 // one a check from t0
		want  int      // the check at which it settles, -1 never
	}{
		{"ramp then flat", []uint64{10, 2000, 4000, 4000, 4003, 4001}, 4},
		{"still growing", []uint64{10, 2000, 4000, 6000, 8000, 10000}, -1},
		{"small rise", []uint64{10, 200, 200, 200, 200}, -1},
		{"less than a quarter", []uint64{4000, 4300, 4300, 4300, 4300}, -1},
		{"slow end within jitter", []uint64{10, 4000, 4010, 4020, 4030}, 3},
		{"fell away", []uint64{10, 4000, 4000, 100, 100}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r ramp
			r.reset(tc.loads[0])
			got := -1
			for s, l := range tc.loads[1:] {
				if r.settled(l, at(s+1)) && got < 0 {
					got = s + 1
					r.reset(l)
				}
			}
			if got != tc.want {
				t.Errorf("settled at check %d, want %d", got, tc.want)
			}
		})
	}
}

// TestGCTarget: the target drops to calmGCPercent after calmAfter seconds
// that each allocated under a quarter of the live heap, is back at
// defaultGCPercent at the first second that allocated more, and at
// busyGCPercent while a second allocates busyFactor times the live heap.
func TestGCTarget(t *testing.T) {
	const live = 100 << 20
	var g gcTarget
	steps := []struct {
		allocated uint64
		want      int // 0: no change
	}{
		{1 << 20, 0}, {1 << 20, 0}, {1 << 20, calmGCPercent}, // an idle fleet's keepalives
		{1 << 20, 0},
		{live / 4, defaultGCPercent}, // handshakes
		{live, 0},
		{0, 0}, {0, 0}, {0, calmGCPercent},
		{busyFactor * live, busyGCPercent}, // a handshake storm on a small heap
		{busyFactor * live, 0},
		{live, defaultGCPercent},
		{1 << 20, 0}, {busyFactor * live, busyGCPercent}, // calm seconds count again from 0
		{1 << 20, 0}, {1 << 20, 0}, {1 << 20, calmGCPercent},
	}
	for i, s := range steps {
		pct, change := g.next(s.allocated, live)
		if !change {
			pct = 0
		}
		if pct != s.want {
			t.Errorf("second %d (%d bytes): target %d, want %d", i+1, s.allocated, pct, s.want)
		}
	}
}
