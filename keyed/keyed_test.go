package keyed

import (
	"slices"
	"sync"
	"testing"
)

// TestMap: Get creates once per key, even when many ask at once; Update
// replaces; Prune forgets only what keep refuses.
func TestMap(t *testing.T) {
	t.Parallel()
	var m Map[string, *int]
	var created sync.WaitGroup
	var mu sync.Mutex
	made := 0
	got := make([]*int, 8)
	for i := range got {
		created.Add(1)
		go func() {
			defer created.Done()
			got[i] = m.Get("a", func() *int { mu.Lock(); made++; mu.Unlock(); return new(int) })
		}()
	}
	created.Wait()
	if made != 1 || slices.ContainsFunc(got, func(p *int) bool { return p != got[0] }) {
		t.Fatalf("Get made %d values for one key, want 1 shared", made)
	}
	two := 2
	if v := m.Update("b", func(old *int, ok bool) *int { return &two }); v != &two {
		t.Errorf("Update returned %v", v)
	}
	m.Update("a", func(old *int, ok bool) *int {
		if !ok || old != got[0] {
			t.Errorf("Update saw %v, %v; want the value Get made", old, ok)
		}
		return old
	})
	m.Prune(func(k string, _ *int) bool { return k == "b" })
	if all := m.All(); len(all) != 1 || all[0] != &two {
		t.Errorf("after Prune: %v, want only b", all)
	}
}
