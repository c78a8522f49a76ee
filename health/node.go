package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/config"
)

// Node is the health of one node of one upstream: the one view that
// balancers read (Healthy) and operators see (Status). Active probes and
// passive reports (ReportDial) both change it; every change of state is
// logged once.
type Node struct {
	upstream, addr string
	log            *slog.Logger
	changed        func(Status) // called after a change of state, in its own goroutine; may be nil

	healthy atomic.Bool
	// retryAt is when a node taken out by passive checks alone goes back
	// on trial, in Unix nanoseconds; 0 when it does not.
	retryAt atomic.Int64
	// suspect is set while passive failures are counted or the node is on
	// trial: only then has a good dial something to reset, so the common
	// good dial takes no lock.
	suspect atomic.Bool

	mu       sync.Mutex
	reason   string
	since    time.Time
	active   []*config.ActiveCheck // empty = no probes
	checks   []checkState          // one per active check
	passive  *config.PassiveCheck  // nil = no passive counting
	trial    bool                  // back from a passive time out, not yet proven
	probedBy string                // "mqtt", "tcp", "http", "https", or several joined by "+", while probes run

	// Passive: failures counted since passiveStart.
	passiveFails, passiveTimeouts int
	passiveStart                  time.Time

	lastProbe        time.Time
	lastProbeLatency time.Duration
	lastProbeErr     string
	probes, failed   uint64
}

// checkState is one active check's view of a node: its consecutive results
// and whether it holds the node down. A node is healthy by its probes only
// while no check holds it down.
type checkState struct {
	okRun, failRun, timeoutRun, httpFailRun int
	down                                    bool
}

func newNode(upstream, addr string, log *slog.Logger, changed func(Status)) *Node {
	n := &Node{upstream: upstream, addr: addr, log: log, changed: changed, reason: "not checked", since: time.Now()}
	n.healthy.Store(true)
	return n
}

// Healthy reports whether the node may be dialled: an atomic load, except
// for a node whose passive time out just ended, which goes back on trial.
func (n *Node) Healthy() bool {
	if n.healthy.Load() {
		return true
	}
	at := n.retryAt.Load()
	if at == 0 || time.Now().UnixNano() < at {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.healthy.Load() && n.retryAt.Load() == at {
		n.trial = true
		n.suspect.Store(true)
		n.resetPassive(time.Now())
		n.set(true, "on trial after fail_timeout "+n.passive.FailTimeout.String())
	}
	return true
}

// Status is what is known about a node at one moment.
type Status struct {
	Upstream, Addr string
	Healthy        bool
	OnTrial        bool      // healthy again after passive checks' fail_timeout, not yet proven
	Reason         string    // why it is in this state
	Since          time.Time // when it entered it
	Probe          string    // "mqtt", "tcp" or "" when no probes run
	Probes         uint64    // probes done
	ProbeFailures  uint64    // probes failed
	LastProbe      time.Time // zero before the first probe
	LastLatency    time.Duration
	LastProbeError string // "" when the last probe succeeded
	// Passive is the passive counting in force ("tcp_failures=1
	// timeouts=1 fail_timeout=10s"), "" when there is none; the counts
	// are the failed dials of the current fail_timeout window.
	Passive                          string
	PassiveFailures, PassiveTimeouts int
}

// Status returns the node's current state.
func (n *Node) Status() Status {
	healthy := n.Healthy()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status(healthy)
}

// status is Status with n.mu held.
func (n *Node) status(healthy bool) Status {
	st := Status{
		Upstream: n.upstream, Addr: n.addr, Healthy: healthy, OnTrial: healthy && n.trial, Reason: n.reason, Since: n.since,
		Probe: n.probedBy, Probes: n.probes, ProbeFailures: n.failed,
		LastProbe: n.lastProbe, LastLatency: n.lastProbeLatency, LastProbeError: n.lastProbeErr,
	}
	if p := n.passive; p != nil {
		st.Passive = fmt.Sprintf("tcp_failures=%d timeouts=%d fail_timeout=%s", p.TCPFailures, p.Timeouts, p.FailTimeout)
		if time.Since(n.passiveStart) <= p.FailTimeout {
			st.PassiveFailures, st.PassiveTimeouts = n.passiveFails, n.passiveTimeouts
		}
	}
	return st
}

// set changes the state and logs the change. n.mu is held.
func (n *Node) set(healthy bool, reason string) {
	n.reason = reason
	if n.healthy.Load() == healthy {
		return
	}
	now := time.Now()
	was := now.Sub(n.since)
	n.since = now
	// Logged before the change shows, so that whoever sees it finds it
	// in the log too.
	if healthy {
		n.log.Info("node healthy", "upstream", n.upstream, "node", n.addr, "reason", reason, "was_unhealthy_for", was.Round(time.Millisecond))
	} else {
		n.log.Warn("node unhealthy", "upstream", n.upstream, "node", n.addr, "reason", reason)
	}
	n.healthy.Store(healthy)
	if healthy {
		n.retryAt.Store(0)
	}
	if n.changed != nil {
		go n.changed(n.status(healthy))
	}
}

// configure applies an upstream's checks to the node. n.mu is not held.
// Checks whose settings stay keep their counts.
func (n *Node) configure(active []*config.ActiveCheck, passive *config.PassiveCheck) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !slices.EqualFunc(n.active, active, (*config.ActiveCheck).Equal) {
		n.checks = make([]checkState, len(active))
		for i := range n.checks {
			n.checks[i].down = !n.healthy.Load()
		}
	}
	n.active, n.passive = active, passive
	types := make([]string, len(active))
	for i, a := range active {
		types[i] = a.Type
	}
	n.probedBy = strings.Join(types, "+")
	switch {
	case n.healthy.Load():
	case len(active) == 0 && passive == nil:
		n.set(true, "health checks removed")
	case len(active) == 0 && n.retryAt.Load() == 0:
		// Down by probes that no longer run: passive checks take over.
		n.retryAt.Store(time.Now().Add(passive.FailTimeout).UnixNano())
	case len(active) > 0:
		n.retryAt.Store(0) // probes decide from now on
	}
}

// probed records the result of a probe of active check i.
func (n *Node) probed(i int, err error, latency time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i >= len(n.active) {
		return
	}
	a, cs := n.active[i], &n.checks[i]
	n.probes++
	n.lastProbe, n.lastProbeLatency = time.Now(), latency
	if err == nil {
		n.lastProbeErr = ""
		cs.failRun, cs.timeoutRun, cs.httpFailRun = 0, 0, 0
		cs.okRun++
		if cs.down && cs.okRun >= a.Successes {
			cs.down = false
		}
		if !n.healthy.Load() && !n.heldDown() {
			n.trial = false
			n.set(true, fmt.Sprintf("%s probe: %d successes in a row", a.Type, cs.okRun))
		}
		return
	}
	var neutral *neutralStatus
	if errors.As(err, &neutral) {
		// A status in neither list says nothing, as in APISIX.
		n.lastProbeErr = err.Error()
		return
	}
	n.failed++
	n.lastProbeErr = err.Error()
	cs.okRun = 0
	var reason string
	var hs *httpStatusError
	switch {
	case errors.As(err, &hs):
		if cs.httpFailRun++; cs.httpFailRun >= a.HTTPFailures {
			reason = fmt.Sprintf("%s probe: %d HTTP failures in a row: %v", a.Type, cs.httpFailRun, err)
		}
	case isTimeout(err):
		if cs.timeoutRun++; cs.timeoutRun >= a.Timeouts {
			reason = fmt.Sprintf("%s probe: %d timeouts in a row: %v", a.Type, cs.timeoutRun, err)
		}
	default:
		if cs.failRun++; cs.failRun >= a.TCPFailures {
			reason = fmt.Sprintf("%s probe: %d failures in a row: %v", a.Type, cs.failRun, err)
		}
	}
	switch {
	case !cs.down && reason != "":
		cs.down = true
		if n.healthy.Load() {
			n.set(false, reason)
		} else {
			n.reason = reason
		}
	case !n.healthy.Load() && cs.down:
		n.reason = fmt.Sprintf("%s probe: %v", a.Type, err)
	}
}

// heldDown reports whether an active check holds the node down. n.mu is held.
func (n *Node) heldDown() bool {
	for _, cs := range n.checks {
		if cs.down {
			return true
		}
	}
	return false
}

// ReportDial records the outcome of dialling the node for a client
// connection: nil for success. With passive checks configured, failures
// within fail_timeout take the node out of service.
func (n *Node) ReportDial(err error) {
	if err == nil {
		if !n.suspect.Load() {
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.healthy.Load() {
			n.trial = false
			n.suspect.Store(false)
			n.resetPassive(time.Now())
		}
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.passive
	if p == nil {
		return
	}
	now := time.Now()
	if !n.healthy.Load() {
		return // already out; the dial raced with the change
	}
	if now.Sub(n.passiveStart) > p.FailTimeout {
		n.resetPassive(now)
	}
	n.suspect.Store(true)
	timeout := isTimeout(err)
	if timeout {
		n.passiveTimeouts++
	} else {
		n.passiveFails++
	}
	var reason string
	switch {
	case n.trial:
		reason = fmt.Sprintf("passive: failed on trial: %v", err)
	case n.passiveTimeouts >= p.Timeouts:
		reason = fmt.Sprintf("passive: %d dial timeouts within %s: %v", n.passiveTimeouts, p.FailTimeout, err)
	case n.passiveFails >= p.TCPFailures:
		reason = fmt.Sprintf("passive: %d dial failures within %s: %v", n.passiveFails, p.FailTimeout, err)
	default:
		return
	}
	n.trial = false
	// Every probe must prove the node again before it is back.
	for i := range n.checks {
		n.checks[i].okRun, n.checks[i].down = 0, true
	}
	n.resetPassive(now)
	if len(n.active) == 0 {
		n.retryAt.Store(now.Add(p.FailTimeout).UnixNano())
		reason += fmt.Sprintf("; retried after %s", p.FailTimeout)
	}
	n.set(false, reason)
}

// Forgive puts a node that passive counting alone took out back in
// service at once, on trial, without a log line: for an upstream whose
// every node is out, whose next client tries them all again, as NGINX does
// when no server is left. It reports whether the node was out that way; a
// node held down by probes stays down.
func (n *Node) Forgive() bool {
	if n.healthy.Load() {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.healthy.Load() || len(n.active) > 0 || n.retryAt.Load() == 0 {
		return false
	}
	n.trial = true
	n.suspect.Store(true)
	n.resetPassive(time.Now())
	n.retryAt.Store(0)
	n.reason = "on trial: every node of the upstream was out by passive counting"
	n.since = time.Now()
	n.healthy.Store(true)
	if n.changed != nil {
		go n.changed(n.status(true))
	}
	return true
}

func (n *Node) resetPassive(now time.Time) {
	n.passiveFails, n.passiveTimeouts, n.passiveStart = 0, 0, now
}

// isTimeout reports whether err is a timeout rather than a refusal.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
