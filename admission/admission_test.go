package admission

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	a = netip.MustParseAddr("127.0.0.2")
	b = netip.MustParseAddr("127.0.0.3")
	c = netip.MustParseAddr("127.0.0.4")
)

// conn stands for one connection: closed records that the gate shed it.
type conn struct {
	name   string
	closed bool
	t      *Ticket
}

func admit(t *testing.T, g *Gate, addr netip.Addr, name string, proxied int) *conn {
	t.Helper()
	cn := &conn{name: name}
	tk, ok := g.Admit(addr, proxied, func() { cn.closed = true })
	if ok == cn.closed {
		t.Fatalf("%s: Admit reported %v, closed %v", name, ok, cn.closed)
	}
	cn.t = tk
	return cn
}

func closedNames(cs ...*conn) string {
	var out []string
	for _, c := range cs {
		if c.closed {
			out = append(out, c.name)
		}
	}
	return strings.Join(out, ",")
}

func TestPerAddressShedsThatAddressesOldest(t *testing.T) {
	g := New(Limits{PerAddress: 2, Total: 10})
	a1 := admit(t, g, a, "a1", 0)
	b1 := admit(t, g, b, "b1", 0)
	a2 := admit(t, g, a, "a2", 0)
	a3 := admit(t, g, a, "a3", 0) // a is full: a1 goes, b1 (older) stays
	if got := closedNames(a1, b1, a2, a3); got != "a1" {
		t.Fatalf("shed %q, want a1", got)
	}
	if g.Unfinished() != 3 || g.Shed()[ShedPerAddress] != 1 {
		t.Fatalf("unfinished %d, shed %v", g.Unfinished(), g.Shed())
	}
}

func TestTotalShedsOldestOverall(t *testing.T) {
	g := New(Limits{PerAddress: 10, Total: 3})
	a1 := admit(t, g, a, "a1", 0)
	b1 := admit(t, g, b, "b1", 0)
	a2 := admit(t, g, a, "a2", 0)
	c1 := admit(t, g, c, "c1", 0) // the newcomer always gets in
	c2 := admit(t, g, c, "c2", 0)
	if got := closedNames(a1, b1, a2, c1, c2); got != "a1,b1" {
		t.Fatalf("shed %q, want a1,b1", got)
	}
	if g.Shed()[ShedTotal] != 2 {
		t.Fatalf("shed %v", g.Shed())
	}
}

func TestDoneFreesThePlace(t *testing.T) {
	g := New(Limits{PerAddress: 1, Total: 1})
	a1 := admit(t, g, a, "a1", 0)
	a1.t.Done()
	a1.t.Done() // twice is harmless
	a2 := admit(t, g, a, "a2", 0)
	if got := closedNames(a1, a2); got != "" {
		t.Fatalf("shed %q after Done, want none", got)
	}
	a3 := admit(t, g, a, "a3", 0)
	a2.t.Done() // after being shed: no effect on a3's place
	if got := closedNames(a2, a3); got != "a2" || g.Unfinished() != 1 {
		t.Fatalf("shed %q unfinished %d", got, g.Unfinished())
	}
}

// TestDoneMidListKeepsBothOrders: a place given back from the middle of the
// gate's list and its address's leaves both in arrival order, each list
// through its own links.
func TestDoneMidListKeepsBothOrders(t *testing.T) {
	g := New(Limits{PerAddress: 3, Total: 10})
	a1 := admit(t, g, a, "a1", 0)
	b1 := admit(t, g, b, "b1", 0)
	a2 := admit(t, g, a, "a2", 0)
	b2 := admit(t, g, b, "b2", 0)
	a3 := admit(t, g, a, "a3", 0)
	a2.t.Done()
	a4 := admit(t, g, a, "a4", 0) // a holds a1, a3, a4
	a5 := admit(t, g, a, "a5", 0) // a1 goes for the per-address cap
	if got := closedNames(a1, b1, a2, b2, a3, a4, a5); got != "a1" {
		t.Fatalf("shed %q, want a1", got)
	}
	g.SetLimits(Limits{PerAddress: 3, Total: 3})
	c1 := admit(t, g, c, "c1", 0) // 6 unfinished: the three oldest of all go
	if got := closedNames(a1, b1, a2, b2, a3, a4, a5, c1); got != "a1,b1,b2,a3" {
		t.Fatalf("shed %q, want a1,b1,b2,a3", got)
	}
	if g.Unfinished() != 3 || g.Shed()[ShedPerAddress] != 1 || g.Shed()[ShedTotal] != 3 {
		t.Fatalf("unfinished %d shed %v", g.Unfinished(), g.Shed())
	}
}

func TestDescriptorsReserve(t *testing.T) {
	g := New(Limits{Descriptors: 10})
	a1 := admit(t, g, a, "a1", 6)
	a2 := admit(t, g, a, "a2", 6)
	// 8 proxied descriptors: two unfinished fit, a third sheds the oldest.
	a3 := admit(t, g, b, "a3", 8)
	if got := closedNames(a1, a2, a3); got != "a1" {
		t.Fatalf("shed %q, want a1", got)
	}
	// Proxied connections hold everything: the newcomer goes too.
	a4 := admit(t, g, b, "a4", 10)
	if got := closedNames(a2, a3, a4); got != "a2,a3,a4" {
		t.Fatalf("shed %q, want all", got)
	}
	if g.Unfinished() != 0 || g.Shed()[ShedDescriptors] != 4 {
		t.Fatalf("unfinished %d shed %v", g.Unfinished(), g.Shed())
	}
}

func TestMoveCountsUnderTheHeadersAddress(t *testing.T) {
	g := New(Limits{PerAddress: 2})
	lb1 := admit(t, g, a, "lb1", 0)
	lb2 := admit(t, g, a, "lb2", 0)
	if !lb1.t.Move(b) || !lb2.t.Move(c) {
		t.Fatal("move shed the only connection of its address")
	}
	lb3 := admit(t, g, a, "lb3", 0)
	lb4 := admit(t, g, a, "lb4", 0) // a holds lb3, lb4: nothing shed
	if got := closedNames(lb1, lb2, lb3, lb4); got != "" {
		t.Fatalf("shed %q, want none", got)
	}
	lb3.t.Move(b)
	lb4.t.Move(b) // b holds lb1, lb3, lb4: the oldest, lb1, goes
	if got := closedNames(lb1, lb2, lb3, lb4); got != "lb1" {
		t.Fatalf("shed %q, want lb1", got)
	}
}

func TestDefaults(t *testing.T) {
	l := Defaults(20000)
	if l != (Limits{Total: 9922, PerAddress: 2480, Descriptors: 19844}) {
		t.Fatalf("Defaults(20000) = %+v", l)
	}
	if l := Defaults(100); l.Descriptors != 36 || l.Total != 18 || l.PerAddress != 4 {
		t.Fatalf("Defaults(100) = %+v: the reserve is at least 64", l)
	}
	if OpenFileLimit() < 64 {
		t.Fatalf("OpenFileLimit() = %d", OpenFileLimit())
	}
}

func TestConcurrentAdmitDone(t *testing.T) {
	g := New(Limits{PerAddress: 50, Total: 80})
	var wg sync.WaitGroup
	var mu sync.Mutex
	closed := 0
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + w%3)})
			for i := range 2000 {
				tk, ok := g.Admit(addr, 0, func() { mu.Lock(); closed++; mu.Unlock() })
				if ok && i%2 == 0 {
					tk.Done()
				}
			}
		}()
	}
	wg.Wait()
	if n := g.Unfinished(); n > 80 {
		t.Fatalf("unfinished %d over the total cap", n)
	}
	var shed uint64
	for _, v := range g.Shed() {
		shed += v
	}
	mu.Lock()
	defer mu.Unlock()
	if uint64(closed) != shed {
		t.Fatalf("closed %d, counted shed %d", closed, shed)
	}
}

// syncBuffer is a log sink that Run writes to from its own goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunLogsARateNotAConnection(t *testing.T) {
	g := New(Limits{PerAddress: 1})
	var out syncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	// The intervals are driven here, one after another, so no admission
	// races an interval's count.
	last := g.logShed(log, g.Shed(), 10*time.Second) // nothing shed yet: no line
	for range 1001 {
		g.Admit(a, 0, func() {})
	}
	last = g.logShed(log, last, 10*time.Second)
	g.logShed(log, last, 10*time.Second) // nothing more: no line
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines, want 1:\n%s", n, out.String())
	}
	for _, want := range []string{"shed=1000 ", "per_second=100 ", "per_address=1000 "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("line lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	g := New(Limits{PerAddress: 1})
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ticks := make(chan time.Time)
	go func() { g.run(ctx, slog.New(slog.NewTextHandler(&out, nil)), ticks, 10*time.Second); close(done) }()
	// Each admission sheds the one before it; the first that follows run's
	// own starting count is reported by the next tick.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "shed=") {
		if time.Now().After(deadline) {
			t.Fatalf("no line after ticks with shed connections:\n%s", out.String())
		}
		g.Admit(a, 0, func() {})
		ticks <- time.Now()
	}
	cancel()
	<-done
}

func TestCrowdedWhileShedOnesClose(t *testing.T) {
	g := New(Limits{PerAddress: 1, Total: 100, Descriptors: 200})
	var shed []*Ticket
	var tickets []*Ticket
	for range 70 {
		tk, _ := g.Admit(a, 0, func() {})
		tickets = append(tickets, tk)
	}
	shed = tickets[:69] // every one but the newest was shed for the per-address cap
	if g.Closing() != 69 || !g.Crowded() {
		t.Fatalf("closing %d, crowded %v: want 69, true", g.Closing(), g.Crowded())
	}
	for _, tk := range shed {
		tk.Done()
		tk.Done() // once only
	}
	if g.Closing() != 0 || g.Crowded() {
		t.Fatalf("closing %d, crowded %v after Done: want 0, false", g.Closing(), g.Crowded())
	}
	g.Admit(b, 198, func() {}) // 2 unfinished + 198 proxied: every descriptor
	if !g.Crowded() {
		t.Fatal("not crowded with every descriptor taken")
	}
}
