package flapguard

import (
	"sync"
	"time"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// guard is the plugin on one route; it outlives snapshots while the route
// keeps the same settings, so a reload does not forget who flaps.
type guard struct {
	Settings
	now func() time.Time

	mu        sync.Mutex
	keys      map[string]*history
	lastSweep time.Time
}

// history is one key's recent connects and its back-off.
type history struct {
	times        []time.Time // connects within the window, oldest first; at most MaxConnects
	blockedUntil time.Time
}

// sweepAt is how many keys the map holds before stale ones are swept out
// (at most once a window), so that a stream of one-off client ids cannot
// grow it without bound.
const sweepAt = 4096

func newGuard(s Settings, now func() time.Time) *guard {
	return &guard{Settings: s, now: now, keys: make(map[string]*history)}
}

// Admit counts the connect of the CONNECT's key and refuses it when the
// key is backing off, or when it is the one connect too many within the
// window, which starts the back-off. Refused connects are not counted:
// a client retrying during its back-off does not lengthen it.
func (g *guard) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	key := c.LimitValue(g.Key)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweep(now)
	h := g.keys[key]
	if h == nil {
		h = &history{}
		g.keys[key] = h
	}
	if now.Before(h.blockedUntil) {
		return nil, g.refusal()
	}
	cut := 0
	for cut < len(h.times) && now.Sub(h.times[cut]) >= g.Window {
		cut++
	}
	h.times = append(h.times[:0], h.times[cut:]...)
	if len(h.times) >= g.MaxConnects {
		h.blockedUntil = now.Add(g.Backoff)
		h.times = h.times[:0]
		c.Log.Info("flap-guard: client backs off", "key", key, "route", c.Route, "connects", g.MaxConnects+1, "window", g.Window, "backoff", g.Backoff)
		return nil, g.refusal()
	}
	h.times = append(h.times, now)
	return nil, nil
}

func (g *guard) refusal() *plugin.Refusal {
	return &plugin.Refusal{Code: mqtt.ConnectionRateExceeded, Reason: ReasonFlapGuard, Text: g.RejectedMsg}
}

// sweep forgets keys with nothing left to remember. g.mu is held.
func (g *guard) sweep(now time.Time) {
	if len(g.keys) < sweepAt || now.Sub(g.lastSweep) < g.Window {
		return
	}
	g.lastSweep = now
	for k, h := range g.keys {
		if now.After(h.blockedUntil) && (len(h.times) == 0 || now.Sub(h.times[len(h.times)-1]) >= g.Window) {
			delete(g.keys, k)
		}
	}
}
