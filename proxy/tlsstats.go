package proxy

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// tlsCounts are the TLS handshakes of one listener.
type tlsCounts struct {
	addr       configuredAddr
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

func newTLSCounts(addr string) func() *tlsCounts {
	return func() *tlsCounts {
		c := &tlsCounts{}
		c.addr.set(addr)
		return c
	}
}

// TLSHandshakeStats are one TLS listener's handshakes since the start.
type TLSHandshakeStats struct {
	Listener   string // as configured
	OK, Failed uint64
	SumSeconds float64  // of the successful ones
	Counts     []uint64 // successful ones by DialBuckets, the last beyond them
}

// tlsSnapshot copies the counts of listeners that had a handshake.
func tlsSnapshot(all []*tlsCounts) []TLSHandshakeStats {
	out := make([]TLSHandshakeStats, 0, len(all))
	for _, c := range all {
		st := TLSHandshakeStats{Listener: c.addr.get(), OK: c.ok.Load(), Failed: c.failed.Load(), SumSeconds: time.Duration(c.nanos.Load()).Seconds()}
		if st.OK == 0 && st.Failed == 0 {
			continue // a plain listener, or a TLS one not used yet
		}
		for i := range c.buckets.counts {
			st.Counts = append(st.Counts, c.buckets.counts[i].Load())
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b TLSHandshakeStats) int { return strings.Compare(a.Listener, b.Listener) })
	return out
}
