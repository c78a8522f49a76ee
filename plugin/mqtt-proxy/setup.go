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
	// UpstreamHost and UpstreamPort are APISIX's older form, the plugin's
	// `upstream: {host, port}` (`ip` before `host`): the route's only
	// broker, when the route names no upstream of its own.
	UpstreamHost string
	UpstreamPort int
}

// RouteUpstream returns the older form's broker (plugin.RouteUpstream).
func (s *Settings) RouteUpstream() (host string, port int, ok bool) {
	return s.UpstreamHost, s.UpstreamPort, s.UpstreamHost != ""
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
			decodeUpstream(f.Val, m)
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

// decodeUpstream reads APISIX's deprecated `upstream: {host, port}` (or
// `ip` for host, older still).
func decodeUpstream(n plugin.Node, m *Settings) {
	if n.IsNull() {
		return
	}
	var hostNode plugin.Node
	for _, f := range n.Fields([]string{"host", "port"}, nil, "ip") {
		switch f.Name {
		case "host", "ip":
			if hostNode != nil {
				f.Key.Errorf("set host or ip (its older name), not both")
				continue
			}
			if h, ok := f.Val.String(); ok {
				if h == "" {
					f.Val.Errorf("must not be empty")
					continue
				}
				m.UpstreamHost, hostNode = h, f.Val
			}
		case "port":
			if p, ok := f.Val.IntMin(1); ok {
				if p > 65535 {
					f.Val.Errorf("must be 1..65535, got %d", p)
					continue
				}
				m.UpstreamPort = p
			}
		}
	}
	switch {
	case m.UpstreamHost == "" && m.UpstreamPort == 0:
		n.Errorf("needs host and port (the broker), or leave upstream out and give the route an upstream_id")
	case m.UpstreamHost == "":
		n.ErrorfAt("host", "required")
	case m.UpstreamPort == 0:
		n.ErrorfAt("port", "required (the broker's MQTT port, e.g. 1883)")
	}
	if m.UpstreamHost == "" || m.UpstreamPort == 0 {
		m.UpstreamHost, m.UpstreamPort = "", 0
	}
}
