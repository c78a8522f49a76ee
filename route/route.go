// Package route picks the stream route for a client connection.
//
// Routes are tried in the order they are configured, as APISIX does; the
// first whose every set condition matches wins. The conditions are the
// connection's own (server_port, server_addr, remote_addr, and sni, the TLS
// server name) and, since mqgate reads the CONNECT before it routes, the
// CONNECT's client id and username (mqtt_client_id, mqtt_username). An
// unset condition matches anything. Routes with an sni are tried before
// the others, as APISIX does.
//
//	table := route.NewTable(cfg.StreamRoutes)
//	i, ok := table.Match(route.Input{Local: local, Remote: remote, ClientID: "meter-7"})
//	if ok {
//		r := cfg.StreamRoutes[i]
//	}
package route

import (
	"net/netip"
	"strings"

	"github.com/mqgate/mqgate/config"
)

// Input is what a route can match on.
type Input struct {
	Local    netip.AddrPort // the address the client connected to
	Remote   netip.Addr     // the client's address
	ClientID string
	Username string
	SNI      string // the TLS server name the client asked for; "" without TLS
}

// Table is an immutable, ordered set of routes.
type Table struct {
	routes []config.StreamRoute
	order  []int // routes with an sni first, as APISIX tries them
}

// NewTable keeps routes in their configured order, except that routes with
// an sni come first.
func NewTable(routes []config.StreamRoute) *Table {
	t := &Table{routes: routes}
	for i := range routes {
		if routes[i].SNI != "" {
			t.order = append(t.order, i)
		}
	}
	for i := range routes {
		if routes[i].SNI == "" {
			t.order = append(t.order, i)
		}
	}
	return t
}

// Match returns the index of the first route that matches in.
func (t *Table) Match(in Input) (int, bool) {
	local, remote := in.Local.Addr().Unmap(), in.Remote.Unmap()
	for _, i := range t.order {
		r := &t.routes[i]
		if r.SNI != "" && !MatchSNI(r.SNI, in.SNI) {
			continue
		}
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

// MatchSNI reports whether the server name a client sent matches pattern,
// a lower-case host name or "*.example.com", which covers one label
// ("a.example.com", not "example.com" nor "a.b.example.com"), as a
// certificate's wildcard does. Case does not matter.
func MatchSNI(pattern, sni string) bool {
	if sni == "" {
		return false
	}
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	if parent, ok := strings.CutPrefix(pattern, "*."); ok {
		_, rest, found := strings.Cut(sni, ".")
		return found && rest == parent
	}
	return sni == pattern
}
