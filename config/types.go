package config

import (
	"github.com/mqgate/mqgate/accesslog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Document is one named YAML document for Parse. Name appears in error
// messages in place of a file path.
type Document struct {
	Name string
	Data []byte
	// Overlay marks a document of Admin API objects: it may hold only
	// stream_routes, upstreams, ssls and routes, every object needs an id, and an
	// object replaces the one with the same id from the other documents.
	Overlay bool
}

// Config is the merged, validated configuration of all loaded files.
type Config struct {
	Files        []string // in load order
	StreamProxy  StreamProxy
	Log          Log
	StreamRoutes []StreamRoute
	Routes       []HTTPRoute // APISIX's HTTP routes (http.go)
	Upstreams    []Upstream  // top-level upstreams only; inline ones live in StreamRoute.Upstream
	Admin        *Admin      // nil: no admin block, the Admin API is off
	Reload       *Reload     // nil: defaults; see ReloadSettings
	Rebalance    *Rebalance  // nil: defaults; see RebalanceSettings
	SSLs         []SSL       // server certificates for TLS listeners, in load order (ssl.go)
	Deployment   *Deployment // nil: no deployment block; see DeploymentSettings (deployment.go)
	Ignored      []string    // APISIX keys mqgate accepts but does not use, as "file:line: path"
	Warnings     []*Error    // valid but suspicious settings
}

// StreamProxy holds the listeners and the settings for reading CONNECT.
type StreamProxy struct {
	TCP            []Listener
	ConnectTimeout time.Duration // deadline to read the client's CONNECT; default 10s
	MaxConnectSize int           // largest accepted CONNECT packet in bytes; default 65536
	// MaxConnections caps connections past their CONNECT (dialling or
	// proxied) across all listeners; 0 = no cap.
	MaxConnections int
	// The admission caps on connections that have not finished their
	// CONNECT (PROXY header, TLS handshake, CONNECT still to come): in all,
	// per source address, and the descriptors kept out of their reach.
	// 0 = derived from the open-file limit when the server applies them
	// (admission.Defaults).
	MaxUnfinishedConnections int
	MaxUnfinishedPerAddress  int
	ReservedDescriptors      int
	// OnDuplicateClientID is DuplicateAllow (or empty, the default), DuplicateKeepNewest
	// or DuplicateKeepOldest: what to do when a client id connects again
	// to the same upstream while its earlier connection is still open.
	OnDuplicateClientID string
	DataPath            string // DataPathEpoll (default) or DataPathGoroutines
	// LoopAffinity is LoopAffinityBroker (or empty, the default) or
	// LoopAffinityConnection: which event loop pipes a plain TCP pair.
	LoopAffinity string
	// TLSRecordOff is stream_proxy.tls_record: false: TLS 1.3 connections
	// keep crypto/tls's record layer after the handshake instead of
	// package tlsrecord's (the default carries them with tlsrecord).
	TLSRecordOff bool
	// MaxPacketSize closes a proxied client that sends a packet larger
	// than this many bytes (a 5.0 client is told 0x95 Packet too large);
	// 0 = no limit beyond the protocol's.
	MaxPacketSize int
	// ServerReference is the Server Reference a 5.0 client is sent with
	// 0x9C Use another server and 0x9D Server moved; empty = none.
	ServerReference string
}

// How proxied plain TCP connections move their bytes (stream_proxy.data_path).
const (
	DataPathEpoll      = "epoll"      // per-core event loops: an idle connection costs no goroutine
	DataPathGoroutines = "goroutines" // two goroutines per connection that park without a buffer
)

// Which event loop pipes a plain TCP pair (stream_proxy.loop_affinity).
const (
	LoopAffinityBroker     = "broker"     // the loop that serves its broker: one broker's clients keep their order
	LoopAffinityConnection = "connection" // the loop that accepted it: one broker's pairs spread over all loops
)

// Listener is one TCP address mqgate accepts clients on.
type Listener struct {
	Addr string // normalized "host:port"; ":9000" listens on all addresses
	TLS  bool
	Line int
	File string

	// ProxyProtocol makes every connection start with a PROXY protocol
	// header (v1 or v2) sent from an address in RealIPFrom (proxy_protocol.go).
	ProxyProtocol bool
	RealIPFrom    []netip.Prefix

	// WebSocket, when set, makes the listener also take MQTT over
	// WebSocket (over TLS too when TLS is set) next to plain MQTT, told
	// apart by the first bytes (websocket.go).
	WebSocket *WebSocket

	// HTTP makes the listener serve HTTP routes too (its port is in
	// node_listen or ssl.listen); HTTPOnly listeners take no MQTT.
	HTTP, HTTPOnly bool
}

// Log configures the process log and the access log.
type Log struct {
	Level     string // debug, info (default), warn or error
	AccessLog string // "stdout" (default), "stderr", "off" or a file path
	// AccessLogFormat is log.access_log_format: a line per connection
	// from this template instead of JSON; nil writes JSON.
	AccessLogFormat *accesslog.Template
}

// StreamRoute selects an upstream for a client connection.
type StreamRoute struct {
	ID           string // generated as "route-<index>" when the file has none
	Name, Desc   string
	ServerPort   int          // 0 = any
	ServerAddr   netip.Addr   // zero = any
	RemoteAddr   netip.Prefix // zero = any
	SNI          string
	MQTTClientID *StringMatch  // nil = any
	MQTTUsername *StringMatch  // nil = any
	UpstreamID   string        // reference to Config.Upstreams; empty when Upstream is set
	Upstream     *Upstream     // inline upstream with ID "route:<route ID>", or nil
	Plugins      []RoutePlugin // in the order they run (plugin/registry)
	Line         int
	File         string
}

// StringMatch is how a route matches a CONNECT field: exactly one of Exact,
// Prefix or Regex is set.
type StringMatch struct {
	Exact, Prefix, Regex string
	re                   *regexp.Regexp
}

// Upstream is a group of backend nodes and how to balance across them.
type Upstream struct {
	ID         string
	Name, Desc string
	Type       string // "roundrobin" (default), "chash" or "least_conn"
	Key        string // chash only: a variable of package vars; "mqtt_client_id" by default
	Nodes      []Node
	Retries    int // resolved: defaults to len(Nodes)-1
	Timeout    Timeout
	Scheme     string  // "tcp", "tls", "ws" or "wss" to brokers; "http" or "https" for HTTP routes
	Checks     *Checks // nil = no health checks: every node is dialled
	// HashBalanceFactor bounds chash load: no node takes more than
	// factor × the average connections; 0 = off.
	HashBalanceFactor float64
	// HashMethod is how chash places keys: "rendezvous" (mqgate's, also
	// when empty), "apisix" or "nginx" (their consistent-hash rings).
	HashMethod string
	// PassHost and UpstreamHost are APISIX's upstream keys for the Host an
	// HTTP upstream sees; a route's own pass_host overrides them. Empty
	// PassHost is "pass". Stream routes do not use them.
	PassHost, UpstreamHost string
	Line                   int
	File                   string

	TLS *UpstreamTLS // scheme tls, wss or https: how to talk TLS to the nodes (ssl.go); nil for tcp
	// WebSocket is how to ask the nodes for MQTT over WebSocket (scheme ws
	// or wss, EMQX's 8083 and 8084); nil for the other schemes.
	WebSocket *UpstreamWebSocket
	// ProxyProtocol is "v1" or "v2" to send a PROXY protocol header to the
	// node before anything else, "" for none.
	ProxyProtocol string
	// SourceAddresses are local addresses to dial the nodes from, so that
	// more than one address's ports carry connections to one broker; none
	// lets the kernel choose.
	SourceAddresses []netip.Addr
	// SourceHashKey is a variable a connection's source address is hashed
	// by (a client keeps its source); "" spreads connections evenly.
	SourceHashKey string
	// SourcePortRange limits the local ports of connections from the
	// source addresses (IP_LOCAL_PORT_RANGE); zero for the kernel's range.
	SourcePortRange [2]uint16
}

// UpstreamWebSocket is the WebSocket handshake sent to each node of a ws or
// wss upstream.
type UpstreamWebSocket struct {
	Path        string // the request path (and query), "/mqtt" by default
	Subprotocol string // offered in Sec-WebSocket-Protocol, "mqtt" by default; "" offers none
}

// The defaults of an upstream's websocket.
const (
	DefaultUpstreamWebSocketPath        = "/mqtt"
	DefaultUpstreamWebSocketSubprotocol = "mqtt"
)

// UsesTLS reports whether the nodes are reached over TLS: scheme tls, wss
// or https.
func (u *Upstream) UsesTLS() bool {
	return u.Scheme == "tls" || u.Scheme == "wss" || u.Scheme == "https"
}

// Node is one backend broker.
type Node struct {
	Host     string // hostname or IP; hostnames are resolved at dial time
	Port     int
	Weight   int // 0 = never picked
	Priority int // higher is preferred
}

// Addr returns the node's dial address, "host:port".
func (n Node) Addr() string { return net.JoinHostPort(n.Host, strconv.Itoa(n.Port)) }

// Timeout holds the upstream timeouts; zero Send and Read mean unset.
type Timeout struct {
	Connect time.Duration // default 5s
	Send    time.Duration
	Read    time.Duration
	// Connack bounds the wait for the broker's CONNACK once the CONNECT
	// is sent; without one by then the next node gets the CONNECT.
	Connack time.Duration // default 5s
}
