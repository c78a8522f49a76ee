// Package harness runs the benchmark: it starts three Mosquitto brokers and
// the proxies under test on 127.0.0.1, checks from the brokers' own logs that
// each proxy hashes by MQTT client id, drives the load generator through the
// phases (CONNECT rate, QoS 0 throughput at 64 B and 1 KB, low-rate latency,
// idle connections), measures the proxies' CPU and memory from /proc, and
// stops everything it started, by pid.
//
//	run, err := harness.Run(ctx, harness.Options{Repo: ".", Work: tmp, Rounds: 3})
//	if err == nil { err = run.WriteFiles("bench/results") }
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/bench/internal/loadgen"
	"github.com/mqgate/mqgate/bench/internal/results"
)

// Options configure one run.
type Options struct {
	Repo      string   // module root, to build ./cmd/mqgate
	Work      string   // scratch directory: configs, logs, binaries
	Command   string   // how the run was invoked, for the report
	Quick     bool     // phases of a few seconds, for smoke tests
	Rounds    int      // 0: the plan's default
	Targets   []string // nil: all
	MqgateBin string   // a prebuilt mqgate; empty: build it from Repo
	// Phases limits the run to some of AllPhases; nil: all of them.
	Phases   []string
	Progress io.Writer
}

// DefaultPlan sizes the phases so that a full run of the four targets takes
// about six minutes, and a quick one well under a minute. nofile is the
// per-process open files limit: idle clients fill it on the proxy, two
// descriptors per proxied connection.
func DefaultPlan(quick bool, nofile uint64) results.Plan {
	idle := int(min(nofile, 1<<20)-200) / 2
	idle -= idle % 3
	p := results.Plan{
		Rounds:            3,
		WarmupSeconds:     1,
		WindowSeconds:     5,
		ConnectWorkers:    16,
		ThroughputClients: 48,
		ThroughputWindow:  16,
		LatencyRate:       200,
		// 8 clients at 200 msg/s each: 9,600 round trips in the 6 s, so
		// that p99 is the 96th slowest, not the 12th of one client's
		// 1,200 (p99 then moved 0.76-1.99x HAProxy between runs).
		LatencyClients:    8,
		LatencySeconds:    6,
		IdleClients:       idle,
		IdleProcs:         3,
		IdleSettleSeconds: 2,
		IdleHoldSeconds:   8,
		IdlePingSeconds:   5,
		VerifyIDs:         150,
		OrderRounds:       60,
		TLSIdleClients:    min(idle, 3999),
		// The WebSocket phases are shorter, to add about two minutes.
		WSWindowSeconds: 3,
		WSIdleClients:   min(idle, 3000),
	}
	if quick {
		p.Rounds = 1
		p.WarmupSeconds = 0.5
		p.WindowSeconds = 2
		p.LatencySeconds = 2
		p.IdleClients = min(idle, 900)
		p.IdleSettleSeconds = 1
		p.IdleHoldSeconds = 2
		p.IdlePingSeconds = 1
		p.VerifyIDs = 60
		p.TLSIdleClients = min(idle, 600)
		p.WSIdleClients = min(idle, 600)
		p.WSWindowSeconds = p.WindowSeconds
	}
	return p
}

// AllPhases lists the phases a run can be limited to.
func AllPhases() []string {
	return []string{PhaseOrder, results.PhaseConnect, results.PhaseThroughput64, results.PhaseThroughput1K, results.PhaseLatency,
		results.PhaseTLSConnect, results.PhaseTLSResume, results.PhaseTLSThroughput64,
		results.PhaseWSConnect, results.PhaseWSThroughput64, results.PhaseWSSConnect, results.PhaseWSSThroughput64,
		PhaseIdle, PhaseTLSIdle, PhaseWSIdle, PhaseWSSIdle}
}

// PhaseOrder is the cross-connection ordering probe, run once per target
// before the rounds.
const PhaseOrder = "order"

// PhaseIdle is the idle-connections phase, run once per target after the
// rounds; PhaseTLSIdle the same over TLS, with fewer clients, and
// PhaseWSIdle and PhaseWSSIdle over WebSocket (NGINX and mqgate only).
const (
	PhaseIdle    = "idle"
	PhaseTLSIdle = "tls-idle"
	PhaseWSIdle  = "ws-idle"
	PhaseWSSIdle = "wss-idle"
)

// wsPath is where both proxies take MQTT over WebSocket, as in seed 004.
const wsPath = "/mqtt"

// wsPhases are the phases that need the WebSocket broker.
var wsPhases = []string{results.PhaseWSConnect, results.PhaseWSThroughput64, results.PhaseWSSConnect, results.PhaseWSSThroughput64, PhaseWSIdle, PhaseWSSIdle}

func (r *runner) wants(phase string) bool {
	return r.opts.Phases == nil || slices.Contains(r.opts.Phases, phase)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// runner is the state of one Run.
type runner struct {
	opts    Options
	plan    results.Plan
	self    string // this executable, run as "load" for the load generator
	brokers *brokers
	// wsBroker is the mochi-mqtt broker of the WebSocket phases (package
	// broker), nil when none runs; wsBrokerTCP and wsBrokerWS its listeners.
	wsBroker                *process
	wsBrokerTCP, wsBrokerWS string
	certs                   tlsFiles
	targets                 []*target
	out                     *results.Run
	started                 time.Time
}

func (r *runner) logf(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, "[%5.0fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
	}
}

// problem records a failure for the report and the exit status.
func (r *runner) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.out.Problems = append(r.out.Problems, msg)
	r.logf("PROBLEM: %s", msg)
}

// Run runs the whole benchmark. It returns the results even when some
// targets failed or were skipped; err is for runs that could not happen.
func Run(ctx context.Context, opts Options) (*results.Run, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the load generator: %w", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("reading the open files limit: %w", err)
	}
	if opts.Targets == nil {
		opts.Targets = AllTargets()
	}
	plan := DefaultPlan(opts.Quick, lim.Cur)
	if opts.Rounds > 0 {
		plan.Rounds = opts.Rounds
	}
	r := &runner{
		opts:    opts,
		plan:    plan,
		self:    self,
		started: time.Now(),
		out: &results.Run{
			Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
			Command: opts.Command,
			Quick:   opts.Quick,
			Plan:    plan,
			Machine: describeMachine(lim.Cur),
		},
	}
	r.out.Versions = versions(opts.Repo)
	defer r.stopAll()

	if err := r.setup(ctx); err != nil {
		return r.out, err
	}
	r.verifyAll()
	if err := r.restartBrokersQuiet(); err != nil {
		return r.out, err
	}
	measured := r.measurable()
	if r.wants(PhaseOrder) {
		r.orderAll(measured)
	}
	for round := range plan.Rounds {
		for i := range measured {
			t := measured[(i+round)%len(measured)]
			if ctx.Err() != nil {
				return r.out, ctx.Err()
			}
			if t.skip != "" {
				continue
			}
			r.runRound(ctx, t, round)
		}
	}
	for _, t := range measured {
		if ctx.Err() != nil {
			return r.out, ctx.Err()
		}
		if r.wants(PhaseIdle) && t.skip == "" {
			r.result(t).Idle = r.runIdle(ctx, t, overTCP)
		}
		if r.wants(PhaseTLSIdle) && t.skip == "" && t.tlsAddrs != nil {
			r.result(t).TLSIdle = r.runIdle(ctx, t, overTLS)
		}
		if r.wants(PhaseWSIdle) && t.skip == "" && t.wsAddrs != nil {
			r.result(t).WSIdle = r.runIdle(ctx, t, overWS)
		}
		if r.wants(PhaseWSSIdle) && t.skip == "" && t.wssAddrs != nil {
			r.result(t).WSSIdle = r.runIdle(ctx, t, overWSS)
		}
	}
	r.out.Machine.LoadAvgEnd = loadAvg()
	r.out.WallSeconds = time.Since(r.started).Seconds()
	return r.out, nil
}

// setup picks ports, starts verbose brokers and every target.
func (r *runner) setup(ctx context.Context) error {
	if err := os.MkdirAll(r.opts.Work, 0o755); err != nil {
		return fmt.Errorf("creating work directory: %w", err)
	}
	// Per target: MQTT, MQTT over TLS, WebSocket, WebSocket over TLS.
	const perTarget = 4
	ports, err := freePorts(5+perTarget*len(r.opts.Targets), time.Now().UnixNano())
	if err != nil {
		return err
	}
	if r.certs, err = makeCerts(r.opts.Work); err != nil {
		return err
	}
	r.brokers, err = startBrokers(r.opts.Work, ports[:3], true)
	if err != nil {
		return fmt.Errorf("starting brokers: %w", err)
	}
	r.logf("brokers on %v", r.brokers.addrs())
	if r.wantsWebSocket() {
		if err := r.startWSBroker(ports[3], ports[4]); err != nil {
			r.problem("no WebSocket phases: %v", err)
		} else {
			r.logf("WebSocket broker (mochi-mqtt) on %s, MQTT on %s", r.wsBrokerWS, r.wsBrokerTCP)
		}
	}
	for i, name := range r.opts.Targets {
		t := &target{name: name}
		r.targets = append(r.targets, t)
		r.out.Targets = append(r.out.Targets, &results.Target{Name: name})
		addr := func(k int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[5+perTarget*i+k])) }
		if err := r.startTarget(ctx, t, addr(0), addr(1), addr(2), addr(3)); err != nil {
			t.skip = err.Error()
			r.result(t).Skipped = t.skip
			r.logf("%s skipped: %s", name, oneLine(t.skip))
			continue
		}
		r.logf("%s ready on %v", name, t.addrs)
	}
	return nil
}

// wantsWebSocket reports whether the run has a WebSocket phase and a
// target that takes part in them.
func (r *runner) wantsWebSocket() bool {
	return slices.ContainsFunc(wsPhases, r.wants) &&
		(slices.Contains(r.opts.Targets, NGINX) || slices.Contains(r.opts.Targets, Mqgate))
}

// startWSBroker starts the WebSocket phases' broker: this executable as
// "broker", one mochi-mqtt server with a plain MQTT and a WebSocket
// listener (package broker says why).
func (r *runner) startWSBroker(tcpPort, wsPort int) error {
	tcpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort))
	wsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(wsPort))
	p, err := startProcess("mochi-mqtt", filepath.Join(r.opts.Work, "wsbroker.out"), nil, r.self, "broker", "-tcp", tcpAddr, "-ws", wsAddr)
	if err != nil {
		return err
	}
	for _, a := range []string{tcpAddr, wsAddr} {
		if err := waitListening(a, 10*time.Second, p); err != nil {
			p.stop()
			return fmt.Errorf("WebSocket broker: %w", err)
		}
	}
	r.wsBroker, r.wsBrokerTCP, r.wsBrokerWS = p, tcpAddr, wsAddr
	return nil
}

// brokerPids are the brokers' processes, the WebSocket broker's included.
func (r *runner) brokerPids() []int {
	pids := r.brokers.pids()
	if r.wsBroker != nil {
		pids = append(pids, r.wsBroker.pid())
	}
	return pids
}

func (r *runner) startTarget(ctx context.Context, t *target, listen, tlsListen, wsListen, wssListen string) error {
	if t.name == NoProxy {
		t.addrs = r.brokers.addrs()
		return nil
	}
	nofile := int(r.out.Machine.NoFileLimit)
	s := proxySettings{
		Dir:               r.opts.Work,
		Listen:            listen,
		Brokers:           r.brokers.templateAddrs(),
		MaxConn:           (nofile - 100) / 2,
		NoFile:            nofile,
		WorkerConnections: nofile - 100,
		Threads:           2,
		TLSListen:         tlsListen,
		TLS:               r.certs,
	}
	if t.name == HAProxy1 || t.name == Mqgate1 {
		s.Threads = 1
	}
	// The WebSocket phases compare mqgate with NGINX, each at two cores.
	if r.wsBroker != nil && (t.name == NGINX || t.name == Mqgate) {
		s.WSListen, s.WSSListen, s.WSPath = wsListen, wssListen, wsPath
		s.WSPort, s.WSSPort = portOf(wsListen), portOf(wssListen)
		s.WSBrokerTCP, s.WSBrokerWS = r.wsBrokerTCP, r.wsBrokerWS
	}
	if t.name == Mqgate || t.name == Mqgate1 {
		if r.opts.MqgateBin == "" {
			r.logf("building mqgate")
			bin, err := buildMqgate(ctx, r.opts.Repo, r.opts.Work)
			if err != nil {
				return fmt.Errorf("mqgate does not build yet: %w", err)
			}
			r.opts.MqgateBin = bin // built once for both
		}
	}
	addrs := []string{listen, tlsListen}
	if s.WSListen != "" {
		addrs = append(addrs, s.WSListen, s.WSSListen)
	}
	// launch starts the target and waits until every listener is up; the
	// WebSocket idle phases start it again (runIdle).
	launch := func() error {
		var (
			p   *process
			err error
		)
		switch t.name {
		case HAProxy, HAProxy1:
			p, err = startHAProxy(r.opts.Work, s)
		case NGINX:
			p, err = startNGINX(r.opts.Work, s)
		case Mqgate, Mqgate1:
			p, err = startMqgate(r.opts.Work, r.opts.MqgateBin, s)
		default:
			return fmt.Errorf("unknown target %q", t.name)
		}
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if err := waitListening(a, 15*time.Second, p); err != nil {
				p.stop()
				return fmt.Errorf("%s did not start its listener %s: %w", t.name, a, err)
			}
		}
		t.proc = p
		return nil
	}
	if err := launch(); err != nil {
		return err
	}
	t.restart = func() error {
		t.proc.stop()
		t.proc = nil
		return launch()
	}
	t.addrs = []string{listen}
	t.tlsAddrs = []string{tlsListen}
	if s.WSListen != "" {
		t.wsAddrs, t.wssAddrs = []string{s.WSListen}, []string{s.WSSListen}
	}
	return nil
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (r *runner) result(t *target) *results.Target { return r.out.Target(t.name) }

func (r *runner) measurable() []*target {
	var ts []*target
	for _, t := range r.targets {
		if t.skip == "" {
			ts = append(ts, t)
		}
	}
	return ts
}

func (r *runner) stopAll() {
	for _, t := range r.targets {
		t.stop()
	}
	if r.brokers != nil {
		r.brokers.stop()
	}
	if r.wsBroker != nil {
		r.wsBroker.stop()
	}
}

// restartBrokersQuiet replaces the logging brokers by quiet ones on the same
// ports, then waits until every target reaches them again.
func (r *runner) restartBrokersQuiet() error {
	ports := r.brokers.ports
	r.brokers.stop()
	var err error
	if r.brokers, err = startBrokers(r.opts.Work, ports, false); err != nil {
		return fmt.Errorf("restarting brokers without logs: %w", err)
	}
	for _, t := range r.measurable() {
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; ; i++ {
			id := fmt.Sprintf("ready-%s-%d", t.name, i)
			err := loadgen.ConnectOnce(loadgen.PickAddr(t.addrs, id), id, 2*time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.skip = fmt.Sprintf("no MQTT session through %s after the brokers restarted: %v", t.name, err)
				r.result(t).Skipped = t.skip
				r.problem("%s", t.skip)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// loadProc is one running load generator process.
type loadProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	result *loadgen.Result
	exited chan struct{}
	errLog string // where its standard error goes
}

func (r *runner) startLoad(cfg loadgen.Config) (*loadProc, error) {
	cmd := exec.Command(r.self, append([]string{"load"}, cfg.Args()...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errLog, err := os.OpenFile(filepath.Join(r.opts.Work, "loadgen.err"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening loadgen log: %w", err)
	}
	cmd.Stderr = errLog
	stdin, err := cmd.StdinPipe()
	if err != nil {
		errLog.Close()
		return nil, fmt.Errorf("load generator stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		errLog.Close()
		return nil, fmt.Errorf("load generator stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		errLog.Close()
		return nil, fmt.Errorf("starting load generator: %w", err)
	}
	lp := &loadProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16), exited: make(chan struct{}), errLog: errLog.Name()}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lp.lines <- sc.Text()
		}
		close(lp.lines)
		_ = cmd.Wait()
		errLog.Close()
		close(lp.exited)
	}()
	return lp, nil
}

// next waits for the next protocol line; a RESULT line is also decoded into
// lp.result.
func (lp *loadProc) next(timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lp.lines:
			if !ok {
				return "", fmt.Errorf("load generator ended without a result: %s", oneLine(tailFile(lp.errLog, 3)))
			}
			if rest, found := strings.CutPrefix(line, "RESULT "); found {
				var res loadgen.Result
				if err := json.Unmarshal([]byte(rest), &res); err != nil {
					return "", fmt.Errorf("decoding load generator result: %w", err)
				}
				lp.result = &res
			}
			return line, nil
		case <-deadline:
			return "", fmt.Errorf("load generator silent for %v", timeout)
		}
	}
}

// finish closes stdin (ending the phase if it still runs), waits for the
// result and the exit, and kills the process if it does not exit in time.
func (lp *loadProc) finish(closeStdin bool, timeout time.Duration) (loadgen.Result, error) {
	if closeStdin {
		lp.stdin.Close()
	}
	for lp.result == nil {
		if _, err := lp.next(timeout); err != nil {
			lp.kill()
			return loadgen.Result{}, err
		}
	}
	lp.stdin.Close()
	select {
	case <-lp.exited:
	case <-time.After(timeout):
		lp.kill()
	}
	return *lp.result, nil
}

func (lp *loadProc) kill() {
	_ = lp.cmd.Process.Kill()
	<-lp.exited
}

// snapshot is the resource counters at one instant.
type snapshot struct {
	at                     time.Time
	proxy, brokers, loader usage
	machine                machineCPU
}

func (r *runner) snap(t *target, loaders ...*loadProc) snapshot {
	var pids []int
	for _, lp := range loaders {
		pids = append(pids, lp.cmd.Process.Pid)
	}
	return snapshot{
		at:      time.Now(),
		proxy:   readUsage(t.pids()),
		brokers: readUsage(r.brokerPids()),
		loader:  readUsage(pids),
		machine: readMachineCPU(),
	}
}

// fillCPU records the CPU each party used between a and b.
func fillCPU(p *results.Phase, a, b snapshot) {
	p.WindowSeconds = b.at.Sub(a.at).Seconds()
	p.ProxyCPU = (b.proxy.CPU - a.proxy.CPU).Seconds()
	p.ProxySysCPU = (b.proxy.Sys - a.proxy.Sys).Seconds()
	p.BrokerCPU = (b.brokers.CPU - a.brokers.CPU).Seconds()
	p.LoadgenCPU = (b.loader.CPU - a.loader.CPU).Seconds()
	busy := (b.machine.busy - a.machine.busy).Seconds()
	p.OtherCPU = math.Max(0, busy-p.ProxyCPU-p.BrokerCPU-p.LoadgenCPU)
	p.ProxyRSSKB = b.proxy.RSSKB
}

// runPhase runs one load generator for cfg and measures its window.
func (r *runner) runPhase(t *target, cfg loadgen.Config) *results.Phase {
	p := &results.Phase{}
	lp, err := r.startLoad(cfg)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	setup := 30 * time.Second
	var a snapshot
	for _, want := range []string{"START", "STOP"} {
		wait := setup
		if want == "STOP" {
			wait = cfg.Duration + 30*time.Second
		}
		line, err := lp.next(wait)
		if err == nil && line != want {
			err = fmt.Errorf("load generator said %q, expected %s", line, want)
		}
		if err != nil {
			_, ferr := lp.finish(true, 10*time.Second)
			p.Error = fmt.Sprintf("%v (%v)", err, ferr)
			return p
		}
		if want == "START" {
			a = r.snap(t, lp)
		} else {
			fillCPU(p, a, r.snap(t, lp))
		}
	}
	res, err := lp.finish(false, cfg.Timeout+30*time.Second)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Load = res
	return p
}

func (r *runner) phaseConfig(t *target, phase string, round int) loadgen.Config {
	return loadgen.Config{
		Phase:          phase,
		Addrs:          t.addrs,
		IDPrefix:       fmt.Sprintf("%s-%s-r%d", phase[:1], t.name, round),
		Warmup:         seconds(r.plan.WarmupSeconds),
		Duration:       seconds(r.plan.WindowSeconds),
		MaxOps:         50_000_000,
		Workers:        r.plan.ConnectWorkers,
		Clients:        r.plan.ThroughputClients,
		Payload:        64,
		Window:         r.plan.ThroughputWindow,
		Rate:           r.plan.LatencyRate,
		LatencyClients: max(r.plan.LatencyClients, 1),
		Hold:           time.Second,
		PingEvery:      time.Second,
		RampTimeout:    time.Second,
		Timeout:        5 * time.Second,
		CAFile:         r.certs.CA,
		ServerName:     tlsServerName,
	}
}

// tlsConfig is phaseConfig over TLS, to t's TLS listener.
func (r *runner) tlsConfig(t *target, phase string, round int, resume bool) loadgen.Config {
	cfg := r.phaseConfig(t, phase, round)
	cfg.IDPrefix = "tls-" + cfg.IDPrefix
	if resume {
		cfg.IDPrefix += "r"
	}
	cfg.Addrs, cfg.TLS, cfg.TLSResume = t.tlsAddrs, true, resume
	return cfg
}

// wsConfig is phaseConfig over WebSocket to t's ws:// listener, or with
// overTLS its wss:// one; a full TLS handshake per connection.
func (r *runner) wsConfig(t *target, phase string, round int, overTLS bool) loadgen.Config {
	cfg := r.phaseConfig(t, phase, round)
	cfg.IDPrefix = "ws-" + cfg.IDPrefix
	cfg.Addrs, cfg.WSPath = t.wsAddrs, wsPath
	cfg.Duration = seconds(r.plan.WSWindowSeconds)
	if overTLS {
		cfg.IDPrefix = "w" + cfg.IDPrefix
		cfg.Addrs, cfg.TLS = t.wssAddrs, true
	}
	return cfg
}

// orderAll runs the ordering probe through every target, one after the
// other, on the quiet brokers.
func (r *runner) orderAll(measured []*target) {
	for _, t := range measured {
		if t.skip != "" {
			continue
		}
		res, err := loadgen.OrderProbe(t.addrs, "order-"+t.name+"-", r.plan.OrderRounds, 5*time.Second)
		o := &results.Order{OrderResult: res}
		if err != nil {
			o.Error = err.Error()
			r.problem("%s ordering probe: %v", t.name, err)
		}
		r.result(t).Order = o
		r.logf("%s ordering: B missed A's PUBLISH sent right after B's SUBSCRIBE in %d of %d rounds", t.name, res.Misses, res.Rounds)
	}
}

// runRound runs the short phases for t once.
func (r *runner) runRound(ctx context.Context, t *target, round int) {
	rt := r.result(t)
	rd := results.Round{Index: round, Phases: map[string]*results.Phase{}}
	type step struct {
		name string
		cfg  loadgen.Config
	}
	connect := r.phaseConfig(t, "connect", round)
	tput64 := r.phaseConfig(t, "throughput", round)
	tput1k := tput64
	tput1k.Payload = 1024
	tput1k.IDPrefix += "k"
	latency := r.phaseConfig(t, "latency", round)
	latency.Duration = seconds(r.plan.LatencySeconds)
	latency.MaxOps = int64(float64(latency.Rate*latency.LatencyClients) * (r.plan.LatencySeconds + r.plan.WarmupSeconds + 5))
	steps := []step{
		{results.PhaseConnect, connect},
		{results.PhaseThroughput64, tput64},
		{results.PhaseThroughput1K, tput1k},
		{results.PhaseLatency, latency},
	}
	if t.tlsAddrs != nil { // no proxy: the brokers have no TLS listener
		steps = append(steps,
			step{results.PhaseTLSConnect, r.tlsConfig(t, "connect", round, false)},
			step{results.PhaseTLSResume, r.tlsConfig(t, "connect", round, true)},
			step{results.PhaseTLSThroughput64, r.tlsConfig(t, "throughput", round, false)})
	}
	if t.wsAddrs != nil { // NGINX and mqgate, proxying the same WebSocket broker
		steps = append(steps,
			step{results.PhaseWSConnect, r.wsConfig(t, "connect", round, false)},
			step{results.PhaseWSThroughput64, r.wsConfig(t, "throughput", round, false)},
			step{results.PhaseWSSConnect, r.wsConfig(t, "connect", round, true)},
			step{results.PhaseWSSThroughput64, r.wsConfig(t, "throughput", round, true)})
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		if !r.wants(s.name) {
			continue
		}
		p := r.runPhase(t, s.cfg)
		rd.Phases[s.name] = p
		if t.proc != nil && !t.proc.running() {
			t.skip = fmt.Sprintf("%s exited during %s: %v\n%s", t.name, s.name, t.proc.waitErr, t.proc.logTail())
			r.problem("%s", t.skip)
			break
		}
		if p.Error != "" {
			r.problem("%s round %d %s: %s", t.name, round+1, s.name, p.Error)
			continue
		}
		if n := errorCount(p.Load.Errors); n > 0 {
			r.logf("  %s %s: %d errors %v", t.name, s.name, n, p.Load.Sample)
			if float64(n) > 0.01*float64(p.Load.Ops+1) {
				r.problem("%s round %d %s: %d errors (%v)", t.name, round+1, s.name, n, p.Load.Sample)
			}
		}
		r.logf("round %d/%d %-8s %-15s %10.0f/s  p50 %8.0f µs  p99 %8.0f µs  proxy %.2f  brokers %.2f  loadgen %.2f  other %.2f cores",
			round+1, r.plan.Rounds, t.name, s.name, p.Load.PerSec, p.Load.P50us, p.Load.P99us,
			p.ProxyCPU/p.WindowSeconds, p.BrokerCPU/p.WindowSeconds, p.LoadgenCPU/p.WindowSeconds, p.OtherCPU/p.WindowSeconds)
	}
	rt.Rounds = append(rt.Rounds, rd)
}

func errorCount(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// idleOver is what an idle phase's clients speak.
type idleOver int

const (
	overTCP idleOver = iota
	overTLS
	overWS
	overWSS
)

// runIdle connects as many pinging clients as the file limit allows (fewer
// over TLS and WebSocket), spread over several load generator processes,
// and measures the proxy's memory growth per connection and its CPU while
// they ping.
func (r *runner) runIdle(ctx context.Context, t *target, over idleOver) *results.Idle {
	idle := &results.Idle{Wanted: r.plan.IdleClients}
	label := t.name
	switch over {
	case overTLS:
		idle.Wanted = r.plan.TLSIdleClients
		label += " TLS"
	case overWS:
		idle.Wanted = r.plan.WSIdleClients
		label += " WS"
	case overWSS:
		idle.Wanted = r.plan.WSIdleClients
		label += " WSS"
	}
	procs := max(r.plan.IdleProcs, 1)
	if over == overWS || over == overWSS {
		// A fresh process for each: what the phases before freed, a
		// process keeps for reuse (NGINX's pools, Go's heap), and a phase
		// started on it would measure that reuse rather than what a
		// connection costs. Both targets are restarted alike.
		if err := t.restart(); err != nil {
			t.skip = fmt.Sprintf("%s did not start again for the %s idle phase: %v", t.name, label, err)
			idle.Error = t.skip
			r.problem("%s", t.skip)
			return idle
		}
		idle.Restarted = true
		if err := r.warmWS(t, over == overWSS); err != nil {
			idle.Error = err.Error()
			r.problem("%s idle: %v", label, err)
			return idle
		}
	}
	before := r.snap(t)
	settle, hold := seconds(r.plan.IdleSettleSeconds), seconds(r.plan.IdleHoldSeconds)
	rampTimeout := 30 * time.Second
	if r.opts.Quick {
		rampTimeout = 10 * time.Second
	}
	var loaders []*loadProc
	defer func() {
		for _, lp := range loaders {
			select {
			case <-lp.exited:
			default:
				lp.kill()
			}
		}
	}()
	for k := range procs {
		cfg := r.phaseConfig(t, "idle", 0)
		switch over {
		case overTLS:
			cfg = r.tlsConfig(t, "idle", 0, false)
		case overWS, overWSS:
			cfg = r.wsConfig(t, "idle", 0, over == overWSS)
		}
		cfg.IDPrefix = fmt.Sprintf("i-%s-%d", strings.ReplaceAll(label, " ", "-"), k)
		cfg.Clients = idle.Wanted / procs
		cfg.Workers = 32
		cfg.PingEvery = seconds(r.plan.IdlePingSeconds)
		cfg.RampTimeout = rampTimeout
		cfg.Hold = settle + hold + 30*time.Second
		cfg.Warmup, cfg.Duration = 0, 0
		lp, err := r.startLoad(cfg)
		if err != nil {
			idle.Error = err.Error()
			return idle
		}
		loaders = append(loaders, lp)
	}
	start := time.Now()
	for _, lp := range loaders {
		line, err := lp.next(rampTimeout + 20*time.Second)
		if err == nil && !strings.HasPrefix(line, "READY ") {
			err = fmt.Errorf("load generator said %q, expected READY", line)
		}
		if err != nil {
			idle.Error = err.Error()
			r.problem("%s idle: %s", label, err)
			return idle
		}
	}
	r.logf("idle %-8s ramp done in %.1f s", label, time.Since(start).Seconds())
	sleepCtx(ctx, settle)
	a := r.snap(t, loaders...)
	sleepCtx(ctx, hold)
	b := r.snap(t, loaders...)
	idle.Errors, idle.ErrorSamples = map[string]uint64{}, map[string]string{}
	for _, lp := range loaders {
		res, err := lp.finish(true, 30*time.Second)
		if err != nil {
			idle.Error = err.Error()
			r.problem("%s idle: %s", label, err)
			continue
		}
		idle.Connected += res.Connected
		idle.PingsOK += res.PingsOK
		idle.PingsFailed += res.PingsFailed
		idle.RampSeconds = math.Max(idle.RampSeconds, res.RampSeconds)
		for k, v := range res.Errors {
			idle.Errors[k] += v
			idle.ErrorSamples[k] = res.Sample[k]
		}
	}
	idle.RSSBeforeKB, idle.RSSAfterKB = before.proxy.RSSKB, b.proxy.RSSKB
	if idle.Connected > 0 {
		idle.RSSPerConnKB = float64(b.proxy.RSSKB-before.proxy.RSSKB) / float64(idle.Connected)
		idle.BrokerRSSPerConnKB = float64(b.brokers.RSSKB-before.brokers.RSSKB) / float64(idle.Connected)
	}
	window := b.at.Sub(a.at).Seconds()
	idle.ProxyCPUCores = (b.proxy.CPU - a.proxy.CPU).Seconds() / window
	idle.LoadgenCPU = (b.loader.CPU - a.loader.CPU).Seconds()
	r.logf("idle %-8s %d/%d held, proxy RSS %d → %d KB (%.2f KB/conn), proxy %.3f cores, pings %d ok %d failed",
		label, idle.Connected, idle.Wanted, idle.RSSBeforeKB, idle.RSSAfterKB, idle.RSSPerConnKB, idle.ProxyCPUCores, idle.PingsOK, idle.PingsFailed)
	if idle.Connected < idle.Wanted {
		r.logf("  %s idle errors: %v", label, idle.ErrorSamples)
	}
	if idle.PingsFailed > 0 {
		r.problem("%s idle: %d pings failed (%v)", label, idle.PingsFailed, idle.ErrorSamples)
	}
	// Let the brokers and the proxy see every disconnection before the next target.
	sleepCtx(ctx, time.Second)
	return idle
}

// warmWS makes one MQTT session through t's WebSocket listener (wss with
// overTLS) on the freshly started process, as the other idle phases follow
// the measured rounds: so that what every process starts lazily (event
// loops, pools, NGINX's upstream state) is not counted per connection.
func (r *runner) warmWS(t *target, overTLS bool) error {
	cfg := r.wsConfig(t, "idle", 0, overTLS)
	addr := cfg.Addrs[0]
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := loadgen.ConnectOnceOver(addr, "warm-"+t.name, cfg.WSPath, cfg.TLS, r.certs.CA, cfg.ServerName, 2*time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no MQTT session over WebSocket through %s after it started again: %w", t.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// shuffled returns a permutation of ids in an order that differs from the
// first pass, so that round robin cannot pass the check by luck.
func shuffled(ids []string, seed uint64) []string {
	out := append([]string(nil), ids...)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
