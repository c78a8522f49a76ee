package proxy

import (
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/mqtt"
)

// Why a well-formed CONNECT was refused, besides the reasons of the stream
// plugins (plugin.Module.Reasons): a bounded set, for counting.
const (
	refuseNoRoute           = "no_route"            // no stream route matched
	refuseNoBroker          = "no_broker"           // every node tried failed to dial
	refuseBadConnect        = "bad_connect"         // the CONNECT broke a rule that calls for a CONNACK
	refuseMaxConnections    = "max_connections"     // stream_proxy.max_connections
	refuseDuplicateClientID = "duplicate_client_id" // on_duplicate_client_id: keep_oldest
)

// coreRefusals are the reasons above, in the order they can happen.
func coreRefusals() []string {
	return []string{refuseNoRoute, refuseNoBroker, refuseBadConnect, refuseMaxConnections, refuseDuplicateClientID}
}

// parseErrorKinds are the CONNECT failures counted, in a fixed order.
var parseErrorKinds = [...]string{
	string(mqtt.KindNotMQTT), string(mqtt.KindMalformed), string(mqtt.KindProtocol),
	string(mqtt.KindUnsupportedVersion), string(mqtt.KindClientIDRejected), "too_large", "timeout",
}

// Stats are the server's counters since it started.
type Stats struct {
	Accepted atomic.Uint64 // connections accepted
	Proxied  atomic.Uint64 // connections piped to a broker
	Active   atomic.Int64  // connections open now, in any stage

	TLSHandshakeFailures atomic.Uint64 // TLS listeners: handshakes that failed
	TLSRecordCarried     atomic.Uint64 // TLS connections whose records tlsrecord carries
	ProxyProtocolRefused atomic.Uint64 // proxy_protocol listeners: senders refused, headers bad
	// Plain WebSocket (ws) pairs on data_path epoll: carried by an event
	// loop, or parked (pipe.Park) because their handover to a loop was not
	// simple (bytes read ahead, a frame or message open at the CONNACK, the
	// loops out of reach), or parked because their broker side is not plain
	// TCP (an upstream with scheme ws, wss or tls), which no loop takes.
	WebSocketLooped         atomic.Uint64
	WebSocketParked         atomic.Uint64
	WebSocketUpstreamParked atomic.Uint64
	// TLS and wss pairs whose records tlsrecord carries, on data_path
	// epoll, each counted once: carried by an event loop
	// (pipe/epoll/tls.go), or parked. A wss pair is counted at its
	// CONNACK (loopPair), a TLS one when it moves, once it has stayed
	// (tlsMove), or ends parked.
	TLSRecordLooped atomic.Uint64
	TLSRecordParked atomic.Uint64
	refusedBy       refusals // by reason, see coreRefusals and the plugins' Reasons
	parseErrorsBy   [len(parseErrorKinds)]atomic.Uint64
	dialCount       atomic.Uint64
	dialNanos       atomic.Uint64
	dialBuckets     dialHistogram

	// TLSRecordWaiting: parked TLS pairs that may still move, now.
	TLSRecordWaiting atomic.Int64
}

func (st *Stats) refused(reason string) { st.refusedBy.add(reason) }

func (st *Stats) parseError(kind mqtt.ErrorKind) {
	for i, k := range parseErrorKinds {
		if k == string(kind) {
			st.parseErrorsBy[i].Add(1)
			return
		}
	}
}

func (st *Stats) observeDial(d time.Duration) {
	st.dialCount.Add(1)
	st.dialNanos.Add(uint64(d))
	st.dialBuckets.observe(d)
}

// StatsSnapshot is a copy of the counters at one moment.
type StatsSnapshot struct {
	Accepted, Proxied uint64
	Active            int64
	Refused           map[string]uint64 // by reason
	ParseErrors       map[string]uint64 // by kind
	BytesUp           int64             // client to broker, every connection so far
	BytesDown         int64             // broker to client
	Dial              DialStats
	Routes            []RouteStats    // by id
	Listeners         []ListenerStats // by configured address
	Sources           []SourceStats   // source_addresses: by upstream, node, source
	Nodes             []NodeStats     // by upstream, then address

	Unfinished int64             // connections that have not finished their CONNECT
	Shed       map[string]uint64 // unfinished connections shed by admission, by reason (admission.Reasons)

	TLSHandshakeFailures uint64              // TLS listeners: handshakes that failed
	TLSRecordCarried     uint64              // TLS connections carried by tlsrecord (stream_proxy.tls_record)
	ProxyProtocolRefused uint64              // proxy_protocol listeners: senders refused, bad headers
	TLSHandshakes        []TLSHandshakeStats // by listener
	WebSocket            map[string]uint64   // upgrade requests by result (websocket.go)
	WebSocketLooped      uint64              // ws pairs, and tlsrecord-carried wss pairs (data_path epoll), carried by an event loop
	WebSocketParked      uint64              // ws and tlsrecord-carried wss pairs (data_path epoll) parked: their handover was not simple
	TLSRecordLooped      uint64              // tlsrecord-carried TLS and wss pairs (data_path epoll) carried by an event loop (a wss pair counts in WebSocketLooped too); TLS ones once they stayed (tlsLoopAfter)
	TLSRecordParked      uint64              // tlsrecord-carried TLS and wss pairs (data_path epoll) parked: shorter-lived TLS ones that ended so, or records read ahead
	TLSRecordWaiting     int64               // TLS pairs parked now that may still be handed to a loop (the memory give-back waits for them)
	// WebSocketUpstreamParked are ws pairs (data_path epoll) parked for
	// their broker side: an upstream with scheme ws, wss or tls.
	WebSocketUpstreamParked uint64

	Rebalance      *RebalanceStatus // the last paced rebalance, nil before the first
	RebalanceMoved uint64           // connections every rebalance moved
}

// NodeStats is one upstream node's counters.
type NodeStats struct {
	Upstream, Addr string
	Active         int64
	Total          uint64
	DialFailures   uint64
	BytesUp        int64
	BytesDown      int64
	Health         string    // HealthHealthy, HealthUnhealthy or HealthUnknown
	HealthReason   string    // why, from the health checker
	HealthSince    time.Time // when the node entered that state
	// Passive is the passive counting of failed dials in force (see
	// health.Status), with " (default)" when it is NGINX's
	// max_fails=1 fail_timeout=10s of an upstream without checks; the
	// counts are the current fail_timeout window's.
	Passive                          string
	PassiveFailures, PassiveTimeouts int
}
