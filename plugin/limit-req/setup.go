// Package limitreq is the `limit-req` stream plugin: new connections per
// second per value of a key on the route, as a token bucket of 1 + burst
// tokens filled at rate per second (nginx's limit_req with nodelay). Over
// it, a client is refused with 0x9F Connection rate exceeded. See
// README.md.
//
//	plugins:
//	  limit-req: {rate: 200, burst: 100, key: route_id}
package limitreq

import (
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/plugin"
)

// Name is the plugin's key in a route's plugins.
const Name = "limit-req"

// Settings of limit-req on one route.
type Settings struct {
	Rate float64 // > 0, connections per second
	plugin.LimitSettings
}

// DefaultRejectedMsg is the refusal's Reason String unless rejected_msg says otherwise.
const DefaultRejectedMsg = "connection rate exceeded"

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Limit,
		Reasons: []string{ReasonLimitReq},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New: func(s any) plugin.Instance {
			st := s.(*Settings)
			return &limiter{Settings: *st, rate: limit.NewRate(st.Rate, st.Burst)}
		},
	}
}

var ignoredKeys = []string{"nodelay", "rejected_code", "allow_degradation"}

func decode(n plugin.Node) *Settings {
	l := &Settings{LimitSettings: plugin.NewLimit(DefaultRejectedMsg)}
	hasRate := false
	for _, f := range n.Fields(append([]string{"rate"}, plugin.LimitKeysShared()...), ignoredKeys) {
		if f.Name != "rate" {
			plugin.DecodeLimit(f, &l.LimitSettings)
			continue
		}
		hasRate = !f.Val.IsNull()
		if v, ok := f.Val.Float(); ok {
			if v <= 0 {
				f.Val.Errorf("must be greater than 0, got %v", v)
				continue
			}
			l.Rate = v
		}
	}
	if !hasRate {
		n.ErrorfAt("rate", "required: new connections per second per key")
	}
	return l
}
