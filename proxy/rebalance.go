package proxy

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mqgate/mqgate/balance"
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

// RebalanceStatus is the progress of the last rebalance, as /status.json
// shows it.
type RebalanceStatus struct {
	Upstream string    `json:"upstream"`
	Reason   string    `json:"reason"` // node_added, move_back or admin
	State    string    `json:"state"`  // running, paused, done, cancelled
	Total    int       `json:"total"`  // connections to move
	Moved    int       `json:"moved"`  // moved so far
	Rate     float64   `json:"rate"`   // connections per second
	Since    time.Time `json:"since"`
}

// rebalancer runs one paced rebalance at a time: it closes, at a rate, the
// connections whose node is not the one the balancer picks for them now,
// so that their clients reconnect there a few at a time instead of all at
// once (a broker sees no reconnect storm).
type rebalancer struct {
	mu     sync.Mutex
	status *RebalanceStatus // the last one; nil before the first
	wake   chan struct{}    // resume and cancel wake a paused job
	moved  uint64           // all rebalances, for the metric
}

var errNoRebalance = errors.New("no rebalance is running")

// Rebalance starts moving the connections of the upstream that are not on
// the node its balancer would pick for them now, at rebalance.rate
// connections per second, each ended as EndRebalanced. A rebalance that
// runs is replaced. It returns the new rebalance's status.
func (s *Server) Rebalance(id string) (RebalanceStatus, error) {
	return s.rebalance(id, "admin", s.snap.Load().cfg.RebalanceSettings().Rate, EndRebalanced)
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
	var victims []*liveConn
	for _, lc := range s.matching(ConnFilter{Upstream: id}) {
		if ci, ok := lc.info(); ok && up.misplaced(lc, ci.Node) {
			victims = append(victims, lc)
		}
	}
	st := &RebalanceStatus{Upstream: id, Reason: reason, State: RebalanceRunning, Total: len(victims), Rate: rate, Since: time.Now()}
	r := &s.rebalancing
	r.mu.Lock()
	if r.status != nil && (r.status.State == RebalanceRunning || r.status.State == RebalancePaused) {
		r.status.State = RebalanceCancelled
	}
	if r.wake != nil {
		close(r.wake) // the replaced job sees it is no longer current
	}
	r.status, r.wake = st, make(chan struct{})
	wake := r.wake
	if len(victims) == 0 {
		st.State = RebalanceDone
	}
	out := *st
	r.mu.Unlock()
	if len(victims) > 0 {
		s.log.Info("rebalancing", "upstream", id, "reason", reason, "count", len(victims), "rate", rate)
		go s.runRebalance(st, wake, victims, end)
	}
	return out, nil
}

// runRebalance closes victims one every 1/rate seconds while st is
// current and running.
func (s *Server) runRebalance(st *RebalanceStatus, wake chan struct{}, victims []*liveConn, end pipe.End) {
	r := &s.rebalancing
	interval := time.Duration(float64(time.Second) / st.Rate)
	t := time.NewTimer(0)
	defer t.Stop()
	next := time.Now()
	for i := 0; i < len(victims); {
		lc := victims[i]
		for {
			r.mu.Lock()
			state, current := st.State, r.status == st
			w := r.wake
			r.mu.Unlock()
			wake = w
			if !current || state == RebalanceCancelled {
				return
			}
			if state == RebalanceRunning {
				break
			}
			select { // paused: wait for resume or cancel
			case <-w:
			case <-s.ctx.Done():
				return
			}
			next = time.Now()
		}
		t.Reset(time.Until(next))
		select {
		case <-t.C:
		case <-wake:
			continue // replaced, paused or cancelled: looked at above
		case <-s.ctx.Done():
			return
		}
		// Under r.mu, so that a pause or cancel returns the count of
		// every close there will be.
		r.mu.Lock()
		if r.status != st || st.State != RebalanceRunning {
			r.mu.Unlock()
			continue
		}
		next = next.Add(interval)
		if lc.closedBy() == "" {
			lc.close(end)
		}
		i++
		st.Moved++
		r.moved++
		if st.Moved == st.Total {
			st.State = RebalanceDone
		}
		r.mu.Unlock()
	}
}

// PauseRebalance pauses the running rebalance; ResumeRebalance goes on
// with it; CancelRebalance stops it. Each returns its status.
func (s *Server) PauseRebalance() (RebalanceStatus, error) {
	return s.setRebalance(RebalanceRunning, RebalancePaused)
}

func (s *Server) ResumeRebalance() (RebalanceStatus, error) {
	return s.setRebalance(RebalancePaused, RebalanceRunning)
}

func (s *Server) CancelRebalance() (RebalanceStatus, error) {
	return s.setRebalance("", RebalanceCancelled)
}

// setRebalance moves the current rebalance from state from ("" for
// running or paused) to state to.
func (s *Server) setRebalance(from, to string) (RebalanceStatus, error) {
	r := &s.rebalancing
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	if st == nil || st.State == RebalanceDone || st.State == RebalanceCancelled || from != "" && st.State != from {
		return RebalanceStatus{}, errNoRebalance
	}
	st.State = to
	close(r.wake)
	r.wake = make(chan struct{})
	return *st, nil
}

// RebalanceState returns the last rebalance, if any, and how many
// connections every rebalance has moved.
func (s *Server) RebalanceState() (last *RebalanceStatus, moved uint64) {
	r := &s.rebalancing
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status != nil {
		st := *r.status
		last = &st
	}
	return last, r.moved
}

// misplaced reports whether lc, now on node addr now, is not where the
// balancer would put it: for chash, the first node in the order of its
// hash key is another; for the other balancers, a node of a higher
// priority than now's is usable.
func (u *upstream) misplaced(lc *liveConn, now string) bool {
	cur := slices.Index(u.addrs, now)
	if cur < 0 {
		return false // its node is gone: a drain's business
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
				_, _ = s.rebalance(up.cfg.ID, "node_added", snap.cfg.RebalanceSettings().Rate, EndRebalanced)
				break
			}
		}
	}
}
