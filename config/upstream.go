package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/vars"
)

var (
	upstreamTypes = []string{"roundrobin", "chash", "least_conn"}
	hashMethods   = []string{"rendezvous", "apisix", "nginx"}
)

// apisixChashWarning is said of a chash upstream without hash_method in a
// document written for APISIX, whose clients mqgate would otherwise place
// differently at cutover or beside running APISIX instances.
const apisixChashWarning = "chash places clients by mqgate's rendezvous hashing, not APISIX's ring: set hash_method: apisix to keep every client on the broker APISIX chose, or hash_method: rendezvous to keep mqgate's"

// upstreamDecl is an Upstream with the source positions the cross-file
// checks report at.
type upstreamDecl struct {
	Upstream
	path    string
	idLine  int
	overlay bool // from an Admin API document
	// schemeSet is whether the upstream says its scheme: without one it
	// is tcp for stream routes and http (APISIX's default) for HTTP routes.
	schemeSet bool
	// passHostNode is where pass_host was written, nil when it was not.
	passHostNode *yaml.Node
}

// upstream decodes a top-level upstream, or a route's inline one, which
// takes its id from the route.
func (d *decoder) upstream(n *yaml.Node, path string, inline bool) upstreamDecl {
	u := upstreamDecl{
		Upstream: Upstream{Type: "roundrobin", Scheme: "tcp", Timeout: Timeout{Connect: DefaultUpstreamConnect, Connack: DefaultUpstreamConnack}, File: d.file, Line: n.Line},
		path:     path,
		overlay:  d.overlay && !inline,
	}
	uf := upstreamFields{upstreamDecl: &u, inline: inline, retries: -1, nodesOK: true}
	upstreamSection().decode(d, n, path, &uf)
	keyNode, hbf, tlsNode, retries, nodesOK := uf.keyNode, uf.hbf, uf.tlsNode, uf.retries, uf.nodesOK
	methodNode := uf.methodNode
	srcKey, srcRange := uf.srcKey, uf.srcRange
	if !inline && u.ID == "" && u.idLine == 0 {
		d.errorf(n, join(path, "id"), "required")
	}
	if u.Type == "chash" {
		u.Key = "mqtt_client_id"
	}
	if !isNull(keyNode) {
		p := join(path, "key")
		if u.Type != "chash" {
			d.errorf(keyNode, p, "only used with type chash, not %s", u.Type)
		} else if k, ok := d.variable(keyNode, p); ok {
			u.Key = k
		}
	}
	if !isNull(methodNode) {
		p := join(path, "hash_method")
		if u.Type != "chash" {
			d.errorf(methodNode, p, "only used with type chash, not %s", u.Type)
		} else if m, ok := d.oneOf(methodNode, p, hashMethods...); ok {
			u.HashMethod = m
		}
	}
	if !isNull(hbf) {
		p := join(path, "hash_balance_factor")
		switch {
		case u.Type != "chash":
			d.errorf(hbf, p, "only used with type chash, not %s", u.Type)
		case u.HashMethod != "" && u.HashMethod != "rendezvous":
			d.errorf(hbf, p, "only used with hash_method rendezvous, not %s (APISIX and NGINX bound no load)", u.HashMethod)
		default:
			u.HashBalanceFactor = d.hashBalanceFactor(hbf, p)
		}
	}
	if u.Type == "chash" && isNull(methodNode) && d.apisixShaped && !u.overlay {
		d.p.warnf(d.file, n.Line, join(path, "type"), "%s", apisixChashWarning)
	}
	if !isNull(srcKey) {
		p := join(path, "source_hash_key")
		if len(u.SourceAddresses) < 2 {
			d.errorf(srcKey, p, "only used with two source_addresses or more")
		} else if k, ok := d.variable(srcKey, p); ok {
			u.SourceHashKey = k
		}
	}
	if !isNull(srcRange) {
		p := join(path, "source_port_range")
		if len(u.SourceAddresses) == 0 {
			d.errorf(srcRange, p, "only used with source_addresses")
		} else {
			u.SourcePortRange = d.portRange(srcRange, p)
		}
	}
	switch {
	case u.UsesTLS() && u.TLS == nil:
		u.TLS = &UpstreamTLS{Verify: true}
		if d.apisixShaped && !u.overlay {
			// Seed 000's upstream: fine in APISIX, a failed dial per node here
			// when the broker's certificate is self-signed.
			d.p.warnf(d.file, n.Line, join(path, "scheme"), "scheme %s verifies the nodes' certificates against the system roots (APISIX does not unless tls.verify is true): a broker with a self-signed or private-CA certificate fails every dial; set tls: {ca: <the broker's CA>}, or tls: {verify: false}", u.Scheme)
		}
	case !u.UsesTLS() && tlsNode != nil:
		d.errorf(tlsNode, join(path, "tls"), "only used with scheme: tls, wss or https")
		u.TLS = nil
	}
	ws := u.Scheme == "ws" || u.Scheme == "wss"
	switch {
	case ws && u.WebSocket == nil:
		u.WebSocket = &UpstreamWebSocket{Path: DefaultUpstreamWebSocketPath, Subprotocol: DefaultUpstreamWebSocketSubprotocol}
	case !ws && uf.wsNode != nil:
		d.errorf(uf.wsNode, join(path, "websocket"), "only used with scheme: ws or wss")
		u.WebSocket = nil
	}
	if u.PassHost == PassHostRewrite && u.UpstreamHost == "" {
		d.errorf(u.passHostNode, join(path, "upstream_host"), "required with pass_host: rewrite")
	}
	if len(u.Nodes) == 0 && nodesOK {
		d.errorf(n, join(path, "nodes"), "at least one node is required")
	}
	if retries < 0 {
		retries = max(len(u.Nodes)-1, 0) // try every node once
	}
	u.Retries = retries
	return u
}

// variable reads the name of a variable of package vars: as mqgate spells
// it, with NGINX's and APISIX's "$" before it, or as an alias
// ($mqtt_preread_clientid); the result is mqgate's name.
func (d *decoder) variable(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if name, known := vars.Canonical(s); known {
		return name, true
	}
	return d.oneOf(n, path, vars.Names...) // reports it, with the nearest name
}

// nodes decodes APISIX's two shapes: {"host:port": weight} or a list of
// {host, port, weight, priority}. ok is false when a problem was reported.
func (d *decoder) nodes(n *yaml.Node, path string) (nodes []Node, ok bool) {
	errs := len(d.p.errs)
	firstLine := make(map[string]int)
	add := func(node Node, at *yaml.Node, p string) {
		if line, dup := firstLine[node.Addr()]; dup {
			d.errorf(at, p, "duplicate node %q, first at line %d", node.Addr(), line)
			return
		}
		firstLine[node.Addr()] = at.Line
		nodes = append(nodes, node)
	}
	switch n.Kind {
	case yaml.MappingNode:
		for _, kv := range d.fields(n, path) {
			p := fmt.Sprintf("%s[%q]", path, kv.key)
			host, port, msg := parseHostPort(kv.key)
			if msg != "" {
				d.errorf(kv.keyNode, p, "%s", msg)
				continue
			}
			weight, ok := d.intMin(kv.val, p, 0)
			if !ok && isNull(kv.val) {
				d.errorf(kv.keyNode, p, "weight required")
			}
			if ok {
				add(Node{Host: host, Port: port, Weight: weight}, kv.keyNode, p)
			}
		}
	case yaml.SequenceNode:
		for i, item := range d.items(n, path) {
			p := index(path, i)
			if node, ok := d.listNode(item, p); ok {
				add(node, item, p)
			}
		}
	default:
		if !isNull(n) {
			d.errorf(n, path, `must be a mapping {"host:port": weight} or a list of {host, port, weight}, got %s`, describe(n))
		}
	}
	if len(d.p.errs) > errs {
		return nodes, false
	}
	for _, node := range nodes {
		if node.Weight > 0 {
			return nodes, true
		}
	}
	if len(nodes) > 0 {
		d.errorf(n, path, "every node has weight 0; at least one needs weight > 0")
		return nodes, false
	}
	return nodes, true
}

func (d *decoder) listNode(n *yaml.Node, path string) (Node, bool) {
	node := Node{Weight: 1}
	errs := len(d.p.errs)
	nodeSection().decode(d, n, path, &node)
	if len(d.p.errs) > errs {
		return node, false
	}
	if node.Host == "" {
		d.errorf(n, join(path, "host"), "required")
	}
	if node.Port == 0 {
		d.errorf(n, join(path, "port"), "required (the broker's MQTT port, e.g. 1883)")
	}
	return node, len(d.p.errs) == errs
}

// nodeSection is a node of the list form.
func nodeSection() section[Node] {
	return section[Node]{
		name: "upstreams[]",
		fields: []field[Node]{
			{name: "host", def: "required", decode: func(d *decoder, kv keyValue, p string, node *Node) {
				if h, ok := d.str(kv.val, p); ok {
					h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
					if msg := hostMsg(h); msg != "" {
						d.errorf(kv.val, p, "%s", msg)
						return
					}
					node.Host = h
				}
			}},
			{name: "port", def: "required", decode: func(d *decoder, kv keyValue, p string, node *Node) { node.Port, _ = d.intIn(kv.val, p, 1, 65535) }},
			{name: "weight", def: "`1`", decode: func(d *decoder, kv keyValue, p string, node *Node) { node.Weight, _ = d.intMin(kv.val, p, 0) }},
			{name: "priority", def: "`0`", decode: func(d *decoder, kv keyValue, p string, node *Node) { node.Priority, _ = d.int(kv.val, p) }},
		},
	}
}

func (d *decoder) timeout(n *yaml.Node, path string) Timeout {
	t := Timeout{Connect: DefaultUpstreamConnect, Connack: DefaultUpstreamConnack}
	timeoutSection().decode(d, n, path, &t)
	return t
}

// upstreamFields is an upstream while it decodes: the values whose checks
// need the other keys wait here.
type upstreamFields struct {
	*upstreamDecl
	inline                bool
	keyNode, hbf, tlsNode *yaml.Node
	methodNode            *yaml.Node
	wsNode                *yaml.Node
	srcKey, srcRange      *yaml.Node
	retries               int
	nodesOK               bool
}

func upstreamSection() section[upstreamFields] {
	type f = field[upstreamFields]
	return section[upstreamFields]{
		name: "upstreams[]",
		fields: []f{
			{name: "id", def: "required at top level, unique", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if u.inline {
					d.errorf(kv.keyNode, p, "an inline upstream takes no id; declare it under upstreams and use upstream_id")
					return
				}
				u.ID, _ = d.id(kv.val, p)
				u.idLine = kv.val.Line
			}},
			{name: "name", def: "—", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) { u.Name, _ = d.str(kv.val, p) }},
			{name: "desc", def: "—", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) { u.Desc, _ = d.str(kv.val, p) }},
			{name: "type", def: "`roundrobin`", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if t, ok := d.oneOf(kv.val, p, upstreamTypes...); ok {
					u.Type = t
				}
			}},
			{name: "key", def: "`mqtt_client_id`", decode: func(_ *decoder, kv keyValue, _ string, u *upstreamFields) { u.keyNode = kv.val }},
			{name: "nodes", def: "required, at least one", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				u.Nodes, u.nodesOK = d.nodes(kv.val, p)
			}},
			{name: "retries", def: "nodes − 1 (every node once)", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				u.retries, _ = d.intMin(kv.val, p, 0)
			}},
			{name: "timeout", sub: timeoutSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				u.Timeout = d.timeout(kv.val, p)
			}},
			{name: "hash_method", def: "`rendezvous`", decode: func(_ *decoder, kv keyValue, _ string, u *upstreamFields) { u.methodNode = kv.val }},
			{name: "hash_balance_factor", def: "`0` (off)", decode: func(_ *decoder, kv keyValue, _ string, u *upstreamFields) { u.hbf = kv.val }},
			{name: "checks", def: "none: NGINX's `max_fails=1 fail_timeout=10s` with 2+ nodes", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) { u.Checks = d.checks(kv.val, p) }},
			{name: "hash_on", def: "`vars`", compat: true, decode: func(d *decoder, kv keyValue, p string, _ *upstreamFields) {
				// APISIX's default, and what mqgate does: hash on a variable.
				if s, ok := d.str(kv.val, p); ok && s != "vars" {
					d.errorf(kv.val, p, "mqgate hashes on vars only (set key), got %q", s)
				} else if ok {
					d.ignore(kv.keyNode, p)
				}
			}},
			{name: "scheme", def: "`tcp` (`http` for an upstream only HTTP routes use)", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				s, ok := d.str(kv.val, p)
				u.schemeSet = ok
				switch {
				case !ok || s == "tcp":
				case s == "tls", s == "ws", s == "wss", s == "http", s == "https":
					u.Scheme = s
				default:
					d.errorf(kv.val, p, "must be tcp, tls, ws, wss, http or https, got %q", s)
				}
			}},
			{name: "pass_host", def: "`pass`", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if v, ok := d.oneOf(kv.val, p, PassHostPass, PassHostNode, PassHostRewrite); ok {
					u.PassHost, u.passHostNode = v, kv.val
				}
			}},
			{name: "upstream_host", def: "—", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) { u.UpstreamHost, _ = d.str(kv.val, p) }},
			{name: "websocket", sub: upstreamWebSocketSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if !isNull(kv.val) {
					u.wsNode = kv.val
					w := UpstreamWebSocket{Path: DefaultUpstreamWebSocketPath, Subprotocol: DefaultUpstreamWebSocketSubprotocol}
					upstreamWebSocketSection().decode(d, kv.val, p, &w)
					u.WebSocket = &w
				}
			}},
			{name: "tls", sub: upstreamTLSSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if !isNull(kv.val) {
					u.tlsNode = kv.val
					u.TLS = d.upstreamTLS(kv.val, p)
				}
			}},
			{name: "proxy_protocol", def: "none", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				if v, ok := d.oneOf(kv.val, p, "v1", "v2"); ok {
					u.ProxyProtocol = v
				}
			}},
			{name: "source_addresses", def: "none: the kernel picks", decode: func(d *decoder, kv keyValue, p string, u *upstreamFields) {
				u.SourceAddresses = d.sourceAddresses(kv.val, p)
			}},
			{name: "source_hash_key", def: "unset: spread evenly", decode: func(_ *decoder, kv keyValue, _ string, u *upstreamFields) { u.srcKey = kv.val }},
			{name: "source_port_range", def: "the kernel's `ip_local_port_range`", decode: func(_ *decoder, kv keyValue, _ string, u *upstreamFields) { u.srcRange = kv.val }},
		},
	}
}

func upstreamWebSocketSection() section[UpstreamWebSocket] {
	type f = field[UpstreamWebSocket]
	return section[UpstreamWebSocket]{
		name: "upstreams[]",
		fields: []f{
			{name: "path", def: fmt.Sprintf("`%s`", DefaultUpstreamWebSocketPath), decode: func(d *decoder, kv keyValue, p string, w *UpstreamWebSocket) {
				s, ok := d.str(kv.val, p)
				if !ok {
					return
				}
				if _, err := url.ParseRequestURI(s); err != nil || !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " #") {
					d.errorf(kv.val, p, `must be a request path starting with "/" (a query may follow), got %q`, s)
					return
				}
				w.Path = s
			}},
			{name: "subprotocol", def: fmt.Sprintf("`%s`", DefaultUpstreamWebSocketSubprotocol), decode: func(d *decoder, kv keyValue, p string, w *UpstreamWebSocket) {
				s, ok := d.str(kv.val, p)
				if !ok {
					return
				}
				// A token of RFC 7230: no separators, so one subprotocol.
				if strings.ContainsAny(s, " ,;\"()/<>@[]{}=?:\t") {
					d.errorf(kv.val, p, `must be one subprotocol name such as "mqtt" (or "" for none), got %q`, s)
					return
				}
				w.Subprotocol = s
			}},
		},
	}
}

func timeoutSection() section[Timeout] {
	return section[Timeout]{
		name: "upstreams[]",
		fields: []field[Timeout]{
			{name: "connect", def: fmt.Sprintf("`%s`", DefaultUpstreamConnect), decode: func(d *decoder, kv keyValue, p string, t *Timeout) {
				v, ok := d.duration(kv.val, p)
				if ok && v == 0 {
					d.errorf(kv.val, p, "must be greater than 0")
				} else if ok {
					t.Connect = v
				}
			}},
			{name: "send", def: "unset", decode: func(d *decoder, kv keyValue, p string, t *Timeout) { t.Send, _ = d.duration(kv.val, p) }},
			{name: "read", def: "unset (the client's keepalive decides)", decode: func(d *decoder, kv keyValue, p string, t *Timeout) {
				t.Read, _ = d.duration(kv.val, p)
			}},
			{name: "connack", def: fmt.Sprintf("`%s`", DefaultUpstreamConnack), decode: func(d *decoder, kv keyValue, p string, t *Timeout) {
				v, ok := d.duration(kv.val, p)
				if ok && v == 0 {
					d.errorf(kv.val, p, "must be greater than 0")
				} else if ok {
					t.Connack = v
				}
			}},
		},
	}
}

// parseHostPort reads a node key of the map form: "host:port", with IPv6
// in brackets. msg is empty on success.
func parseHostPort(s string) (host string, port int, msg string) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Sprintf(`must be "host:port" (IPv6 as "[::1]:1883"), got %q`, s)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Sprintf("port must be 1..65535, got %q", ps)
	}
	if msg := hostMsg(host); msg != "" {
		return "", 0, "host " + msg
	}
	return host, port, ""
}

// hostMsg says why h is neither an IP address nor a hostname, or "".
func hostMsg(h string) string {
	if validHost(h) {
		return ""
	}
	if h != "" && strings.Trim(h, "0123456789.") == "" {
		return fmt.Sprintf("must be an IPv4 address (four numbers 0..255) or a hostname, got %q", h)
	}
	return fmt.Sprintf("must be a hostname or an IP address, got %q", h)
}

// validHost accepts IP addresses and DNS names; names are resolved when
// dialing, not here.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	// A name's last label is never all digits (RFC 3696 section 2), so
	// "300.1.1.1" is a mistyped IPv4 address, not a name to resolve.
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return false
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// sourceAddresses reads a list of distinct IP addresses to dial from.
func (d *decoder) sourceAddresses(n *yaml.Node, path string) []netip.Addr {
	var out []netip.Addr
	items := d.items(n, path)
	if len(items) == 0 && !isNull(n) && n.Kind == yaml.SequenceNode {
		d.errorf(n, path, "an empty list: list local addresses, or leave source_addresses out")
	}
	for i, item := range items {
		ip := index(path, i)
		s, ok := d.str(item, ip)
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		switch {
		case err != nil || a.Zone() != "":
			d.errorf(item, ip, "must be an IP address of this host, got %q", s)
			continue
		case a.IsUnspecified() || a.IsMulticast():
			d.errorf(item, ip, "must be an address of this host, not %s", a)
			continue
		case slices.Contains(out, a.Unmap()):
			d.errorf(item, ip, "%s is listed twice", a)
			continue
		}
		if !isLocal(a.Unmap()) {
			d.p.warnf(d.file, item.Line, ip, "%s is not an address of this host: dials from it fail here", a)
		}
		out = append(out, a.Unmap())
	}
	return out
}

// isLocal reports whether a is an address of one of this host's
// interfaces (all of 127.0.0.0/8 is, on lo).
func isLocal(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: say nothing
	}
	for _, ia := range addrs {
		n, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		if ip.Unmap() == a || ip.IsLoopback() && a.IsLoopback() && a.Is4() == ip.Unmap().Is4() {
			return true
		}
	}
	return false
}

// portRange reads "low-high", local ports 1..65535 with low <= high.
func (d *decoder) portRange(n *yaml.Node, path string) [2]uint16 {
	s, ok := d.str(n, path)
	if !ok {
		return [2]uint16{}
	}
	lo, hi, found := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !found || err1 != nil || err2 != nil || l == 0 || l > h {
		d.errorf(n, path, `must be "low-high", ports 1..65535, low <= high, got %q`, s)
		return [2]uint16{}
	}
	if klo, khi, ok := kernelPortRange(); ok && (int(l) < klo || int(h) > khi) {
		d.p.warnf(d.file, n.Line, path, "%s reaches outside this host's net.ipv4.ip_local_port_range %d-%d: the kernel uses only the ports inside it", s, klo, khi)
	}
	return [2]uint16{uint16(l), uint16(h)}
}

// kernelPortRange reads the ephemeral port range of this host, which a
// socket's IP_LOCAL_PORT_RANGE can only narrow.
func kernelPortRange() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	return lo, hi, err1 == nil && err2 == nil
}
