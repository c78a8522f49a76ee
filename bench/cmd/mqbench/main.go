// Command mqbench benchmarks mqgate against HAProxy, NGINX and no proxy at
// all, with three Mosquitto brokers behind them, everything on 127.0.0.1.
//
// Usage:
//
//	mqbench run [-quick] [-rounds N] [-targets no-proxy,haproxy,nginx,mqgate] [-out DIR]
//	mqbench report [-in DIR/latest.json] [-out DIR]
//	mqbench spread [-o FILE] RUN.json...
//	mqbench load -phase connect|throughput|latency|idle -addrs HOST:PORT[,...] ...
//	mqbench broker -tcp HOST:PORT -ws HOST:PORT
//
// "run" is the whole benchmark (bench/run.sh calls it after installing what
// it needs); it writes latest.json, latest.md and latest.png and exits 2 when
// a target failed its hashing check or a phase failed. "report" redraws the
// markdown and the chart from a latest.json. "spread" folds the JSON of N
// runs (run keeps each one as DIR/runs/<time>.json beside latest.json) into
// one markdown table per metric: each run's ratios to HAProxy (to NGINX
// for the WebSocket rows), their min–max, and whether issue #14's target
// was met in each run. "load" is one load generator
// process; "run" starts it as needed. "broker" is the mochi-mqtt broker of
// the WebSocket phases (package broker), which "run" starts too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/bench/internal/broker"
	"github.com/mqgate/mqgate/bench/internal/harness"
	"github.com/mqgate/mqgate/bench/internal/loadgen"
	"github.com/mqgate/mqgate/bench/internal/results"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "mqbench:", err)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	case "spread":
		err = spreadCmd(os.Args[2:])
	case "load":
		err = loadCmd(os.Args[2:])
	case "broker":
		err = brokerCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqbench:", err)
		var pe problemsError
		if errors.As(err, &pe) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mqbench run|report|spread|load|broker [flags]; mqbench CMD -h for the flags")
	os.Exit(2)
}

// raiseFileLimit sets the soft open files limit to the hard one; every
// process the benchmark starts inherits it.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading the open files limit: %w", err)
	}
	if lim.Cur == lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising the open files limit: %w", err)
	}
	return nil
}

// problemsError is a run that finished with problems to report.
type problemsError []string

func (p problemsError) Error() string {
	return fmt.Sprintf("%d problem(s):\n  %s", len(p), strings.Join(p, "\n  "))
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	repo := fs.String("repo", ".", "mqgate module root (builds ./cmd/mqgate)")
	work := fs.String("work", "", "scratch directory for configs and logs (default: a new temporary one)")
	out := fs.String("out", "bench/results", "where latest.{json,md,png} go, and runs/<time>.json")
	quick := fs.Bool("quick", false, "phases of a few seconds: a smoke test")
	rounds := fs.Int("rounds", 0, "repeats of the short phases (default 3, quick 1)")
	targets := fs.String("targets", strings.Join(harness.AllTargets(), ","), "targets to measure, in report order")
	mqgateBin := fs.String("mqgate-bin", "", "a prebuilt mqgate binary (default: go build ./cmd/mqgate)")
	phases := fs.String("phases", strings.Join(harness.AllPhases(), ","), "phases to run")
	command := fs.String("command", "", "the command line to print in the report (default: this one)")
	_ = fs.Parse(args)

	if *work == "" {
		dir, err := os.MkdirTemp("", "mqbench-")
		if err != nil {
			return fmt.Errorf("creating work directory: %w", err)
		}
		defer os.RemoveAll(dir)
		*work = dir
	}
	if *command == "" {
		*command = strings.Join(os.Args, " ")
	}
	names := splitList(*targets)
	repoAbs, err := filepath.Abs(*repo)
	if err != nil {
		return fmt.Errorf("resolving -repo: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run, runErr := harness.Run(ctx, harness.Options{
		Repo:      repoAbs,
		Work:      *work,
		Command:   *command,
		Quick:     *quick,
		Rounds:    *rounds,
		Targets:   names,
		MqgateBin: *mqgateBin,
		Phases:    splitList(*phases),
		Progress:  os.Stderr,
	})
	if run != nil && len(run.Targets) > 0 {
		if err := run.WriteFiles(*out); err != nil {
			return errors.Join(runErr, err)
		}
		kept, err := run.WriteHistory(filepath.Join(*out, "runs"), time.Now())
		if err != nil {
			return errors.Join(runErr, err)
		}
		fmt.Fprintf(os.Stderr, "results in %s/latest.{md,json,png} and %s\n", *out, kept)
	}
	if runErr != nil {
		return runErr
	}
	if len(run.Problems) > 0 {
		return problemsError(run.Problems)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "bench/results/latest.json", "results to render")
	out := fs.String("out", "bench/results", "where latest.{json,md,png} go")
	_ = fs.Parse(args)
	run, err := results.ReadFile(*in)
	if err != nil {
		return err
	}
	return run.WriteFiles(*out)
}

func spreadCmd(args []string) error {
	fs := flag.NewFlagSet("spread", flag.ExitOnError)
	out := fs.String("o", "", "write the markdown here (default: standard output)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mqbench spread [-o FILE] RUN.json... (e.g. bench/results/runs/*.json)")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("spread: no runs given")
	}
	var runs []results.SpreadRun
	for _, f := range fs.Args() {
		run, err := results.ReadFile(f)
		if err != nil {
			return err
		}
		runs = append(runs, results.SpreadRun{File: f, Run: run})
	}
	md := results.Spread(runs)
	if *out == "" {
		_, err := os.Stdout.WriteString(md)
		return err
	}
	if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	return nil
}

func loadCmd(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	var cfg loadgen.Config
	loadgen.RegisterFlags(fs, &cfg)
	_ = fs.Parse(args)
	return loadgen.Main(cfg)
}

func brokerCmd(args []string) error {
	fs := flag.NewFlagSet("broker", flag.ExitOnError)
	tcpAddr := fs.String("tcp", "127.0.0.1:1884", "plain MQTT listener")
	wsAddr := fs.String("ws", "127.0.0.1:8083", "MQTT over WebSocket listener")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.Start(*tcpAddr, *wsAddr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return b.Close()
}
