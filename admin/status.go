package admin

import (
	"cmp"
	"fmt"
	"net/http"
	"time"

	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/proxy"
)

// status answers like NGINX's stub_status, so scripts written for it read
// the same three numbers:
//
//	Active connections: 3
//	server accepts handled refused
//	 120 112 5
//
// accepts counts accepted TCP connections, handled those piped to a broker,
// refused the well-formed CONNECTs answered with a refusing CONNACK; the
// rest were not MQTT, malformed, timed out or are being set up now.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.proxy.Stats()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Active connections: %d\nserver accepts handled refused\n %d %d %d\n", st.Active, st.Accepted, st.Proxied, sumOf(st.Refused))
	// After stub_status's lines, which scripts read by position.
	if rb := st.Rebalance; rb != nil {
		fmt.Fprintf(w, "%s\n", rebalanceLine(*rb))
	}
	if s.etcd != nil {
		es, rs := s.etcd.Status(), s.remoteStatus()
		state := "connected"
		if !es.Connected {
			state = "unreachable (" + cmp.Or(es.LastError, "not connected yet") + "), serving the last good configuration"
		}
		fmt.Fprintf(w, "etcd: %s, revision %d, %d refused objects\n", state, rs.Revision, len(rs.Refused))
		if rs.FromCache {
			fmt.Fprintf(w, "configuration: from the cache file %s (revision %d): etcd not read since the start\n", rs.CacheFile, rs.Revision)
		}
		fs := s.etcd.FleetStatus()
		sync := "all at the latest revision"
		if !fs.InSync {
			sync = "NOT all at the latest revision"
		}
		fmt.Fprintf(w, "fleet: %d instances, %s %d\n", len(fs.Instances), sync, fs.Latest)
		for _, in := range fs.Instances {
			fmt.Fprintf(w, " %s %s revision %d connections %d\n", in.Name, in.Admin, in.Revision, in.Connections)
		}
	}
}

// stubStatus answers exactly as NGINX's stub_status module does, byte for
// byte (its trailing spaces included), so that scrapers written for it
// (nginx-prometheus-exporter, Datadog's and Zabbix's NGINX checks, scripts
// that read the numbers by position) read mqgate unchanged:
//
//	Active connections: 3
//	server accepts handled requests
//	 120 118 112
//	Reading: 1 Writing: 0 Waiting: 2
//
// What the numbers are for MQTT: accepts counts accepted TCP connections;
// handled those not shed by admission before their CONNECT (NGINX's
// connections not dropped for worker_connections); requests the CONNECTs
// proxied to a broker, each connection's one request. Reading are the
// connections still reading their CONNECT, Writing those past it and not
// yet proxied (routing, dialling, waiting for the CONNACK), Waiting those
// proxied (NGINX's idle keep-alive connections: an MQTT session between
// packets); the three add up to Active.
func (s *Server) stubStatus(w http.ResponseWriter, r *http.Request) {
	st := s.proxy.Stats()
	var proxied int64
	for _, n := range st.Nodes {
		proxied += n.Active
	}
	reading := min(st.Unfinished, st.Active)
	waiting := min(proxied, st.Active-reading)
	writing := st.Active - reading - waiting
	handled := st.Accepted - min(sumOf(st.Shed), st.Accepted)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "Active connections: %d \nserver accepts handled requests\n %d %d %d \nReading: %d Writing: %d Waiting: %d \n",
		st.Active, st.Accepted, handled, st.Proxied, reading, writing, waiting)
}

// rebalanceLine is /status's line on the last paced job, e.g.
// "rebalance: drain running, 120 of 600 moved (0 skipped) at 500/s".
func rebalanceLine(rb proxy.RebalanceStatus) string {
	what := rb.Reason
	if rb.Upstream != "" {
		what += " of upstream " + rb.Upstream
	}
	rate := "all at once"
	if rb.Rate > 0 {
		rate = fmt.Sprintf("at %g/s", rb.Rate)
	}
	return fmt.Sprintf("rebalance: %s %s, %d of %d moved (%d skipped) %s", what, rb.State, rb.Moved, rb.Total, rb.Skipped, rate)
}

func (s *Server) remoteStatus() RemoteStatus {
	rs, _ := s.m.Remote()
	return rs
}

func sumOf(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

type upstreamStatus struct {
	ID        string       `json:"id"`
	Active    int64        `json:"active"`
	Total     uint64       `json:"total"`
	BytesUp   int64        `json:"bytes_up"`
	BytesDown int64        `json:"bytes_down"`
	Nodes     []nodeStatus `json:"nodes"`
}

type nodeStatus struct {
	Addr         string     `json:"addr"`
	Active       int64      `json:"active"`
	Total        uint64     `json:"total"`
	DialFailures uint64     `json:"dial_failures"`
	BytesUp      int64      `json:"bytes_up"`
	BytesDown    int64      `json:"bytes_down"`
	Health       string     `json:"health"` // healthy, unhealthy or unknown
	HealthReason string     `json:"health_reason,omitempty"`
	HealthSince  *time.Time `json:"health_since,omitempty"`
	// Passive is the passive counting of failed dials, "(default)" for
	// NGINX's max_fails=1 fail_timeout=10s without checks; the counts
	// are the current fail_timeout window's.
	Passive         string `json:"passive,omitempty"`
	PassiveFailures int    `json:"passive_failures,omitempty"`
	PassiveTimeouts int    `json:"passive_timeouts,omitempty"`
}

type reloadStatus struct {
	Counts      []metrics.Reload `json:"counts"`
	LastSuccess *time.Time       `json:"last_success,omitempty"`
	LastError   string           `json:"last_error,omitempty"`
}

// statusJSON is /status's numbers and more: by reason, by route, by
// upstream and node, and the reloads.
func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	st := s.proxy.Stats()
	var ups []*upstreamStatus
	byID := map[string]*upstreamStatus{}
	for _, n := range st.Nodes {
		u := byID[n.Upstream]
		if u == nil {
			u = &upstreamStatus{ID: n.Upstream}
			byID[n.Upstream] = u
			ups = append(ups, u)
		}
		u.Active += n.Active
		u.Total += n.Total
		u.BytesUp += n.BytesUp
		u.BytesDown += n.BytesDown
		ns := nodeStatus{
			Addr: n.Addr, Active: n.Active, Total: n.Total, DialFailures: n.DialFailures,
			BytesUp: n.BytesUp, BytesDown: n.BytesDown, Health: n.Health, HealthReason: n.HealthReason,
			Passive: n.Passive, PassiveFailures: n.PassiveFailures, PassiveTimeouts: n.PassiveTimeouts,
		}
		if !n.HealthSince.IsZero() {
			ns.HealthSince = &n.HealthSince
		}
		u.Nodes = append(u.Nodes, ns)
	}
	counts, _ := s.m.ReloadStats()
	last, lastErr := s.m.lastReload()
	rs := reloadStatus{Counts: counts, LastError: lastErr}
	if !last.IsZero() {
		rs.LastSuccess = &last
	}
	routes := st.Routes
	if routes == nil {
		routes = []proxy.RouteStats{}
	}
	if ups == nil {
		ups = []*upstreamStatus{}
	}
	listeners := st.Listeners
	if listeners == nil {
		listeners = []proxy.ListenerStats{}
	}
	out := map[string]any{
		"time":           time.Now().UTC(),
		"active":         st.Active,
		"accepted":       st.Accepted,
		"handled":        st.Proxied,
		"refused":        sumOf(st.Refused),
		"refused_by":     st.Refused,
		"connect_errors": st.ParseErrors,
		"bytes_up":       st.BytesUp,
		"bytes_down":     st.BytesDown,
		"listeners":      listeners,
		"routes":         routes,
		"upstreams":      ups,
		"reloads":        rs,
		"rebalance":      st.Rebalance, // null before the first
		"unfinished":     st.Unfinished,
		"shed":           st.Shed,
		"tls": map[string]any{
			"handshake_failures": st.TLSHandshakeFailures,
			"record_carried":     st.TLSRecordCarried,
			"record_looped":      st.TLSRecordLooped,
			"record_parked":      st.TLSRecordParked,
		},
		"proxy_protocol_refused": st.ProxyProtocolRefused,
		"websocket": map[string]any{
			"upgrades":        st.WebSocket,
			"looped":          st.WebSocketLooped,
			"parked":          st.WebSocketParked,
			"upstream_parked": st.WebSocketUpstreamParked,
		},
	}
	if s.etcd != nil {
		out["etcd"] = map[string]any{"connection": s.etcd.Status(), "config": s.remoteStatus()}
		out["fleet"] = s.etcd.FleetStatus()
	}
	writeJSON(w, http.StatusOK, out)
}
