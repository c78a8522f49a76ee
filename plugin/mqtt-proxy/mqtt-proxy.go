package mqttproxy

import (
	"fmt"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// check is the plugin on one route.
type check Settings

// Admit refuses a CONNECT of another protocol name or level than the
// route's.
func (p check) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	if (p.ProtocolLevel == 0 || int(c.Connect.Level) == p.ProtocolLevel) &&
		(p.ProtocolName == "" || p.ProtocolName == c.Connect.ProtocolName) {
		return nil, nil
	}
	return nil, &plugin.Refusal{Code: mqtt.UnsupportedProtocolVersion, Reason: ReasonProtocolLevel, Text: p.accepts()}
}

// accepts says what the route accepts, naming only what it restricts.
func (p check) accepts() string {
	switch {
	case p.ProtocolName != "" && p.ProtocolLevel != 0:
		return fmt.Sprintf("this endpoint accepts %s level %d only", p.ProtocolName, p.ProtocolLevel)
	case p.ProtocolLevel != 0:
		return fmt.Sprintf("this endpoint accepts level %d only", p.ProtocolLevel)
	default:
		return fmt.Sprintf("this endpoint accepts %s only", p.ProtocolName)
	}
}
