package iprestriction

import (
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// restriction is the plugin on one route.
type restriction struct {
	allow, deny limit.Prefixes
	message     string
}

// Admit refuses a client outside the whitelist or inside the blacklist.
func (r *restriction) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	if len(r.allow) > 0 && !r.allow.Contains(c.Remote) || r.deny.Contains(c.Remote) {
		return nil, &plugin.Refusal{Code: mqtt.Banned, Reason: ReasonIPRestriction, Text: r.message}
	}
	return nil, nil
}
