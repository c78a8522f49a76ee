package config

import (
	"encoding/hex"
	"fmt"
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
	// PassiveOff is `passive: false`: no passive counting, not even
	// DefaultPassive's for an upstream without checks.
	PassiveOff bool
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
	// Raw probe settings (type tcp only), HAProxy's tcp-check send-binary
	// and expect binary, NGINX's match send and expect: after the connect
	// the probe writes Send, then the answer must begin with Expect.
	Send   []byte // nil = send nothing
	Expect []byte // nil = expect nothing: the connect is the probe
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

// DefaultPassive is the passive counting of an upstream of two nodes or
// more that has no checks: NGINX's defaults for every server, max_fails=1
// fail_timeout=10s. One failed dial takes the node out for 10 seconds, then
// it is on trial; when every node of the upstream is out, the next client
// tries them all again (NGINX forgets the failures then too). A single node
// is never taken out by it (NGINX ignores max_fails there). It is a
// function so that no caller can change the shared value.
func DefaultPassive() *PassiveCheck {
	return &PassiveCheck{TCPFailures: 1, Timeouts: 1, FailTimeout: DefaultPassiveFailTimeout}
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

var probeTypes = []string{ProbeMQTT, ProbeTCP, ProbeHTTP, ProbeHTTPS}

// Keys of one probe type, checked against the type once the check is read.
var (
	mqttOnlyActiveKeys = []string{"protocol_level", "client_id", "username", "password"}
	tcpOnlyActiveKeys  = []string{"send", "expect"}
	httpOnlyActiveKeys = []string{"host", "http_path", "https_verify_certificate", "req_headers", "healthy.http_statuses", "unhealthy.http_statuses", "unhealthy.http_failures"}
)

// checksFields is an upstream's checks while they decode: the action keys
// wait here until it is known whether anything marks nodes.
type checksFields struct {
	*Checks
	actions []keyValue
}

// checks decodes an upstream's `checks`.
func (d *decoder) checks(n *yaml.Node, path string) *Checks {
	cf := checksFields{Checks: &Checks{OnMarkedDown: MarkedDownKeep, OnMarkedUp: MarkedUpKeep}}
	checksSection().decode(d, n, path, &cf)
	c := cf.Checks
	if len(c.Active) == 0 && c.Passive == nil {
		for _, kv := range cf.actions {
			d.errorf(kv.keyNode, join(path, kv.key), "needs checks.active or checks.passive to mark nodes")
		}
		if c.PassiveOff {
			return &Checks{PassiveOff: true, OnMarkedDown: MarkedDownKeep, OnMarkedUp: MarkedUpKeep}
		}
		return nil
	}
	return c
}

func checksSection() section[checksFields] {
	type f = field[checksFields]
	return section[checksFields]{
		name: "checks",
		fields: []f{
			// APISIX's one mapping, or a list of them.
			{name: "active", own: true, decode: func(d *decoder, kv keyValue, p string, c *checksFields) {
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
			}},
			{name: "passive", own: true, decode: func(d *decoder, kv keyValue, p string, c *checksFields) {
				switch {
				case isNull(kv.val):
				case kv.val.Kind == yaml.ScalarNode && kv.val.Tag == "!!bool":
					// false: not even the default counting; true
					// would say nothing that a mapping does not.
					if on, _ := d.bool(kv.val, p); on {
						d.errorf(kv.val, p, "must be a mapping of passive settings, or false for no passive counting at all")
						return
					}
					c.PassiveOff = true
				default:
					c.Passive = d.passiveCheck(kv.val, p)
				}
			}},
			{name: "on_marked_down", def: "`" + MarkedDownKeep + "`", decode: func(d *decoder, kv keyValue, p string, c *checksFields) {
				c.actions = append(c.actions, kv)
				if v, ok := d.oneOf(kv.val, p, MarkedDownKeep, MarkedDownClose); ok {
					c.OnMarkedDown = v
				}
			}},
			{name: "on_marked_up", def: "`" + MarkedUpKeep + "`", decode: func(d *decoder, kv keyValue, p string, c *checksFields) {
				c.actions = append(c.actions, kv)
				if v, ok := d.oneOf(kv.val, p, MarkedUpKeep, MarkedUpMoveBack); ok {
					c.OnMarkedUp = v
				}
			}},
			{name: "move_back_rate", def: "unset: `rebalance.rate`", decode: func(d *decoder, kv keyValue, p string, c *checksFields) {
				c.actions = append(c.actions, kv)
				if v, ok := d.float(kv.val, p); ok {
					if v <= 0 {
						d.errorf(kv.val, p, "must be greater than 0, got %v", v)
						return
					}
					c.MoveBackRate = v
				}
			}},
		},
	}
}

// activeFields is one active check while it decodes, with the keys of one
// probe type by path, checked against the type at the end.
type activeFields struct {
	*ActiveCheck
	mqttOnly, httpOnly, tcpOnly map[string]*yaml.Node
	badType                     bool // type was refused: keys of one type say nothing more
}

func (d *decoder) activeCheck(n *yaml.Node, path string) *ActiveCheck {
	af := activeFields{ActiveCheck: &ActiveCheck{
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
	}, mqttOnly: map[string]*yaml.Node{}, httpOnly: map[string]*yaml.Node{}, tcpOnly: map[string]*yaml.Node{}}
	activeSection().decode(d, n, path, &af)
	a, mqttOnly, httpOnly := af.ActiveCheck, af.mqttOnly, af.httpOnly
	if a.Type != ProbeTCP && !af.badType {
		for _, k := range tcpOnlyActiveKeys {
			if at, ok := af.tcpOnly[k]; ok {
				d.errorf(at, join(path, k), "only used with type tcp, not %s", a.Type)
			}
		}
	}
	if a.Type != ProbeMQTT && !af.badType {
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
	if at, ok := mqttOnly["client_id"]; ok && a.Type == ProbeMQTT && a.ProtocolLevel == 3 && len(a.ClientID) > MaxProbeClientID31 {
		// MQTT 3.1 allows 23 characters in all; 3.1.1 and 5.0 servers
		// must accept 23 and may accept more [MQTT-3.1.3-5], and
		// Mosquitto, EMQX and HiveMQ do.
		d.errorf(at, join(path, "client_id"), "MQTT 3.1 (protocol_level 3) allows 23 characters and the probe appends 8: at most %d, got %d (protocol_level 4 and 5 allow longer ids)", MaxProbeClientID31, len(a.ClientID))
	}
	return a
}

// Longest probe client_id prefixes: the probe appends 8 hex digits, MQTT
// 3.1 allows 23 characters in all, an MQTT string 65,535 bytes.
const (
	MaxProbeClientID31 = 23 - 8
	MaxProbeClientID   = 65535 - 8
)

// maxProbeBytes bounds send and expect: a probe is one packet or two.
const maxProbeBytes = 4096

// ParseProbeBytes reads the bytes of checks.active.send or expect, written
// as hex digits ("20 02 00 00", HAProxy's send-binary "20020000") or as
// NGINX's match strings ("\x20\x02\x00\x00", plain characters between
// the escapes stand for themselves).
func ParseProbeBytes(s string) ([]byte, error) {
	if strings.Contains(s, `\`) {
		return unescapeNGINX(s)
	}
	digits := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == ':' {
			return -1
		}
		return r
	}, s)
	b, err := hex.DecodeString(digits)
	switch {
	case err != nil || len(b) == 0:
		return nil, fmt.Errorf(`must be hex bytes ("20 02 00 00") or an NGINX match string ("\x20\x02\x00\x00"), got %q`, s)
	case len(b) > maxProbeBytes:
		return nil, fmt.Errorf("must be at most %d bytes, got %d", maxProbeBytes, len(b))
	}
	return b, nil
}

// unescapeNGINX reads NGINX's string escapes: \xHH, \\, \", \n, \r, \t.
func unescapeNGINX(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("ends in a lone \\: %q", s)
		}
		i++
		switch s[i] {
		case 'x':
			if i+3 > len(s) {
				return nil, fmt.Errorf(`\x needs two hex digits at byte %d of %q`, i-1, s)
			}
			b, err := hex.DecodeString(s[i+1 : i+3])
			if err != nil {
				return nil, fmt.Errorf(`\x needs two hex digits at byte %d of %q`, i-1, s)
			}
			out = append(out, b[0])
			i += 2
		case '\\', '"', '\'':
			out = append(out, s[i])
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		default:
			return nil, fmt.Errorf(`unknown escape \%c at byte %d of %q`, s[i], i-1, s)
		}
	}
	if len(out) > maxProbeBytes {
		return nil, fmt.Errorf("must be at most %d bytes, got %d", maxProbeBytes, len(out))
	}
	return out, nil
}

func secs(t time.Duration) string { return fmt.Sprintf("`%g`", t.Seconds()) }

func activeSection() section[activeFields] {
	type f = field[activeFields]
	// mqtt and http mark a key of one probe type before it decodes.
	mqtt := func(dec func(d *decoder, kv keyValue, p string, a *activeFields)) func(d *decoder, kv keyValue, p string, a *activeFields) {
		return func(d *decoder, kv keyValue, p string, a *activeFields) {
			a.mqttOnly[kv.key] = kv.keyNode
			dec(d, kv, p, a)
		}
	}
	http := func(dec func(d *decoder, kv keyValue, p string, a *activeFields)) func(d *decoder, kv keyValue, p string, a *activeFields) {
		return func(d *decoder, kv keyValue, p string, a *activeFields) {
			a.httpOnly[kv.key] = kv.keyNode
			dec(d, kv, p, a)
		}
	}
	raw := func(dst func(a *activeFields) *[]byte) func(d *decoder, kv keyValue, p string, a *activeFields) {
		return func(d *decoder, kv keyValue, p string, a *activeFields) {
			a.tcpOnly[kv.key] = kv.keyNode
			s, ok := d.str(kv.val, p)
			if !ok {
				return
			}
			b, err := ParseProbeBytes(s)
			if err != nil {
				d.errorf(kv.val, p, "%v", err)
				return
			}
			*dst(a) = b
		}
	}
	return section[activeFields]{
		name: "checks",
		fields: []f{
			{name: "type", def: "`" + ProbeMQTT + "`", decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				if t, ok := d.oneOf(kv.val, p, probeTypes...); ok {
					a.Type = t
				} else {
					a.badType = true
				}
			}},
			{name: "timeout", def: secs(DefaultProbeTimeout), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.positiveDuration(kv.val, p, &a.Timeout)
			}},
			{name: "concurrency", def: fmt.Sprintf("`%d`", DefaultProbeConcurrency), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				if v, ok := d.intMin(kv.val, p, 1); ok {
					a.Concurrency = v
				}
			}},
			{name: "port", def: "the node's", decode: func(d *decoder, kv keyValue, p string, a *activeFields) { a.Port, _ = d.intIn(kv.val, p, 1, 65535) }},
			{name: "healthy", sub: activeHealthySection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				activeHealthySection().decode(d, kv.val, p, a)
			}},
			{name: "unhealthy", sub: activeUnhealthySection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				activeUnhealthySection().decode(d, kv.val, p, a)
			}},
			{name: "protocol_level", def: "`4`", decode: mqtt(func(d *decoder, kv keyValue, p string, a *activeFields) {
				if v, ok := d.int(kv.val, p); ok {
					if v < 3 || v > 5 {
						d.errorf(kv.val, p, "must be 3, 4 or 5, got %d", v)
						return
					}
					a.ProtocolLevel = v
				}
			})},
			{name: "client_id", def: "empty", decode: mqtt(func(d *decoder, kv keyValue, p string, a *activeFields) {
				if s, ok := d.str(kv.val, p); ok {
					if len(s) > MaxProbeClientID {
						d.errorf(kv.val, p, "must be at most %d bytes (an MQTT string, and the probe appends 8), got %d", MaxProbeClientID, len(s))
						return
					}
					a.ClientID = s
				}
			})},
			{name: "username", def: "none", decode: mqtt(func(d *decoder, kv keyValue, p string, a *activeFields) { a.Username, _ = d.str(kv.val, p) })},
			{name: "password", def: "none", decode: mqtt(func(d *decoder, kv keyValue, p string, a *activeFields) { a.Password, _ = d.str(kv.val, p) })},
			{name: "send", def: "none", decode: raw(func(a *activeFields) *[]byte { return &a.Send })},
			{name: "expect", def: "none", decode: raw(func(a *activeFields) *[]byte { return &a.Expect })},
			{name: "host", def: "the node's host", decode: http(func(d *decoder, kv keyValue, p string, a *activeFields) {
				if s, ok := d.str(kv.val, p); ok {
					if strings.ContainsAny(s, " /\r\n") {
						d.errorf(kv.val, p, "must be a host name, got %q", s)
						return
					}
					a.Host = s
				}
			})},
			{name: "http_path", def: "`" + DefaultProbeHTTPPath + "`", decode: http(func(d *decoder, kv keyValue, p string, a *activeFields) {
				if s, ok := d.str(kv.val, p); ok {
					if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " \r\n") {
						d.errorf(kv.val, p, "must be a path starting with / and without spaces, got %q", s)
						return
					}
					a.HTTPPath = s
				}
			})},
			{name: "https_verify_certificate", def: "`true`", decode: http(func(d *decoder, kv keyValue, p string, a *activeFields) {
				a.HTTPSVerify, _ = d.bool(kv.val, p)
			})},
			{name: "req_headers", def: "none", decode: http(func(d *decoder, kv keyValue, p string, a *activeFields) {
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
			})},
		},
	}
}

func statuses(codes []int) string {
	s := make([]string, len(codes))
	for i, c := range codes {
		s[i] = fmt.Sprint(c)
	}
	return "`[" + strings.Join(s, ", ") + "]`"
}

func activeHealthySection() section[activeFields] {
	type f = field[activeFields]
	return section[activeFields]{
		name: "checks",
		fields: []f{
			{name: "interval", def: secs(DefaultProbeInterval), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.positiveDuration(kv.val, p, &a.HealthyInterval)
			}},
			{name: "successes", def: fmt.Sprintf("`%d`", DefaultProbeSuccesses), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.count(kv.val, p, &a.Successes)
			}},
			{name: "http_statuses", def: statuses(DefaultHealthyStatuses), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				a.httpOnly["healthy.http_statuses"] = kv.keyNode
				a.HealthyStatuses = d.httpStatuses(kv.val, p)
			}},
		},
	}
}

func activeUnhealthySection() section[activeFields] {
	type f = field[activeFields]
	return section[activeFields]{
		name: "checks",
		fields: []f{
			{name: "interval", def: secs(DefaultProbeInterval), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.positiveDuration(kv.val, p, &a.UnhealthyInterval)
			}},
			{name: "tcp_failures", def: fmt.Sprintf("`%d`", DefaultProbeTCPFailures), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.count(kv.val, p, &a.TCPFailures)
			}},
			{name: "timeouts", def: fmt.Sprintf("`%d`", DefaultProbeTimeouts), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				d.count(kv.val, p, &a.Timeouts)
			}},
			{name: "http_statuses", def: statuses(DefaultUnhealthyStatuses), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				a.httpOnly["unhealthy.http_statuses"] = kv.keyNode
				a.UnhealthyStatuses = d.httpStatuses(kv.val, p)
			}},
			{name: "http_failures", def: fmt.Sprintf("`%d`", DefaultProbeHTTPFailures), decode: func(d *decoder, kv keyValue, p string, a *activeFields) {
				a.httpOnly["unhealthy.http_failures"] = kv.keyNode
				d.count(kv.val, p, &a.HTTPFailures)
			}},
		},
	}
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
	passiveSection().decode(d, n, path, pc)
	return pc
}

func passiveSection() section[PassiveCheck] {
	type f = field[PassiveCheck]
	return section[PassiveCheck]{
		name: "checks",
		fields: []f{
			{name: "type", def: "`tcp`", decode: func(d *decoder, kv keyValue, p string, _ *PassiveCheck) {
				if s, ok := d.str(kv.val, p); ok && s != "tcp" {
					d.errorf(kv.val, p, "mqgate counts TCP failures only: must be tcp, got %q", s)
				}
			}},
			{name: "unhealthy", sub: passiveUnhealthySection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, pc *PassiveCheck) {
				passiveUnhealthySection().decode(d, kv.val, p, pc)
			}},
			{name: "fail_timeout", def: secs(DefaultPassiveFailTimeout), decode: func(d *decoder, kv keyValue, p string, pc *PassiveCheck) {
				d.positiveDuration(kv.val, p, &pc.FailTimeout)
			}},
		},
		// A node comes back by probes or after fail_timeout.
		ignored: []string{"healthy"},
	}
}

func passiveUnhealthySection() section[PassiveCheck] {
	type f = field[PassiveCheck]
	return section[PassiveCheck]{
		name: "checks",
		fields: []f{
			{name: "tcp_failures", def: fmt.Sprintf("`%d`", DefaultPassiveTCPFailures), decode: func(d *decoder, kv keyValue, p string, pc *PassiveCheck) {
				d.count(kv.val, p, &pc.TCPFailures)
			}},
			{name: "timeouts", def: fmt.Sprintf("`%d`", DefaultPassiveTimeouts), decode: func(d *decoder, kv keyValue, p string, pc *PassiveCheck) {
				d.count(kv.val, p, &pc.Timeouts)
			}},
		},
		// APISIX's HTTP counters: mqgate counts TCP failures only.
		ignored: []string{"http_statuses", "http_failures"},
	}
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
