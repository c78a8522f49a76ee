package proxy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/pipe"
)

// EndRebalanced: a paced rebalance moved the connection to the node its
// hash key picks now (a 5.0 client is told 0x9C Use another server).
const EndRebalanced pipe.End = "rebalanced"

// Rebalance states.
const (
	RebalanceRunning   = "running"
	RebalancePaused    = "paused"
	RebalanceDone      = "done"
	RebalanceCancelled = "cancelled"
)

// Why a paced job runs (RebalanceStatus.Reason).
const (
	ReasonNodeAdded = "node_added" // a reload or Admin API write added a node to a chash upstream
	ReasonMoveBack  = "move_back"  // checks.on_marked_up: move_back, a node is healthy again
	ReasonAdmin     = "admin"      // POST /rebalance/{upstream}
	ReasonDrain     = "drain"      // the connections of removed routes and nodes
	ReasonShutdown  = "shutdown"   // mqgate run -drain-spread
)

// RebalanceStatus is the progress of the last paced job (a rebalance or a
// drain), as /status.json shows it.
type RebalanceStatus struct {
	Upstream string  `json:"upstream"` // "" for a drain or a shutdown, which span upstreams
	Reason   string  `json:"reason"`   // node_added, move_back, admin, drain or shutdown
	State    string  `json:"state"`    // running, paused, done, cancelled
	Total    int     `json:"total"`    // connections to move
	Moved    int     `json:"moved"`    // moved so far
	Skipped  int     `json:"skipped"`  // gone on their own, or no longer misplaced, when their turn came
	Carried  int     `json:"carried"`  // of Total, taken over from the job this one replaced
	Rate     float64 `json:"rate"`     // connections per second (0: all at once)
	// Since is when the job started; Finished when it ended (done or
	// cancelled), so that moved / (Finished - Since) is the rate achieved.
	Since    time.Time  `json:"since"`
	Finished *time.Time `json:"finished,omitempty"`
}

// Pending is how many connections the job has still to move.
func (st RebalanceStatus) Pending() int {
	if st.State != RebalanceRunning && st.State != RebalancePaused {
		return 0
	}
	return st.Total - st.Moved - st.Skipped
}

// move is one connection a paced job is to close, and the end it gets.
// The end says too why it is moved, and so whether it still has to go
// when its turn comes (stillToMove).
type move struct {
	lc  *liveConn
	end pipe.End
}

type pacedJob struct {
	st    *RebalanceStatus
	moves []move
	next  int // moves[:next] are done: moved or skipped
}

// rebalancer is mqgate's one pacing mechanism. Every move of connections
// from one node to another that mqgate decides — a node added, a node
// back (move_back), the Admin API's rebalance, a drain of removed routes
// and nodes, the spread of a shutdown — is a job of closes, one every
// 1/rate seconds, so that the clients reconnect a few at a time instead of
// all at once (a broker sees no reconnect storm). One job runs at a time:
// a new one takes over the moves its predecessor had not made yet.
type rebalancer struct {
	mu    sync.Mutex
	job   *pacedJob     // the last one; nil before the first
	wake  chan struct{} // resume, cancel and a new job wake a waiting job
	moved uint64        // all jobs, for the metric
}

var errNoRebalance = errors.New("no rebalance is running")

// Rebalance starts moving the connections of the upstream that are not on
// the node its balancer would pick for them now, at rebalance.rate
// connections per second, each ended as EndRebalanced. It returns the new
// job's status.
func (s *Server) Rebalance(id string) (RebalanceStatus, error) {
	return s.rebalance(id, ReasonAdmin, s.snap.Load().cfg.RebalanceSettings().Rate, EndRebalanced)
}

// rebalance starts a rebalance of upstream id for reason, ending each
// moved connection as end.
func (s *Server) rebalance(id, reason string, rate float64, end pipe.End) (RebalanceStatus, error) {
	snap := s.snap.Load()
	i := slices.IndexFunc(snap.upstreams, func(u *upstream) bool { return u.cfg.ID == id })
	if i < 0 {
		return RebalanceStatus{}, fmt.Errorf("no upstream %q", id)
	}
	up := snap.upstreams[i]
	var moves []move
	for _, lc := range s.matching(ConnFilter{Upstream: id}) {
		if ci, ok := lc.info(); ok && up.misplaced(lc, ci.Node) {
			moves = append(moves, move{lc, end})
		}
	}
	return s.pace(id, reason, rate, moves), nil
}

// pace starts a job that makes moves at rate a second (+Inf: all at once),
// taking over the moves the job that runs has not made yet; that one is
// cancelled. It returns the new job's status.
func (s *Server) pace(upstream, reason string, rate float64, moves []move) RebalanceStatus {
	r := &s.rebalancing
	r.mu.Lock()
	var carried []move
	if old := r.job; old != nil && (old.st.State == RebalanceRunning || old.st.State == RebalancePaused) {
		old.st.State = RebalanceCancelled
		now := time.Now()
		old.st.Finished = &now
		mine := make(map[*liveConn]bool, len(moves))
		for _, m := range moves {
			mine[m.lc] = true
		}
		for _, m := range old.moves[old.next:] {
			if !mine[m.lc] {
				carried = append(carried, m)
			}
		}
	}
	job := &pacedJob{moves: append(carried, moves...)}
	job.st = &RebalanceStatus{Upstream: upstream, Reason: reason, State: RebalanceRunning,
		Total: len(job.moves), Carried: len(carried), Rate: rate, Since: time.Now()}
	if math.IsInf(rate, 1) {
		job.st.Rate = 0
	}
	if r.wake != nil {
		close(r.wake) // the replaced job sees it is no longer current
	}
	r.job, r.wake = job, make(chan struct{})
	if len(job.moves) == 0 {
		job.st.State = RebalanceDone
		job.st.Finished = &job.st.Since
	}
	out := *job.st
	r.mu.Unlock()
	if len(job.moves) > 0 {
		s.log.Info("moving connections, paced", "upstream", upstream, "reason", reason, "count", len(job.moves), "carried", len(carried), "rate", out.Rate)
		go s.runJob(job, rate)
	}
	return out
}

// catchUp bounds how far a job that fell behind its pace (a busy machine,
// timer slack) closes in a burst to make up for it.
const catchUp = 100 * time.Millisecond

// runJob makes the job's moves, one every 1/rate seconds, while it is
// current and running. A move that no longer has to be made is skipped
// without waiting.
func (s *Server) runJob(job *pacedJob, rate float64) {
	r := &s.rebalancing
	var interval time.Duration
	if rate > 0 && !math.IsInf(rate, 1) {
		interval = time.Duration(float64(time.Second) / rate)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	next := time.Now()
	for {
		r.mu.Lock()
		st, w := job.st, r.wake
		if r.job != job || st.State == RebalanceCancelled || st.State == RebalanceDone {
			r.mu.Unlock()
			return
		}
		if st.State == RebalancePaused {
			r.mu.Unlock()
			select { // wait for resume or cancel
			case <-w:
			case <-s.ctx.Done():
				return
			}
			next = time.Now()
			continue
		}
		r.mu.Unlock()
		if d := time.Until(next); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-w:
				continue // replaced, paused or cancelled: looked at above
			case <-s.ctx.Done():
				return
			}
		} else if -d > catchUp {
			next = time.Now().Add(-catchUp)
		}
		// Under r.mu, so that a pause or cancel returns the count of
		// every close there will be.
		r.mu.Lock()
		if r.job != job || st.State != RebalanceRunning {
			r.mu.Unlock()
			continue
		}
		for job.next < len(job.moves) {
			m := job.moves[job.next]
			job.next++
			if s.stillToMove(m) {
				m.lc.close(m.end)
				st.Moved++
				r.moved++
				next = next.Add(interval)
				break
			}
			st.Skipped++
		}
		if job.next == len(job.moves) {
			st.State = RebalanceDone
			now := time.Now()
			st.Finished = &now
		}
		r.mu.Unlock()
	}
}

// stillToMove reports whether m is still to be made: its connection is
// open and not being closed, and the reason it is moved holds yet — a
// rebalanced connection is still not where its balancer would put it, a
// drained one's node or route is still gone.
func (s *Server) stillToMove(m move) bool {
	lc := m.lc
	lc.mu.Lock()
	e := &lc.entry
	open := lc.reason == "" && (!e.piping || !e.settled)
	piping := e.piping && !e.settled
	var node *nodeState
	var route *routeState
	if piping {
		node, route = lc.node, lc.rec.route // written before piping was set, not after
	}
	lc.mu.Unlock()
	if !open {
		return false
	}
	switch m.end {
	case EndRebalanced, EndMovedBack:
		if !piping {
			return false
		}
		snap := s.snap.Load()
		i := slices.IndexFunc(snap.upstreams, func(u *upstream) bool { return u.cfg.ID == node.upstreamID })
		return i >= 0 && snap.upstreams[i].misplaced(lc, node.addr)
	case EndDrained:
		return piping && !s.snap.Load().hasNode(node)
	case EndRouteRemoved:
		return piping && !slices.ContainsFunc(s.snap.Load().cfg.StreamRoutes, func(r config.StreamRoute) bool { return r.ID == route.id })
	}
	return true
}

// PauseRebalance pauses the running job (a rebalance or a drain);
// ResumeRebalance goes on with it; CancelRebalance stops it. Each returns
// its status.
func (s *Server) PauseRebalance() (RebalanceStatus, error) {
	return s.setRebalance(RebalanceRunning, RebalancePaused)
}

func (s *Server) ResumeRebalance() (RebalanceStatus, error) {
	return s.setRebalance(RebalancePaused, RebalanceRunning)
}

func (s *Server) CancelRebalance() (RebalanceStatus, error) {
	return s.setRebalance("", RebalanceCancelled)
}

// setRebalance moves the current job from state from ("" for running or
// paused) to state to.
func (s *Server) setRebalance(from, to string) (RebalanceStatus, error) {
	r := &s.rebalancing
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.job == nil {
		return RebalanceStatus{}, errNoRebalance
	}
	st := r.job.st
	if st.State == RebalanceDone || st.State == RebalanceCancelled || from != "" && st.State != from {
		return RebalanceStatus{}, errNoRebalance
	}
	st.State = to
	if to == RebalanceCancelled {
		now := time.Now()
		st.Finished = &now
	}
	close(r.wake)
	r.wake = make(chan struct{})
	return *st, nil
}

// RebalanceState returns the last job, if any, and how many connections
// every job has moved.
func (s *Server) RebalanceState() (last *RebalanceStatus, moved uint64) {
	r := &s.rebalancing
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.job != nil {
		st := *r.job.st
		last = &st
	}
	return last, r.moved
}

// misplaced reports whether lc, now on node addr now, is not where the
// balancer would put it: for chash, the first node in the order of its
// hash key is another; for the other balancers, a node of a higher
// priority than now's is usable. A connection on a node that is out of
// service (marked down by probes, or taken out by passive counting) is
// not misplaced: the balancer's order skips that node, so every key would
// look misplaced, but what becomes of its live connections is
// checks.on_marked_down's decision (keep, by default, as NGINX keeps a
// server's connections past max_fails), not a rebalance's.
func (u *upstream) misplaced(lc *liveConn, now string) bool {
	cur := slices.Index(u.addrs, now)
	if cur < 0 {
		return false // its node is gone: a drain's business
	}
	if !u.health[cur].Healthy() {
		return false
	}
	for first := range u.bal.Order(u.keyOf(lc)) {
		if u.cfg.Type == balance.TypeConsistentHash {
			return first != cur
		}
		return u.cfg.Nodes[first].Priority > u.cfg.Nodes[cur].Priority
	}
	return false
}

func (u *upstream) keyOf(lc *liveConn) string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.rec.hashKey
}

// hasNode reports whether n is a node of one of snap's upstreams.
func (snap *snapshot) hasNode(n *nodeState) bool {
	for _, u := range snap.upstreams {
		if slices.Contains(u.nodes, n) {
			return true
		}
	}
	return false
}

// rebalanceAdded starts a rebalance of every chash upstream of snap that
// has a node old had not: the clients whose key hashes to the new node
// now move there, and no other.
func (s *Server) rebalanceAdded(old, snap *snapshot) {
	seen := map[*upstream]bool{}
	for _, up := range snap.upstreams {
		if up.cfg.Type != balance.TypeConsistentHash || seen[up] {
			continue
		}
		seen[up] = true
		i := slices.IndexFunc(old.upstreams, func(o *upstream) bool { return o.cfg.ID == up.cfg.ID })
		if i < 0 {
			continue
		}
		for _, a := range up.addrs {
			if !slices.Contains(old.upstreams[i].addrs, a) {
				_, _ = s.rebalance(up.cfg.ID, ReasonNodeAdded, snap.cfg.RebalanceSettings().Rate, EndRebalanced)
				break
			}
		}
	}
}
