// Package mqttproxy is the `mqtt-proxy` stream plugin: it restricts a route
// to an MQTT protocol name and/or level, refusing other clients with 0x84
// Unsupported Protocol Version. See README.md.
//
//	plugins:
//	  mqtt-proxy: {protocol_name: MQTT, protocol_level: 5}
package mqttproxy

import (
	"slices"

	"github.com/mqgate/mqgate/plugin"
)

// Name is the plugin's key in a route's plugins.
const Name = "mqtt-proxy"

// Settings restrict a route to an MQTT protocol name and/or level.
type Settings struct {
	ProtocolName  string // "MQTT" or "MQIsdp"; empty = any
	ProtocolLevel int    // 3, 4 or 5; 0 = any
}

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Check,
		Reasons: []string{ReasonProtocolLevel},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New:     func(s any) plugin.Instance { return check(*s.(*Settings)) },
	}
}

var (
	keys          = []string{"protocol_name", "protocol_level"}
	protocolNames = []string{"MQTT", "MQIsdp"}
)

// decode reads the plugin. Unlike APISIX, both fields are optional: an
// empty plugin matches any MQTT CONNECT.
func decode(n plugin.Node) *Settings {
	m := &Settings{}
	var levelNode plugin.Node
	for _, f := range n.Fields(keys, nil, "upstream") {
		switch f.Name {
		case "protocol_name":
			m.ProtocolName, _ = f.Val.OneOf(protocolNames...)
		case "protocol_level":
			level, ok := f.Val.Int()
			if !ok {
				continue
			}
			if !slices.Contains([]int{3, 4, 5}, level) {
				f.Val.Errorf("must be 3, 4 or 5, got %d", level)
				continue
			}
			m.ProtocolLevel, levelNode = level, f.Val
		case "upstream":
			f.Key.Errorf("deprecated in APISIX and not supported; give the route an upstream_id or upstream instead")
		}
	}
	// MQTT 3.1 names its protocol "MQIsdp" at level 3; 3.1.1 and 5.0 say "MQTT".
	switch {
	case m.ProtocolName == "MQIsdp" && m.ProtocolLevel > 3:
		levelNode.Errorf(`protocol_name "MQIsdp" (MQTT 3.1) is level 3, got %d`, m.ProtocolLevel)
	case m.ProtocolName == "MQTT" && m.ProtocolLevel == 3:
		levelNode.Errorf(`protocol_name "MQTT" is level 4 or 5, got 3 (level 3 is "MQIsdp")`)
	}
	return m
}
