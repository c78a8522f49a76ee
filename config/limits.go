package config

import (
	"net/netip"

	"gopkg.in/yaml.v3"
)

// LimitConn is the `limit-conn` stream plugin: at most Conn + Burst
// connections at once per value of Key on the route. Over it, a client is
// refused with 0x97 Quota exceeded.
type LimitConn struct {
	Conn        int    // > 0
	Burst       int    // >= 0, default 0: more connections allowed above Conn (APISIX delays them; mqgate has nothing to delay)
	Key         string // LimitKey*; default remote_addr
	RejectedMsg string // the 5.0 Reason String of the refusal; a default when empty
}

// LimitReq is the `limit-req` stream plugin: new connections per second per
// value of Key on the route, as a token bucket of 1 + Burst tokens filled at
// Rate per second (nginx's limit_req with nodelay). Over it, a client is
// refused with 0x9F Connection rate exceeded.
type LimitReq struct {
	Rate        float64 // > 0, connections per second
	Burst       int     // >= 0, default 0
	Key         string  // LimitKey*; default remote_addr
	RejectedMsg string
}

// IPRestriction is the `ip-restriction` stream plugin: exactly one of
// Whitelist (only these) or Blacklist (all but these). A client refused is
// answered 0x8A Banned (0x05 Not authorized in 3.x).
type IPRestriction struct {
	Whitelist []netip.Prefix
	Blacklist []netip.Prefix
	Message   string // the 5.0 Reason String of the refusal; a default when empty
}

// Keys that limit-conn and limit-req count by.
const (
	LimitKeyRemoteAddr = "remote_addr"    // the client's IP address
	LimitKeyClientID   = "mqtt_client_id" // the CONNECT's client id
	LimitKeyUsername   = "mqtt_username"  // the CONNECT's user name
	LimitKeyRoute      = "route_id"       // one count for the whole route
)

// Values of stream_proxy.on_duplicate_client_id.
const (
	DuplicateAllow      = "allow"       // default: both connections stay
	DuplicateKeepNewest = "keep_newest" // the older connection is closed
	DuplicateKeepOldest = "keep_oldest" // the newer CONNECT is refused
)

var (
	limitKeys            = []string{LimitKeyRemoteAddr, LimitKeyClientID, LimitKeyUsername, LimitKeyRoute}
	limitConnKeys        = []string{"conn", "burst", "key", "key_type", "rejected_msg"}
	ignoredLimitConnKeys = []string{"default_conn_delay", "only_use_default_delay", "rejected_code", "allow_degradation"}
	limitReqKeys         = []string{"rate", "burst", "key", "key_type", "rejected_msg"}
	ignoredLimitReqKeys  = []string{"nodelay", "rejected_code", "allow_degradation"}
	ipRestrictionKeys    = []string{"whitelist", "blacklist", "message"}
	ignoredIPKeys        = []string{"response_code"}
	duplicatePolicies    = []string{DuplicateAllow, DuplicateKeepNewest, DuplicateKeepOldest}
)

// limitConn decodes the limit-conn plugin.
func (d *decoder) limitConn(n *yaml.Node, path string) *LimitConn {
	l := &LimitConn{Key: LimitKeyRemoteAddr}
	hasConn := false
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "conn":
			hasConn = !isNull(kv.val)
			l.Conn, _ = d.intMin(kv.val, p, 1)
		case "burst":
			l.Burst, _ = d.intMin(kv.val, p, 0)
		case "key":
			l.Key = d.limitKey(kv.val, p, l.Key)
		case "key_type":
			d.keyType(kv.val, p)
		case "rejected_msg":
			l.RejectedMsg, _ = d.str(kv.val, p)
		default:
			d.ignoreOrUnknown(kv, path, limitConnKeys, ignoredLimitConnKeys)
		}
	}
	if !hasConn {
		d.errorf(n, join(path, "conn"), "required: the most connections at once per key")
	}
	return l
}

// limitReq decodes the limit-req plugin.
func (d *decoder) limitReq(n *yaml.Node, path string) *LimitReq {
	l := &LimitReq{Key: LimitKeyRemoteAddr}
	hasRate := false
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "rate":
			hasRate = !isNull(kv.val)
			if v, ok := d.float(kv.val, p); ok {
				if v <= 0 {
					d.errorf(kv.val, p, "must be greater than 0, got %v", v)
					continue
				}
				l.Rate = v
			}
		case "burst":
			l.Burst, _ = d.intMin(kv.val, p, 0)
		case "key":
			l.Key = d.limitKey(kv.val, p, l.Key)
		case "key_type":
			d.keyType(kv.val, p)
		case "rejected_msg":
			l.RejectedMsg, _ = d.str(kv.val, p)
		default:
			d.ignoreOrUnknown(kv, path, limitReqKeys, ignoredLimitReqKeys)
		}
	}
	if !hasRate {
		d.errorf(n, join(path, "rate"), "required: new connections per second per key")
	}
	return l
}

func (d *decoder) limitKey(n *yaml.Node, path, def string) string {
	if k, ok := d.oneOf(n, path, limitKeys...); ok {
		return k
	}
	return def
}

// keyType accepts APISIX's key_type "var", the only kind mqgate has.
func (d *decoder) keyType(n *yaml.Node, path string) {
	if s, ok := d.str(n, path); ok && s != "var" {
		d.errorf(n, path, `must be "var" (combinations are not supported), got %q`, s)
	}
}

// ipRestriction decodes the ip-restriction plugin.
func (d *decoder) ipRestriction(n *yaml.Node, path string) *IPRestriction {
	r := &IPRestriction{}
	var white, black *yaml.Node
	for _, kv := range d.fields(n, path) {
		p := join(path, kv.key)
		switch kv.key {
		case "whitelist":
			white = kv.keyNode
			r.Whitelist = d.prefixes(kv.val, p)
		case "blacklist":
			black = kv.keyNode
			r.Blacklist = d.prefixes(kv.val, p)
		case "message":
			r.Message, _ = d.str(kv.val, p)
		case "allowlist", "denylist":
			d.errorf(kv.keyNode, p, "mqgate uses APISIX's names: whitelist or blacklist")
		default:
			d.ignoreOrUnknown(kv, path, ipRestrictionKeys, ignoredIPKeys)
		}
	}
	switch {
	case white != nil && black != nil:
		d.errorf(black, join(path, "blacklist"), "set exactly one of whitelist or blacklist, not both")
	case white == nil && black == nil:
		d.errorf(n, path, "needs whitelist or blacklist")
	case white != nil && len(r.Whitelist) == 0 || black != nil && len(r.Blacklist) == 0:
		if white == nil {
			white = black
		}
		d.errorf(white, join(path, white.Value), "must list at least one IP or CIDR")
	}
	return r
}

// prefixes reads a list of IPs and CIDRs.
func (d *decoder) prefixes(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	for i, item := range d.items(n, path) {
		p := index(path, i)
		s, ok := d.str(item, p)
		if !ok {
			if isNull(item) {
				d.errorf(item, p, "must be an IP address or a CIDR, got nothing")
			}
			continue
		}
		prefix, msg := parsePrefix(s)
		if msg != "" {
			d.errorf(item, p, "%s", msg)
			continue
		}
		out = append(out, prefix)
	}
	return out
}

// maxConnections reads stream_proxy.max_connections.
func (d *decoder) maxConnections(kv keyValue, path string) {
	if !d.setOnce("stream_proxy.max_connections", kv, path) {
		return
	}
	if v, ok := d.intMin(kv.val, path, 0); ok {
		d.b.streamProxy.MaxConnections = v
	}
}

// onDuplicateClientID reads stream_proxy.on_duplicate_client_id.
func (d *decoder) onDuplicateClientID(kv keyValue, path string) {
	if !d.setOnce("stream_proxy.on_duplicate_client_id", kv, path) {
		return
	}
	if v, ok := d.oneOf(kv.val, path, duplicatePolicies...); ok {
		d.b.streamProxy.OnDuplicateClientID = v
	}
}

// admissionCap reads one of the unfinished-connection caps: an integer of
// at least 1, or 0 for the default derived from the open-file limit.
func (d *decoder) admissionCap(kv keyValue, path string, dst *int) {
	if !d.setOnce("stream_proxy."+kv.key, kv, path) {
		return
	}
	if v, ok := d.intMin(kv.val, path, 0); ok {
		*dst = v
	}
}
