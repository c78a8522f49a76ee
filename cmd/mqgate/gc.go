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

// tuneGC applies defaultGCPercent unless the operator set GOGC.
func tuneGC(log *slog.Logger) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(defaultGCPercent)
	log.Debug("garbage collector target", "gogc", defaultGCPercent)
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
const (
	giveBackInterval = 10 * time.Second
	giveBackBurst    = 256
)

// giveBack runs until ctx ends. MQGATE_GIVE_BACK=off turns it off (for
// measuring what it does).
// conns is the number of open client connections.
func giveBack(ctx context.Context, log *slog.Logger, every time.Duration, conns func() int64) {
	if os.Getenv("MQGATE_GIVE_BACK") == "off" {
		return
	}
	samples := []metrics.Sample{{Name: "/sched/goroutines:goroutines"}, {Name: "/memory/classes/heap/objects:bytes"}}
	load := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() + uint64(max(conns(), 0))
	}
	last := load()
	peak := last
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := load()
		peak = max(peak, now)
		calm := now <= last
		last = now
		if !calm || peak < 2*now || peak-now < giveBackBurst {
			continue
		}
		start := time.Now()
		before := samples[1].Value.Uint64()
		// Two collections: the first moves the burst's pooled buffers
		// (sync.Pool) to the victim cache, the second frees them.
		runtime.GC()
		debug.FreeOSMemory()
		metrics.Read(samples)
		log.Info("memory given back after a burst", "load_peak", peak, "load", now,
			"heap_in_use_before", before, "heap_in_use_after", samples[1].Value.Uint64(), "took", time.Since(start).Round(time.Millisecond))
		peak = now
	}
}
