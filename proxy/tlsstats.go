package proxy

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// tlsCounts are the TLS handshakes of one listener.
type tlsCounts struct {
	ok, failed atomic.Uint64
	nanos      atomic.Uint64 // of successful handshakes
	buckets    dialHistogram // successful handshakes' durations, in DialBuckets
}

func (c *tlsCounts) observe(d time.Duration, err error) {
	if err != nil {
		c.failed.Add(1)
		return
	}
	c.ok.Add(1)
	c.nanos.Add(uint64(d))
	c.buckets.observe(d)
}

// tlsRegistry hands out the counts of a listener by configured address;
// they outlive reloads.
type tlsRegistry struct {
	mu        sync.Mutex
	listeners map[string]*tlsCounts
}

func (r *tlsRegistry) get(addr string) *tlsCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.listeners[addr]
	if !ok {
		if r.listeners == nil {
			r.listeners = make(map[string]*tlsCounts)
		}
		c = &tlsCounts{}
		r.listeners[addr] = c
	}
	return c
}

// TLSHandshakeStats are one TLS listener's handshakes since the start.
type TLSHandshakeStats struct {
	Listener   string // as configured
	OK, Failed uint64
	SumSeconds float64  // of the successful ones
	Counts     []uint64 // successful ones by DialBuckets, the last beyond them
}

func (r *tlsRegistry) snapshot() []TLSHandshakeStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TLSHandshakeStats, 0, len(r.listeners))
	for addr, c := range r.listeners {
		st := TLSHandshakeStats{Listener: addr, OK: c.ok.Load(), Failed: c.failed.Load(), SumSeconds: time.Duration(c.nanos.Load()).Seconds()}
		for i := range c.buckets.counts {
			st.Counts = append(st.Counts, c.buckets.counts[i].Load())
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b TLSHandshakeStats) int {
		if a.Listener < b.Listener {
			return -1
		}
		if a.Listener > b.Listener {
			return 1
		}
		return 0
	})
	return out
}
