package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestQuantileWithinPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	samples := make([]time.Duration, 0, 100000)
	for range 100000 {
		// Log-uniform between 1 µs and 1 s.
		d := time.Duration(float64(time.Microsecond) * math.Pow(10, rng.Float64()*6))
		samples = append(samples, d)
		h.Record(d)
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := samples[int(q*float64(len(samples)))-1]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.02 || diff < -0.02 {
			t.Errorf("Quantile(%v) = %v, want %v within 2%%", q, got, want)
		}
	}
	if h.Max() != samples[len(samples)-1] {
		t.Errorf("Max() = %v, want %v", h.Max(), samples[len(samples)-1])
	}
}

func TestMergeAndEdges(t *testing.T) {
	var a, b Histogram
	if a.Quantile(0.5) != 0 {
		t.Fatal("empty histogram must report 0")
	}
	a.Record(-time.Second)
	a.Record(10)
	b.Record(time.Hour * 2) // beyond the range: lands in the last bucket
	a.Merge(&b)
	if a.Count() != 3 {
		t.Fatalf("Count() = %d, want 3", a.Count())
	}
	if got := a.Quantile(0); got != 0 {
		t.Errorf("Quantile(0) = %v, want 0", got)
	}
	if got := a.Quantile(0.5); got != 10 {
		t.Errorf("Quantile(0.5) = %v, want 10ns", got)
	}
	if got := a.Quantile(1); got > 2*time.Hour || got < time.Hour/2 {
		t.Errorf("Quantile(1) = %v, want about the recorded maximum", got)
	}
}
