package limitreq

import (
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// limiter is the plugin on one route; it outlives snapshots while the
// route keeps the same settings, so a reload does not refill the buckets.
type limiter struct {
	Settings
	rate *limit.Rate
}

// Admit takes a token from the key's bucket, or refuses the CONNECT when
// the bucket is empty. A token is not given back.
func (l *limiter) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	if !l.rate.Allow(c.LimitValue(l.Key)) {
		return nil, &plugin.Refusal{Code: mqtt.ConnectionRateExceeded, Reason: ReasonLimitReq, Text: l.RejectedMsg}
	}
	return nil, nil
}
