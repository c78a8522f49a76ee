package proxy

import (
	"errors"
	"net"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/rewrite"
)

// rewriteConnect applies the route's mqtt-rewrite plugin. It returns the
// CONNECT to forward (nil: forward the client's bytes unchanged) and the
// CONNECT as the broker will see it; on a refusal it has answered the
// client and returns ok false.
func (s *Server) rewriteConnect(c net.Conn, rt *config.StreamRoute, connect *mqtt.Connect, rec *record) (pkt []byte, out *mqtt.Connect, ok bool) {
	rw := rt.Plugins.MQTTRewrite
	if rw == nil || rw.Rule == nil {
		return nil, connect, true
	}
	out, err := rw.Rule.Apply(connect, &rec.id.vars)
	if err != nil {
		code, text := mqtt.NotAuthorized, err.Error()
		if ref, isRef := errors.AsType[*rewrite.Refusal](err); isRef {
			code = ref.Code
		}
		s.log.Info("CONNECT refused by mqtt-rewrite", "client", rec.remote, "route", rt.ID, "err", text)
		s.refuse(c, rec, code, refuseRewrite, text)
		return nil, nil, false
	}
	rec.id.vars.MQTTClientID, rec.id.vars.MQTTUsername = out.ClientID, out.Username
	if out.ClientID != connect.ClientID {
		rec.id.upstream = out.ClientID
	}
	return mqtt.AppendConnect(nil, out), out, true
}
