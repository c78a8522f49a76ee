// Package registry lists the stream plugins mqgate is built with, by name,
// in the order they run within their phase. Adding a plugin is its folder
// under plugin/ and one line here.
//
//	for _, m := range registry.Modules() { fmt.Println(m.Name) }
package registry

import (
	"github.com/mqgate/mqgate/plugin"
	flapguard "github.com/mqgate/mqgate/plugin/flap-guard"
	iprestriction "github.com/mqgate/mqgate/plugin/ip-restriction"
	limitconn "github.com/mqgate/mqgate/plugin/limit-conn"
	limitreq "github.com/mqgate/mqgate/plugin/limit-req"
	mqttproxy "github.com/mqgate/mqgate/plugin/mqtt-proxy"
	mqttrewrite "github.com/mqgate/mqgate/plugin/mqtt-rewrite"
)

// Modules returns the stream plugins in the order they run (see
// plugin.Phase): checks first, then limits after max_connections.
func Modules() []plugin.Module {
	return []plugin.Module{
		mqttproxy.Module(),
		mqttrewrite.Module(),
		iprestriction.Module(),
		flapguard.Module(),
		limitreq.Module(),
		limitconn.Module(),
	}
}
