package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Deployment roles (deployment.role), as APISIX names them.
const (
	RoleTraditional  = "traditional"   // serves traffic and the Admin API
	RoleDataPlane    = "data_plane"    // serves traffic; no Admin API writes
	RoleControlPlane = "control_plane" // Admin API only, writing to etcd; no traffic
)

// Configuration providers (deployment.role_<role>.config_provider).
const (
	ProviderYAML = "yaml" // the files (and the Admin API's state file)
	ProviderEtcd = "etcd" // stream routes, upstreams and ssls live in etcd
)

// Defaults of deployment.etcd.
const (
	DefaultEtcdPrefix    = "/apisix"
	DefaultEtcdTimeout   = 30 * time.Second         // APISIX's default
	DefaultEtcdCacheFile = "mqgate-etcd-cache.json" // next to the file that declares deployment
)

var deploymentRoles = []string{RoleTraditional, RoleDataPlane, RoleControlPlane}

// Deployment is APISIX's deployment block: the instance's role and where
// its configuration comes from. Config.Deployment is never nil after Parse;
// without a deployment block it is a traditional instance reading files.
type Deployment struct {
	Role           string // RoleTraditional (default), RoleDataPlane or RoleControlPlane
	ConfigProvider string // ProviderYAML or ProviderEtcd; default etcd when deployment.etcd is set
	InstanceName   string // the name in the fleet; empty: Name's default
	Etcd           *Etcd  // nil without deployment.etcd
	File           string
	Line           int
}

// Name is the instance's name in the fleet: instance_name, or
// "<hostname>-<pid>", which differs between instances on one host.
func (d *Deployment) Name() string {
	if d != nil && d.InstanceName != "" {
		return d.InstanceName
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", cmp.Or(host, "mqgate"), os.Getpid())
}

// UsesEtcd reports whether stream routes, upstreams and ssls come from etcd.
func (d *Deployment) UsesEtcd() bool { return d != nil && d.ConfigProvider == ProviderEtcd }

// AdminWrites reports whether this role's Admin API may change objects:
// a data plane only reads what the control plane wrote.
func (d *Deployment) AdminWrites() bool { return d == nil || d.Role != RoleDataPlane }

// ServesTraffic reports whether the role opens the stream_proxy listeners.
func (d *Deployment) ServesTraffic() bool { return d == nil || d.Role != RoleControlPlane }

// Etcd is deployment.etcd: the etcd cluster and the key prefix of APISIX's
// layout (<prefix>/stream_routes/<id>, <prefix>/upstreams/<id>, ...).
type Etcd struct {
	Hosts     []string      // client URLs, "http://127.0.0.1:2379" or "https://..."
	Prefix    string        // default /apisix; no trailing slash
	Timeout   time.Duration // each request to etcd; default 30s
	User      string        // etcd authentication; empty = none
	Password  string
	TLS       *EtcdTLS // nil: plain connections unless a host is https
	CacheFile string   // the last good objects from etcd, read at a start while etcd is down
	Line      int
}

// EtcdTLS is deployment.etcd.tls.
type EtcdTLS struct {
	Cert, Key string // client certificate and key (PEM files); both or neither
	CA        string // PEM file of the CAs that sign etcd's certificate; empty = system roots
	Verify    bool   // verify etcd's certificate; default true
	SNI       string // server name to verify and send; default the host's
}

// DeploymentSettings returns the deployment block, or the defaults of an
// instance without one.
func (c *Config) DeploymentSettings() *Deployment {
	if c.Deployment != nil {
		return c.Deployment
	}
	return &Deployment{Role: RoleTraditional, ConfigProvider: ProviderYAML}
}

// deploymentDecl is the deployment block while it decodes.
type deploymentDecl struct {
	Deployment
	providers  map[string]*yaml.Node // role -> its config_provider node
	providerOf map[string]string
}

// roleDecl is one role_<role> block while it decodes.
type roleDecl struct {
	provider string
	node     *yaml.Node
}

// Every deployment key is read at start (RestartOnlyChanges compares the
// block as a whole), so the tables mark them all restart.
func deploymentSection() section[deploymentDecl] {
	role := func(name string) field[deploymentDecl] {
		return field[deploymentDecl]{name: name, restart: true, value: func(v *deploymentDecl) any { return v.providerOf[strings.TrimPrefix(name, "role_")] },
			sub: roleSection().keys(),
			decode: func(d *decoder, kv keyValue, p string, v *deploymentDecl) {
				var r roleDecl
				roleSection().decode(d, kv.val, p, &r)
				if r.node != nil {
					role := strings.TrimPrefix(name, "role_")
					v.providers[role], v.providerOf[role] = r.node, r.provider
				}
			}}
	}
	return section[deploymentDecl]{
		name: "deployment",
		fields: []field[deploymentDecl]{
			{name: "role", def: "`" + RoleTraditional + "`", restart: true, value: func(v *deploymentDecl) any { return v.Role },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentDecl) {
					if s, ok := d.oneOf(kv.val, p, deploymentRoles...); ok {
						v.Role = s
					}
				}},
			role("role_traditional"), role("role_data_plane"), role("role_control_plane"),
			{name: "etcd", def: "none", restart: true, value: func(v *deploymentDecl) any { return v.Etcd },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentDecl) { v.Etcd = d.etcd(kv, p) }},
			{name: "instance_name", def: "`<hostname>-<pid>`", restart: true, value: func(v *deploymentDecl) any { return v.InstanceName },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentDecl) {
					if s, ok := d.str(kv.val, p); ok {
						if s == "" || strings.ContainsAny(s, "/ \t\n") {
							d.errorf(kv.val, p, "must be a non-empty name without '/' or spaces, got %q", s)
							return
						}
						v.InstanceName = s
					}
				}},
		},
		ignored: []string{"admin", "certs", "config_provider"},
	}
}

func roleSection() section[roleDecl] {
	return section[roleDecl]{
		name: "deployment",
		fields: []field[roleDecl]{
			{name: "config_provider", def: "`etcd` when `etcd` is set, else `yaml`", restart: true, value: func(v *roleDecl) any { return v.provider },
				decode: func(d *decoder, kv keyValue, p string, v *roleDecl) {
					if s, ok := d.oneOf(kv.val, p, ProviderEtcd, ProviderYAML); ok {
						v.provider, v.node = s, kv.val
					}
				}},
		},
		ignored: []string{"conf_server", "control_plane", "certs"},
	}
}

// etcdDecl is deployment.etcd while it decodes.
type etcdDecl struct {
	Etcd
	hostNode, userNode, passNode *yaml.Node
}

func etcdSection() section[etcdDecl] {
	return section[etcdDecl]{
		name: "deployment",
		fields: []field[etcdDecl]{
			{name: "host", def: "required", restart: true, value: func(v *etcdDecl) any { return v.Hosts },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					v.hostNode = kv.val
					items := []*yaml.Node{kv.val} // one host may be written as a string
					if kv.val.Kind != yaml.ScalarNode || isNull(kv.val) {
						items = d.items(kv.val, p)
					}
					for i, item := range items {
						ip := index(p, i)
						s, ok := d.str(item, ip)
						if !ok {
							continue
						}
						if msg := checkEtcdHost(s); msg != "" {
							d.errorf(item, ip, "%s", msg)
							continue
						}
						if slices.Contains(v.Hosts, s) {
							d.errorf(item, ip, "duplicate host %q", s)
							continue
						}
						v.Hosts = append(v.Hosts, s)
					}
				}},
			{name: "prefix", def: "`" + DefaultEtcdPrefix + "`", restart: true, value: func(v *etcdDecl) any { return v.Prefix },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					if s, ok := d.str(kv.val, p); ok {
						s = strings.TrimRight(s, "/")
						if !strings.HasPrefix(s, "/") {
							d.errorf(kv.val, p, `must start with "/", like "/apisix", got %q`, s)
							return
						}
						v.Prefix = s
					}
				}},
			{name: "timeout", def: "`30` (APISIX's)", restart: true, value: func(v *etcdDecl) any { return v.Timeout },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					if t, ok := d.duration(kv.val, p); ok {
						if t == 0 {
							d.errorf(kv.val, p, "must be greater than 0")
							return
						}
						v.Timeout = t
					}
				}},
			{name: "user", def: "none", restart: true, value: func(v *etcdDecl) any { return v.User },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					v.User, _ = d.str(kv.val, p)
					v.userNode = kv.val
				}},
			{name: "password", def: "none", restart: true, value: func(v *etcdDecl) any { return v.Password },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					v.Password, _ = d.str(kv.val, p)
					v.passNode = kv.val
				}},
			{name: "tls", restart: true, value: func(v *etcdDecl) any { return v.TLS }, sub: etcdTLSSection().keys(),
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) { v.TLS = d.etcdTLS(kv.val, p) }},
			{name: "cache_file", def: "`" + DefaultEtcdCacheFile + "`", restart: true, value: func(v *etcdDecl) any { return v.CacheFile },
				decode: func(d *decoder, kv keyValue, p string, v *etcdDecl) {
					if s, ok := d.str(kv.val, p); ok {
						if s == "" {
							d.errorf(kv.val, p, "must not be empty")
							return
						}
						v.CacheFile = s
					}
				}},
		},
		ignored: []string{"resync_delay", "health_check_timeout", "startup_retry", "watch_timeout", "use_grpc"},
	}
}

// etcdTLSDecl is deployment.etcd.tls while it decodes.
type etcdTLSDecl struct {
	EtcdTLS
	certNode, keyNode *yaml.Node
}

func etcdTLSSection() section[etcdTLSDecl] {
	file := func(name, def string, set func(v *etcdTLSDecl, s string, n *yaml.Node)) field[etcdTLSDecl] {
		return field[etcdTLSDecl]{name: name, def: def, restart: true,
			decode: func(d *decoder, kv keyValue, p string, v *etcdTLSDecl) {
				s, ok := d.str(kv.val, p)
				if !ok {
					return
				}
				if _, err := os.Stat(s); err != nil {
					d.errorf(kv.val, p, "cannot read %q: %v", s, unwrapPathError(err))
					return
				}
				set(v, s, kv.val)
			}}
	}
	return section[etcdTLSDecl]{
		name: "deployment",
		fields: []field[etcdTLSDecl]{
			file("cert", "none", func(v *etcdTLSDecl, s string, n *yaml.Node) { v.Cert, v.certNode = s, n }),
			file("key", "none", func(v *etcdTLSDecl, s string, n *yaml.Node) { v.Key, v.keyNode = s, n }),
			file("ca", "system roots", func(v *etcdTLSDecl, s string, _ *yaml.Node) { v.CA = s }),
			{name: "verify", def: "`true`", restart: true, decode: func(d *decoder, kv keyValue, p string, v *etcdTLSDecl) {
				if b, ok := d.bool(kv.val, p); ok {
					v.Verify = b
				}
			}},
			{name: "sni", def: "the host's name", restart: true, decode: func(d *decoder, kv keyValue, p string, v *etcdTLSDecl) {
				v.SNI, _ = d.str(kv.val, p)
			}},
		},
	}
}

// keys documents a sub-table as the README lists it under its parent key.
func (s section[T]) keys() []RefKey {
	var out []RefKey
	for _, f := range s.fields {
		out = append(out, RefKey{Name: f.name, Default: f.def, Restart: f.restart})
	}
	return out
}

func (d *decoder) deployment(kv keyValue) {
	if !d.setOnce("deployment", kv, kv.key) {
		return
	}
	v := &deploymentDecl{Deployment: Deployment{Role: RoleTraditional, File: d.file, Line: kv.keyNode.Line},
		providers: map[string]*yaml.Node{}, providerOf: map[string]string{}}
	deploymentSection().decode(d, kv.val, "deployment", v)
	dep := &v.Deployment
	for role, n := range v.providers {
		if role != dep.Role {
			d.p.warnf(d.file, n.Line, "deployment.role_"+role, "not used: deployment.role is %s", dep.Role)
		}
	}
	dep.ConfigProvider = v.providerOf[dep.Role]
	if dep.ConfigProvider == "" {
		dep.ConfigProvider = ProviderYAML
		if dep.Etcd != nil {
			dep.ConfigProvider = ProviderEtcd
		}
	}
	at := kv.keyNode
	if n := v.providers[dep.Role]; n != nil {
		at = n
	}
	switch {
	case dep.Role == RoleControlPlane && dep.ConfigProvider != ProviderEtcd:
		d.errorf(at, "deployment.role_control_plane.config_provider", "a control_plane writes to etcd: must be etcd")
	case dep.ConfigProvider == ProviderEtcd && dep.Etcd == nil:
		d.errorf(at, "deployment.etcd", "required: config_provider is etcd (set deployment.etcd.host)")
	}
	if dep.Etcd != nil {
		// A relative cache file lives next to the file that declares it.
		dep.Etcd.CacheFile = cmp.Or(dep.Etcd.CacheFile, DefaultEtcdCacheFile)
		if !filepath.IsAbs(dep.Etcd.CacheFile) {
			dep.Etcd.CacheFile = filepath.Join(filepath.Dir(d.file), dep.Etcd.CacheFile)
		}
	}
	d.b.deployment = dep
}

func (d *decoder) etcd(kv keyValue, path string) *Etcd {
	v := &etcdDecl{Etcd: Etcd{Prefix: DefaultEtcdPrefix, Timeout: DefaultEtcdTimeout, Line: kv.keyNode.Line}}
	errs := len(d.p.errs)
	etcdSection().decode(d, kv.val, path, v)
	// A host list whose every item was invalid is reported already.
	if len(v.Hosts) == 0 && (v.hostNode == nil || len(d.p.errs) == errs) {
		d.errorf(kv.keyNode, join(path, "host"), `required: a list of etcd client URLs, like ["http://127.0.0.1:2379"]`)
	}
	switch {
	case v.User != "" && v.Password == "":
		d.errorf(v.userNode, join(path, "password"), "required with user")
	case v.Password != "" && v.User == "":
		d.errorf(v.passNode, join(path, "user"), "required with password")
	}
	e := v.Etcd
	return &e
}

// checkEtcdHost accepts APISIX's "http://host:port" and "https://host:port".
func checkEtcdHost(s string) string {
	const usage = `must be a URL like "http://127.0.0.1:2379" or "https://etcd.example:2379"`
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Sprintf("%s, got %q", usage, s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Sprintf("scheme must be http or https, got %q", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return fmt.Sprintf("%s (no path, query or user), got %q", usage, s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return fmt.Sprintf("needs a port: %s, got %q", usage, s)
	}
	return ""
}

func (d *decoder) etcdTLS(n *yaml.Node, path string) *EtcdTLS {
	v := &etcdTLSDecl{EtcdTLS: EtcdTLS{Verify: true}}
	etcdTLSSection().decode(d, n, path, v)
	switch {
	case v.Cert != "" && v.Key == "":
		d.errorf(v.certNode, join(path, "key"), "required with cert")
	case v.Key != "" && v.Cert == "":
		d.errorf(v.keyNode, join(path, "cert"), "required with key")
	}
	t := v.EtcdTLS
	return &t
}

func unwrapPathError(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// checkDeployment checks what the role needs of the other sections.
func (b *builder) checkDeployment() {
	dep := b.deployment
	if dep == nil {
		return
	}
	if dep.Role == RoleControlPlane && b.admin == nil {
		b.p.errorf(dep.File, dep.Line, "deployment.role", "a control_plane serves only the Admin API: add an admin block")
	}
}
