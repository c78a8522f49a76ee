// Package keyed keeps values by key across configuration snapshots: a
// snapshot gets or creates what it uses, and after a reload Prune forgets
// what nothing uses any more. The proxy keeps its node and route counters,
// TLS handshake counts and compiled plugins in one, the health checker its
// nodes' health.
//
//	var nodes keyed.Map[string, *counter]
//	c := nodes.Get("10.0.0.1:1883", func() *counter { return new(counter) })
//	nodes.Prune(func(addr string, c *counter) bool { return inUse[addr] })
//
// Holders keep the values they got, so a Map is read when a snapshot is
// built and for status, not per connection.
package keyed

import "sync"

// Map is a set of values by key, safe for concurrent use. The zero Map is
// empty and ready.
type Map[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

// Get returns the value for k, made by create when there is none.
func (r *Map[K, V]) Get(k K, create func() V) V {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[k]
	if !ok {
		if r.m == nil {
			r.m = make(map[K]V)
		}
		v = create()
		r.m[k] = v
	}
	return v
}

// Update sets the value for k to what f makes of the current one (ok
// false when there is none), and returns it.
func (r *Map[K, V]) Update(k K, f func(old V, ok bool) V) V {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[K]V)
	}
	old, ok := r.m[k]
	v := f(old, ok)
	r.m[k] = v
	return v
}

// Prune forgets the values keep reports false for.
func (r *Map[K, V]) Prune(keep func(K, V) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.m {
		if !keep(k, v) {
			delete(r.m, k)
		}
	}
}

// All returns every value, in no order.
func (r *Map[K, V]) All() []V {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]V, 0, len(r.m))
	for _, v := range r.m {
		out = append(out, v)
	}
	return out
}
