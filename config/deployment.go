package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
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

var (
	deploymentRoles = []string{RoleTraditional, RoleDataPlane, RoleControlPlane}
)

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

func (d *decoder) deployment(kv keyValue) {
	if !d.setOnce("deployment", kv, kv.key) {
		return
	}
	dep := &Deployment{Role: RoleTraditional, File: d.file, Line: kv.keyNode.Line}
	df := deploymentFields{Deployment: dep, providers: map[string]*yaml.Node{}, providerOf: map[string]string{}}
	deploymentSection().decode(d, kv.val, "deployment", &df)
	providers, providerOf := df.providers, df.providerOf
	for role, n := range providers {
		if role != dep.Role {
			d.p.warnf(d.file, n.Line, "deployment.role_"+role, "not used: deployment.role is %s", dep.Role)
		}
	}
	dep.ConfigProvider = providerOf[dep.Role]
	if dep.ConfigProvider == "" {
		dep.ConfigProvider = ProviderYAML
		if dep.Etcd != nil {
			dep.ConfigProvider = ProviderEtcd
		}
	}
	at := kv.keyNode
	if n := providers[dep.Role]; n != nil {
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
		dep.Etcd.CacheFile = d.relative(cmp.Or(dep.Etcd.CacheFile, DefaultEtcdCacheFile))
	}
	d.b.deployment = dep
}

func (d *decoder) etcd(kv keyValue, path string) *Etcd {
	n := kv.val
	e := &Etcd{Prefix: DefaultEtcdPrefix, Timeout: DefaultEtcdTimeout, Line: kv.keyNode.Line}
	errs := len(d.p.errs)
	ef := etcdFields{Etcd: e}
	etcdSection().decode(d, n, path, &ef)
	userNode, passNode, hostNode := ef.userNode, ef.passNode, ef.hostNode
	// A host list whose every item was invalid is reported already.
	if len(e.Hosts) == 0 && (hostNode == nil || len(d.p.errs) == errs) {
		d.errorf(kv.keyNode, join(path, "host"), `required: a list of etcd client URLs, like ["http://127.0.0.1:2379"]`)
	}
	switch {
	case e.User != "" && e.Password == "":
		d.errorf(userNode, join(path, "password"), "required with user")
	case e.Password != "" && e.User == "":
		d.errorf(passNode, join(path, "user"), "required with password")
	}
	return e
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
	t := &EtcdTLS{Verify: true}
	tf := etcdTLSFields{EtcdTLS: t}
	etcdTLSSection().decode(d, n, path, &tf)
	certNode, keyNode := tf.certNode, tf.keyNode
	switch {
	case t.Cert != "" && t.Key == "":
		d.errorf(certNode, join(path, "key"), "required with cert")
	case t.Key != "" && t.Cert == "":
		d.errorf(keyNode, join(path, "cert"), "required with key")
	}
	return t
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

// deploymentFields is the deployment block while it decodes.
type deploymentFields struct {
	*Deployment
	providers  map[string]*yaml.Node // role -> its config_provider node
	providerOf map[string]string
}

// Every deployment key is read at start: the role, the provider, etcd.
func deploymentSection() section[deploymentFields] {
	type f = field[deploymentFields]
	roleField := func(role string) f {
		return f{name: "role_" + role, restart: true, sub: roleSection(role).reference(0).Keys,
			value: func(v *deploymentFields) any {
				if v.Role == role {
					return v.ConfigProvider
				}
				return nil
			},
			decode: func(d *decoder, kv keyValue, p string, v *deploymentFields) {
				rf := roleFields{deploymentFields: v, role: role}
				roleSection(role).decode(d, kv.val, p, &rf)
			}}
	}
	return section[deploymentFields]{
		name: "deployment",
		fields: []f{
			{name: "role", def: "`" + RoleTraditional + "`", restart: true, value: func(v *deploymentFields) any { return v.Role },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentFields) {
					if r, ok := d.oneOf(kv.val, p, deploymentRoles...); ok {
						v.Role = r
					}
				}},
			roleField(RoleTraditional),
			roleField(RoleDataPlane),
			roleField(RoleControlPlane),
			{name: "etcd", def: "none", restart: true, value: func(v *deploymentFields) any { return v.Etcd },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentFields) { v.Etcd = d.etcd(kv, p) }},
			{name: "admin", sub: deploymentAdminSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, _ *deploymentFields) {
				d.deploymentAdmin(kv, p)
			}},
			{name: "instance_name", def: "`<hostname>-<pid>`", restart: true, value: func(v *deploymentFields) any { return v.InstanceName },
				decode: func(d *decoder, kv keyValue, p string, v *deploymentFields) {
					if s, ok := d.str(kv.val, p); ok {
						if s == "" || strings.ContainsAny(s, "/ \t\n") {
							d.errorf(kv.val, p, "must be a non-empty name without '/' or spaces, got %q", s)
							return
						}
						v.InstanceName = s
					}
				}},
		},
		ignored: []string{"certs", "config_provider"},
	}
}

// roleFields is a deployment.role_<role> block while it decodes.
type roleFields struct {
	*deploymentFields
	role string
}

func roleSection(role string) section[roleFields] {
	return section[roleFields]{
		name: "deployment",
		fields: []field[roleFields]{
			{name: "config_provider", def: "`etcd` when `etcd` is set, else `yaml`", restart: true, decode: func(d *decoder, kv keyValue, p string, v *roleFields) {
				if s, ok := d.oneOf(kv.val, p, ProviderEtcd, ProviderYAML); ok {
					v.providers[v.role], v.providerOf[v.role] = kv.val, s
				}
			}},
		},
		ignored: []string{"conf_server", "control_plane", "certs"},
	}
}

// etcdFields is deployment.etcd while it decodes.
type etcdFields struct {
	*Etcd
	userNode, passNode, hostNode *yaml.Node
}

func etcdSection() section[etcdFields] {
	type f = field[etcdFields]
	return section[etcdFields]{
		name: "deployment",
		fields: []f{
			{name: "host", def: "required", restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				e.hostNode = kv.val
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
					if slices.Contains(e.Hosts, s) {
						d.errorf(item, ip, "duplicate host %q", s)
						continue
					}
					e.Hosts = append(e.Hosts, s)
				}
			}},
			{name: "prefix", def: "`" + DefaultEtcdPrefix + "`", restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				if s, ok := d.str(kv.val, p); ok {
					s = strings.TrimRight(s, "/")
					if !strings.HasPrefix(s, "/") {
						d.errorf(kv.val, p, `must start with "/", like "/apisix", got %q`, s)
						return
					}
					e.Prefix = s
				}
			}},
			{name: "timeout", def: fmt.Sprintf("`%d` (APISIX's)", int(DefaultEtcdTimeout.Seconds())), restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				if v, ok := d.duration(kv.val, p); ok {
					if v == 0 {
						d.errorf(kv.val, p, "must be greater than 0")
						return
					}
					e.Timeout = v
				}
			}},
			{name: "user", def: "none", restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				e.User, _ = d.str(kv.val, p)
				e.userNode = kv.val
			}},
			{name: "password", def: "none", restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				e.Password, _ = d.str(kv.val, p)
				e.passNode = kv.val
			}},
			{name: "tls", restart: true, sub: etcdTLSSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				e.TLS = d.etcdTLS(kv.val, p)
			}},
			{name: "cache_file", def: "`" + DefaultEtcdCacheFile + "`", restart: true, decode: func(d *decoder, kv keyValue, p string, e *etcdFields) {
				if s, ok := d.str(kv.val, p); ok {
					if s == "" {
						d.errorf(kv.val, p, "must not be empty")
						return
					}
					e.CacheFile = s
				}
			}},
		},
		ignored: []string{"resync_delay", "health_check_timeout", "startup_retry", "watch_timeout", "use_grpc"},
	}
}

// etcdTLSFields is deployment.etcd.tls while it decodes.
type etcdTLSFields struct {
	*EtcdTLS
	certNode, keyNode *yaml.Node
}

func etcdTLSSection() section[etcdTLSFields] {
	type f = field[etcdTLSFields]
	file := func(set func(t *etcdTLSFields, path string, n *yaml.Node)) func(d *decoder, kv keyValue, p string, t *etcdTLSFields) {
		return func(d *decoder, kv keyValue, p string, t *etcdTLSFields) {
			s, ok := d.str(kv.val, p)
			if !ok {
				return
			}
			// As every path a file names: relative to its directory, not
			// to where mqgate was started.
			s = d.relative(s)
			if _, err := os.Stat(s); err != nil {
				d.errorf(kv.val, p, "cannot read %q: %v", s, unwrapPathError(err))
				return
			}
			set(t, s, kv.val)
		}
	}
	return section[etcdTLSFields]{
		name: "deployment",
		fields: []f{
			{name: "cert", def: "none", restart: true, decode: file(func(t *etcdTLSFields, s string, n *yaml.Node) { t.Cert, t.certNode = s, n })},
			{name: "key", def: "none", restart: true, decode: file(func(t *etcdTLSFields, s string, n *yaml.Node) { t.Key, t.keyNode = s, n })},
			{name: "ca", def: "system roots", restart: true, decode: file(func(t *etcdTLSFields, s string, _ *yaml.Node) { t.CA = s })},
			{name: "verify", def: "`true`", restart: true, decode: func(d *decoder, kv keyValue, p string, t *etcdTLSFields) {
				if v, ok := d.bool(kv.val, p); ok {
					t.Verify = v
				}
			}},
			{name: "sni", def: "the host's name", restart: true, decode: func(d *decoder, kv keyValue, p string, t *etcdTLSFields) {
				t.SNI, _ = d.str(kv.val, p)
			}},
		},
	}
}
