package results

import (
	"fmt"
	"path/filepath"
	"strings"
)

// goal is one of issue #14's targets: the run's ratio target/base (the
// median of its per-round ratios, as the summary table has it) against a
// bound.
type goal struct {
	metric       string // "section: name" of a metric in metrics()
	target, base string
	atLeast      bool // ratio ≥ bound; otherwise ratio ≤ bound
	bound        float64
	// values compares the two targets' own values (value ≤ base's ×
	// bound) instead of their ratio: the ordering probe's misses, where
	// HAProxy's count may be 0.
	values bool
	text   string
}

// goals are issue #14's targets that bench/ measures, in the order.
// The TLS CONNACK with Nagle on is measured by tlsbench, not here.
func goals() []goal {
	const m, h, n, np = "mqgate", baseline, wsBaseline, "no-proxy"
	return []goal{
		{metric: "CONNECT: connects/s", target: m, base: h, atLeast: true, bound: 1.2, text: "CONNECTs/s ≥ 1.2× HAProxy"},
		{metric: "CONNECT: proxy CPU per 1,000 connects (ms)", target: m, base: h, bound: 0.8, text: "proxy CPU per 1,000 connects ≤ 0.8× HAProxy"},
		{metric: "CONNECT: CONNECT→CONNACK p99 (ms)", target: m, base: h, bound: 1.0, text: "CONNECT p99 ≤ 1.0× HAProxy"},
		{metric: "QoS 0, 64 B: messages/s", target: m, base: h, atLeast: true, bound: 1.1, text: "messages/s, 64 B ≥ 1.1× HAProxy"},
		{metric: "QoS 0, 64 B: messages/s", target: m, base: np, atLeast: true, bound: 0.9, text: "messages/s, 64 B ≥ 0.9× no proxy"},
		{metric: "QoS 0, 1 KB: messages/s", target: m, base: h, atLeast: true, bound: 1.1, text: "messages/s, 1 KB ≥ 1.1× HAProxy"},
		{metric: "QoS 0, 1 KB: messages/s", target: m, base: np, atLeast: true, bound: 0.9, text: "messages/s, 1 KB ≥ 0.9× no proxy"},
		{metric: "QoS 0, 64 B: proxy CPU s per million messages", target: m, base: h, bound: 0.75, text: "proxy CPU per million messages, 64 B ≤ 0.75× HAProxy"},
		{metric: "QoS 0, 1 KB: proxy CPU s per million messages", target: m, base: h, bound: 0.75, text: "proxy CPU per million messages, 1 KB ≤ 0.75× HAProxy"},
		{metric: "latency: round trip p50 (µs)", target: m, base: h, bound: 0.9, text: "round trip p50 ≤ 0.9× HAProxy"},
		{metric: "latency: round trip p99 (µs)", target: m, base: h, bound: 0.9, text: "round trip p99 ≤ 0.9× HAProxy"},
		{metric: "idle: proxy RSS per connection (KB)", target: m, base: h, bound: 0.25, text: "RSS per idle connection ≤ 0.25× HAProxy"},
		{metric: "ordering: rounds B missed A's PUBLISH sent right after B's SUBSCRIBE", target: m, base: h, bound: 1, values: true, text: "ordering probe: misses ≤ HAProxy's"},
		{metric: "TLS, full handshake: handshake+CONNECT→CONNACK/s", target: m, base: h, atLeast: true, bound: 1.1, text: "TLS full handshakes/s ≥ 1.1× HAProxy"},
		{metric: "TLS, resumed: handshake+CONNECT→CONNACK/s", target: m, base: h, atLeast: true, bound: 1.1, text: "TLS resumed handshakes/s ≥ 1.1× HAProxy"},
		{metric: "TLS idle: proxy RSS per connection (KB)", target: m, base: h, bound: 0.8, text: "RSS per idle TLS connection ≤ 0.8× HAProxy"},
		{metric: "TLS, QoS 0, 64 B: messages/s", target: m, base: h, atLeast: true, bound: 1.0, text: "messages/s through TLS ≥ 1.0× HAProxy"},
		{metric: "WebSocket idle: proxy RSS per connection (KB)", target: m, base: n, bound: 1.0, text: "WebSocket idle RSS ≤ 1.0× NGINX"},
		{metric: "WSS idle: proxy RSS per connection (KB)", target: m, base: n, bound: 1.0, text: "WSS idle RSS ≤ 1.0× NGINX"},
		{metric: "WebSocket, QoS 0, 64 B: messages/s", target: m, base: n, atLeast: true, bound: 1.0, text: "WebSocket messages/s ≥ 1.0× NGINX"},
		{metric: "WSS, QoS 0, 64 B: messages/s", target: m, base: n, atLeast: true, bound: 1.0, text: "WSS messages/s ≥ 1.0× NGINX"},
	}
}

func (m metric) key() string { return m.section + ": " + m.name }

func (g goal) rule() string {
	op := "≤"
	if g.atLeast {
		op = "≥"
	}
	if g.values {
		return fmt.Sprintf("%s %s %s", g.target, op, g.base)
	}
	return fmt.Sprintf("%s/%s %s %.2f", g.target, g.base, op, g.bound)
}

// outcome is what one run says of a ratio (or a goal).
type outcome struct {
	ratio summary // of the per-round ratios
	// a and b are the two targets' own medians.
	a, b summary
	ok   bool // the run has both targets and a value for each
	met  bool // for a goal
}

// SpreadRun is one run for Spread, with the file it came from.
type SpreadRun struct {
	File string
	Run  *Run
}

// ratioOf is the ratio target/base of metric m in run r.
func ratioOf(r *Run, m metric, target, base string) outcome {
	t, b := r.Target(target), r.Target(base)
	if t == nil || b == nil || t.Skipped != "" || b.Skipped != "" {
		return outcome{}
	}
	rounds := max(r.Plan.Rounds, 1)
	tv, bv := m.values(t, rounds), m.values(b, rounds)
	o := outcome{ratio: summarize(ratios(tv, bv)), a: summarize(tv), b: summarize(bv)}
	o.ok = o.a.ok() && o.b.ok()
	return o
}

func (g goal) judge(r *Run, m metric) outcome {
	o := ratioOf(r, m, g.target, g.base)
	if !o.ok {
		return o
	}
	if g.values {
		o.met = o.a.median <= o.b.median*g.bound
		if g.atLeast {
			o.met = o.a.median >= o.b.median*g.bound
		}
		return o
	}
	if !o.ratio.ok() {
		o.ok = false
		return o
	}
	o.met = o.ratio.median <= g.bound
	if g.atLeast {
		o.met = o.ratio.median >= g.bound
	}
	return o
}

// cell renders a run's ratio: the median of its per-round ratios and their
// range, and for a metric measured once per run (ordering, idle) the two
// values it divides.
func (o outcome) cell(m metric) string {
	if !o.ok {
		return "n/a"
	}
	var s string
	switch {
	case !o.ratio.ok():
		s = "—"
	case o.ratio.n == 1:
		s = fmt.Sprintf("%.2f", o.ratio.median)
	default:
		s = fmt.Sprintf("%.2f (%.2f–%.2f)", o.ratio.median, o.ratio.low, o.ratio.high)
	}
	if o.a.n == 1 && o.b.n == 1 {
		s += fmt.Sprintf(" (%s vs %s)", m.format(o.a.median), m.format(o.b.median))
	}
	return s
}

func metOrNot(o outcome) string {
	switch {
	case !o.ok:
		return "n/a"
	case o.met:
		return "yes"
	default:
		return "**no**"
	}
}

// acrossRuns is the min–max over the runs' median ratios.
func acrossRuns(os []outcome) string {
	var vals []float64
	for _, o := range os {
		if o.ok && o.ratio.ok() {
			vals = append(vals, o.ratio.median)
		}
	}
	s := summarize(vals)
	if !s.ok() {
		return "n/a"
	}
	return fmt.Sprintf("%.2f–%.2f", s.low, s.high)
}

// metCount says in how many of the runs that measured it a goal was met.
func metCount(os []outcome) string {
	n, met := 0, 0
	for _, o := range os {
		if o.ok {
			n++
			if o.met {
				met++
			}
		}
	}
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d of %d", met, n)
}

// Spread renders the spread of N runs: which runs, issue #14's targets met
// or not in each, then one table per metric with each run's ratios (the
// median of its per-round ratios, with their range), their min–max over
// the runs, and whether the metric's target was met in each run.
func Spread(runs []SpreadRun) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# mqgate benchmark: spread over %d runs\n\n", len(runs))
	w("| run | file | date | mqgate | command | load average start / end | other tenants (cores, mean / worst) | problems |\n")
	w("|--:|---|---|---|---|---|---|---|\n")
	for i, sr := range runs {
		r := sr.Run
		other := "n/a"
		if mean, worst, ok := r.otherTenants(); ok {
			other = fmt.Sprintf("%.2f / %.2f", mean, worst)
		}
		cmd := "`" + r.Command + "`"
		if r.Quick {
			cmd += " (QUICK: not quotable)"
		}
		problems := "none"
		if len(r.Problems) > 0 {
			problems = fmt.Sprintf("**%d**: %s", len(r.Problems), oneLine(strings.Join(r.Problems, "; "), 200))
		}
		load := "n/a"
		if r.Machine.LoadAvgStart != "" {
			load = r.Machine.LoadAvgStart + " / " + r.Machine.LoadAvgEnd
		}
		w("| %d | %s | %s | %s | %s | %s | %s | %s |\n", i+1, filepath.Base(sr.File), r.Date, r.version("mqgate"),
			cmd, load, other, problems)
	}
	w("\n")

	byKey := map[string]metric{}
	for _, m := range metrics() {
		byKey[m.key()] = m
	}
	goalsOf := map[string][]goal{}
	w("## Issue #14's targets\n\n")
	w("Each run's ratio is the median of its per-round ratios, as in its own table; \"met\" judges that median.\n\n")
	w("| target | rule |")
	for i := range runs {
		w(" run %d |", i+1)
	}
	w(" min–max | met in |\n|---|---|%s--:|--:|\n", strings.Repeat("--:|", len(runs)))
	for _, g := range goals() {
		m := byKey[g.metric]
		goalsOf[g.metric] = append(goalsOf[g.metric], g)
		os := make([]outcome, len(runs))
		w("| %s | %s |", g.text, g.rule())
		for i, sr := range runs {
			os[i] = g.judge(sr.Run, m)
			if os[i].ok {
				w(" %s: %s |", os[i].cell(m), strings.Trim(metOrNot(os[i]), "*"))
			} else {
				w(" n/a |")
			}
		}
		w(" %s | %s |\n", acrossRuns(os), metCount(os))
	}
	w("\n")

	w("## Per metric\n\n")
	w("Ratios: the median of the run's per-round ratios (its range in brackets; for a metric measured once per run, the two values). The last row is the min–max of the runs' medians.\n")
	for _, m := range metrics() {
		var pairs []ratioPair
		for _, rp := range ratioPairs() {
			if rp.webSocket == m.webSocket {
				pairs = append(pairs, rp)
			}
		}
		gs := goalsOf[m.key()]
		arrow := "↓"
		if m.higherBetter {
			arrow = "↑"
		}
		w("\n### %s %s\n\n| run |", m.key(), arrow)
		for _, rp := range pairs {
			w(" %s/%s |", rp.target, rp.base)
		}
		for _, g := range gs {
			w(" #14: %s |", g.rule())
		}
		w("\n|--:|%s%s\n", strings.Repeat("--:|", len(pairs)), strings.Repeat("--:|", len(gs)))
		cols := make([][]outcome, len(pairs)+len(gs))
		for i, sr := range runs {
			w("| %d |", i+1)
			for j, rp := range pairs {
				o := ratioOf(sr.Run, m, rp.target, rp.base)
				cols[j] = append(cols[j], o)
				w(" %s |", o.cell(m))
			}
			for j, g := range gs {
				o := g.judge(sr.Run, m)
				cols[len(pairs)+j] = append(cols[len(pairs)+j], o)
				w(" %s |", metOrNot(o))
			}
			w("\n")
		}
		w("| min–max |")
		for j := range pairs {
			w(" %s |", acrossRuns(cols[j]))
		}
		for j := range gs {
			w(" met in %s |", metCount(cols[len(pairs)+j]))
		}
		w("\n")
	}
	return b.String()
}

// version returns the version of the named software in the run, or "?".
func (r *Run) version(name string) string {
	for _, v := range r.Versions {
		if v.Name == name {
			return v.Version
		}
	}
	return "?"
}
