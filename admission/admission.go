// Package admission caps the connections that have not finished their MQTT
// CONNECT yet (PROXY header, TLS handshake and CONNECT still to come): in
// all, per source address, and so that they never take the descriptors kept
// in reserve for the Admin API, health probes and broker dials. A full cap
// never refuses the newcomer: it sheds the oldest unfinished connection
// instead, so a flood cannot shut real clients out by being early, and a
// real client, which sends its CONNECT at once, is through before its turn
// to be shed comes.
//
//	g := admission.New(admission.Defaults(admission.OpenFileLimit()))
//	t, ok := g.Admit(remote.Addr(), 0, func() { conn.Close() })
//	if !ok {
//		return // shed at once, closed: nothing older made room
//	}
//	defer t.Done() // idempotent; call it as soon as the CONNECT is read
//
// Gate.Run logs the sheds as a rate, one line per interval, never one per
// connection.
package admission

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Limits are the caps of a Gate. A zero field has no cap.
type Limits struct {
	Total      int // unfinished connections at once
	PerAddress int // unfinished connections at once from one source address
	// Descriptors is how many descriptors connections may hold in all
	// (the open-file limit less the reserve); an unfinished connection
	// holds one, the caller says how many proxied ones hold (Admit).
	Descriptors int
}

// Defaults derives the caps from the process's open-file limit nofile:
// a reserve of 1/128 (at least 64) is never given to connections, half of
// the rest may be unfinished at once, a quarter of that from one address.
// With 20,000: reserve 156, total 9,922, per address 2,480.
func Defaults(nofile int) Limits { return DefaultsWithReserve(nofile, DefaultReserve(nofile)) }

// DefaultsWithReserve is Defaults with a reserve of the caller's choosing.
func DefaultsWithReserve(nofile, reserve int) Limits {
	total := max((nofile-reserve)/2, 1)
	return Limits{Total: total, PerAddress: max(total/4, 1), Descriptors: max(nofile-reserve, 1)}
}

// DefaultReserve is the descriptors kept out of the connections' reach for
// an open-file limit of nofile. The Admin API, health probes and log files
// need tens; a twentieth (1,000 at 20,000) cost 500 proxied pairs that
// HAProxy and NGINX hold at the same limit (bench/: 9,500 of 9,900 held).
func DefaultReserve(nofile int) int { return max(64, nofile/128) }

// OpenFileLimit is the process's soft RLIMIT_NOFILE (which the Go runtime
// raises to the hard limit at start), or 1024 when it cannot be read.
func OpenFileLimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 1024
	}
	return int(min(r.Cur, 1<<30))
}

// Why a connection was shed.
const (
	ShedPerAddress  = "per_address" // its source address was at PerAddress
	ShedTotal       = "total"       // unfinished connections were at Total
	ShedDescriptors = "descriptors" // connections held every descriptor outside the reserve
)

// Reasons lists the shed reasons in a fixed order, for counters.
var Reasons = [...]string{ShedPerAddress, ShedTotal, ShedDescriptors}

// Gate admits connections and sheds the oldest unfinished ones when a cap is
// full. It is safe for concurrent use.
type Gate struct {
	mu     sync.Mutex
	lim    Limits
	all    list // every unfinished connection, oldest first (chainAll)
	byAddr map[netip.Addr]*list
	shed   [len(Reasons)]atomic.Uint64
	n      atomic.Int64 // all.len, readable without the lock
	// closing counts the shed connections whose Done has not come yet:
	// closing a socket that a goroutine is reading frees its descriptor
	// only once that goroutine runs, which in a flood may take a while.
	closing atomic.Int64
	proxied atomic.Int64 // the last Admit's proxiedFDs
	// spare is an address's list that emptied, for the next address: with
	// most addresses holding one unfinished connection at a time, a list
	// per connect otherwise. Guarded by mu.
	spare *list
}

// addrList is addr's list, made (or taken from spare) for its first
// connection. g.mu is held.
func (g *Gate) addrList(addr netip.Addr) *list {
	al := g.byAddr[addr]
	if al == nil {
		if al = g.spare; al != nil {
			g.spare = nil
		} else {
			al = &list{chain: chainAddr}
		}
		g.byAddr[addr] = al
	}
	return al
}

// leftAddr takes t out of its address's list, which goes when it empties.
// g.mu is held.
func (g *Gate) leftAddr(t *Ticket) {
	al := g.byAddr[t.addr]
	al.remove(t)
	if al.len == 0 {
		delete(g.byAddr, t.addr)
		if g.spare == nil {
			g.spare = al
		}
	}
}

// New returns a gate with the caps lim.
func New(lim Limits) *Gate {
	return &Gate{lim: lim, all: list{chain: chainAll}, byAddr: make(map[netip.Addr]*list)}
}

// SetLimits changes the caps (a reload). Connections over a lowered cap are
// shed on the next admission, not at once: a reload never closes anything
// by itself.
func (g *Gate) SetLimits(lim Limits) {
	g.mu.Lock()
	g.lim = lim
	g.mu.Unlock()
}

// Limits returns the caps in force.
func (g *Gate) Limits() Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim
}

// Ticket is one unfinished connection's place in the gate.
type Ticket struct {
	g     *Gate
	addr  netip.Addr
	close func()
	gone  bool    // done or shed; guarded by g.mu
	shed  bool    // shed and counted in g.closing until Done; guarded by g.mu
	links [2]link // its places in the gate's list and its address's (chainAll, chainAddr)
}

// link is a ticket's place in one list.
type link struct{ prev, next *Ticket }

// The two lists a ticket is in.
const (
	chainAll  = iota // the gate's: every unfinished connection
	chainAddr        // its address's
)

// Admit takes a place for a connection from addr and, when a cap is full,
// sheds the oldest unfinished connections (of addr for the per-address cap)
// by calling their close functions. proxiedFDs is how many descriptors the
// connections past their CONNECT hold now. It reports false when the
// newcomer itself is shed (every older connection is gone and the
// descriptors are still short); its close function has been called too.
func (g *Gate) Admit(addr netip.Addr, proxiedFDs int, close func()) (*Ticket, bool) {
	addr = addr.Unmap()
	t := &Ticket{g: g, addr: addr, close: close}
	g.proxied.Store(int64(proxiedFDs))
	var shed []*Ticket
	g.mu.Lock()
	g.all.push(t)
	al := g.addrList(addr)
	al.push(t)
	if max := g.lim.PerAddress; max > 0 {
		for al.len > max {
			shed = append(shed, g.drop(al.head, ShedPerAddress))
		}
	}
	if max := g.lim.Total; max > 0 {
		for g.all.len > max {
			shed = append(shed, g.drop(g.all.head, ShedTotal))
		}
	}
	if max := g.lim.Descriptors; max > 0 {
		for g.all.len > 0 && g.all.len+proxiedFDs > max {
			shed = append(shed, g.drop(g.all.head, ShedDescriptors))
		}
	}
	ok := !t.gone
	g.n.Store(int64(g.all.len))
	g.mu.Unlock()
	for _, s := range shed {
		s.close()
	}
	return t, ok
}

// ShedOldest sheds up to n of the oldest unfinished connections for want of
// descriptors (the accept loop's answer to EMFILE) and returns how many.
func (g *Gate) ShedOldest(n int) int {
	var shed []*Ticket
	g.mu.Lock()
	for len(shed) < n && g.all.head != nil {
		shed = append(shed, g.drop(g.all.head, ShedDescriptors))
	}
	g.mu.Unlock()
	for _, s := range shed {
		s.close()
	}
	return len(shed)
}

// drop removes t, counting it shed for reason. g.mu is held.
func (g *Gate) drop(t *Ticket, reason string) *Ticket {
	g.remove(t)
	t.shed = true
	g.closing.Add(1)
	for i, r := range Reasons {
		if r == reason {
			g.shed[i].Add(1)
		}
	}
	return t
}

// remove takes t out of both lists. g.mu is held.
func (g *Gate) remove(t *Ticket) {
	t.gone = true
	g.all.remove(t)
	g.leftAddr(t)
	g.n.Store(int64(g.all.len))
}

// Done gives the place back: the connection finished its CONNECT, or ended.
// It may be called more than once, and after the connection was shed, when
// it must be called once its descriptor is closed.
func (t *Ticket) Done() {
	if t == nil {
		return
	}
	g := t.g
	g.mu.Lock()
	if !t.gone {
		g.remove(t)
	}
	if t.shed {
		t.shed = false
		g.closing.Add(-1)
	}
	g.mu.Unlock()
}

// Closing is how many shed connections have not called Done yet: their
// descriptors may still be held.
func (g *Gate) Closing() int { return int(g.closing.Load()) }

// Crowded reports whether so many shed connections are still closing, or
// connections hold so many descriptors, that accepting more would only
// shed more: the accept loop waits a moment for the shed ones' goroutines
// to let go of their descriptors, and the kernel's backlog holds the
// newcomers meanwhile.
func (g *Gate) Crowded() bool {
	lim := g.Limits()
	closing := g.closing.Load()
	if closing > int64(max(lim.Total/4, 64)) {
		return true
	}
	return lim.Descriptors > 0 && g.n.Load()+closing+g.proxied.Load() >= int64(lim.Descriptors)
}

// Move counts the connection under addr from now on, keeping its age: a
// PROXY header has told the real client's address. It may shed the oldest
// of addr's connections; it reports false when that is this one (closed).
func (t *Ticket) Move(addr netip.Addr) bool {
	addr = addr.Unmap()
	g := t.g
	var shed []*Ticket
	g.mu.Lock()
	if t.gone || addr == t.addr {
		ok := !t.gone
		g.mu.Unlock()
		return ok
	}
	g.leftAddr(t)
	t.addr = addr
	al := g.addrList(addr)
	al.push(t) // as the address's newest: it is young, its header just read
	if max := g.lim.PerAddress; max > 0 {
		for al.len > max {
			shed = append(shed, g.drop(al.head, ShedPerAddress))
		}
	}
	ok := !t.gone
	g.mu.Unlock()
	for _, s := range shed {
		s.close()
	}
	return ok
}

// Unfinished is how many connections hold a place now.
func (g *Gate) Unfinished() int { return int(g.n.Load()) }

// Shed returns how many connections were shed so far, by reason (Reasons).
func (g *Gate) Shed() map[string]uint64 {
	out := make(map[string]uint64, len(Reasons))
	for i, r := range Reasons {
		out[r] = g.shed[i].Load()
	}
	return out
}

// Run logs, once per interval in which connections were shed, how many
// were and why, until ctx is done: a flood of thousands of connections a
// second makes one line every interval, not one per connection.
func (g *Gate) Run(ctx context.Context, log *slog.Logger, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	g.run(ctx, log, tick.C, interval)
}

func (g *Gate) run(ctx context.Context, log *slog.Logger, ticks <-chan time.Time, interval time.Duration) {
	last := g.Shed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		last = g.logShed(log, last, interval)
	}
}

// logShed writes one line for the connections shed since last, if any,
// and returns the counts it compared against, for the next interval.
func (g *Gate) logShed(log *slog.Logger, last map[string]uint64, interval time.Duration) map[string]uint64 {
	now := g.Shed()
	var n uint64
	attrs := []any{}
	for _, r := range Reasons {
		d := now[r] - last[r]
		n += d
		if d > 0 {
			attrs = append(attrs, r, d)
		}
	}
	if n == 0 {
		return now
	}
	lim := g.Limits()
	attrs = append([]any{"shed", n, "per_second", float64(n) / interval.Seconds()}, attrs...)
	attrs = append(attrs, "unfinished", g.Unfinished(), "max_total", lim.Total, "max_per_address", lim.PerAddress)
	log.Warn("unfinished connections shed", attrs...)
	return now
}

// list is an intrusive doubly linked list of tickets, through their links
// of one chain: the gate's or an address's. Both keep arrival order, so the
// head is the oldest.
type list struct {
	head, tail *Ticket
	len        int
	chain      int // which of a ticket's links this list uses
}

func (l *list) push(t *Ticket) {
	t.links[l.chain] = link{prev: l.tail}
	if l.tail != nil {
		l.tail.links[l.chain].next = t
	} else {
		l.head = t
	}
	l.tail = t
	l.len++
}

func (l *list) remove(t *Ticket) {
	tl := &t.links[l.chain]
	if tl.prev != nil {
		tl.prev.links[l.chain].next = tl.next
	} else {
		l.head = tl.next
	}
	if tl.next != nil {
		tl.next.links[l.chain].prev = tl.prev
	} else {
		l.tail = tl.prev
	}
	*tl = link{}
	l.len--
}
