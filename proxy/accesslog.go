package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/pipe"
	iprestriction "github.com/mqgate/mqgate/plugin/ip-restriction"
	mqttproxy "github.com/mqgate/mqgate/plugin/mqtt-proxy"
	mqttrewrite "github.com/mqgate/mqgate/plugin/mqtt-rewrite"
)

// lineBufs hold access log lines while they are formatted.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// logLine writes r as a line of log.access_log_format, in one write.
func (s *Server) logLine(f *accesslog.Format, r *record) {
	e := accesslog.Entry{
		Start: r.start, End: time.Now(), Status: nginxStatus(r),
		BytesReceived: r.up, BytesSent: r.down,
		UpstreamAddr: r.node, UpstreamID: r.upstream,
		ClientID: r.clientID, Username: r.username, ProtocolLevel: int(r.level),
		EndReason: string(r.end), Detail: r.detail, RouteID: r.route, Listener: r.listener,
		Vars: &r.id.vars,
	}
	if r.remote.IsValid() {
		e.RemoteIP, e.RemotePort = r.remote.Addr().String(), strconv.Itoa(int(r.remote.Port()))
	}
	if r.id.local.IsValid() {
		e.ServerIP, e.ServerPort = r.id.local.Addr().String(), strconv.Itoa(int(r.id.local.Port()))
	}
	buf := lineBufs.Get().(*[]byte)
	*buf = f.Append((*buf)[:0], &e)
	if _, err := s.lines.Write(*buf); err != nil {
		s.log.Warn("access log write failed", "err", err)
	}
	if cap(*buf) <= 64<<10 {
		lineBufs.Put(buf)
	}
}

// nginxStatus is the connection's $status as NGINX's stream module logs
// it: 200 for a session that was proxied (however it ended), 400 for a
// client whose first bytes were not a usable CONNECT (or PROXY header, or
// TLS handshake), 403 for ip-restriction, 502 when no broker could be
// reached, 503 for the limits and a client no route takes.
func nginxStatus(r *record) int {
	switch r.end {
	case EndRefused:
		switch r.refusedBy {
		case iprestriction.ReasonIPRestriction:
			return 403
		case refuseNoBroker:
			return 502
		case mqttproxy.ReasonProtocolLevel, refuseBadConnect, mqttrewrite.ReasonRewrite:
			return 400
		}
		return 503
	case EndBadConnect, EndConnectTimeout, EndProxyProtocol, EndTLSHandshake:
		return 400
	case pipe.BrokerError:
		if r.node == "" {
			return 502
		}
	}
	return 200
}
