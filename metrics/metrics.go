// Package metrics exports mqgate's counters to Prometheus. The collector
// reads the proxy's own counters when Prometheus scrapes, so the data path
// counts nothing twice; every name starts with mqgate_ and no label carries
// a client id, so the number of series is bounded by the configuration.
//
//	m := metrics.New(metrics.Sources{Proxy: srv.Stats})
//	mux.Handle("GET /metrics", m.Handler())
package metrics

import (
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqgate/mqgate/proxy"
)

// Reload is how many configuration reloads from one source ended one way.
type Reload struct {
	Source string // sighup, watch, admin, start
	Result string // ok, refused (invalid), failed (valid but not applied)
	Count  uint64
}

// Sources are the functions the collector reads at scrape time. Only Proxy
// is required.
type Sources struct {
	Proxy        func() proxy.StatsSnapshot
	Reloads      func() (counts []Reload, lastSuccess float64) // lastSuccess: unix seconds, 0 if none
	AuthFailures func() map[string]uint64                      // Admin API authentication failures by reason
	Etcd         func() Etcd                                   // nil without an etcd provider
}

// Etcd is the etcd provider's state.
type Etcd struct {
	Connected      bool
	Revision       int64  // of the configuration applied
	Errors         uint64 // failed requests to etcd
	Reads          uint64 // full reads: the first, then one per compaction or lost watch
	Refused        int    // objects left out for being invalid
	Instances      int    // instances registered in the fleet
	InSync         bool   // all of them hold the same objects
	LastErrorAtSec float64
}

// Metrics is a Prometheus registry with mqgate's collector and the Go
// runtime and process collectors.
type Metrics struct {
	reg *prometheus.Registry
}

// New registers the collectors for src.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{src: src})
	// The runtime and process collectors too carry the prefix:
	// mqgate_go_goroutines, mqgate_process_open_fds.
	prometheus.WrapRegistererWithPrefix("mqgate_", reg).MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Metrics{reg: reg}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is for adding collectors of other parts (TLS handshakes, health).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("mqgate_"+name, help, labels, nil)
}

var (
	connActive   = desc("connections_active", "Client connections open now, in any stage.")
	connAccepted = desc("connections_accepted_total", "Client connections accepted.")
	connProxied  = desc("connections_proxied_total", "Client connections piped to a broker.")
	connRefused  = desc("connections_refused_total", "Well-formed CONNECTs answered with a refusing CONNACK, by reason.", "reason")
	connErrors   = desc("connect_errors_total", "Client connections closed before a usable CONNECT, by kind.", "kind")
	bytesTotal   = desc("bytes_total", "Bytes proxied, by direction: up is client to broker, down is broker to client.", "direction")
	dialSeconds  = desc("dial_duration_seconds", "Time to open a TCP connection to a broker.")
	routeActive  = desc("route_connections_active", "Proxied connections open now, by stream route.", "route")
	routeTotal   = desc("route_connections_total", "Connections proxied, by stream route.", "route")
	routeBytes   = desc("route_bytes_total", "Bytes proxied, by stream route and direction.", "route", "direction")
	nodeActive   = desc("node_connections_active", "Proxied connections open now, by upstream node.", "upstream", "node")
	nodeTotal    = desc("node_connections_total", "Connections proxied, by upstream node.", "upstream", "node")
	nodeFails    = desc("node_dial_failures_total", "Failed tries of a node for a client (dial, or no acceptable CONNACK), by upstream node.", "upstream", "node")
	nodeBytes    = desc("node_bytes_total", "Bytes proxied, by upstream node and direction.", "upstream", "node", "direction")
	nodeHealth   = desc("node_health", "1 for the node's current health state: healthy, unhealthy (or unknown).", "upstream", "node", "state")
	reloads      = desc("config_reloads_total", "Configuration reloads, by source and result.", "source", "result")
	lastReload   = desc("config_last_reload_success_timestamp_seconds", "When the configuration was last applied, in unix seconds.")
	authFailures = desc("admin_auth_failures_total", "Admin API requests refused for their key, by reason.", "reason")
	tlsTotal     = desc("tls_handshakes_total", "TLS handshakes on TLS listeners, by listener and result (ok, failed).", "listener", "result")
	rebMoved     = desc("rebalance_moved_total", "Connections moved by paced rebalances and drains (a node added, move_back, the Admin API, removed routes and nodes, -drain-spread).")
	rebPending   = desc("rebalance_pending", "Connections the running rebalance or drain has still to move (0 when none runs).")
	tlsSeconds   = desc("tls_handshake_duration_seconds", "Time of successful TLS handshakes, by listener.", "listener")
	connUnfin    = desc("connections_unfinished", "Client connections that have not finished their CONNECT (PROXY header, TLS handshake, CONNECT).")
	connShed     = desc("connections_shed_total", "Unfinished connections closed by admission to make room, oldest first, by reason (per_address, total, descriptors).", "reason")
	etcdUp       = desc("etcd_connected", "1 while etcd answers, 0 while it is unreachable and the last good configuration serves.")
	etcdRev      = desc("etcd_revision", "The etcd revision of the configuration this instance applied.")
	etcdErrors   = desc("etcd_errors_total", "Failed requests to etcd (reads, watches, probes, writes).")
	etcdReads    = desc("etcd_reads_total", "Full reads of the prefix: the first, then one per compaction or lost watch.")
	etcdRefused  = desc("etcd_refused_objects", "Objects in etcd left out of the configuration for being invalid.")
	etcdFleet    = desc("etcd_fleet_instances", "mqgate instances registered under the prefix.")
	etcdInSync   = desc("etcd_fleet_in_sync", "1 when every registered instance holds the same objects.")
	etcdLastErr  = desc("etcd_last_error_timestamp_seconds", "When a request to etcd last failed, in unix seconds.")
	srcActive    = desc("source_connections_active", "Proxied connections open now, by upstream node and source address (source_addresses).", "upstream", "node", "source")
	srcTotal     = desc("source_connections_total", "Connections made, by upstream node and source address (source_addresses).", "upstream", "node", "source")
	srcExhausted = desc("source_ports_exhausted_total", "Dials that found no free local port from a source address to a node (connect: EADDRNOTAVAIL).", "upstream", "node", "source")
	lnActive     = desc("listener_connections_active", "Client connections open now, by listener.", "listener")
	lnAccepted   = desc("listener_connections_accepted_total", "Client connections accepted, by listener.", "listener")
	lnRefused    = desc("listener_connections_refused_total", "Well-formed CONNECTs answered with a refusing CONNACK, by listener.", "listener")
	ppRefused    = desc("proxy_protocol_refused_total", "Connections closed on proxy_protocol listeners: sender not in real_ip_from, header missing or malformed.")
	wsUpgrades   = desc("websocket_upgrades_total", "MQTT over WebSocket upgrade requests, by result: upgraded, not_websocket, origin, subprotocol, handshake.", "result")
	wsPairs      = desc("websocket_pairs_total", "Plain ws pairs on data_path epoll, by where they were carried: looped (an event loop), parked (their handover was not simple), upstream_parked (their upstream is ws, wss or tls).", "path")
	tlsRecord    = desc("tls_record_carried_total", "TLS connections whose records mqgate's tlsrecord carries after the handshake (stream_proxy.tls_record).")
	tlsPairs     = desc("tls_record_pairs_total", "TLS pairs carried by tlsrecord on data_path epoll, by where they were carried: looped (handed to an event loop once they had stayed a quarter of a second), parked (ended on the parked path: shorter-lived, or records read ahead).", "path")
)

type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connActive, connAccepted, connProxied, connRefused, connErrors, bytesTotal,
		dialSeconds, routeActive, routeTotal, routeBytes, nodeActive, nodeTotal, nodeFails, nodeBytes, nodeHealth,
		reloads, lastReload, authFailures, tlsTotal, tlsSeconds, ppRefused, wsUpgrades, wsPairs, tlsRecord, tlsPairs,
		srcActive, srcTotal, srcExhausted, lnActive, lnAccepted, lnRefused,
		etcdUp, etcdRev, etcdErrors, etcdReads, etcdRefused, etcdFleet, etcdInSync, etcdLastErr, connUnfin, connShed} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Proxy()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(connActive, float64(st.Active))
	counter(rebMoved, float64(st.RebalanceMoved))
	pending := 0
	if r := st.Rebalance; r != nil {
		pending = r.Pending()
	}
	gauge(rebPending, float64(pending))
	counter(connAccepted, float64(st.Accepted))
	counter(connProxied, float64(st.Proxied))
	for _, reason := range sortedKeys(st.Refused) {
		counter(connRefused, float64(st.Refused[reason]), reason)
	}
	for _, kind := range sortedKeys(st.ParseErrors) {
		counter(connErrors, float64(st.ParseErrors[kind]), kind)
	}
	gauge(connUnfin, float64(st.Unfinished))
	for _, reason := range sortedKeys(st.Shed) {
		counter(connShed, float64(st.Shed[reason]), reason)
	}
	counter(bytesTotal, float64(st.BytesUp), "up")
	counter(bytesTotal, float64(st.BytesDown), "down")

	buckets := make(map[float64]uint64, len(proxy.DialBuckets))
	var cumulative uint64
	for i, bound := range proxy.DialBuckets {
		cumulative += st.Dial.Counts[i]
		buckets[bound] = cumulative
	}
	ch <- prometheus.MustNewConstHistogram(dialSeconds, st.Dial.Count, st.Dial.SumSeconds, buckets)

	for _, r := range st.Routes {
		gauge(routeActive, float64(r.Active), r.ID)
		counter(routeTotal, float64(r.Total), r.ID)
		counter(routeBytes, float64(r.BytesUp), r.ID, "up")
		counter(routeBytes, float64(r.BytesDown), r.ID, "down")
	}
	for _, n := range st.Nodes {
		gauge(nodeActive, float64(n.Active), n.Upstream, n.Addr)
		counter(nodeTotal, float64(n.Total), n.Upstream, n.Addr)
		counter(nodeFails, float64(n.DialFailures), n.Upstream, n.Addr)
		counter(nodeBytes, float64(n.BytesUp), n.Upstream, n.Addr, "up")
		counter(nodeBytes, float64(n.BytesDown), n.Upstream, n.Addr, "down")
		gauge(nodeHealth, 1, n.Upstream, n.Addr, n.Health)
	}
	for _, sc := range st.Sources {
		gauge(srcActive, float64(sc.Active), sc.Upstream, sc.Node, sc.Source)
		counter(srcTotal, float64(sc.Total), sc.Upstream, sc.Node, sc.Source)
		counter(srcExhausted, float64(sc.Exhausted), sc.Upstream, sc.Node, sc.Source)
	}
	for _, l := range st.Listeners {
		gauge(lnActive, float64(l.Active), l.Addr)
		counter(lnAccepted, float64(l.Accepted), l.Addr)
		counter(lnRefused, float64(l.Refused), l.Addr)
	}
	for _, l := range st.TLSHandshakes {
		counter(tlsTotal, float64(l.OK), l.Listener, "ok")
		counter(tlsTotal, float64(l.Failed), l.Listener, "failed")
		buckets := make(map[float64]uint64, len(proxy.DialBuckets))
		var cumulative uint64
		for i, bound := range proxy.DialBuckets {
			cumulative += l.Counts[i]
			buckets[bound] = cumulative
		}
		ch <- prometheus.MustNewConstHistogram(tlsSeconds, l.OK, l.SumSeconds, buckets, l.Listener)
	}
	counter(ppRefused, float64(st.ProxyProtocolRefused))
	for _, result := range sortedKeys(st.WebSocket) {
		counter(wsUpgrades, float64(st.WebSocket[result]), result)
	}
	counter(wsPairs, float64(st.WebSocketLooped), "looped")
	counter(wsPairs, float64(st.WebSocketParked), "parked")
	counter(wsPairs, float64(st.WebSocketUpstreamParked), "upstream_parked")
	counter(tlsRecord, float64(st.TLSRecordCarried))
	counter(tlsPairs, float64(st.TLSRecordLooped), "looped")
	counter(tlsPairs, float64(st.TLSRecordParked), "parked")
	if c.src.Reloads != nil {
		counts, last := c.src.Reloads()
		for _, r := range counts {
			counter(reloads, float64(r.Count), r.Source, r.Result)
		}
		if last > 0 {
			gauge(lastReload, last)
		}
	}
	if c.src.Etcd != nil {
		e := c.src.Etcd()
		gauge(etcdUp, b2f(e.Connected))
		gauge(etcdRev, float64(e.Revision))
		counter(etcdErrors, float64(e.Errors))
		counter(etcdReads, float64(e.Reads))
		gauge(etcdRefused, float64(e.Refused))
		gauge(etcdFleet, float64(e.Instances))
		gauge(etcdInSync, b2f(e.InSync))
		if e.LastErrorAtSec > 0 {
			gauge(etcdLastErr, e.LastErrorAtSec)
		}
	}
	if c.src.AuthFailures != nil {
		failures := c.src.AuthFailures()
		for _, reason := range sortedKeys(failures) {
			counter(authFailures, float64(failures[reason]), reason)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
