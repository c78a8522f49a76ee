// Package limit holds the bookkeeping of connection limits: concurrent
// connections per key ([Counter]), a global cap ([Slots]), new connections
// per second per key as token buckets ([Rate]) and CIDR lists ([Prefixes]).
// It decides; the proxy refuses.
//
//	perClient := limit.NewCounter(5)
//	if !perClient.Acquire(clientID) {
//		refuse(mqtt.QuotaExceeded)
//	}
//	defer perClient.Release(clientID)
//
//	rate := limit.NewRate(100, 50) // 100/s, 51 at once
//	if !rate.Allow(remoteAddr) {
//		refuse(mqtt.ConnectionRateExceeded)
//	}
package limit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Counter counts concurrent holders per key and caps them. Keys with no
// holder are forgotten, so its size follows the live connections.
type Counter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// NewCounter returns a Counter allowing max holders per key.
func NewCounter(max int) *Counter {
	return &Counter{max: max, n: make(map[string]int)}
}

// Acquire takes a place for key and reports whether one was free. Every
// true Acquire needs one Release.
func (c *Counter) Acquire(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

// Release gives back a place taken by Acquire.
func (c *Counter) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key)
		return
	}
	c.n[key]--
}

// Count returns the holders of key now.
func (c *Counter) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// Slots is one global cap whose size may change while slots are held (a
// reload), lock-free.
type Slots struct {
	n atomic.Int64
}

// Acquire takes a slot when fewer than max are taken (max 0: no cap) and
// reports whether it did.
func (s *Slots) Acquire(max int) bool {
	if s.n.Add(1) > int64(max) && max > 0 {
		s.n.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot taken by Acquire.
func (s *Slots) Release() { s.n.Add(-1) }

// InUse returns the slots taken now.
func (s *Slots) InUse() int { return int(s.n.Load()) }

// maxBuckets bounds the keys a Rate remembers. Past it, full buckets (keys
// idle long enough to have refilled) are dropped; a key that is dropped
// starts full, so forgetting it changes nothing.
const maxBuckets = 1 << 16

// Rate is a token bucket per key: it holds up to 1 + burst tokens, gains
// rate tokens per second, and each allowed event takes one.
type Rate struct {
	rate     float64 // tokens per second
	capacity float64
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewRate returns a Rate of rate events per second with burst more at once.
func NewRate(rate float64, burst int) *Rate {
	return &Rate{rate: rate, capacity: 1 + float64(burst), now: time.Now, buckets: make(map[string]*bucket)}
}

// Allow takes a token for key and reports whether there was one.
func (r *Rate) Allow(key string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= maxBuckets {
			r.sweep(now)
		}
		b = &bucket{tokens: r.capacity, last: now}
		r.buckets[key] = b
	}
	b.tokens = min(r.capacity, b.tokens+now.Sub(b.last).Seconds()*r.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops the buckets that have refilled. r.mu is held.
func (r *Rate) sweep(now time.Time) {
	for k, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.capacity {
			delete(r.buckets, k)
		}
	}
}

// Keys returns how many keys the Rate remembers.
func (r *Rate) Keys() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

// Prefixes is a list of IP prefixes; IPv4-mapped IPv6 addresses match
// their IPv4 prefixes.
type Prefixes []netip.Prefix

// Contains reports whether a is in one of the prefixes.
func (ps Prefixes) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
