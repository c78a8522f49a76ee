package config

import (
	"cmp"
	"crypto/tls"
	"net/netip"
	"os"
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
