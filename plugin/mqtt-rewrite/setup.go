// Package mqttrewrite is the `mqtt-rewrite` stream plugin: it rewrites the
// CONNECT's client id, user name and password from templates over the
// connection's variables (package rewrite) before the CONNECT goes to the
// broker. See README.md.
//
//	plugins:
//	  mqtt-rewrite: {client_id: "$ssl_client_serial"}
package mqttrewrite

import (
	"github.com/mqgate/mqgate/plugin"
	"github.com/mqgate/mqgate/rewrite"
)

// Name is the plugin's key in a route's plugins.
const Name = "mqtt-rewrite"

// Settings are the templates for the CONNECT's client id, user name and
// password (an empty template keeps the field).
type Settings struct {
	ClientID, Username, Password string
	Rule                         *rewrite.Rule // the parsed templates
}

// Module is the plugin as the registry lists it.
func Module() plugin.Module {
	return plugin.Module{
		Name:    Name,
		Phase:   plugin.Check,
		Reasons: []string{ReasonRewrite},
		Decode:  func(n plugin.Node) any { return decode(n) },
		New:     func(s any) plugin.Instance { return &rewriter{rule: s.(*Settings).Rule} },
	}
}

var keys = []string{"client_id", "username", "password"}

func decode(n plugin.Node) *Settings {
	m := &Settings{}
	ok := true
	for _, f := range n.Fields(keys, nil) {
		var dst *string
		switch f.Name {
		case "client_id":
			dst = &m.ClientID
		case "username":
			dst = &m.Username
		case "password":
			dst = &m.Password
		}
		s, isStr := f.Val.String()
		if !isStr {
			continue
		}
		if s == "" {
			f.Val.Errorf("must not be empty; leave the key out to keep the client's value")
			ok = false
			continue
		}
		if _, err := rewrite.ParseTemplate(s); err != nil {
			f.Val.Errorf("%v", err)
			ok = false
			continue
		}
		*dst = s
	}
	if m.ClientID == "" && m.Username == "" && m.Password == "" {
		if ok {
			n.Errorf("set at least one of client_id, username or password")
		}
		return m
	}
	rule, err := rewrite.NewRule(m.ClientID, m.Username, m.Password)
	if err != nil {
		n.Errorf("%v", err) // checked above; kept for safety
		return m
	}
	m.Rule = rule
	return m
}
