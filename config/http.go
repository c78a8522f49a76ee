package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// HTTPRoute is one of APISIX's `routes`: the HTTP requests it matches go
// to its upstream (scheme http or https) through a reverse proxy.
type HTTPRoute struct {
	ID, Name, Desc string
	// URIs match the request path exactly, or as a prefix when they end
	// in "/*" ("/api/*" matches "/api/" and below). Empty matches any.
	URIs []string
	// Hosts match the Host header (port stripped, any case): exactly, or
	// "*.example.com" for its subdomains. Empty matches any.
	Hosts       []string
	Methods     []string       // upper case; empty matches any
	RemoteAddrs []netip.Prefix // the client address (after real_ip_from); empty matches any
	// Priority orders routes; higher first, then the more specific URI
	// (exact before prefix, longer prefix first), then file order.
	Priority   int
	UpstreamID string    // reference to Config.Upstreams; empty when Upstream is set
	Upstream   *Upstream // inline upstream with ID "http-route:<route ID>", or nil
	// PassHost is what Host the upstream sees: "pass" (the client's, the
	// default), "node" (the node's address) or "rewrite" (UpstreamHost).
	PassHost, UpstreamHost string
	// EnableWebSocket passes WebSocket upgrades through to the upstream.
	EnableWebSocket bool
	// Vars must all hold for a request to match (APISIX's simple form).
	Vars []VarExpr
	// Timeout is the route's own connect, send and read timeouts; a zero
	// field takes the upstream's (Upstream.Timeout).
	Timeout Timeout
	Line    int
	File    string
}

// The values of pass_host.
const (
	PassHostPass    = "pass"
	PassHostNode    = "node"
	PassHostRewrite = "rewrite"
)

// httpRouteDecl is an HTTPRoute with where it was declared.
type httpRouteDecl struct {
	HTTPRoute
	path           string
	upstreamIDLine int
	hasUpstreamID  bool
	hasUpstream    bool
	passHostSet    bool // pass_host written on the route: it overrides the upstream's
	overlay        bool // from an Admin API document
}

var httpMethods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE"}

func httpRouteSection() section[httpRouteDecl] {
	type f = field[httpRouteDecl]
	strs := func(d *decoder, n *yaml.Node, p string) []string {
		if n.Kind == yaml.ScalarNode {
			s, ok := d.str(n, p)
			if !ok {
				return nil
			}
			return []string{s}
		}
		var out []string
		for i, item := range d.items(n, p) {
			if s, ok := d.str(item, index(p, i)); ok {
				out = append(out, s)
			}
		}
		return out
	}
	uris := func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
		for _, u := range strs(d, kv.val, p) {
			if !strings.HasPrefix(u, "/") || strings.Contains(u[:len(u)-1], "*") {
				d.errorf(kv.val, p, `must be a path starting with "/", a prefix ending in "/*", got %q`, u)
				continue
			}
			r.URIs = append(r.URIs, u)
		}
	}
	hosts := func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
		for _, h := range strs(d, kv.val, p) {
			if msg := checkHostPattern(h); msg != "" {
				d.errorf(kv.val, p, "%s", msg)
				continue
			}
			r.Hosts = append(r.Hosts, strings.ToLower(h))
		}
	}
	return section[httpRouteDecl]{
		name: "routes[]",
		fields: []f{
			{name: "id", def: "`http-route-<index>`", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.ID, _ = d.id(kv.val, p) }},
			{name: "name", def: "—", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.Name, _ = d.str(kv.val, p) }},
			{name: "desc", def: "—", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.Desc, _ = d.str(kv.val, p) }},
			{name: "uri", def: "any", decode: uris},
			{name: "uris", def: "any", decode: uris},
			{name: "host", def: "any", decode: hosts},
			{name: "hosts", def: "any", decode: hosts},
			{name: "methods", def: "any", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				for _, m := range strs(d, kv.val, p) {
					if !slices.Contains(httpMethods, strings.ToUpper(m)) {
						d.errorf(kv.val, p, "unknown method %q (known: %s)", m, strings.Join(httpMethods, ", "))
						continue
					}
					r.Methods = append(r.Methods, strings.ToUpper(m))
				}
			}},
			{name: "remote_addrs", def: "any", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				for _, s := range strs(d, kv.val, p) {
					prefix, msg := parsePrefix(s)
					if msg != "" {
						d.errorf(kv.val, p, "%s", msg)
						continue
					}
					r.RemoteAddrs = append(r.RemoteAddrs, prefix)
				}
			}},
			{name: "priority", def: "`0`", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.Priority, _ = d.int(kv.val, p) }},
			{name: "upstream_id", def: "—", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				if id, ok := d.id(kv.val, p); ok {
					r.UpstreamID, r.upstreamIDLine, r.hasUpstreamID = id, kv.val.Line, true
				}
			}},
			{name: "upstream", def: "—", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				if isNull(kv.val) {
					return
				}
				u := d.upstream(kv.val, p, true)
				if !u.schemeSet {
					u.Scheme = "http" // APISIX's default, and what an HTTP route's nodes speak
				}
				r.Upstream, r.hasUpstream = &u.Upstream, true
			}},
			{name: "pass_host", def: "the upstream's `pass_host`, else `pass`", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				r.PassHost, r.passHostSet = d.oneOf(kv.val, p, PassHostPass, PassHostNode, PassHostRewrite)
			}},
			{name: "upstream_host", def: "—", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.UpstreamHost, _ = d.str(kv.val, p) }},
			{name: "enable_websocket", def: "`false`", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				r.EnableWebSocket, _ = d.bool(kv.val, p)
			}},
			{name: "vars", def: "none", decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) { r.Vars = d.httpVars(kv.val, p) }},
			{name: "timeout", sub: routeTimeoutSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, r *httpRouteDecl) {
				routeTimeoutSection().decode(d, kv.val, p, &r.Timeout)
			}},
		},
		ignored: []string{"plugins", "status", "labels", "filter_func", "service_id", "plugin_config_id", "script"},
	}
}

// routeTimeoutSection is a route's timeout: APISIX's connect, send and
// read, each overriding the upstream's.
func routeTimeoutSection() section[Timeout] {
	positive := func(set func(t *Timeout, v time.Duration)) func(d *decoder, kv keyValue, p string, t *Timeout) {
		return func(d *decoder, kv keyValue, p string, t *Timeout) {
			v, ok := d.duration(kv.val, p)
			if ok && v == 0 {
				d.errorf(kv.val, p, "must be greater than 0 (leave it out for the upstream's)")
			} else if ok {
				set(t, v)
			}
		}
	}
	return section[Timeout]{
		name: "routes[]",
		fields: []field[Timeout]{
			{name: "connect", def: "the upstream's", decode: positive(func(t *Timeout, v time.Duration) { t.Connect = v })},
			{name: "send", def: "the upstream's", decode: positive(func(t *Timeout, v time.Duration) { t.Send = v })},
			{name: "read", def: "the upstream's", decode: positive(func(t *Timeout, v time.Duration) { t.Read = v })},
		},
	}
}

// checkHostPattern accepts a host name or "*.example.com".
func checkHostPattern(h string) string {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/: ") {
		return fmt.Sprintf(`must be a host name like "api.example.com" or "*.example.com", got %q`, h)
	}
	return ""
}

// httpRoute decodes one item of routes.
func (d *decoder) httpRoute(n *yaml.Node, path string) httpRouteDecl {
	r := httpRouteDecl{HTTPRoute: HTTPRoute{File: d.file, Line: n.Line, PassHost: PassHostPass}, path: path, overlay: d.overlay}
	httpRouteSection().decode(d, n, path, &r)
	switch {
	case r.hasUpstreamID && r.hasUpstream:
		d.errorf(n, path, "set exactly one of upstream_id or upstream, not both")
	case !r.hasUpstreamID && !r.hasUpstream:
		d.errorf(n, path, "needs upstream_id or upstream")
	}
	if r.PassHost == PassHostRewrite && r.UpstreamHost == "" {
		d.errorf(n, join(path, "upstream_host"), "required with pass_host: rewrite")
	}
	return r
}

// nodeListenEntry is a node_listen entry written as {ip, port}, while it
// decodes: the two make one address.
type nodeListenEntry struct{ ip, port *yaml.Node }

func nodeListenSection() section[nodeListenEntry] {
	return section[nodeListenEntry]{
		name: "node_listen",
		fields: []field[nodeListenEntry]{
			{name: "ip", decode: func(_ *decoder, kv keyValue, _ string, e *nodeListenEntry) { e.ip = kv.val }},
			{name: "port", decode: func(_ *decoder, kv keyValue, _ string, e *nodeListenEntry) { e.port = kv.val }},
		},
		ignored: []string{"enable_http2", "enable_http3"},
	}
}

// nodeListen decodes APISIX's node_listen (HTTP) or ssl.listen (HTTPS): a
// port, "ip:port", {ip, port} or a list of them.
func (d *decoder) nodeListen(n *yaml.Node, path string, tls bool) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = d.items(n, path)
	}
	for i, item := range items {
		p := path
		if n.Kind == yaml.SequenceNode {
			p = index(path, i)
		}
		l := listenerDecl{Listener: Listener{File: d.file, Line: item.Line, TLS: tls, HTTP: true, HTTPOnly: true}, path: p}
		addr := item
		if item.Kind == yaml.MappingNode {
			var e nodeListenEntry
			nodeListenSection().decode(d, item, p, &e)
			ip, port := e.ip, e.port
			if isNull(port) {
				d.errorf(item, join(p, "port"), "required")
				continue
			}
			addr = port
			if !isNull(ip) {
				addr = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: net.JoinHostPort(ip.Value, port.Value), Line: port.Line}
			}
		}
		if addr.Kind != yaml.ScalarNode {
			d.errorf(addr, p, `must be a port, "ip:port" or {ip, port}, got %s`, describe(addr))
			continue
		}
		host, port, msg := parseListenAddr(addr.Value)
		if msg != "" {
			d.errorf(addr, p, "%s", msg)
			continue
		}
		l.host, l.port = host, port
		l.Addr = ":" + strconv.Itoa(port)
		if host.IsValid() {
			l.Addr = net.JoinHostPort(host.String(), strconv.Itoa(port))
		}
		d.b.httpListeners = append(d.b.httpListeners, l)
	}
}

// apisixSSL decodes apisix.ssl: its HTTPS listen and the TLS settings
// every ssls entry takes; APISIX's other keys there are accepted unused.
func (d *decoder) apisixSSL(n *yaml.Node, path string) {
	apisixSSLSection().decode(d, n, path, &d.b.sslGlobal)
}

// APISIXNodeListen is APISIX's default node_listen: the HTTP port of
// `stream_proxy.only: false` when no node_listen is set.
const APISIXNodeListen = 9080

// defaultHTTPListener adds APISIX's default HTTP listener, :9080, for
// `only: false` without node_listen, when there are HTTP routes to serve
// (APISIX opens it regardless; without routes it would only answer 404).
func (b *builder) defaultHTTPListener() {
	if b.httpDefault == nil {
		return
	}
	if len(b.httpListeners) > 0 || len(b.httpRoutes) == 0 {
		b.p.ignored = append(b.p.ignored, fmt.Sprintf("%s:%d: apisix.stream_proxy.only", b.httpDefault.file, b.httpDefault.line))
		return
	}
	l := listenerDecl{Listener: Listener{Addr: ":" + strconv.Itoa(APISIXNodeListen), File: b.httpDefault.file, Line: b.httpDefault.line, HTTP: true, HTTPOnly: true},
		path: "apisix.stream_proxy.only", port: APISIXNodeListen}
	b.httpListeners = append(b.httpListeners, l)
}

// mergeHTTPListeners makes a port listed in node_listen (or ssl.listen)
// and in stream_proxy.tcp one listener serving MQTT, WebSocket and HTTP;
// the others become HTTP-only listeners, checked for overlaps like any.
func (b *builder) mergeHTTPListeners() {
	for _, h := range b.httpListeners {
		i := slices.IndexFunc(b.listeners, func(l listenerDecl) bool { return l.Addr == h.Addr })
		if i < 0 {
			b.listeners = append(b.listeners, h)
			continue
		}
		l := &b.listeners[i]
		if l.TLS != h.TLS {
			b.p.errorf(h.File, h.Line, h.path, "listener %q is tls: %t in %s but HTTP%s here: a port is TLS or not for every protocol on it",
				h.Addr, l.TLS, at(l.File, l.Line), map[bool]string{true: "S", false: ""}[h.TLS])
			continue
		}
		l.HTTP = true
	}
}

// checkHTTPRoutes names routes without an id, resolves their upstreams
// and requires an HTTP one (scheme http or https) and the other way round
// for stream routes.
func (b *builder) checkHTTPRoutes(cfg *Config) {
	byID := make(map[string]*Upstream)
	for i := range cfg.Upstreams {
		byID[cfg.Upstreams[i].ID] = &cfg.Upstreams[i]
	}
	b.resolveSchemes(cfg)
	seen := make(map[string]string)
	for i := range b.httpRoutes {
		r := &b.httpRoutes[i]
		r.ID = cmp.Or(r.ID, fmt.Sprintf("http-route-%d", i))
		if first, dup := seen[r.ID]; dup {
			b.p.errorf(r.File, r.Line, join(r.path, "id"), "duplicate id %q, first at %s", r.ID, first)
		}
		seen[r.ID] = at(r.File, r.Line)
		up := r.Upstream
		if up != nil {
			up.ID = "http-route:" + r.ID
		} else if r.UpstreamID != "" {
			if up = byID[r.UpstreamID]; up == nil {
				b.p.errorf(r.File, r.upstreamIDLine, join(r.path, "upstream_id"), "no upstream with id %q", r.UpstreamID)
				continue
			}
		}
		if up != nil && !up.HTTP() {
			b.p.errorf(r.File, r.Line, r.path, "upstream %q has scheme %s: an HTTP route needs scheme http or https", up.ID, up.Scheme)
		}
		if up != nil && !r.passHostSet && up.PassHost != "" {
			r.PassHost, r.UpstreamHost = up.PassHost, up.UpstreamHost // APISIX's place for them
		}
		cfg.Routes = append(cfg.Routes, r.HTTPRoute)
	}
	// An MQTT probe of an HTTP server always fails: every node would be
	// marked down.
	checkProbe := func(u *Upstream) {
		if !u.HTTP() || u.Checks == nil {
			return
		}
		for _, a := range u.Checks.Active {
			if a.Type == ProbeMQTT {
				b.p.errorf(u.File, u.Line, "", "upstream %q has scheme %s: its active checks need type tcp, http or https (an MQTT probe of an HTTP server fails)", u.ID, u.Scheme)
				return
			}
		}
	}
	for i := range cfg.Upstreams {
		checkProbe(&cfg.Upstreams[i])
	}
	for _, r := range cfg.Routes {
		if r.Upstream != nil {
			checkProbe(r.Upstream)
		}
	}
	for _, r := range cfg.StreamRoutes {
		up := r.Upstream
		if up == nil {
			up = byID[r.UpstreamID]
		}
		switch {
		case up != nil && up.Scheme == "https":
			b.p.errorf(r.File, r.Line, "", "stream route %q: upstream %q has scheme https (HTTP over TLS): a stream route's brokers speak MQTT; write scheme: tls for MQTT over TLS to them", r.ID, up.ID)
		case up != nil && up.HTTP():
			b.p.errorf(r.File, r.Line, "", "stream route %q: upstream %q has scheme %s and HTTP routes use it: its nodes speak HTTP, a stream route needs MQTT brokers (scheme tcp, tls, ws or wss); give the stream route an upstream of its own", r.ID, up.ID, up.Scheme)
		}
	}
	if len(cfg.Routes) > 0 && !slices.ContainsFunc(cfg.StreamProxy.TCP, func(l Listener) bool { return l.HTTP }) {
		b.p.warnf("", 0, "", "routes are set but no listener serves HTTP: add node_listen (or apisix.node_listen)")
	}
}

// resolveSchemes applies APISIX's default scheme, http, to the top-level
// upstreams without one that only HTTP routes use, and drops `scheme: http`
// (which APISIX stores on every upstream) from those only stream routes
// use, as APISIX's stream proxy ignores it. An upstream that both kinds of
// route use keeps what it says, and the route checks report a mismatch.
func (b *builder) resolveSchemes(cfg *Config) {
	httpUse := make(map[string]bool)
	for _, r := range b.httpRoutes {
		httpUse[r.UpstreamID] = true
	}
	streamUse := make(map[string]bool)
	for _, r := range cfg.StreamRoutes {
		if r.Upstream == nil {
			streamUse[r.UpstreamID] = true
		}
	}
	for i := range cfg.Upstreams {
		u, decl := &cfg.Upstreams[i], &b.upstreams[i]
		switch {
		case streamUse[u.ID] && httpUse[u.ID]:
		case httpUse[u.ID] && !decl.schemeSet:
			u.Scheme = "http"
		case streamUse[u.ID] && u.Scheme == "http":
			u.Scheme = "tcp"
			b.p.ignored = append(b.p.ignored, fmt.Sprintf("%s:%d: %s", u.File, u.Line, join(decl.path, "scheme")))
		}
	}
}

// HTTP reports whether the upstream's nodes speak HTTP (scheme http or
// https) rather than MQTT.
func (u *Upstream) HTTP() bool { return u.Scheme == "http" || u.Scheme == "https" }
