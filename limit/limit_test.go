package limit

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	t.Parallel()
	c := NewCounter(2)
	if !c.Acquire("a") || !c.Acquire("a") {
		t.Fatal("first two refused")
	}
	if c.Acquire("a") {
		t.Fatal("third allowed")
	}
	if !c.Acquire("b") {
		t.Fatal("other key refused")
	}
	c.Release("a")
	if !c.Acquire("a") {
		t.Fatal("refused after a release")
	}
	c.Release("a")
	c.Release("a")
	c.Release("b")
	if len(c.n) != 0 {
		t.Errorf("keys left: %v", c.n)
	}
}

// TestCounterConcurrent: under contention the cap holds exactly.
func TestCounterConcurrent(t *testing.T) {
	t.Parallel()
	c := NewCounter(10)
	var s Slots
	var wg sync.WaitGroup
	var mu sync.Mutex
	got, gotSlots := 0, 0
	for range 100 {
		wg.Go(func() {
			ok, okSlot := c.Acquire("k"), s.Acquire(10)
			mu.Lock()
			if ok {
				got++
			}
			if okSlot {
				gotSlots++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if got != 10 || gotSlots != 10 || s.InUse() != 10 {
		t.Errorf("acquired %d per key and %d slots (in use %d), want 10 each", got, gotSlots, s.InUse())
	}
}

func TestRate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	r := NewRate(10, 2) // 3 at once, then one per 100ms
	r.now = func() time.Time { return now }
	for i := range 3 {
		if !r.Allow("a") {
			t.Fatalf("burst event %d refused", i)
		}
	}
	if r.Allow("a") {
		t.Fatal("4th event at once allowed")
	}
	if !r.Allow("b") {
		t.Fatal("other key refused")
	}
	now = now.Add(99 * time.Millisecond)
	if r.Allow("a") {
		t.Fatal("allowed before a token refilled")
	}
	now = now.Add(2 * time.Millisecond)
	if !r.Allow("a") {
		t.Fatal("refused after 100ms")
	}
	now = now.Add(time.Hour)
	allowed := 0
	for range 10 {
		if r.Allow("a") {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("after an hour idle %d allowed at once, want capacity 3", allowed)
	}
}

// TestRateForgets: the keys remembered stay bounded; idle keys are dropped.
func TestRateForgets(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	r := NewRate(1000, 0)
	r.now = func() time.Time { return now }
	for i := range maxBuckets {
		r.Allow(fmt.Sprint(i))
	}
	now = now.Add(time.Second)
	r.Allow("new")
	if got := r.Keys(); got != 1 {
		t.Errorf("%d keys remembered after the sweep, want 1", got)
	}
}

func TestPrefixes(t *testing.T) {
	t.Parallel()
	ps := Prefixes{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "11.0.0.1": false, "2001:db8::1": true, "2001:db9::1": false,
	} {
		if got := ps.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
}
