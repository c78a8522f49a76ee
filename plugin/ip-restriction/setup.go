// Package iprestriction is the `ip-restriction` stream plugin: exactly one
// of a whitelist (only these) or a blacklist (all but these) of client
// addresses. A client refused is answered 0x8A Banned (0x05 Not authorized
// in 3.x). See README.md.
//
//	plugins:
//	  ip-restriction: {whitelist: [10.0.0.0/8]}
package iprestriction

import (
	"net/netip"

	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/plugin"
)

// Name is the plugin's key in a route's plugins.
const Name = "ip-restriction"

// Settings of ip-restriction on one route.
type Settings struct {
	Whitelist []netip.Prefix
	Blacklist []netip.Prefix
	Message   string // the 5.0 Reason String of the refusal
}

// DefaultMessage is the refusal's Reason String unless message says otherwise.
const DefaultMessage = "client address not allowed"

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Check,
		Reasons: []string{ReasonIPRestriction},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New: func(s any) plugin.Instance {
			st := s.(*Settings)
			return &restriction{allow: limit.Prefixes(st.Whitelist), deny: limit.Prefixes(st.Blacklist), message: st.Message}
		},
	}
}

var (
	keys        = []string{"whitelist", "blacklist", "message"}
	ignoredKeys = []string{"response_code"}
)

func decode(n plugin.Node) *Settings {
	r := &Settings{Message: DefaultMessage}
	var white, black plugin.Node
	for _, f := range n.Fields(keys, ignoredKeys, "allowlist", "denylist") {
		switch f.Name {
		case "whitelist":
			white = f.Key
			r.Whitelist = f.Val.Prefixes()
		case "blacklist":
			black = f.Key
			r.Blacklist = f.Val.Prefixes()
		case "message":
			if s, ok := f.Val.String(); ok && s != "" {
				r.Message = s
			}
		case "allowlist", "denylist":
			f.Key.Errorf("mqgate uses APISIX's names: whitelist or blacklist")
		}
	}
	switch {
	case white != nil && black != nil:
		black.Errorf("set exactly one of whitelist or blacklist, not both")
	case white == nil && black == nil:
		n.Errorf("needs whitelist or blacklist")
	case white != nil && len(r.Whitelist) == 0:
		white.Errorf("must list at least one IP or CIDR")
	case black != nil && len(r.Blacklist) == 0:
		black.Errorf("must list at least one IP or CIDR")
	}
	return r
}
