package config

import (
	"fmt"
	"github.com/mqgate/mqgate/accesslog"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// field is one key of a configuration section: its name, how it decodes
// into the section's value, its default as the README's configuration
// reference writes it, and whether a reload applies it. Each section's
// table is the one place its keys are spelled: it drives decoding, the
// "did you mean" of an unknown key, the reload's restart-only warning and
// the test that the README documents exactly these keys and defaults.
type field[T any] struct {
	name   string
	decode func(d *decoder, kv keyValue, path string, v *T)
	def    string // the README's Default cell, without the backquotes' meaning: compared as written
	// restart marks a key read only when mqgate starts; value is what a
	// reload compares to say it changed.
	restart bool
	value   func(v *T) any
	// sub documents a key whose value is a mapping with a table of its
	// own: the README lists its keys as name.key rows instead of name.
	sub []RefKey
	// hidden keys are decoded (to explain why they are wrong) but neither
	// listed as known nor documented.
	hidden bool
	// compat keys are APISIX's, accepted and documented, but never offered
	// as the "did you mean" of a typo.
	compat bool
	// own marks a key whose value is documented in a table of its own
	// (checks.active, checks.passive, a top-level section): the README's
	// table of this section does not list it.
	own bool
	// diff names, below path, the restart-only keys of the key's own
	// section that differ between a and b (log.access_log under log).
	diff func(path string, a, b *T) []string
}

// section is the field table of one mapping of the configuration.
type section[T any] struct {
	name    string // as the README's heading names it
	fields  []field[T]
	ignored []string // APISIX keys accepted and not used
	// open sections are APISIX's own (apisix, apisix.ssl): every key not
	// in fields is accepted and not used.
	open bool
}

// decode reads mapping n at path into v, field by field; an APISIX key in
// ignored is recorded, any other key is reported with a suggestion.
func (s section[T]) decode(d *decoder, n *yaml.Node, path string, v *T) {
	for _, kv := range d.fields(n, path) {
		s.decodeKey(d, kv, path, v)
	}
}

// decodeKey reads one entry kv of the section's mapping at path into v.
func (s section[T]) decodeKey(d *decoder, kv keyValue, path string, v *T) {
	if i := slices.IndexFunc(s.fields, func(f field[T]) bool { return f.name == kv.key }); i >= 0 {
		s.fields[i].decode(d, kv, join(path, kv.key), v)
		return
	}
	if s.open || slices.Contains(s.ignored, kv.key) {
		d.ignore(kv.keyNode, join(path, kv.key))
		return
	}
	d.unknownKey(kv, path, "key", s.names(), s.ignored)
}

// names lists the section's keys in table order.
func (s section[T]) names() []string {
	var out []string
	for _, f := range s.fields {
		if !f.hidden && !f.compat {
			out = append(out, f.name)
		}
	}
	return out
}

// changed names, as path.key, the restart-only keys whose values differ
// between a and b, and those below them that their own sections name.
func (s section[T]) changed(path string, a, b *T) []string {
	var out []string
	for _, f := range s.fields {
		switch {
		case f.restart && f.value != nil && !reflect.DeepEqual(f.value(a), f.value(b)):
			out = append(out, join(path, f.name))
		case f.diff != nil:
			out = append(out, f.diff(join(path, f.name), a, b)...)
		}
	}
	return out
}

// Reference is one section's keys as the README's configuration reference
// must list them.
type Reference struct {
	Section string   // the README heading, e.g. "log" for "### `log`"
	Table   int      // which table under the heading (0: the first)
	Keys    []RefKey // in table order
	Ignored []string // APISIX keys listed in one row as accepted and ignored
}

// RefKey is one key of a Reference.
type RefKey struct {
	Name, Default string
	Restart       bool // applies at restart only; else a reload applies it
}

func (s section[T]) reference(table int) Reference {
	r := Reference{Section: s.name, Table: table, Ignored: s.ignored}
	for _, f := range s.fields {
		switch {
		case f.hidden, f.own:
		case f.sub != nil:
			for _, k := range f.sub {
				r.Keys = append(r.Keys, RefKey{Name: f.name + "." + k.Name, Default: k.Default, Restart: k.Restart || f.restart})
			}
		default:
			r.Keys = append(r.Keys, RefKey{Name: f.name, Default: f.def, Restart: f.restart})
		}
	}
	return r
}

// References lists the field tables for the README test.
func References() []Reference {
	return []Reference{
		topLevelSection().reference(0),
		streamProxySection().reference(0),
		listenerSection().reference(1),
		webSocketSection().reference(2),
		logSection().reference(0),
		adminSection().reference(0),
		adminKeySection().reference(1),
		reloadSection().reference(0),
		rebalanceSection().reference(0),
		routeSection().reference(0),
		httpRouteSection().reference(0),
		upstreamSection().reference(0),
		nodeSection().reference(1),
		activeSection().reference(0),
		checksSection().reference(1),
		passiveSection().reference(2),
		sslSection().reference(0),
		deploymentSection().reference(0),
		etcdSection().reference(1),
		apisixSSLSection().reference(1),
	}
}

// RestartOnlyChanges names the keys that apply only at start and differ
// between the configuration a process started with and next, as the field
// tables declare them, so that a reload can say which of its changes wait
// for a restart.
func RestartOnlyChanges(started, next *Config) []string {
	return topLevelSection().changed("", &topLevel{started}, &topLevel{next})
}

// RestartOnlyNews is RestartOnlyChanges(started, next) less the keys that
// next leaves as previous (the configuration of the reload before) had
// them: a reload names a waiting key once, when it changes, not again on
// every later reload while it still differs from what the process runs
// with. A key counts as changed when a key below it did (admin when
// admin.listen did).
func RestartOnlyNews(started, previous, next *Config) []string {
	since := RestartOnlyChanges(previous, next)
	return slices.DeleteFunc(RestartOnlyChanges(started, next), func(k string) bool {
		return !slices.ContainsFunc(since, func(c string) bool { return c == k || strings.HasPrefix(c, k+".") })
	})
}

// The sections' tables. Functions rather than variables, so that no
// package state can change under a running decoder.

func streamProxySection() section[StreamProxy] {
	return section[StreamProxy]{
		name: "stream_proxy",
		fields: []field[StreamProxy]{
			{name: "tcp", def: "required, at least one", decode: func(d *decoder, kv keyValue, p string, _ *StreamProxy) {
				items := d.items(kv.val, p)
				d.b.tcpSet = d.b.tcpSet || len(items) > 0
				for i, item := range items {
					if l, ok := d.listener(item, index(p, i)); ok {
						d.b.listeners = append(d.b.listeners, l)
					}
				}
			}},
			{name: "connect_timeout", def: fmt.Sprintf("`%s`", DefaultConnectTimeout), decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.connect_timeout", kv, p) {
					return
				}
				if t, ok := d.duration(kv.val, p); ok {
					if t == 0 {
						d.errorf(kv.val, p, "must be greater than 0")
						return
					}
					v.ConnectTimeout = t
				}
			}},
			{name: "max_connect_size", def: fmt.Sprintf("`%d`", DefaultMaxConnectSize), decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.max_connect_size", kv, p) {
					return
				}
				if n, ok := d.intIn(kv.val, p, minConnectSize, MaxConnectSizeLimit); ok {
					v.MaxConnectSize = n
				}
			}},
			{name: "max_connections", def: "`0` (no cap)", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.max_connections", kv, p) {
					return
				}
				if n, ok := d.intMin(kv.val, p, 0); ok {
					v.MaxConnections = n
				}
			}},
			{name: "max_unfinished_connections", def: "`0`: half of (open-file limit − `reserved_descriptors`), 9,922 at 20,000", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				d.admissionCap(kv, p, &v.MaxUnfinishedConnections)
			}},
			{name: "max_unfinished_per_address", def: "`0`: a quarter of `max_unfinished_connections`, 2,480 at 20,000", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				d.admissionCap(kv, p, &v.MaxUnfinishedPerAddress)
			}},
			{name: "reserved_descriptors", def: "`0`: 1/128 of the open-file limit, at least 64 (156 at 20,000)", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				d.admissionCap(kv, p, &v.ReservedDescriptors)
			}},
			{name: "on_duplicate_client_id", def: "`" + DuplicateAllow + "`", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.on_duplicate_client_id", kv, p) {
					return
				}
				if s, ok := d.oneOf(kv.val, p, duplicatePolicies...); ok {
					v.OnDuplicateClientID = s
				}
			}},
			{name: "data_path", def: "`" + DataPathEpoll + "`", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.data_path", kv, p) {
					return
				}
				if s, ok := d.oneOf(kv.val, p, DataPathEpoll, DataPathGoroutines); ok {
					v.DataPath = s
				}
			}},
			{name: "loop_affinity", def: "`" + LoopAffinityBroker + "`", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.loop_affinity", kv, p) {
					return
				}
				if s, ok := d.oneOf(kv.val, p, LoopAffinityBroker, LoopAffinityConnection); ok {
					v.LoopAffinity = s
				}
			}},
			{name: "tls_record", def: "`true`", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.tls_record", kv, p) {
					return
				}
				if on, ok := d.bool(kv.val, p); ok {
					v.TLSRecordOff = !on
				}
			}},
			{name: "max_packet_size", def: "`0` (no limit)", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.max_packet_size", kv, p) {
					return
				}
				if n, ok := d.intIn(kv.val, p, 0, MaxConnectSizeLimit+5); ok {
					v.MaxPacketSize = n
				}
			}},
			{name: "server_reference", def: "empty", decode: func(d *decoder, kv keyValue, p string, v *StreamProxy) {
				if !d.setOnce("stream_proxy.server_reference", kv, p) {
					return
				}
				if s, ok := d.str(kv.val, p); ok {
					v.ServerReference = s
				}
			}},
			{name: "only", def: "`true`", compat: true, decode: func(d *decoder, kv keyValue, p string, _ *StreamProxy) {
				// APISIX's: false serves HTTP too, on node_listen (default
				// 9080). mqgate serves HTTP wherever node_listen says; only
				// the default port needs this key.
				if only, ok := d.bool(kv.val, p); ok && !only {
					d.b.httpDefault = &location{d.file, kv.val.Line}
				} else if ok {
					d.ignore(kv.keyNode, p)
				}
			}},
		},
		ignored: []string{"udp"},
	}
}

// listenerMapping is a listener written as a mapping, while it decodes.
type listenerMapping struct {
	l    *listenerDecl
	addr *yaml.Node
}

func listenerSection() section[listenerMapping] {
	return section[listenerMapping]{
		name: "stream_proxy",
		fields: []field[listenerMapping]{
			{name: "addr", def: "required", decode: func(_ *decoder, kv keyValue, _ string, v *listenerMapping) { v.addr = kv.val }},
			{name: "tls", def: "`false`", decode: func(d *decoder, kv keyValue, p string, v *listenerMapping) { v.l.TLS, _ = d.bool(kv.val, p) }},
			{name: "proxy_protocol", def: "`false`", decode: func(d *decoder, kv keyValue, p string, v *listenerMapping) {
				v.l.ProxyProtocol, _ = d.bool(kv.val, p)
			}},
			{name: "real_ip_from", def: "required with `proxy_protocol`", decode: func(d *decoder, kv keyValue, p string, v *listenerMapping) {
				d.realIPFrom(kv, p, v.l)
			}},
			{name: "websocket", def: "`false`", decode: func(d *decoder, kv keyValue, p string, v *listenerMapping) {
				v.l.WebSocket = d.websocket(kv.val, p)
			}},
		},
	}
}

func logSection() section[Log] {
	return section[Log]{
		name: "log",
		fields: []field[Log]{
			{name: "level", def: "`" + DefaultLogLevel + "`", decode: func(d *decoder, kv keyValue, p string, v *Log) {
				if s, ok := d.oneOf(kv.val, p, logLevels...); ok {
					v.Level = s
				}
			}},
			{name: "access_log", def: "`" + DefaultAccessLog + "`", restart: true, value: func(v *Log) any { return v.AccessLog },
				decode: func(d *decoder, kv keyValue, p string, v *Log) { d.accessLog(kv.val, p, v) }},
			{name: "access_log_format", def: "unset: JSON", decode: func(d *decoder, kv keyValue, p string, v *Log) {
				if s, ok := d.str(kv.val, p); ok {
					format, err := accesslog.ParseTemplate(s)
					if err != nil {
						d.errorf(kv.val, p, "%v", err)
						return
					}
					v.AccessLogFormat = format
				}
			}},
		},
	}
}

// adminDecl is the admin block while it decodes.
type adminDecl struct {
	Admin
	keysNode *yaml.Node
}

func adminSection() section[adminDecl] {
	return section[adminDecl]{
		name: "admin",
		fields: []field[adminDecl]{
			{name: "listen", def: "`" + DefaultAdminListen + "`", restart: true, value: func(v *adminDecl) any { return v.Listen },
				decode: func(d *decoder, kv keyValue, p string, v *adminDecl) {
					if s, ok := d.str(kv.val, p); ok {
						if _, _, msg := parseListenAddr(s); msg != "" || !containsColon(s) {
							d.errorf(kv.val, p, `must be "ip:port", got %q`, s)
							return
						}
						v.Listen = s
					}
				}},
			{name: "keys", def: "required, at least one: there is **no default key**", decode: func(d *decoder, kv keyValue, p string, v *adminDecl) {
				v.keysNode, v.Keys = kv.val, d.adminKeys(kv.val, p)
			}},
			{name: "allow", def: "any address", decode: func(d *decoder, kv keyValue, p string, v *adminDecl) { v.Allow = d.prefixes(kv.val, p) }},
			{name: "tls", def: "plain HTTP", restart: true, value: func(v *adminDecl) any { return v.TLS },
				decode: func(d *decoder, kv keyValue, p string, v *adminDecl) { v.TLS = d.adminTLS(kv.val, p) }},
			{name: "state_file", def: "`" + DefaultAdminStateFile + "`", decode: func(d *decoder, kv keyValue, p string, v *adminDecl) {
				if s, ok := d.str(kv.val, p); ok {
					if s == "" {
						d.errorf(kv.val, p, "must not be empty")
						return
					}
					v.StateFile = s
				}
			}},
			{name: "public_status", def: "`false`", decode: func(d *decoder, kv keyValue, p string, v *adminDecl) {
				v.PublicStatus, _ = d.bool(kv.val, p)
			}},
		},
	}
}

func adminKeySection() section[adminKeyDecl] {
	return section[adminKeyDecl]{
		name: "admin",
		fields: []field[adminKeyDecl]{
			{name: "key", def: "—", decode: func(d *decoder, kv keyValue, p string, v *adminKeyDecl) {
				v.Key, _ = d.str(kv.val, p)
				v.keyNode, v.fromFile = kv.val, true
			}},
			{name: "key_env", def: "—", decode: func(d *decoder, kv keyValue, p string, v *adminKeyDecl) {
				if env, ok := d.str(kv.val, p); ok {
					v.Env = env
					if v.Key = lookupEnv(env); v.Key == "" {
						d.errorf(kv.val, p, "environment variable %s is not set or empty", env)
					}
				}
				v.keyNode = kv.val
			}},
			{name: "role", def: "`" + RoleAdmin + "`", decode: func(d *decoder, kv keyValue, p string, v *adminKeyDecl) {
				if r, ok := d.oneOf(kv.val, p, adminRoles...); ok {
					v.Role = r
				}
			}},
			{name: "name", def: "—", decode: func(d *decoder, kv keyValue, p string, v *adminKeyDecl) { v.Name, _ = d.str(kv.val, p) }},
		},
	}
}

func adminTLSSection() section[AdminTLS] {
	return section[AdminTLS]{
		name: "admin",
		fields: []field[AdminTLS]{
			{name: "cert", decode: func(d *decoder, kv keyValue, p string, v *AdminTLS) { v.Cert, _ = d.str(kv.val, p) }},
			{name: "key", decode: func(d *decoder, kv keyValue, p string, v *AdminTLS) { v.Key, _ = d.str(kv.val, p) }},
		},
	}
}

func reloadSection() section[Reload] {
	return section[Reload]{
		name: "reload",
		fields: []field[Reload]{
			{name: "watch", def: "`true`", decode: func(d *decoder, kv keyValue, p string, v *Reload) {
				if b, ok := d.bool(kv.val, p); ok {
					v.Watch = b
				}
			}},
			{name: "watch_interval", def: fmt.Sprintf("`%s`", DefaultWatchInterval), decode: func(d *decoder, kv keyValue, p string, v *Reload) {
				t, ok := d.duration(kv.val, p)
				switch {
				case !ok:
				case t == 0:
					d.errorf(kv.val, p, "must be greater than 0; set watch: false to stop watching")
				default:
					v.WatchInterval = t
				}
			}},
			{name: "drain_removed", def: "`false`", decode: func(d *decoder, kv keyValue, p string, v *Reload) {
				v.DrainRemoved, _ = d.bool(kv.val, p)
			}},
			{name: "drain_window", def: "unset: `rebalance.rate`", decode: func(d *decoder, kv keyValue, p string, v *Reload) {
				if t, ok := d.duration(kv.val, p); ok {
					v.DrainWindow = t
				}
			}},
		},
	}
}

// apisixSSLSection is APISIX's config.yaml apisix.ssl: the HTTPS listen
// and the TLS settings of every certificate. APISIX's other keys there
// (fallback_sni, key_encrypt_salt, ...) are accepted without use.
func apisixSSLSection() section[sslGlobal] {
	return section[sslGlobal]{
		name: "ssls[]",
		fields: []field[sslGlobal]{
			{name: "listen", def: "none", decode: func(d *decoder, kv keyValue, p string, _ *sslGlobal) { d.nodeListen(kv.val, p, true) }},
			{name: "ssl_protocols", def: "`TLSv1.2 TLSv1.3`", decode: func(d *decoder, kv keyValue, p string, g *sslGlobal) {
				var s SSL
				errs := len(d.p.errs)
				d.sslProtocols(kv.val, p, &s)
				if len(d.p.errs) == errs && s.MinVersion != 0 {
					g.protocols = &[2]uint16{s.MinVersion, s.MaxVersion}
				}
			}},
			{name: "ssl_ciphers", def: "crypto/tls's suites", decode: func(d *decoder, kv keyValue, p string, g *sslGlobal) {
				if s, ok := d.str(kv.val, p); ok {
					g.ciphers, g.ciphersSet = d.sslCiphers(kv.val, p, s), true
				}
			}},
			{name: "ssl_session_tickets", def: "`true`", decode: func(d *decoder, kv keyValue, p string, g *sslGlobal) {
				if on, ok := d.bool(kv.val, p); ok {
					g.ticketsOff = !on
				}
			}},
			{name: "ssl_session_timeout", def: "unset: until the ticket's key retires (24 hours at most)", decode: func(d *decoder, kv keyValue, p string, g *sslGlobal) {
				if t, ok := d.duration(kv.val, p); ok {
					if t <= 0 {
						d.errorf(kv.val, p, "must be greater than 0")
						return
					}
					g.timeout = t
				}
			}},
		},
		open: true,
	}
}
