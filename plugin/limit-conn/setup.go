// Package limitconn is the `limit-conn` stream plugin: at most conn + burst
// connections at once per value of a key on the route, as APISIX's
// limit-conn. Over it, a client is refused with 0x97 Quota exceeded. See
// README.md.
//
//	plugins:
//	  limit-conn: {conn: 1, key: mqtt_client_id}
package limitconn

import (
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/plugin"
)

// Name is the plugin's key in a route's plugins.
const Name = "limit-conn"

// Settings of limit-conn on one route.
type Settings struct {
	Conn int // > 0
	// LimitSettings.Burst is how many more connections are allowed above Conn
	// (APISIX delays them; mqgate has nothing to delay).
	plugin.LimitSettings
}

// DefaultRejectedMsg is the refusal's Reason String unless rejected_msg says otherwise.
const DefaultRejectedMsg = "connection limit reached"

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Limit,
		Reasons: []string{ReasonLimitConn},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New: func(s any) plugin.Instance {
			st := s.(*Settings)
			return &limiter{Settings: *st, count: limit.NewCounter(st.Conn + st.Burst)}
		},
	}
}

var ignoredKeys = []string{"default_conn_delay", "only_use_default_delay", "rejected_code", "allow_degradation"}

func decode(n plugin.Node) *Settings {
	l := &Settings{LimitSettings: plugin.NewLimit(DefaultRejectedMsg)}
	hasConn := false
	for _, f := range n.Fields(append([]string{"conn"}, plugin.LimitKeysShared()...), ignoredKeys) {
		if f.Name == "conn" {
			hasConn = !f.Val.IsNull()
			l.Conn, _ = f.Val.IntMin(1)
			continue
		}
		plugin.DecodeLimit(f, &l.LimitSettings)
	}
	if !hasConn {
		n.ErrorfAt("conn", "required: the most connections at once per key")
	}
	return l
}
