package epoll

import "time"

// Tick is the timer wheel's resolution: a limit fires up to one Tick late.
const Tick = 50 * time.Millisecond

// wheelSlots × Tick is the span the wheel covers in one turn (about 102 s,
// more than MQTT's usual 1.5 × keepalive); a later deadline waits in the
// farthest slot and is rescheduled from there.
const wheelSlots = 2048

// Conn.slot is an int16: the wheel must stay within it.
const _ int16 = wheelSlots - 1

// wheel is a hashed timer wheel of pairs: adding, removing and firing are
// O(1), and a pair's activity costs nothing here, because a fired pair
// computes its real deadline and is put back when it is not due (lazy
// re-arming, as pipe does with its idle deadline).
type wheel struct {
	slots []*Conn // heads of doubly linked lists through pair.prev/next
	cur   int64   // the last tick fired
	count int     // pairs in the wheel
}

func newWheel() wheel { return wheel{slots: make([]*Conn, wheelSlots)} }

const tickNs = int64(Tick)

// add schedules p at loop clock due.
func (w *wheel) add(p *Conn, due int64) {
	t := (due + tickNs - 1) / tickNs
	t = min(max(t, w.cur+1), w.cur+wheelSlots-1)
	s := int16(t % wheelSlots)
	p.due, p.slot = due, s
	p.prev, p.next = nil, w.slots[s]
	if p.next != nil {
		p.next.prev = p
	}
	w.slots[s] = p
	w.count++
}

func (w *wheel) remove(p *Conn) {
	if p.slot < 0 {
		return
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		w.slots[p.slot] = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.prev, p.next, p.slot = nil, nil, -1
	w.count--
}

// advance fires every slot up to now; fire may add the pair again.
func (w *wheel) advance(now int64, fire func(*Conn)) {
	nt := now / tickNs
	if nt-w.cur > wheelSlots {
		w.cur = nt - wheelSlots // every slot fires once
	}
	for w.cur < nt {
		w.cur++
		s := w.cur % wheelSlots
		p := w.slots[s]
		w.slots[s] = nil
		for p != nil {
			next := p.next
			p.prev, p.next, p.slot = nil, nil, -1
			w.count--
			fire(p)
			p = next
		}
	}
}

// nextTick is the loop-clock time of the next tick when the wheel holds
// pairs, 0 when it is empty.
func (w *wheel) nextTick() int64 {
	if w.count == 0 {
		return 0
	}
	return (w.cur + 1) * tickNs
}
