package main

import (
	"log/slog"
	"os"
	"runtime/debug"
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
