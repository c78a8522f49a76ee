package config

import (
	"math"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Checks is an upstream's health checking, APISIX's `checks`: active probes
// and passive failure counting, each off unless configured.
type Checks struct {
	// Active are the probes: APISIX's one `active` mapping, or a list of
	// them (an MQTT probe of the broker port and an HTTP probe of its status
	// endpoint, say). A node is healthy only while it passes every one.
	Active  []*ActiveCheck // empty = no probes
	Passive *PassiveCheck  // nil = no passive counting
	// OnMarkedDown is MarkedDownKeep (default) or MarkedDownClose: close
	// the node's client connections when it is marked unhealthy, so their
	// clients reconnect to a healthy node at once instead of waiting for
	// their keepalive to notice a hung broker.
	OnMarkedDown string
	// OnMarkedUp is MarkedUpKeep (default) or MarkedUpMoveBack: when a
	// node is healthy again, close, paced like every rebalance, the
	// connections on other nodes that the balancer would now send to it,
	// so its clients come back to it (and to their sessions).
	OnMarkedUp string
	// MoveBackRate, when set, paces this upstream's move_back instead of
	// rebalance.rate; 0 (the default): rebalance.rate. Kept for
	// configurations written before rebalance.rate paced move_back.
	MoveBackRate float64
}

// Values of checks.on_marked_down and checks.on_marked_up.
const (
	MarkedDownKeep   = "keep"
	MarkedDownClose  = "close"
	MarkedUpKeep     = "keep"
	MarkedUpMoveBack = "move_back"
)

// Probe types of checks.active.type.
const (
	ProbeMQTT  = "mqtt"  // CONNECT, a successful CONNACK, DISCONNECT
	ProbeTCP   = "tcp"   // the port accepts a connection
	ProbeHTTP  = "http"  // GET http_path answers a healthy status (a broker's status endpoint)
	ProbeHTTPS = "https" // the same over TLS
)

// ActiveCheck is checks.active: every node is probed on its own schedule.
// A healthy node turns unhealthy after TCPFailures failed probes or Timeouts
// timed-out probes in a row; an unhealthy node turns healthy after
// Successes good probes in a row.
type ActiveCheck struct {
	Type              string        // ProbeMQTT (default), ProbeTCP, ProbeHTTP or ProbeHTTPS
	Timeout           time.Duration // per probe, dial to CONNACK; default 1s
	Concurrency       int           // probes of this upstream in flight at once; default 10
	Port              int           // probe this port instead of the node's; 0 = the node's
	HealthyInterval   time.Duration // between probes of a healthy node; default 1s
	Successes         int           // default 2
	UnhealthyInterval time.Duration // between probes of an unhealthy node; default 1s
	TCPFailures       int           // default 2; any failure that is not a timeout
	Timeouts          int           // default 3
	// MQTT probe settings (type mqtt only).
	ProtocolLevel int    // 3, 4 (default) or 5
	ClientID      string // prefix of the probe's client id; "" sends an empty id
	Username      string
	Password      string
	// HTTP probe settings (types http and https only), APISIX's keys.
	HTTPPath          string   // default "/"
	Host              string   // the Host header (and, for https, the name verified); "" = the node's host
	ReqHeaders        []string // "Name: value" lines sent with the request
	HTTPSVerify       bool     // verify the certificate (https); default true
	HealthyStatuses   []int    // statuses that count as a success; default 200, 302
	UnhealthyStatuses []int    // statuses that count as an HTTP failure; default 429, 404, 500-505
	HTTPFailures      int      // HTTP failures in a row to become unhealthy; default 5
}

// Equal reports whether a and b are the same settings.
func (a *ActiveCheck) Equal(b *ActiveCheck) bool { return reflect.DeepEqual(a, b) }

// IsHTTP reports whether the probe speaks HTTP (types http and https).
func (a *ActiveCheck) IsHTTP() bool { return a.Type == ProbeHTTP || a.Type == ProbeHTTPS }

// PassiveCheck is checks.passive: failed dials of real client connections
// count against the node. TCPFailures refused or reset dials, or Timeouts
// timed-out dials, each within FailTimeout, take the node out of service
// for FailTimeout, as nginx's max_fails and fail_timeout do.
type PassiveCheck struct {
	TCPFailures int           // default 2
	Timeouts    int           // default 7
	FailTimeout time.Duration // default 10s
}

// Defaults of checks, as APISIX's where APISIX has the key.
const (
	DefaultProbeTimeout       = time.Second
	DefaultProbeConcurrency   = 10
	DefaultProbeInterval      = time.Second
	DefaultProbeSuccesses     = 2
	DefaultProbeTCPFailures   = 2
	DefaultProbeTimeouts      = 3
	DefaultPassiveTCPFailures = 2
	DefaultPassiveTimeouts    = 7
	DefaultPassiveFailTimeout = 10 * time.Second
	DefaultProbeHTTPFailures  = 5
	DefaultProbeHTTPPath      = "/"
)

// APISIX's default statuses of an HTTP probe.
var (
	DefaultHealthyStatuses   = []int{200, 302}
	DefaultUnhealthyStatuses = []int{429, 404, 500, 501, 502, 503, 504, 505}
)

var (
	checksKeys = []string{"active", "passive", "on_marked_down", "on_marked_up", "move_back_rate"}
	activeKeys = []string{"type", "timeout", "concurrency", "port", "healthy", "unhealthy", "protocol_level", "client_id", "username", "password",
		"host", "http_path", "https_verify_certificate", "req_headers"}
	activeHealthyKeys    = []string{"interval", "successes", "http_statuses"}
	activeUnhealthyKeys  = []string{"interval", "tcp_failures", "timeouts", "http_statuses", "http_failures"}
	ignoredHTTPKeys      = []string{"http_statuses", "http_failures"}
	passiveKeys          = []string{"type", "unhealthy", "fail_timeout"}
	ignoredPassiveKeys   = []string{"healthy"}
	passiveUnhealthyKeys = []string{"tcp_failures", "timeouts"}
	probeTypes           = []string{ProbeMQTT, ProbeTCP, ProbeHTTP, ProbeHTTPS}
	mqttOnlyActiveKeys   = []string{"protocol_level", "client_id", "username", "password"}
	httpOnlyActiveKeys   = []string{"host", "http_path", "https_verify_certificate", "req_headers", "healthy.http_statuses", "unhealthy.http_statuses", "unhealthy.http_failures"}
)

// checks decodes an upstream's `checks`.
func (d *decoder) checks(n *yaml.Node, path string) *Checks {
	c := &Checks{OnMarkedDown: MarkedDownKeep, OnMarkedUp: MarkedUpKeep}
	var actions []keyValue
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "on_marked_down":
			actions = append(actions, kv)
			if v, ok := d.oneOf(kv.val, p, MarkedDownKeep, MarkedDownClose); ok {
				c.OnMarkedDown = v
			}
		case "on_marked_up":
			actions = append(actions, kv)
			if v, ok := d.oneOf(kv.val, p, MarkedUpKeep, MarkedUpMoveBack); ok {
				c.OnMarkedUp = v
			}
		case "move_back_rate":
			actions = append(actions, kv)
			if v, ok := d.float(kv.val, p); ok {
				if v <= 0 {
					d.errorf(kv.val, p, "must be greater than 0, got %v", v)
					continue
				}
				c.MoveBackRate = v
			}
		case "active":
			switch {
			case isNull(kv.val):
			case kv.val.Kind == yaml.SequenceNode:
				items := d.items(kv.val, p)
				if len(items) == 0 {
					d.errorf(kv.val, p, "an empty list: write one check or more, or leave active out")
				}
				for i, item := range items {
					c.Active = append(c.Active, d.activeCheck(item, index(p, i)))
				}
			default:
				c.Active = []*ActiveCheck{d.activeCheck(kv.val, p)}
			}
		case "passive":
			if !isNull(kv.val) {
				c.Passive = d.passiveCheck(kv.val, p)
			}
		default:
			d.unknownKey(kv, path, "key", checksKeys)
		}
	}
	if len(c.Active) == 0 && c.Passive == nil {
		for _, kv := range actions {
			d.errorf(kv.keyNode, join(path, kv.key), "needs checks.active or checks.passive to mark nodes")
		}
		return nil
	}
	return c
}

func (d *decoder) activeCheck(n *yaml.Node, path string) *ActiveCheck {
	a := &ActiveCheck{
		Type:              ProbeMQTT,
		Timeout:           DefaultProbeTimeout,
		Concurrency:       DefaultProbeConcurrency,
		HealthyInterval:   DefaultProbeInterval,
		Successes:         DefaultProbeSuccesses,
		UnhealthyInterval: DefaultProbeInterval,
		TCPFailures:       DefaultProbeTCPFailures,
		Timeouts:          DefaultProbeTimeouts,
		ProtocolLevel:     4,
		HTTPPath:          DefaultProbeHTTPPath,
		HTTPSVerify:       true,
		HealthyStatuses:   DefaultHealthyStatuses,
		UnhealthyStatuses: DefaultUnhealthyStatuses,
		HTTPFailures:      DefaultProbeHTTPFailures,
	}
	// Keys of one probe type, by path, checked against the type at the end.
	mqttOnly := map[string]*yaml.Node{}
	httpOnly := map[string]*yaml.Node{}
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "type":
			if t, ok := d.oneOf(kv.val, p, probeTypes...); ok {
				a.Type = t
			}
		case "timeout":
			d.positiveDuration(kv.val, p, &a.Timeout)
		case "concurrency":
			if v, ok := d.intMin(kv.val, p, 1); ok {
				a.Concurrency = v
			}
		case "port":
			a.Port, _ = d.intIn(kv.val, p, 1, 65535)
		case "healthy":
			for _, f := range d.fields(kv.val, p) {
				fp := join(p, f.key)
				switch f.key {
				case "interval":
					d.positiveDuration(f.val, fp, &a.HealthyInterval)
				case "successes":
					d.count(f.val, fp, &a.Successes)
				case "http_statuses":
					httpOnly["healthy.http_statuses"] = f.keyNode
					a.HealthyStatuses = d.httpStatuses(f.val, fp)
				default:
					d.unknownKey(f, p, "key", activeHealthyKeys)
				}
			}
		case "unhealthy":
			for _, f := range d.fields(kv.val, p) {
				fp := join(p, f.key)
				switch f.key {
				case "interval":
					d.positiveDuration(f.val, fp, &a.UnhealthyInterval)
				case "tcp_failures":
					d.count(f.val, fp, &a.TCPFailures)
				case "timeouts":
					d.count(f.val, fp, &a.Timeouts)
				case "http_statuses":
					httpOnly["unhealthy.http_statuses"] = f.keyNode
					a.UnhealthyStatuses = d.httpStatuses(f.val, fp)
				case "http_failures":
					httpOnly["unhealthy.http_failures"] = f.keyNode
					d.count(f.val, fp, &a.HTTPFailures)
				default:
					d.unknownKey(f, p, "key", activeUnhealthyKeys)
				}
			}
		case "protocol_level":
			mqttOnly[kv.key] = kv.keyNode
			if v, ok := d.int(kv.val, p); ok {
				if v < 3 || v > 5 {
					d.errorf(kv.val, p, "must be 3, 4 or 5, got %d", v)
					continue
				}
				a.ProtocolLevel = v
			}
		case "client_id":
			mqttOnly[kv.key] = kv.keyNode
			if s, ok := d.str(kv.val, p); ok {
				if len(s) > 15 {
					// The probe adds 8 characters; 3.1 allows 23 in all.
					d.errorf(kv.val, p, "must be at most 15 characters (the probe appends 8), got %d", len(s))
					continue
				}
				a.ClientID = s
			}
		case "username":
			mqttOnly[kv.key] = kv.keyNode
			a.Username, _ = d.str(kv.val, p)
		case "password":
			mqttOnly[kv.key] = kv.keyNode
			a.Password, _ = d.str(kv.val, p)
		case "http_path":
			httpOnly[kv.key] = kv.keyNode
			if s, ok := d.str(kv.val, p); ok {
				if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " \r\n") {
					d.errorf(kv.val, p, "must be a path starting with / and without spaces, got %q", s)
					continue
				}
				a.HTTPPath = s
			}
		case "host":
			httpOnly[kv.key] = kv.keyNode
			if s, ok := d.str(kv.val, p); ok {
				if strings.ContainsAny(s, " /\r\n") {
					d.errorf(kv.val, p, "must be a host name, got %q", s)
					continue
				}
				a.Host = s
			}
		case "https_verify_certificate":
			httpOnly[kv.key] = kv.keyNode
			a.HTTPSVerify, _ = d.bool(kv.val, p)
		case "req_headers":
			httpOnly[kv.key] = kv.keyNode
			for i, item := range d.items(kv.val, p) {
				ip := index(p, i)
				s, ok := d.str(item, ip)
				if !ok {
					continue
				}
				name, value, found := strings.Cut(s, ":")
				if !found || strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t") || strings.ContainsAny(value, "\r\n") {
					d.errorf(item, ip, `must be "Name: value", got %q`, s)
					continue
				}
				a.ReqHeaders = append(a.ReqHeaders, s)
			}
		default:
			d.unknownKey(kv, path, "key", activeKeys)
		}
	}
	if a.Type != ProbeMQTT {
		for _, k := range mqttOnlyActiveKeys {
			if at, ok := mqttOnly[k]; ok {
				d.errorf(at, join(path, k), "only used with type mqtt, not %s", a.Type)
			}
		}
	}
	if !a.IsHTTP() {
		// APISIX files carry the HTTP keys with their defaults whatever
		// the type: accepted, and unused.
		for _, k := range httpOnlyActiveKeys {
			if at, ok := httpOnly[k]; ok {
				d.ignore(at, join(path, k))
			}
		}
		a.HTTPPath, a.Host, a.ReqHeaders, a.HTTPSVerify = "", "", nil, false
		a.HealthyStatuses, a.UnhealthyStatuses, a.HTTPFailures = nil, nil, 0
	}
	if a.Type == ProbeMQTT && a.ProtocolLevel == 3 && a.ClientID == "" {
		d.errorf(n, join(path, "client_id"), "MQTT 3.1 (protocol_level 3) does not allow an empty client id: set a prefix")
	}
	return a
}

// httpStatuses reads a list of HTTP status codes, 200..599 as APISIX.
func (d *decoder) httpStatuses(n *yaml.Node, path string) []int {
	out := []int{}
	for i, item := range d.items(n, path) {
		if v, ok := d.intIn(item, index(path, i), 200, 599); ok {
			out = append(out, v)
		}
	}
	return out
}

func (d *decoder) passiveCheck(n *yaml.Node, path string) *PassiveCheck {
	pc := &PassiveCheck{
		TCPFailures: DefaultPassiveTCPFailures,
		Timeouts:    DefaultPassiveTimeouts,
		FailTimeout: DefaultPassiveFailTimeout,
	}
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "type":
			if s, ok := d.str(kv.val, p); ok && s != "tcp" {
				d.errorf(kv.val, p, "mqgate counts TCP failures only: must be tcp, got %q", s)
			}
		case "unhealthy":
			for _, f := range d.fields(kv.val, p) {
				fp := join(p, f.key)
				switch f.key {
				case "tcp_failures":
					d.count(f.val, fp, &pc.TCPFailures)
				case "timeouts":
					d.count(f.val, fp, &pc.Timeouts)
				default:
					d.ignoreOrUnknown(f, p, passiveUnhealthyKeys, ignoredHTTPKeys)
				}
			}
		case "fail_timeout":
			d.positiveDuration(kv.val, p, &pc.FailTimeout)
		default:
			d.ignoreOrUnknown(kv, path, passiveKeys, ignoredPassiveKeys)
		}
	}
	return pc
}

// hashBalanceFactor reads hash_balance_factor: 0 (off) or a ratio >= 1
// such as 1.25 (HAProxy writes 125).
func (d *decoder) hashBalanceFactor(n *yaml.Node, path string) float64 {
	v, ok := d.float(n, path)
	if !ok {
		return 0
	}
	if v != 0 && v < 1 {
		d.errorf(n, path, "must be 0 (off) or a ratio >= 1 such as 1.25, got %v", v)
		return 0
	}
	return v
}

// float reads a finite number; ok is false for null and for errors.
func (d *decoder) float(n *yaml.Node, path string) (v float64, ok bool) {
	if isNull(n) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&v) != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		d.errorf(n, path, "must be a number, got %s", describe(n))
		return 0, false
	}
	return v, true
}

// positiveDuration sets *dst to a duration > 0.
func (d *decoder) positiveDuration(n *yaml.Node, path string, dst *time.Duration) {
	v, ok := d.duration(n, path)
	switch {
	case ok && v == 0:
		d.errorf(n, path, "must be greater than 0")
	case ok:
		*dst = v
	}
}

// count sets *dst to an integer in 1..254 (APISIX's range for counters).
func (d *decoder) count(n *yaml.Node, path string, dst *int) {
	if v, ok := d.intIn(n, path, 1, 254); ok {
		*dst = v
	}
}

// ignoreOrUnknown records an APISIX key mqgate accepts without using, or
// reports an unknown one.
func (d *decoder) ignoreOrUnknown(kv keyValue, path string, known, ignored []string) {
	for _, k := range ignored {
		if kv.key == k {
			d.ignore(kv.keyNode, join(path, kv.key))
			return
		}
	}
	d.unknownKey(kv, path, "key", known, ignored)
}
