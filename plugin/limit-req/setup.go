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
	Rate        float64 // > 0, connections per second
	Burst       int     // >= 0, default 0
	Key         string  // plugin.Key*; default remote_addr
	RejectedMsg string  // the 5.0 Reason String of the refusal
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

var (
	keys        = []string{"rate", "burst", "key", "key_type", "rejected_msg"}
	ignoredKeys = []string{"nodelay", "rejected_code", "allow_degradation"}
)

func decode(n plugin.Node) *Settings {
	l := &Settings{Key: plugin.KeyRemoteAddr, RejectedMsg: DefaultRejectedMsg}
	hasRate := false
	for _, f := range n.Fields(keys, ignoredKeys) {
		switch f.Name {
		case "rate":
			hasRate = !f.Val.IsNull()
			if v, ok := f.Val.Float(); ok {
				if v <= 0 {
					f.Val.Errorf("must be greater than 0, got %v", v)
					continue
				}
				l.Rate = v
			}
		case "burst":
			l.Burst, _ = f.Val.IntMin(0)
		case "key":
			l.Key = plugin.DecodeLimitKey(f.Val, l.Key)
		case "key_type":
			plugin.DecodeKeyType(f.Val)
		case "rejected_msg":
			if s, ok := f.Val.String(); ok && s != "" {
				l.RejectedMsg = s
			}
		}
	}
	if !hasRate {
		n.ErrorfAt("rate", "required: new connections per second per key")
	}
	return l
}
