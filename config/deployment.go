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

var (
	deploymentKeys        = []string{"role", "role_traditional", "role_data_plane", "role_control_plane", "etcd", "instance_name"}
	ignoredDeploymentKeys = []string{"admin", "certs", "config_provider"}
	roleKeys              = []string{"config_provider"}
	ignoredRoleKeys       = []string{"conf_server", "control_plane", "certs"}
	etcdKeys              = []string{"host", "prefix", "timeout", "user", "password", "tls", "cache_file"}
	ignoredEtcdKeys       = []string{"resync_delay", "health_check_timeout", "startup_retry", "watch_timeout", "use_grpc"}
	etcdTLSKeys           = []string{"cert", "key", "verify", "ca", "sni"}
	deploymentRoles       = []string{RoleTraditional, RoleDataPlane, RoleControlPlane}
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
	providers := map[string]*yaml.Node{} // role -> its config_provider node
	providerOf := map[string]string{}
	for _, f := range d.fields(kv.val, "deployment") {
		p := join("deployment", f.key)
		switch f.key {
		case "role":
			if v, ok := d.oneOf(f.val, p, deploymentRoles...); ok {
				dep.Role = v
			}
		case "role_traditional", "role_data_plane", "role_control_plane":
			for _, rf := range d.fields(f.val, p) {
				rp := join(p, rf.key)
				if rf.key != "config_provider" {
					d.ignoreOrUnknown(rf, p, roleKeys, ignoredRoleKeys)
					continue
				}
				if v, ok := d.oneOf(rf.val, rp, ProviderEtcd, ProviderYAML); ok {
					role := strings.TrimPrefix(f.key, "role_")
					providers[role], providerOf[role] = rf.val, v
				}
			}
		case "etcd":
			dep.Etcd = d.etcd(f, p)
		case "instance_name":
			if v, ok := d.str(f.val, p); ok {
				if v == "" || strings.ContainsAny(v, "/ \t\n") {
					d.errorf(f.val, p, "must be a non-empty name without '/' or spaces, got %q", v)
					continue
				}
				dep.InstanceName = v
			}
		default:
			d.ignoreOrUnknown(f, "deployment", deploymentKeys, ignoredDeploymentKeys)
		}
	}
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
		dep.Etcd.CacheFile = cmp.Or(dep.Etcd.CacheFile, DefaultEtcdCacheFile)
		if !filepath.IsAbs(dep.Etcd.CacheFile) {
			dep.Etcd.CacheFile = filepath.Join(filepath.Dir(d.file), dep.Etcd.CacheFile)
		}
	}
	d.b.deployment = dep
}

func (d *decoder) etcd(kv keyValue, path string) *Etcd {
	n := kv.val
	e := &Etcd{Prefix: DefaultEtcdPrefix, Timeout: DefaultEtcdTimeout, Line: kv.keyNode.Line}
	var userNode, passNode, hostNode *yaml.Node
	errs := len(d.p.errs)
	for _, f := range d.fields(n, path) {
		p := join(path, f.key)
		switch f.key {
		case "host":
			hostNode = f.val
			items := []*yaml.Node{f.val} // one host may be written as a string
			if f.val.Kind != yaml.ScalarNode || isNull(f.val) {
				items = d.items(f.val, p)
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
		case "prefix":
			if s, ok := d.str(f.val, p); ok {
				s = strings.TrimRight(s, "/")
				if !strings.HasPrefix(s, "/") {
					d.errorf(f.val, p, `must start with "/", like "/apisix", got %q`, s)
					continue
				}
				e.Prefix = s
			}
		case "timeout":
			if v, ok := d.duration(f.val, p); ok {
				if v == 0 {
					d.errorf(f.val, p, "must be greater than 0")
					continue
				}
				e.Timeout = v
			}
		case "user":
			e.User, _ = d.str(f.val, p)
			userNode = f.val
		case "password":
			e.Password, _ = d.str(f.val, p)
			passNode = f.val
		case "tls":
			e.TLS = d.etcdTLS(f.val, p)
		case "cache_file":
			if s, ok := d.str(f.val, p); ok {
				if s == "" {
					d.errorf(f.val, p, "must not be empty")
					continue
				}
				e.CacheFile = s
			}
		default:
			d.ignoreOrUnknown(f, path, etcdKeys, ignoredEtcdKeys)
		}
	}
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
	var certNode, keyNode *yaml.Node
	for _, f := range d.fields(n, path) {
		p := join(path, f.key)
		switch f.key {
		case "cert", "key", "ca":
			s, ok := d.str(f.val, p)
			if !ok {
				continue
			}
			if _, err := os.Stat(s); err != nil {
				d.errorf(f.val, p, "cannot read %q: %v", s, unwrapPathError(err))
				continue
			}
			switch f.key {
			case "cert":
				t.Cert, certNode = s, f.val
			case "key":
				t.Key, keyNode = s, f.val
			default:
				t.CA = s
			}
		case "verify":
			if v, ok := d.bool(f.val, p); ok {
				t.Verify = v
			}
		case "sni":
			t.SNI, _ = d.str(f.val, p)
		default:
			d.unknownKey(f, path, "key", etcdTLSKeys)
		}
	}
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
