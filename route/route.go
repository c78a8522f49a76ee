// Package route picks the stream route for a client connection.
//
// Routes are tried in the order they are configured, as APISIX does; the
// first whose every set condition matches wins. The conditions are the
// connection's own (server_port, server_addr, remote_addr) and, since mqgate
// reads the CONNECT before it routes, the CONNECT's client id and username
// (mqtt_client_id, mqtt_username). An unset condition matches anything.
//
//	table := route.NewTable(cfg.StreamRoutes)
//	i, ok := table.Match(route.Input{Local: local, Remote: remote, ClientID: "meter-7"})
//	if ok {
//		r := cfg.StreamRoutes[i]
//	}
package route

import (
	"net/netip"

	"github.com/mqgate/mqgate/config"
)

// Input is what a route can match on.
type Input struct {
	Local    netip.AddrPort // the address the client connected to
	Remote   netip.Addr     // the client's address
	ClientID string
	Username string
}

// Table is an immutable, ordered set of routes.
type Table struct {
	routes []config.StreamRoute
}

// NewTable keeps routes in their configured order.
func NewTable(routes []config.StreamRoute) *Table {
	return &Table{routes: routes}
}

// Match returns the index of the first route that matches in.
func (t *Table) Match(in Input) (int, bool) {
	local, remote := in.Local.Addr().Unmap(), in.Remote.Unmap()
	for i := range t.routes {
		r := &t.routes[i]
		if r.ServerPort != 0 && int(in.Local.Port()) != r.ServerPort {
			continue
		}
		if r.ServerAddr.IsValid() && r.ServerAddr.Unmap() != local {
			continue
		}
		if r.RemoteAddr.IsValid() && !r.RemoteAddr.Contains(remote) {
			continue
		}
		if !r.MQTTClientID.Match(in.ClientID) || !r.MQTTUsername.Match(in.Username) {
			continue
		}
		return i, true
	}
	return 0, false
}
