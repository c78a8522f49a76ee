package flapguard

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// clock is a hand-moved time for the guard.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func conn(id, user, addr string) *plugin.Conn {
	return &plugin.Conn{
		Connect: &mqtt.Connect{ClientID: id, Username: user},
		Remote:  netip.MustParseAddr(addr),
		Route:   "r",
		Log:     slog.New(slog.DiscardHandler),
	}
}

func TestGuard(t *testing.T) {
	t.Parallel()
	ck := &clock{t: time.Unix(1000, 0)}
	g := newGuard(Settings{MaxConnects: 3, Window: 10 * time.Second, Backoff: 30 * time.Second, Key: plugin.KeyClientID, RejectedMsg: DefaultRejectedMsg}, ck.now)
	step := func(d time.Duration, c *plugin.Conn, want bool, what string) {
		t.Helper()
		ck.t = ck.t.Add(d)
		_, refused := g.Admit(c)
		if (refused == nil) != want {
			t.Fatalf("%s: admitted %v, want %v", what, refused == nil, want)
		}
		if refused != nil && (refused.Code != mqtt.ConnectionRateExceeded || refused.Reason != ReasonFlapGuard) {
			t.Fatalf("%s: refusal %+v", what, refused)
		}
	}
	dev := conn("dev-1", "u", "10.0.0.1")
	step(0, dev, true, "1st connect")
	step(time.Second, dev, true, "2nd")
	step(time.Second, dev, true, "3rd")
	step(time.Second, dev, false, "4th within the window")
	step(time.Second, conn("dev-2", "u", "10.0.0.1"), true, "another client id")
	step(28*time.Second, dev, false, "retry inside the back-off")
	step(time.Second, dev, true, "after the back-off")
	// Connects spread wider than the window never trip it.
	for i := range 10 {
		step(4*time.Second, conn("slow", "", "10.0.0.2"), true, "slow connect "+string(rune('0'+i)))
	}
}

func TestGuardKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  string
		a, b *plugin.Conn // the same key
	}{
		{plugin.KeyUsername, conn("x", "fleet", "10.0.0.1"), conn("y", "fleet", "10.0.0.2")},
		{plugin.KeyRemoteAddr, conn("x", "a", "10.0.0.9"), conn("y", "b", "10.0.0.9")},
		{plugin.KeyClientID, conn("", "a", "10.0.0.7"), conn("", "b", "10.0.0.7")}, // empty id: by address
	} {
		ck := &clock{t: time.Unix(1000, 0)}
		g := newGuard(Settings{MaxConnects: 1, Window: time.Minute, Backoff: time.Minute, Key: tc.key}, ck.now)
		if _, r := g.Admit(tc.a); r != nil {
			t.Fatalf("%s: first connect refused", tc.key)
		}
		if _, r := g.Admit(tc.b); r == nil {
			t.Errorf("%s: second connect of the same key admitted", tc.key)
		}
	}
}

func TestGuardSweeps(t *testing.T) {
	t.Parallel()
	ck := &clock{t: time.Unix(1000, 0)}
	g := newGuard(Settings{MaxConnects: 5, Window: time.Second, Backoff: time.Second, Key: plugin.KeyClientID}, ck.now)
	for i := range sweepAt + 10 {
		g.Admit(conn("id-"+string(rune(i)), "", "10.0.0.1"))
	}
	ck.t = ck.t.Add(2 * time.Second)
	g.Admit(conn("late", "", "10.0.0.1"))
	if n := len(g.keys); n > 2 {
		t.Errorf("%d keys kept after a window without their connects, want the stale ones swept", n)
	}
}
