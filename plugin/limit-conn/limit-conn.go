package limitconn

import (
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// limiter is the plugin on one route; it outlives snapshots while the
// route keeps the same settings, so a reload neither resets the counts nor
// lets the limit be exceeded.
type limiter struct {
	Settings
	count *limit.Counter
}

// Admit takes a place for the connection's key, or refuses it when the
// key has conn + burst connections already.
func (l *limiter) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	key := c.LimitValue(l.Key)
	if !l.count.Acquire(key) {
		return nil, &plugin.Refusal{Code: mqtt.QuotaExceeded, Reason: ReasonLimitConn, Text: l.RejectedMsg}
	}
	return func() { l.count.Release(key) }, nil
}
