package main

import (
	"log/slog"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile to the file named by MQGATE_CPUPROFILE,
// when set, until the returned function runs (at shutdown): how the
// benchmark's figures are taken apart with `go tool pprof`.
func startCPUProfile(log *slog.Logger) (stop func()) {
	path := os.Getenv("MQGATE_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		log.Warn("CPU profile not started", "err", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		log.Warn("CPU profile not started", "err", err)
		return func() {}
	}
	log.Info("writing a CPU profile", "file", path)
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
