package results

import (
	"math"
	"slices"
)

// metric is one row of the summary table.
type metric struct {
	section string
	name    string
	// higherBetter orients the ratio: the chart and the table say which way is good.
	higherBetter bool
	// proxyOnly metrics have no value without a proxy.
	proxyOnly bool
	// format renders a value; digits chosen per metric.
	format func(float64) string
	// phase and fromPhase read a per-round value; idle metrics use fromIdle.
	phase     string
	fromPhase func(*Phase) (float64, bool)
	fromIdle  func(*Idle) (float64, bool)
	idle      func(*Target) *Idle // the idle phase fromIdle reads; nil: the plain one
	fromOrder func(*Order) (float64, bool)
	// webSocket metrics compare mqgate with NGINX proxying the same
	// WebSocket; HAProxy does not take part.
	webSocket bool
}

func tlsIdle(t *Target) *Idle { return t.TLSIdle }
func wsIdle(t *Target) *Idle  { return t.WSIdle }
func wssIdle(t *Target) *Idle { return t.WSSIdle }

func idleHeld(i *Idle) (float64, bool) { return float64(i.Connected), i.Error == "" }
func idleRSS(i *Idle) (float64, bool)  { return i.RSSPerConnKB, i.Connected > 0 }

func perSec(p *Phase) (float64, bool) { return p.Load.PerSec, p.Load.Ops > 0 }

func p50ms(p *Phase) (float64, bool) { return p.Load.P50us / 1e3, p.Load.Ops > 0 }
func p99ms(p *Phase) (float64, bool) { return p.Load.P99us / 1e3, p.Load.Ops > 0 }
func p50us(p *Phase) (float64, bool) { return p.Load.P50us, p.Load.Ops > 0 }
func p99us(p *Phase) (float64, bool) { return p.Load.P99us, p.Load.Ops > 0 }

// cpuPerMillion is proxy CPU seconds per million operations.
func cpuPerMillion(p *Phase) (float64, bool) {
	if p.Load.Ops == 0 {
		return 0, false
	}
	return p.ProxyCPU / (float64(p.Load.Ops) / 1e6), true
}

// cpuMsPerThousand is proxy CPU milliseconds per thousand operations.
func cpuMsPerThousand(p *Phase) (float64, bool) {
	if p.Load.Ops == 0 {
		return 0, false
	}
	return p.ProxyCPU * 1e3 / (float64(p.Load.Ops) / 1e3), true
}

func metrics() []metric {
	return []metric{
		{section: "CONNECT", name: "connects/s", higherBetter: true, format: fmtInt, phase: PhaseConnect, fromPhase: perSec},
		{section: "CONNECT", name: "CONNECT→CONNACK p50 (ms)", format: fmt3, phase: PhaseConnect, fromPhase: p50ms},
		{section: "CONNECT", name: "CONNECT→CONNACK p99 (ms)", format: fmt3, phase: PhaseConnect, fromPhase: p99ms},
		{section: "CONNECT", name: "proxy CPU per 1,000 connects (ms)", proxyOnly: true, format: fmt3, phase: PhaseConnect, fromPhase: cpuMsPerThousand},

		{section: "QoS 0, 64 B", name: "messages/s", higherBetter: true, format: fmtInt, phase: PhaseThroughput64, fromPhase: perSec},
		{section: "QoS 0, 64 B", name: "end-to-end p99 (ms)", format: fmt3, phase: PhaseThroughput64, fromPhase: p99ms},
		{section: "QoS 0, 64 B", name: "proxy CPU s per million messages", proxyOnly: true, format: fmt3, phase: PhaseThroughput64, fromPhase: cpuPerMillion},

		{section: "QoS 0, 1 KB", name: "messages/s", higherBetter: true, format: fmtInt, phase: PhaseThroughput1K, fromPhase: perSec},
		{section: "QoS 0, 1 KB", name: "end-to-end p99 (ms)", format: fmt3, phase: PhaseThroughput1K, fromPhase: p99ms},
		{section: "QoS 0, 1 KB", name: "proxy CPU s per million messages", proxyOnly: true, format: fmt3, phase: PhaseThroughput1K, fromPhase: cpuPerMillion},

		{section: "TLS, full handshake", name: "handshake+CONNECT→CONNACK/s", higherBetter: true, format: fmtInt, phase: PhaseTLSConnect, fromPhase: perSec},
		{section: "TLS, full handshake", name: "dial→CONNACK p99 (ms)", format: fmt3, phase: PhaseTLSConnect, fromPhase: p99ms},
		{section: "TLS, full handshake", name: "proxy CPU per 1,000 (ms)", proxyOnly: true, format: fmt3, phase: PhaseTLSConnect, fromPhase: cpuMsPerThousand},
		{section: "TLS, resumed", name: "handshake+CONNECT→CONNACK/s", higherBetter: true, format: fmtInt, phase: PhaseTLSResume, fromPhase: perSec},
		{section: "TLS, resumed", name: "proxy CPU per 1,000 (ms)", proxyOnly: true, format: fmt3, phase: PhaseTLSResume, fromPhase: cpuMsPerThousand},
		{section: "TLS, QoS 0, 64 B", name: "messages/s", higherBetter: true, format: fmtInt, phase: PhaseTLSThroughput64, fromPhase: perSec},
		{section: "TLS, QoS 0, 64 B", name: "proxy CPU s per million messages", proxyOnly: true, format: fmt3, phase: PhaseTLSThroughput64, fromPhase: cpuPerMillion},

		{section: "latency", name: "round trip p50 (µs)", format: fmtInt, phase: PhaseLatency, fromPhase: p50us},
		{section: "latency", name: "round trip p99 (µs)", format: fmtInt, phase: PhaseLatency, fromPhase: p99us},

		{section: "ordering", name: "rounds B missed A's PUBLISH sent right after B's SUBSCRIBE", format: fmtInt, fromOrder: func(o *Order) (float64, bool) {
			return float64(o.Misses), o.Error == "" && o.Rounds > 0
		}},

		{section: "idle", name: "connections held", higherBetter: true, format: fmtInt, fromIdle: idleHeld},
		{section: "idle", name: "proxy RSS per connection (KB)", proxyOnly: true, format: fmt2, fromIdle: idleRSS},
		{section: "idle", name: "proxy CPU while they ping (% of a core)", proxyOnly: true, format: fmt2, fromIdle: func(i *Idle) (float64, bool) {
			return 100 * i.ProxyCPUCores, i.Connected > 0
		}},
		{section: "TLS idle", name: "connections held", higherBetter: true, format: fmtInt, idle: tlsIdle, fromIdle: idleHeld},
		{section: "TLS idle", name: "proxy RSS per connection (KB)", proxyOnly: true, format: fmt2, idle: tlsIdle, fromIdle: idleRSS},

		{section: "WebSocket", name: "upgrade+CONNECT→CONNACK/s", higherBetter: true, webSocket: true, format: fmtInt, phase: PhaseWSConnect, fromPhase: perSec},
		{section: "WebSocket", name: "dial→CONNACK p99 (ms)", webSocket: true, format: fmt3, phase: PhaseWSConnect, fromPhase: p99ms},
		{section: "WebSocket", name: "proxy CPU per 1,000 connects (ms)", proxyOnly: true, webSocket: true, format: fmt3, phase: PhaseWSConnect, fromPhase: cpuMsPerThousand},
		{section: "WebSocket, QoS 0, 64 B", name: "messages/s", higherBetter: true, webSocket: true, format: fmtInt, phase: PhaseWSThroughput64, fromPhase: perSec},
		{section: "WebSocket, QoS 0, 64 B", name: "proxy CPU s per million messages", proxyOnly: true, webSocket: true, format: fmt3, phase: PhaseWSThroughput64, fromPhase: cpuPerMillion},
		{section: "WebSocket idle", name: "connections held", higherBetter: true, webSocket: true, format: fmtInt, idle: wsIdle, fromIdle: idleHeld},
		{section: "WebSocket idle", name: "proxy RSS per connection (KB)", proxyOnly: true, webSocket: true, format: fmt2, idle: wsIdle, fromIdle: idleRSS},
		{section: "WSS", name: "handshake+upgrade+CONNECT→CONNACK/s", higherBetter: true, webSocket: true, format: fmtInt, phase: PhaseWSSConnect, fromPhase: perSec},
		{section: "WSS", name: "proxy CPU per 1,000 connects (ms)", proxyOnly: true, webSocket: true, format: fmt3, phase: PhaseWSSConnect, fromPhase: cpuMsPerThousand},
		{section: "WSS, QoS 0, 64 B", name: "messages/s", higherBetter: true, webSocket: true, format: fmtInt, phase: PhaseWSSThroughput64, fromPhase: perSec},
		{section: "WSS, QoS 0, 64 B", name: "proxy CPU s per million messages", proxyOnly: true, webSocket: true, format: fmt3, phase: PhaseWSSThroughput64, fromPhase: cpuPerMillion},
		{section: "WSS idle", name: "connections held", higherBetter: true, webSocket: true, format: fmtInt, idle: wssIdle, fromIdle: idleHeld},
		{section: "WSS idle", name: "proxy RSS per connection (KB)", proxyOnly: true, webSocket: true, format: fmt2, idle: wssIdle, fromIdle: idleRSS},
	}
}

// values returns the metric's value for each round of t, indexed by round;
// NaN where there is none.
func (m metric) values(t *Target, rounds int) []float64 {
	if m.fromOrder != nil {
		if t.Order == nil {
			return []float64{math.NaN()}
		}
		v, ok := m.fromOrder(t.Order)
		if !ok {
			return []float64{math.NaN()}
		}
		return []float64{v}
	}
	if m.fromIdle != nil {
		idle := t.Idle
		if m.idle != nil {
			idle = m.idle(t)
		}
		if idle == nil {
			return []float64{math.NaN()}
		}
		v, ok := m.fromIdle(idle)
		if !ok {
			return []float64{math.NaN()}
		}
		return []float64{v}
	}
	out := make([]float64, rounds)
	for i := range out {
		out[i] = math.NaN()
	}
	for _, r := range t.Rounds {
		p := r.Phases[m.phase]
		if p == nil || p.Error != "" || r.Index < 0 || r.Index >= rounds {
			continue
		}
		if v, ok := m.fromPhase(p); ok {
			out[r.Index] = v
		}
	}
	return out
}

// summary is a median and the range of the values it came from.
type summary struct {
	median, low, high float64
	n                 int
}

func (s summary) ok() bool { return s.n > 0 }

// spread is half the range in percent of the median.
func (s summary) spread() float64 {
	if s.median == 0 {
		return 0
	}
	return 50 * (s.high - s.low) / math.Abs(s.median)
}

func summarize(vals []float64) summary {
	var ok []float64
	for _, v := range vals {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			ok = append(ok, v)
		}
	}
	if len(ok) == 0 {
		return summary{}
	}
	slices.Sort(ok)
	med := ok[len(ok)/2]
	if len(ok)%2 == 0 {
		med = (ok[len(ok)/2-1] + ok[len(ok)/2]) / 2
	}
	return summary{median: med, low: ok[0], high: ok[len(ok)-1], n: len(ok)}
}

// ratios divides a's values by b's, round by round.
func ratios(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] / b[i]
		if b[i] == 0 {
			out[i] = math.NaN()
		}
	}
	return out
}
