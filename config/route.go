package config

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/plugin"
)

// routeDecl is a StreamRoute with the source positions the cross-file
// checks report at.
type routeDecl struct {
	StreamRoute
	path           string
	idLine         int // 0 when the id is generated
	serverPortLine int
	upstreamIDLine int
	overlay        bool // from an Admin API document
	sniLine        int
}

func (d *decoder) route(n *yaml.Node, path string) routeDecl {
	r := routeFields{routeDecl: routeDecl{StreamRoute: StreamRoute{File: d.file, Line: n.Line}, path: path, overlay: d.overlay}}
	routeSection().decode(d, n, path, &r)
	d.pluginUpstream(path, &r)
	switch {
	case r.hasUpstreamID && r.hasUpstream:
		d.errorf(n, path, "set exactly one of upstream_id or upstream, not both")
	case !r.hasUpstreamID && !r.hasUpstream:
		d.errorf(n, path, "needs upstream_id or upstream")
	}
	return r.routeDecl
}

// routeFields is a route while it decodes.
type routeFields struct {
	routeDecl
	hasUpstreamID, hasUpstream bool
}

func routeSection() section[routeFields] {
	type f = field[routeFields]
	return section[routeFields]{
		name: "stream_routes[]",
		fields: []f{
			{name: "id", def: "`route-<index>`", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				if id, ok := d.id(kv.val, p); ok {
					r.ID, r.idLine = id, kv.val.Line
				}
			}},
			{name: "name", def: "—", decode: func(d *decoder, kv keyValue, p string, r *routeFields) { r.Name, _ = d.str(kv.val, p) }},
			{name: "desc", def: "—", decode: func(d *decoder, kv keyValue, p string, r *routeFields) { r.Desc, _ = d.str(kv.val, p) }},
			{name: "server_port", def: "`0` (any)", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				r.ServerPort, _ = d.intIn(kv.val, p, 0, 65535)
				r.serverPortLine = kv.val.Line
			}},
			{name: "server_addr", def: "any", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				if s, ok := d.str(kv.val, p); ok {
					a, err := netip.ParseAddr(s)
					if err != nil || a.Zone() != "" {
						d.errorf(kv.val, p, "must be an IP address, got %q", s)
						return
					}
					r.ServerAddr = a.Unmap()
				}
			}},
			{name: "remote_addr", def: "any", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				if s, ok := d.str(kv.val, p); ok {
					prefix, msg := parsePrefix(s)
					if msg != "" {
						d.errorf(kv.val, p, "%s", msg)
						return
					}
					r.RemoteAddr = prefix
				}
			}},
			{name: "sni", def: "any", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				if s, _ := d.str(kv.val, p); s == "" {
					return // APISIX writes "" for no SNI condition
				}
				if name, ok := d.sniName(kv.val, p); ok {
					r.SNI, r.sniLine = name, kv.val.Line
				}
			}},
			{name: "mqtt_client_id", def: "any", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				r.MQTTClientID = d.stringMatch(kv.val, p)
			}},
			{name: "mqtt_username", def: "any", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				r.MQTTUsername = d.stringMatch(kv.val, p)
			}},
			{name: "upstream_id", def: "—", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				r.hasUpstreamID = !isNull(kv.val)
				r.UpstreamID, _ = d.id(kv.val, p)
				r.upstreamIDLine = kv.val.Line
			}},
			{name: "upstream", def: "—", decode: func(d *decoder, kv keyValue, p string, r *routeFields) {
				r.hasUpstream = !isNull(kv.val)
				if r.hasUpstream {
					u := d.upstream(kv.val, p, true)
					d.streamScheme(&u, p)
					r.Upstream = &u.Upstream
				}
			}},
			{name: "plugins", def: "none", decode: func(d *decoder, kv keyValue, p string, r *routeFields) { r.Plugins = d.plugins(kv.val, p) }},
		},
	}
}

// pluginUpstream makes the broker a plugin names (APISIX's older
// mqtt-proxy `upstream: {host, port}`) the route's inline upstream: one
// node, round robin, as APISIX built it. A route that also has an upstream
// of its own is an error: which one wins differed between APISIX versions.
func (d *decoder) pluginUpstream(path string, r *routeFields) {
	for _, pl := range r.Plugins {
		ru, ok := pl.Settings.(plugin.RouteUpstream)
		if !ok {
			continue
		}
		host, port, ok := ru.RouteUpstream()
		if !ok {
			continue
		}
		at := &yaml.Node{Line: pl.Line}
		p := join(join(path, "plugins"), pl.Name) + ".upstream"
		if r.hasUpstreamID || r.hasUpstream {
			d.errorf(at, p, "the route has an upstream too: keep one (APISIX deprecated this one; prefer the route's)")
			return
		}
		scalar := func(v string) *yaml.Node {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Line: at.Line}
		}
		node := &yaml.Node{Kind: yaml.MappingNode, Line: at.Line, Content: []*yaml.Node{
			scalar("nodes"), {Kind: yaml.SequenceNode, Line: at.Line, Content: []*yaml.Node{
				{Kind: yaml.MappingNode, Line: at.Line, Content: []*yaml.Node{
					scalar("host"), scalar(host),
					scalar("port"), {Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(port), Line: at.Line},
				}},
			}},
		}}
		u := d.upstream(node, p, true)
		r.Upstream, r.hasUpstream = &u.Upstream, true
		return
	}
}

// streamScheme reads an upstream's scheme for stream routes: `http`, which
// APISIX fills in on every upstream it stores (its default), is ignored as
// APISIX's stream proxy ignores it, and the nodes are dialled over TCP.
func (d *decoder) streamScheme(u *upstreamDecl, path string) {
	if u.Scheme == "http" {
		u.Scheme = "tcp"
		d.p.ignored = append(d.p.ignored, fmt.Sprintf("%s:%d: %s", u.File, u.Line, join(path, "scheme")))
	}
}

// parsePrefix reads an IP (a one-address prefix) or a CIDR. Host bits in
// a CIDR are cleared: "10.1.2.3/8" means 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, string) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf(`must be an IP address or a CIDR like "10.0.0.0/8", got %q`, s)
		}
		return p.Masked(), ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Sprintf(`must be an IP address or a CIDR like "10.0.0.0/8", got %q`, s)
	}
	return netip.PrefixFrom(a, a.BitLen()), ""
}

// nameRoutes names routes without an id after their place among all routes,
// and gives inline upstreams their route's id.
func (b *builder) nameRoutes() {
	for i := range b.routes {
		r := &b.routes[i]
		if r.ID == "" {
			r.ID = fmt.Sprintf("route-%d", i)
		}
		if r.Upstream != nil {
			r.Upstream.ID = "route:" + r.ID
		}
	}
}

// checkRoutes checks route ids for duplicates and upstream references
// across all files.
func (b *builder) checkRoutes() {
	routeAt := make(map[string]*routeDecl, len(b.routes))
	for i := range b.routes {
		r := &b.routes[i]
		if first, dup := routeAt[r.ID]; dup {
			b.p.errorf(r.File, cmp.Or(r.idLine, r.Line), join(r.path, "id"), "duplicate id %q, first at %s",
				r.ID, at(first.File, cmp.Or(first.idLine, first.Line)))
			continue
		}
		routeAt[r.ID] = r
	}

	upstreamAt := make(map[string]*upstreamDecl, len(b.upstreams))
	var ids []string
	for i := range b.upstreams {
		u := &b.upstreams[i]
		if u.ID == "" {
			continue // reported as required
		}
		if first, dup := upstreamAt[u.ID]; dup {
			b.p.errorf(u.File, u.idLine, join(u.path, "id"), "duplicate id %q, first at %s", u.ID, at(first.File, first.idLine))
			continue
		}
		upstreamAt[u.ID] = u
		ids = append(ids, u.ID)
	}

	ports := make(map[int]bool, len(b.listeners))
	for _, l := range b.listeners {
		ports[l.port] = true
	}
	used := make(map[string]bool, len(b.upstreams))
	for _, r := range b.routes {
		if r.UpstreamID != "" {
			if _, ok := upstreamAt[r.UpstreamID]; ok {
				used[r.UpstreamID] = true
			} else if len(ids) == 0 {
				b.p.errorf(r.File, r.upstreamIDLine, join(r.path, "upstream_id"), "no upstream with id %q: no upstreams are defined", r.UpstreamID)
			} else {
				b.p.errorf(r.File, r.upstreamIDLine, join(r.path, "upstream_id"), "no upstream with id %q (known: %s)", r.UpstreamID, strings.Join(ids, ", "))
			}
		}
		if r.ServerPort != 0 && len(ports) > 0 && !ports[r.ServerPort] {
			b.p.warnf(r.File, r.serverPortLine, join(r.path, "server_port"), "no listener on port %d, so this route never matches", r.ServerPort)
		}
	}
	for _, r := range b.httpRoutes {
		if r.UpstreamID != "" {
			used[r.UpstreamID] = true // checkHTTPRoutes checks the reference
		}
	}
	for _, u := range b.upstreams {
		if u.ID != "" && !used[u.ID] {
			b.p.warnf(u.File, u.Line, u.path, "upstream %q is not used by any stream route or HTTP route", u.ID)
		}
	}
}
