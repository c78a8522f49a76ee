package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// defaultGCPercent is mqgate's garbage-collector target when GOGC is not
// set. Most of a proxy's heap is the long-lived state of idle connections,
// and with Go's default (100) the heap may grow to twice that before a
// collection: 50 holds a connection in about three quarters of the memory,
// for a little more collector work, which per connection is small, because
// what a connection allocates on its way in is small next to what stays
// live.
const defaultGCPercent = 50

// calmGCPercent is the collector's target while the process allocates
// little next to its live heap: an idle fleet between keepalives. The
// collector's work is about what is allocated divided by the target, so a
// low target then costs next to nothing, and it keeps the heap, and RSS,
// near what is live instead of half as much again. Allocating a quarter of
// the live heap per second or more (handshakes, connects, bursts of
// messages) brings defaultGCPercent back within a second.
const calmGCPercent = 20

// busyGCPercent is the target while the process allocates busyFactor
// times its live heap a second or more: a storm of TLS handshakes (tens of
// KB of garbage each) next to a small live heap, where at defaultGCPercent
// the heap goal is the runtime's 2 MB floor and a collection ran every 13
// handshakes (306 collections for 4,000 handshakes, 8 % of the process's
// CPU by gctrace; 121 and 2 % at 100). The heap is then mostly garbage
// whatever the target, so a higher one costs a few MB while it lasts.
const busyGCPercent = 100

// busyFactor: see busyGCPercent.
const busyFactor = 8

// calmAfter is how many one-second checks in a row must allocate little
// before the target drops to calmGCPercent.
const calmAfter = 3

// gcTarget chooses between the three targets from the allocation rate.
type gcTarget struct {
	calm int // checks in a row that allocated little
	set  int // the target set; 0: defaultGCPercent
}

// next takes one second's allocation and the live heap and says which
// target to set when it changes.
func (g *gcTarget) next(allocated, live uint64) (percent int, change bool) {
	want := defaultGCPercent
	switch {
	case allocated >= busyFactor*live:
		g.calm = 0
		want = busyGCPercent
	case 4*allocated >= live:
		g.calm = 0
	default:
		g.calm++
		if g.calm < calmAfter && g.set != calmGCPercent {
			want = g.current()
		} else {
			want = calmGCPercent
		}
	}
	if want == g.current() {
		return 0, false
	}
	g.set = want
	return want, true
}

func (g *gcTarget) current() int {
	if g.set == 0 {
		return defaultGCPercent
	}
	return g.set
}

// tuneGC applies defaultGCPercent unless the operator set GOGC, and
// reports whether mqgate chooses the target (then giveBack moves it
// between defaultGCPercent and calmGCPercent).
func tuneGC(log *slog.Logger) bool {
	if _, set := os.LookupEnv("GOGC"); set {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	log.Debug("garbage collector target", "gogc", defaultGCPercent)
	return true
}

// How memory left over from a burst (a flood, a reconnect storm) is given
// back. The runtime returns free pages on its own (the scavenger), but the
// burst's garbage stays in use until the next collection, and the next
// collection waits for the heap to reach a goal set by the burst's own live
// heap, which an idle proxy takes minutes to allocate: a minute after a
// flood of 2 × 9,500 connections RSS was still 53 MB (16.8 MB before), with
// 22-25 MB of heap in use, most of it garbage. So every giveBackInterval,
// when the load (goroutines: one per connection before its CONNECT and per
// goroutine-piped connection; plus the open connections, which in the
// event loops have none) has fallen to half its peak since the last time,
// by at least giveBackBurst, and is not growing, the process
// collects twice and returns the free memory at once (debug.FreeOSMemory):
// once per burst, never at steady state.
//
// A ramp (a fleet connecting, a reconnect storm after a restart) leaves the
// same garbage behind while the load stays up: the handshakes' garbage
// (tens of KB per TLS handshake) sits in use until the heap reaches a goal
// set by the new fleet, and an idle fleet allocates little: RSS stayed at
// about 1.5 times the live heap. So, checked every rampCheck, once the load
// has risen by giveBackBurst and by a quarter since the last give-back, and
// then not grown for rampSettle, memory is given back the same way: a
// growing fleet pays one collection per quarter it grows. Half a second
// after the ramp, not two or three: 9,000 idle connections on the event
// loops held 1.3 times their live heap in RSS (dataplane-meter, a second
// after the ramp) until then. A ramp that pauses for that long gives back
// early, which costs a collection of a heap that small (about 10 ms of
// CPU for 9,000 connections), and the next needs a quarter more load.
const (
	giveBackInterval = 10 * time.Second
	giveBackBurst    = 256
	rampCheck        = 250 * time.Millisecond
	rampSettle       = 500 * time.Millisecond
	rampJitter       = 16          // goroutines that come and go under steady traffic
	tuneEvery        = time.Second // how often gcTarget looks at the allocation rate
)

// giveBack runs until ctx ends. MQGATE_GIVE_BACK=off turns it off (for
// measuring what it does).
// conns is the number of open client connections; moving, the number of
// them waiting to move into the event loops (TLS pairs parked until they
// have stayed: proxy's tlsLoopAfter), whose parked state is garbage once they have
// moved: while they move at more than rampJitter per check, a ramp has
// not settled.
// With tune, it also moves the collector's target with the allocation
// rate (gcTarget).
func giveBack(ctx context.Context, log *slog.Logger, every time.Duration, conns, moving func() int64, tune bool) {
	if os.Getenv("MQGATE_GIVE_BACK") == "off" {
		return
	}
	samples := []metrics.Sample{{Name: "/sched/goroutines:goroutines"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}}
	load := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() + uint64(max(conns(), 0))
	}
	last := load()
	peak := last
	var r ramp
	r.reset(last)
	waiting := moving()
	tick := time.NewTicker(min(every, rampCheck))
	defer tick.Stop()
	nextBurst := time.Now().Add(every)
	var target gcTarget
	allocs := samples[2].Value.Uint64()
	nextTune := time.Now().Add(tuneEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := load()
		if a := samples[2].Value.Uint64(); tune && !time.Now().Before(nextTune) {
			nextTune = time.Now().Add(tuneEvery)
			if pct, change := target.next(a-allocs, samples[3].Value.Uint64()); change {
				debug.SetGCPercent(pct)
				log.Debug("garbage collector target", "gogc", pct)
			}
			allocs = a
		}
		if w := moving(); w+rampJitter < waiting {
			r.moved(time.Now())
			waiting = w
		} else if w > waiting {
			waiting = w
		}
		why := ""
		if r.settled(now, time.Now()) {
			why = "ramp"
		}
		if t := time.Now(); !t.Before(nextBurst) {
			nextBurst = t.Add(every)
			peak = max(peak, now)
			calm := now <= last
			last = now
			if calm && peak >= 2*now && peak-now >= giveBackBurst {
				why = "burst"
			}
		}
		if why == "" {
			continue
		}
		start := time.Now()
		before := samples[1].Value.Uint64()
		// Two collections: the first moves the burst's pooled buffers
		// (sync.Pool) to the victim cache, the second frees them.
		runtime.GC()
		debug.FreeOSMemory()
		metrics.Read(samples)
		log.Info("memory given back after a "+why, "load_peak", peak, "load", now,
			"heap_in_use_before", before, "heap_in_use_after", samples[1].Value.Uint64(), "took", time.Since(start).Round(time.Millisecond))
		peak, last = now, now
		r.reset(now)
	}
}

// ramp follows the load between give-backs: it has settled after a rise
// when it rose by giveBackBurst and a quarter above base, then did not
// grow for rampSettle.
type ramp struct {
	base, high uint64    // the load after the last give-back; the highest since
	since      time.Time // when the load last grew past high
}

func (r *ramp) reset(load uint64) { *r = ramp{base: load, high: load} }

// moved is told that connections moved into the event loops since the last
// check, as the tail of a ramp: it has not settled yet.
func (r *ramp) moved(now time.Time) {
	if !r.since.IsZero() {
		r.since = now
	}
}

func (r *ramp) settled(load uint64, now time.Time) bool {
	switch {
	case load > r.high+rampJitter:
		r.high, r.since = load, now
		return false
	case load > r.high:
		r.high = load // a drain's goroutine more: not growth
	}
	rose := r.high >= r.base+giveBackBurst && 4*r.high >= 5*r.base
	return rose && !r.since.IsZero() && now.Sub(r.since) >= rampSettle && 4*load >= 3*r.high
}
