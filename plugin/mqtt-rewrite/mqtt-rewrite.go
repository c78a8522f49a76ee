package mqttrewrite

import (
	"errors"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
	"github.com/mqgate/mqgate/rewrite"
)

// rewriter is the plugin on one route.
type rewriter struct{ rule *rewrite.Rule }

// Admit rewrites the CONNECT, or refuses it when a template yields an
// empty or invalid field.
func (r *rewriter) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
	if r.rule == nil {
		return nil, nil
	}
	out, err := r.rule.Apply(c.Connect, c.Vars)
	if err != nil {
		code, text := mqtt.NotAuthorized, err.Error()
		if ref, isRef := errors.AsType[*rewrite.Refusal](err); isRef {
			code = ref.Code
		}
		c.Log.Info("CONNECT refused by mqtt-rewrite", "client", c.Remote, "route", c.Route, "err", text)
		return nil, &plugin.Refusal{Code: code, Reason: ReasonRewrite, Text: text}
	}
	c.Vars.MQTTClientID, c.Vars.MQTTUsername = out.ClientID, out.Username
	c.Connect, c.Packet = out, mqtt.AppendConnect(nil, out)
	return nil, nil
}
