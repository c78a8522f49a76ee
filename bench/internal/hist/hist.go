// Package hist records durations in a fixed-size log-linear histogram.
//
// A Histogram holds 64 linear sub-buckets per power of two, so every
// recorded value is known to within 1/64 (about 1.6%) of itself, memory is
// fixed (about 20 KB) whatever the number of samples, and histograms kept by
// separate goroutines merge by adding their counts.
//
//	var h hist.Histogram
//	h.Record(time.Since(start))
//	p99 := h.Quantile(0.99)
package hist

import (
	"math/bits"
	"time"
)

const (
	subBits    = 6
	subBuckets = 1 << subBits
	// maxShift bounds recordable values to 2^(maxShift+subBits+1) ns, about 37 minutes.
	maxShift = 35
	nBuckets = (maxShift + 2) * subBuckets
)

// Histogram counts durations. The zero value is empty and ready to use. It is
// not safe for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [nBuckets]uint64
	total  uint64
	max    time.Duration
}

func bucketOf(ns uint64) int {
	if ns < subBuckets {
		return int(ns)
	}
	shift := bits.Len64(ns) - 1 - subBits
	if shift > maxShift {
		return nBuckets - 1
	}
	return (shift+1)<<subBits + int(ns>>uint(shift)) - subBuckets
}

// bucketMid returns the midpoint of bucket i.
func bucketMid(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i)
	}
	shift := i>>subBits - 1
	low := uint64(i%subBuckets+subBuckets) << uint(shift)
	return time.Duration(low + (uint64(1)<<uint(shift))/2)
}

// Record adds one sample. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

// Merge adds the samples of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// Count returns the number of samples recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest sample recorded, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the value below which a fraction q of the samples lie, to
// within the bucket precision. It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if mid := bucketMid(i); mid < h.max {
				return mid
			}
			return h.max
		}
	}
	return h.max
}
