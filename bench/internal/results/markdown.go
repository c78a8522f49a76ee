package results

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Ratio columns: each target divided by HAProxy in the same round, the
// one-thread mqgate by the one-thread HAProxy; and, for the WebSocket
// rows, mqgate by NGINX proxying the same WebSocket.
const (
	baseline   = "haproxy"
	wsBaseline = "nginx"
)

// ratioPair is one ratio column: target / base. A webSocket column has
// values only in the WebSocket rows.
type ratioPair struct {
	target, base string
	webSocket    bool
}

func ratioPairs() []ratioPair {
	return []ratioPair{{"nginx", baseline, false}, {"mqgate", baseline, false}, {"mqgate-1", "haproxy-1", false}, {"mqgate", wsBaseline, true}}
}

func fmtInt(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmt2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// fmt3 prints three significant digits.
func fmt3(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmtInt(v)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func (s summary) cell(format func(float64) string) string {
	if !s.ok() {
		return "n/a"
	}
	if s.n == 1 {
		return format(s.median)
	}
	return fmt.Sprintf("%s ±%.0f%%", format(s.median), s.spread())
}

func (s summary) ratioCell() string {
	if !s.ok() {
		return "n/a"
	}
	if s.n == 1 {
		return fmt.Sprintf("**%.2f**", s.median)
	}
	return fmt.Sprintf("**%.2f** (%.2f–%.2f)", s.median, s.low, s.high)
}

// Markdown renders the summary: the machine, the versions, the command, the
// metrics table with ratios, where the CPU went, and the problems.
func (r *Run) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# mqgate benchmark: latest results\n\n")
	if r.Quick {
		w("**QUICK mode: a smoke test with phases of a few seconds; do not quote these numbers.**\n\n")
	}
	w("- Date: %s; wall time %.0f s\n", r.Date, r.WallSeconds)
	w("- Command: `%s`\n", r.Command)
	m := r.Machine
	w("- Machine: %d × %s, %.0f GiB, kernel %s, %s; open files limit %d; load average %s at the start, %s at the end\n",
		m.CPUs, m.CPUModel, m.MemGiB, m.Kernel, m.Distribution, m.NoFileLimit, m.LoadAvgStart, m.LoadAvgEnd)
	var versions []string
	for _, v := range r.Versions {
		versions = append(versions, fmt.Sprintf("%s %s", v.Name, v.Version))
	}
	w("- Versions: %s\n", strings.Join(versions, "; "))
	p := r.Plan
	if mean, worst, ok := r.otherTenants(); ok {
		w("- Noise: other tenants of the machine used %.2f cores on average during the measured windows, %.2f at worst (see \"other\" below)\n", mean, worst)
	}
	w("- Everything on 127.0.0.1: three Mosquitto brokers, the proxy under test, the load generator. HAProxy `nbthread 2`, NGINX `worker_processes 2`, mqgate `GOMAXPROCS=2`; haproxy-1 and mqgate-1: `nbthread 1` and `GOMAXPROCS=1`.\n")
	w("- Plan: rounds: %d, targets in rotated order each round; windows of %g s after %g s of warm-up; CONNECT with %d looping workers; throughput with %d clients publishing to themselves in bursts of %d; latency: %d clients at %d msg/s each for %g s; idle: %d clients in %d processes, PINGREQ every %g s, held %g s; ordering probe: %d rounds per target; WebSocket (NGINX and mqgate, one mochi-mqtt broker behind both): windows of %g s, idle %d clients.\n\n",
		p.Rounds, p.WindowSeconds, p.WarmupSeconds, p.ConnectWorkers, p.ThroughputClients, p.ThroughputWindow,
		max(p.LatencyClients, 1), p.LatencyRate, p.LatencySeconds, p.IdleClients, p.IdleProcs, p.IdlePingSeconds, p.IdleHoldSeconds, p.OrderRounds,
		p.WSWindowSeconds, p.WSIdleClients)

	if len(r.Problems) > 0 {
		w("## ⚠ Problems\n\n")
		for _, pr := range r.Problems {
			w("- **%s**\n", strings.ReplaceAll(pr, "\n", " "))
		}
		w("\n")
	}

	names := make([]string, 0, len(r.Targets))
	for _, t := range r.Targets {
		names = append(names, t.Name)
	}

	w("## Results\n\n")
	w("| metric |")
	for _, t := range r.Targets {
		h := t.Name
		if t.Verify != nil && !t.Verify.OK {
			h += " ⚠ HASH CHECK FAILED"
		}
		if t.Skipped != "" {
			h += " (skipped)"
		}
		w(" %s |", h)
	}
	var ratioNames []ratioPair
	for _, rp := range ratioPairs() {
		if r.Target(rp.target) != nil && r.Target(rp.base) != nil {
			ratioNames = append(ratioNames, rp)
			w(" %s/%s |", rp.target, rp.base)
		}
	}
	w("\n|---|%s%s\n", strings.Repeat("--:|", len(names)), strings.Repeat("--:|", len(ratioNames)))

	w("| hashing by client id, from the brokers' logs |")
	for _, t := range r.Targets {
		w(" %s |", verifyCell(t))
	}
	w("%s\n", strings.Repeat(" |", len(ratioNames)))

	rounds := max(r.Plan.Rounds, 1)
	for _, m := range metrics() {
		arrow := "↓"
		if m.higherBetter {
			arrow = "↑"
		}
		w("| %s: %s %s |", m.section, m.name, arrow)
		for _, t := range r.Targets {
			switch {
			case t.Skipped != "":
				w(" skipped |")
			case m.proxyOnly && t.Name == "no-proxy":
				w(" — |")
			default:
				w(" %s |", summarize(m.values(t, rounds)).cell(m.format))
			}
		}
		for _, rp := range ratioNames {
			t, b := r.Target(rp.target), r.Target(rp.base)
			if rp.webSocket && !m.webSocket {
				w(" — |")
				continue
			}
			if t.Skipped != "" || b.Skipped != "" {
				w(" n/a |")
				continue
			}
			w(" %s |", summarize(ratios(m.values(t, rounds), m.values(b, rounds))).ratioCell())
		}
		w("\n")
	}
	w("\n")
	w("Values are medians over rounds, ± half their range in percent of the median. Ratios are medians of the per-round ratios to HAProxy, which ran in the same round, with their range (the WebSocket rows: mqgate/nginx, NGINX proxying the same WebSocket to the same broker); compare ratios, not absolute numbers, across runs: the machine is shared and noisy. ↑ higher is better, ↓ lower is better. \"no-proxy\" clients connect straight to the broker their client id hashes to: it is the ceiling.\n\n")

	r.writeCPUTable(w, rounds)
	r.writeKernelTable(w, rounds)

	w("## Skipped and notes\n\n")
	noted := false
	for _, t := range r.Targets {
		if t.Skipped != "" {
			w("- %s skipped: %s\n", t.Name, oneLine(t.Skipped, 400))
			noted = true
		}
		for _, idle := range []struct {
			kind string
			i    *Idle
		}{{"", t.Idle}, {"TLS ", t.TLSIdle}, {"WebSocket ", t.WSIdle}, {"WSS ", t.WSSIdle}} {
			if idle.i != nil && idle.i.Connected < idle.i.Wanted {
				w("- %s held %d of %d idle %sclients; errors: %v\n", t.Name, idle.i.Connected, idle.i.Wanted, idle.kind, idle.i.ErrorSamples)
				noted = true
			}
		}
	}
	if !noted {
		w("- Nothing skipped.\n")
	}
	w("![ratios to HAProxy](latest.png)\n")
	return b.String()
}

// otherTenants returns the mean and the largest CPU, in cores, that other
// processes of the machine used during the measured windows.
func (r *Run) otherTenants() (mean, worst float64, ok bool) {
	var cpu, secs float64
	for _, t := range r.Targets {
		for _, rd := range t.Rounds {
			for _, p := range rd.Phases {
				if p.Error != "" || p.WindowSeconds <= 0 {
					continue
				}
				cpu += p.OtherCPU
				secs += p.WindowSeconds
				worst = max(worst, p.OtherCPU/p.WindowSeconds)
			}
		}
	}
	if secs == 0 {
		return 0, 0, false
	}
	return cpu / secs, worst, true
}

func verifyCell(t *Target) string {
	switch {
	case t.Skipped != "":
		return "skipped"
	case t.Verify == nil:
		return "not run"
	case !t.Verify.OK:
		return "**FAILED**: " + oneLine(strings.Join(t.Verify.Problems, "; "), 200)
	}
	var parts []string
	for _, n := range t.Verify.PerBroker {
		parts = append(parts, strconv.Itoa(n))
	}
	return fmt.Sprintf("ok: %d ids ×2, per broker %s", t.Verify.IDs, strings.Join(parts, "/"))
}

// writeCPUTable shows, per phase and target, the cores used by each party in
// the measured window: proxy, brokers, load generator and everyone else.
func (r *Run) writeCPUTable(w func(string, ...any), rounds int) {
	w("## Where the CPU went (cores, median over rounds)\n\n")
	w("The machine has %d cores for everything. \"other\" is machine-wide busy time not used by this run: other tenants.\n\n", r.Machine.CPUs)
	w("| phase: who |")
	for _, t := range r.Targets {
		w(" %s |", t.Name)
	}
	w("\n|---|%s\n", strings.Repeat("--:|", len(r.Targets)))
	parties := []struct {
		name string
		get  func(*Phase) float64
	}{
		{"proxy", func(p *Phase) float64 { return p.ProxyCPU }},
		{"brokers", func(p *Phase) float64 { return p.BrokerCPU }},
		{"load generator", func(p *Phase) float64 { return p.LoadgenCPU }},
		{"other", func(p *Phase) float64 { return p.OtherCPU }},
	}
	for _, phase := range []string{PhaseConnect, PhaseThroughput64, PhaseThroughput1K, PhaseLatency, PhaseWSConnect, PhaseWSThroughput64, PhaseWSSThroughput64} {
		for _, party := range parties {
			w("| %s: %s |", phase, party.name)
			for _, t := range r.Targets {
				vals := make([]float64, 0, rounds)
				for _, rd := range t.Rounds {
					if p := rd.Phases[phase]; p != nil && p.Error == "" && p.WindowSeconds > 0 {
						vals = append(vals, party.get(p)/p.WindowSeconds)
					}
				}
				s := summarize(vals)
				if !s.ok() || (party.name == "proxy" && t.Name == "no-proxy") {
					w(" — |")
					continue
				}
				w(" %.2f |", s.median)
			}
			w("\n")
		}
	}
	w("\n")
}

// writeKernelTable splits each proxy's CPU per operation into its time in
// the kernel (stime: the system calls and, on loopback, much of the peer's
// TCP receive work run inside them) and in the process (utime). A target
// such as 0.8× HAProxy's CPU leaves the proxy's own code 0.8× HAProxy's
// whole less the proxy's kernel time; this table shows how much that is.
// Runs from before 2026-12-02 have no split and no table.
func (r *Run) writeKernelTable(w func(string, ...any), rounds int) {
	phases := []struct {
		name, unit string
		per        float64 // operations per unit of the row
		scale      float64 // CPU seconds to the row's unit
	}{
		{PhaseConnect, "ms per 1,000 connects", 1e3, 1e3},
		{PhaseThroughput64, "s per million messages", 1e6, 1},
		{PhaseThroughput1K, "s per million messages", 1e6, 1},
		{PhaseTLSConnect, "ms per 1,000 handshakes", 1e3, 1e3},
		{PhaseTLSThroughput64, "s per million messages", 1e6, 1},
	}
	parts := []struct {
		name string
		get  func(*Phase) float64
	}{
		{"in the kernel", func(p *Phase) float64 { return p.ProxySysCPU }},
		{"in the process", func(p *Phase) float64 { return p.ProxyCPU - p.ProxySysCPU }},
	}
	var proxies []*Target
	for _, t := range r.Targets {
		if t.Name != "no-proxy" {
			proxies = append(proxies, t)
		}
	}
	split := false
	for _, t := range proxies {
		for _, rd := range t.Rounds {
			for _, p := range rd.Phases {
				split = split || p.ProxySysCPU > 0
			}
		}
	}
	if !split {
		return
	}
	w("## The proxy's CPU per operation: kernel and process (median over rounds)\n\n")
	w("\"in the kernel\" is the proxy's system time (`stime`): its system calls, and on loopback much of the receiving side's TCP work, which runs inside the sender's call. It is what any proxy making the same calls pays; \"in the process\" (`utime`) is the proxy's own code, its runtime and its libraries.\n\n")
	w("| phase: part |")
	for _, t := range proxies {
		w(" %s |", t.Name)
	}
	w("\n|---|%s\n", strings.Repeat("--:|", len(proxies)))
	for _, ph := range phases {
		for _, part := range parts {
			cells := make([]string, len(proxies))
			seen := false
			for i, t := range proxies {
				vals := make([]float64, 0, rounds)
				for _, rd := range t.Rounds {
					if p := rd.Phases[ph.name]; p != nil && p.Error == "" && p.Load.Ops > 0 && p.ProxySysCPU > 0 {
						vals = append(vals, part.get(p)*ph.scale/(float64(p.Load.Ops)/ph.per))
					}
				}
				cells[i] = "—"
				if s := summarize(vals); s.ok() {
					cells[i], seen = fmt3(s.median), true
				}
			}
			if seen { // a phase this run did not have gets no row
				w("| %s, %s: %s | %s |\n", ph.name, ph.unit, part.name, strings.Join(cells, " | "))
			}
		}
	}
	w("\n")
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}
