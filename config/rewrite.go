package config

import (
	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/rewrite"
)

// MQTTRewrite is the mqtt-rewrite plugin: templates for the CONNECT's
// client id, user name and password (an empty template keeps the field).
type MQTTRewrite struct {
	ClientID, Username, Password string
	Rule                         *rewrite.Rule // the parsed templates
}

var mqttRewriteKeys = []string{"client_id", "username", "password"}

func (d *decoder) mqttRewrite(n *yaml.Node, path string) *MQTTRewrite {
	m := &MQTTRewrite{}
	ok := true
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		var dst *string
		switch kv.key {
		case "client_id":
			dst = &m.ClientID
		case "username":
			dst = &m.Username
		case "password":
			dst = &m.Password
		default:
			d.unknownKey(kv, path, "key", mqttRewriteKeys)
			continue
		}
		s, isStr := d.str(kv.val, p)
		if !isStr {
			continue
		}
		if s == "" {
			d.errorf(kv.val, p, "must not be empty; leave the key out to keep the client's value")
			ok = false
			continue
		}
		if _, err := rewrite.ParseTemplate(s); err != nil {
			d.errorf(kv.val, p, "%v", err)
			ok = false
			continue
		}
		*dst = s
	}
	if m.ClientID == "" && m.Username == "" && m.Password == "" {
		if ok {
			d.errorf(n, path, "set at least one of client_id, username or password")
		}
		return m
	}
	rule, err := rewrite.NewRule(m.ClientID, m.Username, m.Password)
	if err != nil {
		d.errorf(n, path, "%v", err) // checked above; kept for safety
		return m
	}
	m.Rule = rule
	return m
}
