package pipe

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handing a parked pair on once it has stayed. A TLS pair whose records an
// event loop can carry costs less there per message and while idle, but
// moving it (two dups, two epoll registrations, closes) costs a short
// session (handshake, CONNECT, CONNACK, DISCONNECT) more than it saves: 5-20
// % more proxy CPU per connect when pairs moved right after the CONNACK. So
// such a pair parks first and is offered to its move only once it is older
// than the Settler's delay, at a moment both of its directions are parked:
// a session that ends within the delay never moves, an idle fleet moves
// about the delay after it connected, and a busy pair, whose directions
// would otherwise never park (a busy direction waits lingerFor in Go's
// poller), parks each direction at the end of a drain once it is past the
// delay, and is offered the moment both are parked (between a client's
// bursts and the broker's answers), a few tries per delay.
//
// No timer per pair: a pair enters the Settler's wheel only when its second
// direction parks (a session whose DISCONNECT comes within the busy window
// after its CONNACK never does), and one timer, running only while the
// wheel holds pairs, serves them all; at a slot's tick a pair is offered if
// both directions are still parked, else dropped, to enter again at its next
// park.

// Settler offers parked pairs (Settler.Park) to their move once they have
// stayed: when a pair is older than the Settler's delay and both of its
// directions are parked. Its methods are safe from any goroutine.
type Settler struct {
	after time.Duration
	tick  int64     // the wheel's resolution, nanoseconds of clock
	base  time.Time // clock 0
	mu    sync.Mutex
	slots [][]*settling // by tick modulo len(slots): due within one turn
	cur   int64         // the last tick fired
	count int
	timer *time.Timer // runs fire while count > 0
	armed bool
	// done: Close was called. Set under mu; read under it by the wheel,
	// without it by the offers made outside the wheel (parked).
	done atomic.Bool
}

// NewSettler returns a Settler that offers a pair once it is after old.
func NewSettler(after time.Duration) *Settler {
	tick := max(after/10, 10*time.Millisecond)
	s := &Settler{after: after, tick: int64(tick), base: time.Now()}
	// A pair is due at most after from now: one turn covers that.
	s.slots = make([][]*settling, int(after/tick)+2)
	s.timer = time.AfterFunc(time.Hour, s.fire)
	s.timer.Stop()
	return s
}

// clock is monotonic nanoseconds since the Settler was made.
func (s *Settler) clock() int64 { return int64(time.Since(s.base)) }

// Close stops the Settler: pairs waiting in it are not offered (they stay
// parked).
func (s *Settler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done.Store(true)
	s.timer.Stop()
	clear(s.slots)
	s.count = 0
}

// add puts st in the slot of clock time due (at most after from now).
func (s *Settler) add(st *settling, due int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done.Load() {
		return
	}
	if s.count == 0 {
		s.cur = max(s.cur, s.clock()/s.tick) // nothing to fire before now
	}
	t := max((due+s.tick-1)/s.tick, s.cur+1)
	t = min(t, s.cur+int64(len(s.slots))-1)
	i := t % int64(len(s.slots))
	s.slots[i] = append(s.slots[i], st)
	s.count++
	if !s.armed {
		s.armed = true
		s.timer.Reset(time.Duration((s.cur+1)*s.tick - s.clock()))
	}
}

// fire offers the pairs of the slots whose tick has passed, and runs again
// at the next tick while the wheel holds pairs.
func (s *Settler) fire() {
	s.mu.Lock()
	if s.done.Load() {
		s.mu.Unlock()
		return
	}
	now := s.clock()
	nt := now / s.tick
	if nt-s.cur > int64(len(s.slots)) {
		s.cur = nt - int64(len(s.slots)) // every slot fires once
	}
	var due []*settling
	for s.cur < nt {
		s.cur++
		i := s.cur % int64(len(s.slots))
		due = append(due, s.slots[i]...)
		clear(s.slots[i])
		s.slots[i] = s.slots[i][:0]
	}
	s.count -= len(due)
	s.armed = s.count > 0
	if s.armed {
		s.timer.Reset(time.Duration((s.cur+1)*s.tick - now))
	}
	s.mu.Unlock()
	for _, st := range due {
		st.offer()
	}
}

// Park is [Park] for a pair that may be handed on once it has stayed: when
// it is older than the Settler's delay and both its directions are parked,
// move is called with the pair's Handover, on the Settler's goroutine (it
// may block briefly: the pairs due after it wait), or, for a pair already
// past the delay when its second direction parks, on that direction's. move
// reports true when it took the pair (Handover.Take) and handed its sockets
// on: the pipe then ends without calling done, and the pipe's Control no
// longer reaches it. It reports false when the pair stays; it is offered
// again after a later park, a delay on at the soonest.
func (s *Settler) Park(client net.Conn, clientPC *ParkConn, broker net.Conn, brokerPC *ParkConn, ready Readiness, opts Options, done func(Result), move func(*Handover) bool) error {
	return park(client, clientPC, broker, brokerPC, ready, opts, done, newSettling(s, move))
}

// settling is what a pair parked by a Settler holds for it.
type settling struct {
	s        *Settler
	move     func(*Handover) bool
	start    int64       // s.clock() at Park
	queued   atomic.Bool // in s's wheel, or being offered
	up, down *direction
	// A busy direction parks at the end of a drain, for the pair to be
	// offered, from next (s.clock()) on, at most busyTries times before
	// next moves a delay on; a failed offer moves it too.
	next  atomic.Int64
	tries atomic.Int32
}

// busyTries bounds the parks of busy directions for a move per Settler
// delay: each costs a watch's re-arm and a wake through the notifier when
// the next bytes come (Take fails when they came first).
const busyTries = 8

func newSettling(s *Settler, move func(*Handover) bool) *settling {
	st := &settling{s: s, move: move, start: s.clock()}
	st.next.Store(st.start + int64(s.after))
	return st
}

// moveDue reports whether a busy direction of the pair should park now, at
// the end of a drain, so that the pair can be offered to its move: it is
// past the delay and has tries left.
func (st *settling) moveDue() bool {
	if st == nil {
		return false
	}
	now := st.s.clock()
	if now < st.next.Load() {
		return false
	}
	if st.tries.Add(1) > busyTries {
		st.retryLater(now)
		return false
	}
	return true
}

// retryLater gives the pair's busy directions their next tries a delay
// from now.
func (st *settling) retryLater(now int64) {
	st.next.Store(now + int64(st.s.after))
	st.tries.Store(0)
}

// parked is told when a direction of the pair has parked: with both
// parked, the pair is offered at once when it is s.after old (on the
// goroutine of the direction that parked last, which has nothing else to
// do), else it enters the wheel, due when it is.
func (st *settling) parked() {
	if st == nil || !st.idle() || !st.queued.CompareAndSwap(false, true) {
		return
	}
	due := st.start + int64(st.s.after)
	if st.s.clock() >= due {
		if st.s.done.Load() {
			st.queued.Store(false)
			return
		}
		st.offer()
		return
	}
	st.s.add(st, due)
}

func (st *settling) idle() bool {
	return st.up.park.state.Load() == parkIdle && st.down.park.state.Load() == parkIdle
}

// offer offers the pair to its move, when both directions are still
// parked; else the next park puts it in the wheel again.
func (st *settling) offer() {
	st.queued.Store(false)
	if !st.idle() {
		st.retryLater(st.s.clock())
		return
	}
	h := &Handover{up: st.up, down: st.down}
	if st.move(h) {
		if h.taken {
			h.moved()
		}
		return
	}
	st.retryLater(st.s.clock())
	if h.taken {
		h.resume()
	}
}

// Handover is a parked pair offered to its move (Settler.Park).
type Handover struct {
	up, down *direction
	taken    bool
}

// Take stops the pair's pipe, unless it is not between packets both ways
// with nothing under way: a direction woke meanwhile, a packet is cut, a
// side has sent FIN or the client DISCONNECT, or a close (the idle limit,
// a close at a boundary) has begun; then it reports false and the pipe
// goes on. After Take the sockets are the caller's to hand on: their reads
// no longer park, no readiness or deadline wakes them, and the caller must
// not ask the pipe's Control for a close until move returns (mqgate holds
// the connection's lock). A move that reports false after Take gives them
// back: the pipe goes on as if the pair had just parked.
func (h *Handover) Take() bool {
	up, down := h.up, h.down
	if !up.park.state.CompareAndSwap(parkIdle, parkMoving) {
		return false
	}
	if !down.park.state.CompareAndSwap(parkIdle, parkMoving) {
		up.park.release(up)
		return false
	}
	// Both directions are still: their fields are ours to read (their
	// goroutines stored them before parking).
	sh := up.shared
	if sh.closing.Load() != nil || sh.halfClosed.Load() || sh.aborted.Load() || sh.first.Load() != nil ||
		up.bye || !up.frame.AtBoundary() || !down.frame.AtBoundary() ||
		!up.park.pc.parked.Load() || !down.park.pc.parked.Load() {
		up.park.release(up)
		down.park.release(down)
		return false
	}
	h.taken = true
	for _, d := range []*direction{up, down} {
		if err := d.park.leave(); err != nil {
			h.resume() // the socket was closed: the drain meets it
			return false
		}
	}
	up.park.pc.unpark()
	down.park.pc.unpark()
	return true
}

// Idle is how long no byte has passed either way (with Options.Idle set):
// where the idle limit of the pair's next carrier starts.
func (h *Handover) Idle() time.Duration {
	return time.Duration(max(time.Now().UnixNano()-h.up.lastActive.Load(), 0))
}

// moved ends the pipe of a pair handed on: no done, no Control.
func (h *Handover) moved() {
	h.up.park.state.Store(parkDone)
	h.down.park.state.Store(parkDone)
	if c := h.up.opts.Control; c != nil {
		c.attach(nil)
	}
}

// resume gives a taken pair back to its pipe: each direction parks its
// socket again and drains once, which arms a new watch.
func (h *Handover) resume() {
	h.taken = false
	for _, d := range []*direction{h.up, h.down} {
		d.park.w = nil // left (or failed to): the next arm watches anew
		// A socket closed meanwhile fails to park: its reads then
		// wait in Go's poller, and fail at once.
		_, _ = d.park.pc.park(d.wakeParked)
		d.park.state.Store(parkRunning)
		go d.runParked()
	}
}
