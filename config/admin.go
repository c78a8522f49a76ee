package config

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of the admin and reload blocks.
const (
	DefaultAdminListen    = "127.0.0.1:9180"
	DefaultAdminStateFile = "mqgate-admin-state.json" // next to the file that declares admin
	DefaultWatchInterval  = 2 * time.Second

	// APISIXExampleKey is the admin key printed in every APISIX document.
	// Anyone can read it, so mqgate refuses it.
	APISIXExampleKey = "edd1c9f034335f136f87ad84b625c8f1"
	minAdminKeyLen   = 16
	// minAdminKeyDistinct rejects keys like "aaaaaaaaaaaaaaaa"; 32 random
	// hex digits have fewer than 8 different ones about once in 10^13.
	minAdminKeyDistinct = 8
)

// Admin roles: an admin key may read and write, a viewer key may only read.
const (
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

var (
	adminRoles = []string{RoleAdmin, RoleViewer}
)

// Admin configures the Admin API and its state file. Config.Admin is nil
// when no file has an admin block: the Admin API is then off.
type Admin struct {
	Listen       string         // "ip:port"; default 127.0.0.1:9180
	Keys         []AdminKey     // at least one: there is no default key
	Allow        []netip.Prefix // client addresses allowed; empty = any
	TLS          *AdminTLS      // nil = plain HTTP
	StateFile    string         // where admin changes are kept; see DefaultAdminStateFile
	PublicStatus bool           // /status, /status.json and /metrics need no key
	File         string
	Line         int
}

// AdminKey is one key of the X-API-KEY header.
type AdminKey struct {
	Name string // a label for logs; never the key itself
	Key  string // from the file, or read from the environment variable Env
	Env  string
	Role string // RoleAdmin (default) or RoleViewer
}

// AdminTLS makes the Admin API listen with TLS.
type AdminTLS struct {
	Cert, Key string // PEM file paths
}

// Reload configures how configuration changes are picked up and what
// happens to connections of removed routes and nodes.
type Reload struct {
	Watch         bool          // re-read the files when they change; default true
	WatchInterval time.Duration // how often the files are checked; default 2s
	DrainRemoved  bool          // close connections of removed routes and nodes; default false
	// DrainWindow, when set, paces a drain to end within it (count /
	// window a second) instead of at rebalance.rate; 0, the default: at
	// rebalance.rate. Kept for configurations written before
	// rebalance.rate paced drains.
	DrainWindow time.Duration
}

// ReloadSettings returns the reload block, or its defaults when no file has one.
func (c *Config) ReloadSettings() Reload {
	if c.Reload != nil {
		return *c.Reload
	}
	return defaultReload()
}

// Rebalance configures paced rebalancing: moving the clients whose hashed
// node changed (a node added, back from down, or asked for by the Admin
// API) a few at a time.
type Rebalance struct {
	Rate float64 // connections moved per second; default 500
}

// RebalanceSettings returns the rebalance block, or its defaults.
func (c *Config) RebalanceSettings() Rebalance {
	if c.Rebalance != nil {
		return *c.Rebalance
	}
	return Rebalance{Rate: DefaultRebalanceRate}
}

// DefaultRebalanceRate is rebalance.rate unset: EMQX evacuates a node at
// 500 connections per second by default.
const DefaultRebalanceRate = 500

func (d *decoder) rebalance(kv keyValue) {
	if !d.setOnce("rebalance", kv, kv.key) {
		return
	}
	r := Rebalance{Rate: DefaultRebalanceRate}
	rebalanceSection().decode(d, kv.val, "rebalance", &r)
	d.b.rebalance = &r
}

func rebalanceSection() section[Rebalance] {
	return section[Rebalance]{
		name: "rebalance",
		fields: []field[Rebalance]{
			{name: "rate", def: "`500`", decode: func(d *decoder, kv keyValue, p string, v *Rebalance) {
				if f, ok := d.float(kv.val, p); ok {
					if f <= 0 {
						d.errorf(kv.val, p, "must be greater than 0, got %v", f)
						return
					}
					v.Rate = f
				}
			}},
		},
	}
}

func defaultReload() Reload {
	return Reload{Watch: true, WatchInterval: DefaultWatchInterval}
}

func (d *decoder) admin(kv keyValue) {
	if !d.setOnce("admin", kv, kv.key) {
		return
	}
	decl := &adminDecl{Admin: Admin{Listen: DefaultAdminListen, File: d.file, Line: kv.keyNode.Line}}
	adminSection().decode(d, kv.val, "admin", decl)
	a, keysNode := &decl.Admin, decl.keysNode
	if len(a.Keys) == 0 && len(d.p.errs) == 0 {
		at := kv.keyNode
		if keysNode != nil {
			at = keysNode
		}
		d.errorf(at, "admin.keys", "at least one key is required: the Admin API has no default key (generate one with: openssl rand -hex 16)")
	}
	seen := make(map[string]int)
	for i, k := range a.Keys {
		if j, dup := seen[k.Key]; dup {
			d.errorf(kv.keyNode, index("admin.keys", i), "the same key as admin.keys[%d]; every key must be different", j)
		}
		seen[k.Key] = i
	}
	// A relative state file lives next to the file that declares it.
	a.StateFile = d.relative(cmp.Or(a.StateFile, DefaultAdminStateFile))
	d.b.admin = a
}

// adminKeys reads a list of admin keys (admin.keys, deployment.admin.admin_key).
func (d *decoder) adminKeys(n *yaml.Node, path string) []AdminKey {
	var out []AdminKey
	for i, item := range d.items(n, path) {
		if k, ok := d.adminKey(item, index(path, i)); ok {
			out = append(out, k)
		}
	}
	return out
}

// adminKey reads {name, key | key_env, role}. Messages never show a key.
func (d *decoder) adminKey(n *yaml.Node, path string) (AdminKey, bool) {
	decl := adminKeyDecl{AdminKey: AdminKey{Role: RoleAdmin}}
	errs := len(d.p.errs)
	adminKeySection().decode(d, n, path, &decl)
	k, keyNode, fromFile := decl.AdminKey, decl.keyNode, decl.fromFile
	if len(d.p.errs) > errs {
		return k, false
	}
	switch {
	case keyNode == nil:
		d.errorf(n, join(path, "key"), "required: set key, or key_env to read it from the environment")
	case k.Env != "" && fromFile:
		d.errorf(keyNode, path, "set key or key_env, not both")
	case k.Key == APISIXExampleKey:
		d.errorf(keyNode, path, "this is APISIX's documented example key, known to everyone; generate your own (openssl rand -hex 16)")
	case len(k.Key) < minAdminKeyLen:
		d.errorf(keyNode, path, "too short (%d characters): use at least %d (openssl rand -hex 16)", len(k.Key), minAdminKeyLen)
	case !sendableKey(k.Key):
		// HTTP trims a header's surrounding spaces and forbids controls:
		// such a key could never be sent back.
		d.errorf(keyNode, path, "must be printable ASCII without spaces, as an HTTP header carries it (openssl rand -hex 16)")
	case distinctBytes(k.Key) < minAdminKeyDistinct:
		d.errorf(keyNode, path, "too easy to guess: fewer than %d different characters (openssl rand -hex 16)", minAdminKeyDistinct)
	}
	return k, len(d.p.errs) == errs
}

func (d *decoder) adminTLS(n *yaml.Node, path string) *AdminTLS {
	t := &AdminTLS{}
	adminTLSSection().decode(d, n, path, t)
	if t.Cert == "" || t.Key == "" {
		d.errorf(n, path, "needs both cert and key (PEM file paths)")
		return nil
	}
	// Relative paths are relative to the file that declares them, as
	// state_file and the ssls' files are; the pair is loaded now, so that
	// mqgate check and a reload report a bad one at its line.
	t.Cert, t.Key = d.relative(t.Cert), d.relative(t.Key)
	if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
		d.errorf(n, path, "%v", err)
		return nil
	}
	return t
}

func (d *decoder) reload(kv keyValue) {
	if !d.setOnce("reload", kv, kv.key) {
		return
	}
	r := defaultReload()
	reloadSection().decode(d, kv.val, "reload", &r)
	d.b.reload = &r
}

// sendableKey reports whether key is all visible ASCII (0x21..0x7e).
func sendableKey(key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

func distinctBytes(s string) int {
	var seen [256]bool
	n := 0
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]] = true
			n++
		}
	}
	return n
}

// adminKeyDecl is one admin key while it decodes.
type adminKeyDecl struct {
	AdminKey
	keyNode  *yaml.Node
	fromFile bool
}

func lookupEnv(name string) string { return os.Getenv(name) }

func containsColon(s string) bool { return strings.Contains(s, ":") }

// APISIX's defaults for deployment.admin: it listens on every address and
// lets only 127.0.0.0/24 in.
const (
	DefaultAPISIXAdminListen = "0.0.0.0:9180"
	DefaultAPISIXAdminAllow  = "127.0.0.0/24"
)

// deploymentAdminFields is deployment.admin while it decodes.
type deploymentAdminFields struct {
	*Admin
	keysNode          *yaml.Node
	allowSet, https   bool
	mtlsNode          *yaml.Node
	certNode, keyNode *yaml.Node
	cert, key         string
	keyRequiredNode   *yaml.Node
	keyRequired       bool
}

// deploymentAdmin decodes APISIX's deployment.admin into the Admin API it
// describes: admin_key as admin.keys, admin_listen as admin.listen,
// allow_admin as admin.allow, https_admin with admin_api_mtls's certificate
// as admin.tls. Whether it is served is decided with apisix.enable_admin
// and the role (resolveDeploymentAdmin).
func (d *decoder) deploymentAdmin(kv keyValue, path string) {
	a := &Admin{Listen: DefaultAPISIXAdminListen, File: d.file, Line: kv.keyNode.Line}
	f := deploymentAdminFields{Admin: a, keyRequired: true}
	errs := len(d.p.errs)
	deploymentAdminSection().decode(d, kv.val, path, &f)
	if !f.keyRequired {
		d.errorf(f.keyRequiredNode, join(path, "admin_key_required"), "mqgate's Admin API always needs a key: remove admin_key_required: false and keep admin_key")
	}
	if len(a.Keys) == 0 && len(d.p.errs) == errs {
		at := kv.keyNode
		if f.keysNode != nil {
			at = f.keysNode
		}
		d.errorf(at, join(path, "admin_key"), "at least one key is required: the Admin API has no default key (generate one with: openssl rand -hex 16)")
	}
	seen := make(map[string]int)
	for i, k := range a.Keys {
		if j, dup := seen[k.Key]; dup {
			d.errorf(kv.keyNode, index(join(path, "admin_key"), i), "the same key as admin_key[%d]; every key must be different", j)
		}
		seen[k.Key] = i
	}
	if !f.allowSet {
		a.Allow = []netip.Prefix{netip.MustParsePrefix(DefaultAPISIXAdminAllow)}
	}
	switch {
	case f.https && (f.cert == "" || f.key == ""):
		at := kv.keyNode
		if f.mtlsNode != nil {
			at = f.mtlsNode
		}
		d.errorf(at, join(path, "admin_api_mtls"), "https_admin: true needs admin_ssl_cert and admin_ssl_cert_key (PEM file paths)")
	case f.https:
		a.TLS = d.adminTLS(&yaml.Node{Kind: yaml.MappingNode, Line: f.mtlsNode.Line, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "cert"}, {Kind: yaml.ScalarNode, Tag: "!!str", Value: f.cert, Line: f.certNode.Line},
			{Kind: yaml.ScalarNode, Value: "key"}, {Kind: yaml.ScalarNode, Tag: "!!str", Value: f.key, Line: f.keyNode.Line},
		}}, join(path, "admin_api_mtls"))
	case f.cert != "" || f.key != "":
		d.ignore(f.mtlsNode, join(path, "admin_api_mtls")) // APISIX uses them only with https_admin
	}
	a.StateFile = d.relative(DefaultAdminStateFile)
	if len(d.p.errs) == errs {
		d.b.deploymentAdmin = a
	}
}

// resolveDeploymentAdmin serves deployment.admin's Admin API where APISIX
// would: unless apisix.enable_admin is false or the role is data_plane.
// With mqgate's own admin block as well, it is an error: one Admin API.
func (b *builder) resolveDeploymentAdmin() {
	a := b.deploymentAdmin
	if a == nil {
		return
	}
	role := RoleTraditional
	if b.deployment != nil {
		role = b.deployment.Role
	}
	switch {
	case b.admin != nil:
		b.p.errorf(a.File, a.Line, "deployment.admin", "the Admin API is set twice, here and by admin at %s: keep one", at(b.admin.File, b.admin.Line))
	case b.enableAdmin != nil && !*b.enableAdmin, role == RoleDataPlane:
		// APISIX serves no Admin API then either.
		b.p.ignored = append(b.p.ignored, fmt.Sprintf("%s:%d: deployment.admin", a.File, a.Line))
	default:
		b.admin = a
	}
}

func deploymentAdminSection() section[deploymentAdminFields] {
	type f = field[deploymentAdminFields]
	return section[deploymentAdminFields]{
		name: "deployment",
		fields: []f{
			{name: "admin_key", def: "required, at least one", decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				v.keysNode, v.Keys = kv.val, d.adminKeys(kv.val, p)
			}},
			{name: "admin_key_required", def: "`true`", decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				v.keyRequiredNode = kv.val
				if on, ok := d.bool(kv.val, p); ok {
					v.keyRequired = on
				}
			}},
			{name: "admin_listen", def: "`{ip: 0.0.0.0, port: 9180}`", restart: true, decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				ip, port := "0.0.0.0", "9180"
				for _, f := range d.fields(kv.val, p) {
					switch f.key {
					case "ip":
						if s, ok := d.str(f.val, join(p, "ip")); ok {
							if _, err := netip.ParseAddr(s); err != nil {
								d.errorf(f.val, join(p, "ip"), "must be an IP address, got %q", s)
								continue
							}
							ip = s
						}
					case "port":
						if n, ok := d.intIn(f.val, join(p, "port"), 0, 65535); ok {
							port = strconv.Itoa(n)
						}
					default:
						d.unknownKey(f, p, "key", []string{"ip", "port"})
					}
				}
				v.Listen = net.JoinHostPort(ip, port)
			}},
			{name: "allow_admin", def: "`[127.0.0.0/24]`", decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				v.allowSet = true // an empty list lets every address in, as in APISIX
				v.Allow = d.prefixes(kv.val, p)
			}},
			{name: "https_admin", def: "`false`", restart: true, decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				v.https, _ = d.bool(kv.val, p)
			}},
			{name: "admin_api_mtls", def: "none", restart: true, decode: func(d *decoder, kv keyValue, p string, v *deploymentAdminFields) {
				v.mtlsNode = kv.val
				for _, f := range d.fields(kv.val, p) {
					switch f.key {
					case "admin_ssl_cert":
						v.cert, _ = d.str(f.val, join(p, f.key))
						v.certNode = f.val
					case "admin_ssl_cert_key":
						v.key, _ = d.str(f.val, join(p, f.key))
						v.keyNode = f.val
					case "admin_ssl_ca_cert":
						if s, _ := d.str(f.val, join(p, f.key)); s != "" {
							d.errorf(f.val, join(p, f.key), "client certificates for the Admin API are not supported: leave it out (the admin keys authenticate) or put the Admin API behind a proxy that checks them")
						}
					default:
						d.unknownKey(f, p, "key", []string{"admin_ssl_cert", "admin_ssl_cert_key", "admin_ssl_ca_cert"})
					}
				}
			}},
		},
		ignored: []string{"enable_admin_cors", "admin_api_version", "enable_admin_ui"},
	}
}
