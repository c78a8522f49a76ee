package proxy

import (
	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/pipe"
	iprestriction "github.com/mqgate/mqgate/plugin/ip-restriction"
	mqttproxy "github.com/mqgate/mqgate/plugin/mqtt-proxy"
	mqttrewrite "github.com/mqgate/mqgate/plugin/mqtt-rewrite"
)

// accessFormat is the access log's format for cfg: its
// log.access_log_format, or JSON.
func accessFormat(cfg *config.Config) accesslog.Format {
	if t := cfg.Log.AccessLogFormat; t != nil {
		return t.Format
	}
	return accesslog.JSON
}

// nginxStatus is the connection's $status as NGINX's stream module logs
// it: 200 for a session that was proxied (however it ended), 400 for a
// client whose first bytes were not a usable CONNECT (or PROXY header, or
// TLS handshake), and for a refusal what refusalStatus says.
func nginxStatus(r *record, node *nodeState) int {
	switch r.end {
	case EndRefused:
		return int(r.status)
	case EndBadConnect, EndConnectTimeout, EndProxyProtocol, EndTLSHandshake:
		return 400
	case pipe.BrokerError:
		if node == nil {
			return 502
		}
	}
	return 200
}

// refusalStatus is the $status of a refusal: 403 for ip-restriction, 502
// when no broker could be reached, 400 for a CONNECT the route cannot take
// (protocol level, rewrite), 503 for the limits and a client no route takes.
func refusalStatus(reason string) uint16 {
	switch reason {
	case iprestriction.ReasonIPRestriction:
		return 403
	case refuseNoBroker:
		return 502
	case mqttproxy.ReasonProtocolLevel, refuseBadConnect, mqttrewrite.ReasonRewrite:
		return 400
	}
	return 503
}
