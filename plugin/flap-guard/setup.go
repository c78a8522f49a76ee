// Package flapguard is the `flap-guard` stream plugin: a client that
// connects more than max_connects times within window seconds is refused
// for backoff seconds, with 0x9F Connection rate exceeded (3.x: 0x03), so
// that a device stuck in a connect-crash loop does not keep a broker busy
// with session takeovers. Counted per value of a key: the client id by
// default, or the user name or the address. See README.md.
//
//	plugins:
//	  flap-guard: {max_connects: 5, window: 10, backoff: 60}
package flapguard

import (
	"time"

	"github.com/mqgate/mqgate/plugin"
)

// Name is the plugin's key in a route's plugins.
const Name = "flap-guard"

// Settings of flap-guard on one route.
type Settings struct {
	MaxConnects int           // connects allowed within Window; more are refused
	Window      time.Duration // > 0
	Backoff     time.Duration // how long a flapping key is refused; default Window
	Key         string        // plugin.KeyClientID (default), KeyUsername or KeyRemoteAddr
	RejectedMsg string        // the 5.0 Reason String of the refusal
}

// DefaultRejectedMsg is the refusal's Reason String unless rejected_msg says otherwise.
const DefaultRejectedMsg = "reconnecting too often"

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Check,
		Reasons: []string{ReasonFlapGuard},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New: func(s any) plugin.Instance {
			return newGuard(*s.(*Settings), time.Now)
		},
	}
}

var keys = []string{"max_connects", "window", "backoff", "key", "rejected_msg"}

func decode(n plugin.Node) *Settings {
	s := &Settings{Key: plugin.KeyClientID, RejectedMsg: DefaultRejectedMsg}
	var hasMax, hasWindow bool
	seconds := func(f plugin.Field) (time.Duration, bool) {
		v, ok := f.Val.Float()
		if ok && v <= 0 {
			f.Val.Errorf("must be greater than 0 (seconds), got %v", v)
			return 0, false
		}
		return time.Duration(v * float64(time.Second)), ok
	}
	for _, f := range n.Fields(keys, nil) {
		switch f.Name {
		case "max_connects":
			hasMax = !f.Val.IsNull()
			if v, ok := f.Val.IntMin(1); ok {
				s.MaxConnects = v
			}
		case "window":
			hasWindow = !f.Val.IsNull()
			if d, ok := seconds(f); ok {
				s.Window = d
			}
		case "backoff":
			if d, ok := seconds(f); ok {
				s.Backoff = d
			}
		case "key":
			if k, ok := f.Val.OneOf(plugin.KeyClientID, plugin.KeyUsername, plugin.KeyRemoteAddr); ok {
				s.Key = k
			}
		case "rejected_msg":
			if m, ok := f.Val.String(); ok && m != "" {
				s.RejectedMsg = m
			}
		}
	}
	if !hasMax {
		n.ErrorfAt("max_connects", "required: connects allowed within window")
	}
	if !hasWindow {
		n.ErrorfAt("window", "required: seconds")
	}
	if s.Backoff == 0 {
		s.Backoff = s.Window
	}
	return s
}
