package proxy

import "sync"

// registry keeps values by key across snapshots: node and route counters,
// TLS handshake counts, compiled plugins. A snapshot gets or creates what
// it uses; after a reload, prune forgets what nothing uses any more.
// Connections hold their values directly, so the registry is read only
// when a snapshot is built and for status, never per connection.
type registry[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

// get returns the value for k, made by create when there is none.
func (r *registry[K, V]) get(k K, create func() V) V {
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

// update sets the value for k to what f makes of the current one (ok
// false when there is none), and returns it.
func (r *registry[K, V]) update(k K, f func(old V, ok bool) V) V {
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

// prune forgets the values keep reports false for.
func (r *registry[K, V]) prune(keep func(K, V) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.m {
		if !keep(k, v) {
			delete(r.m, k)
		}
	}
}

// all returns every value, in no order.
func (r *registry[K, V]) all() []V {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]V, 0, len(r.m))
	for _, v := range r.m {
		out = append(out, v)
	}
	return out
}
