package config

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults for settings a file leaves out.
const (
	DefaultConnectTimeout  = 10 * time.Second
	DefaultMaxConnectSize  = 65536
	DefaultUpstreamConnect = 5 * time.Second
	DefaultUpstreamConnack = 5 * time.Second // timeout.connack
	DefaultLogLevel        = "info"
	DefaultAccessLog       = "stdout"

	// MaxConnectSizeLimit is the largest MQTT packet the protocol can encode.
	MaxConnectSizeLimit = 268435455
	minConnectSize      = 64
)

var logLevels = []string{"debug", "info", "warn", "error"}

// Load reads, merges and validates the files in order. Lists (stream_routes,
// upstreams, ssls, stream_proxy.tcp) are concatenated across files; a scalar
// section (log, stream_proxy settings other than tcp) set in two files is an
// error naming both places. It returns every problem found as an ErrorList.
func Load(paths ...string) (*Config, error) {
	docs, readErr := readDocuments(paths)
	return parse(paths, docs, readErr)
}

// Parse is Load for in-memory documents; Document.Name is used in messages.
func Parse(docs ...Document) (*Config, error) {
	names := make([]string, len(docs))
	for i, doc := range docs {
		names[i] = doc.Name
	}
	return parse(names, docs, nil)
}

func parse(names []string, docs []Document, readErr []*Error) (*Config, error) {
	p := newProblems(names)
	p.errs = append(p.errs, readErr...)
	b := newBuilder(p)
	for _, doc := range docs {
		b.addDocument(doc)
	}
	cfg := b.finish()
	cfg.Files = names
	if len(p.errs) > 0 {
		return nil, ErrorList(p.sorted(p.errs))
	}
	cfg.Warnings = p.sorted(p.warnings)
	cfg.Ignored = p.ignored
	return cfg, nil
}

// builder accumulates the declarations of all documents; finish merges and
// cross-checks them.
type builder struct {
	p           *problems
	setAt       map[string]location // where each once-only setting was first set
	streamProxy StreamProxy
	log         Log
	listeners   []listenerDecl
	tcpSet      bool // stream_proxy.tcp had items, even if all were invalid
	syntaxError bool // a document was not YAML: what it lacks is no news
	routes      []routeDecl
	upstreams   []upstreamDecl
	admin       *Admin
	reload      *Reload
	rebalance   *Rebalance
	deployment  *Deployment
	ssls        []sslDecl

	httpListeners []listenerDecl  // node_listen, ssl.listen
	httpRoutes    []httpRouteDecl // routes
	// httpDefault is where apisix.stream_proxy.only: false was set: APISIX
	// then serves HTTP on its default node_listen, 9080.
	httpDefault *location
	sslGlobal   sslGlobal // apisix.ssl's settings for every ssls entry
	// deploymentAdmin is the Admin API deployment.admin describes, and
	// enableAdmin apisix.enable_admin (nil when not set).
	deploymentAdmin *Admin
	enableAdmin     *bool
}

type location struct {
	file string
	line int
}

func newBuilder(p *problems) *builder {
	return &builder{
		p:     p,
		setAt: make(map[string]location),
		streamProxy: StreamProxy{
			ConnectTimeout: DefaultConnectTimeout,
			MaxConnectSize: DefaultMaxConnectSize,
			DataPath:       DataPathEpoll,
		},
		log: Log{Level: DefaultLogLevel, AccessLog: DefaultAccessLog},
	}
}

// yamlLineError matches yaml.v3 syntax errors, which carry the line in text.
var yamlLineError = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

func (b *builder) addDocument(doc Document) {
	d := &decoder{file: doc.Name, p: b.p, b: b, overlay: doc.Overlay, apisixShaped: apisixEnd.Match(doc.Data)}
	dec := yaml.NewDecoder(bytes.NewReader(doc.Data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if err != io.EOF {
			d.yamlError(err, doc.Data)
		}
		return // an empty document configures nothing
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		d.errorf(&extra, "", "only one YAML document per file is supported; split it into files")
	case err != io.EOF:
		d.yamlError(err, doc.Data)
	}
	if len(root.Content) == 1 {
		d.document(root.Content[0])
	}
}

func (d *decoder) yamlError(err error, data []byte) {
	d.b.syntaxError = true
	if m := yamlLineError.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		d.p.errorf(d.file, problemLine(data, err.Error(), line), "", "invalid YAML: %s", m[2])
		return
	}
	d.p.errorf(d.file, 0, "", "invalid YAML: %v", err)
}

// maxProblemScan bounds the documents problemLine searches: it parses the
// document once per line.
const maxProblemScan = 5000

// problemLine finds the line a YAML syntax error is on. yaml.v3 names the
// line where the construct around the problem began (the block mapping, the
// "["), and for parser errors counts it from 0, so an unclosed "[" on line 2
// is "line 1" and a bad indent on line 9 "line 6". The problem is on that
// line or after it: it is on the first line from there whose prefix of the
// document fails with the very same error.
func problemLine(data []byte, msg string, reported int) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > maxProblemScan {
		return max(reported, 1)
	}
	end := 0
	for k, l := range lines {
		end += len(l)
		if k+1 < reported {
			continue
		}
		if err := firstYAMLError(data[:end]); err != nil && err.Error() == msg {
			return k + 1
		}
	}
	return max(reported, 1)
}

// firstYAMLError decodes up to two documents as addDocument does and returns
// the first syntax error.
func firstYAMLError(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range 2 {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
	return nil
}

// apisixEnd matches the `#END` line APISIX's standalone apisix.yaml ends with.
var apisixEnd = regexp.MustCompile(`(?m)^#END\s*$`)

// document decodes the top level of one file.
func (d *decoder) document(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i].Value; k == "apisix" || k == "deployment" {
				d.apisixShaped = true
			}
		}
	}
	top := topLevelSection()
	for _, kv := range d.fields(n, "") {
		if d.overlay && !overlayKeys[kv.key] {
			d.errorf(kv.keyNode, kv.key, "not allowed in Admin API state (only stream_routes, upstreams, ssls and routes)")
			continue
		}
		top.decodeKey(d, kv, "", nil)
	}
}

// topLevel is a whole configuration as the top level's field table sees
// it. Its decoders fill the builder (files merge there before a Config
// exists); a reload compares two Configs through it.
type topLevel struct{ *Config }

func topLevelSection() section[topLevel] {
	type f = field[topLevel]
	list := func(add func(d *decoder, item *yaml.Node, path string)) func(d *decoder, kv keyValue, p string, _ *topLevel) {
		return func(d *decoder, kv keyValue, p string, _ *topLevel) {
			for i, item := range d.items(kv.val, p) {
				add(d, item, index(p, i))
			}
		}
	}
	return section[topLevel]{
		name: "Top level",
		fields: []f{
			{name: "apisix", def: "—", decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.apisix(kv.val) }},
			{name: "stream_proxy", def: "—", decode: func(d *decoder, kv keyValue, p string, _ *topLevel) { d.streamProxy(kv.val, p) }},
			{name: "log", def: "see below", decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.log(kv) },
				diff: func(p string, a, b *topLevel) []string { return logSection().changed(p, &a.Log, &b.Log) }},
			{name: "stream_routes", def: "none", decode: list(func(d *decoder, item *yaml.Node, p string) {
				d.b.routes = append(d.b.routes, d.route(item, p))
			})},
			{name: "upstreams", def: "none", decode: list(func(d *decoder, item *yaml.Node, p string) {
				d.b.upstreams = append(d.b.upstreams, d.upstream(item, p, false))
			})},
			{name: "ssls", def: "none", decode: list(func(d *decoder, item *yaml.Node, p string) {
				d.b.ssls = append(d.b.ssls, d.ssl(item, p))
			})},
			// The Admin API listens from the start or not at all; the keys
			// of a block that stays say for themselves.
			{name: "admin", def: "none: the Admin API is off", restart: true,
				value:  func(v *topLevel) any { return v.Admin != nil },
				decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.admin(kv) },
				diff: func(p string, a, b *topLevel) []string {
					if a.Admin == nil || b.Admin == nil {
						return nil
					}
					return adminSection().changed(p, &adminDecl{Admin: *a.Admin}, &adminDecl{Admin: *b.Admin})
				}},
			{name: "reload", def: "see below", decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.reload(kv) }},
			{name: "rebalance", def: "see below", decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.rebalance(kv) }},
			// Every deployment key is read at start: the role, the provider,
			// etcd; its table names them.
			{name: "deployment", def: "traditional, reading the files", restart: true,
				decode: func(d *decoder, kv keyValue, _ string, _ *topLevel) { d.deployment(kv) },
				diff: func(p string, a, b *topLevel) []string {
					return deploymentSection().changed(p,
						&deploymentFields{Deployment: a.DeploymentSettings()}, &deploymentFields{Deployment: b.DeploymentSettings()})
				}},
			{name: "routes", def: "none", decode: list(func(d *decoder, item *yaml.Node, p string) {
				d.b.httpRoutes = append(d.b.httpRoutes, d.httpRoute(item, p))
			})},
			{name: "node_listen", def: "none", decode: func(d *decoder, kv keyValue, p string, _ *topLevel) { d.nodeListen(kv.val, p, false) }},
		},
		// APISIX sections of config.yaml and apisix.yaml that mqgate
		// accepts so users can bring their files, but does not use.
		ignored: []string{
			"nginx_config", "plugins", "stream_plugins", "plugin_attr", "discovery",
			"graphql", "ext-plugin", "wasm", "etcd",
			"services", "consumers", "plugin_configs", "global_rules", "protos",
			"plugin_metadata", "consumer_groups", "secrets",
		},
	}
}

// apisix decodes APISIX's config.yaml section: only stream_proxy,
// node_listen and ssl.listen matter to mqgate; everything else there is
// APISIX's own business.
func (d *decoder) apisix(n *yaml.Node) {
	apisixSection().decode(d, n, "apisix", nil)
}

func apisixSection() section[struct{}] {
	type f = field[struct{}]
	return section[struct{}]{
		name: "apisix",
		fields: []f{
			{name: "stream_proxy", decode: func(d *decoder, kv keyValue, p string, _ *struct{}) { d.streamProxy(kv.val, p) }},
			{name: "node_listen", decode: func(d *decoder, kv keyValue, p string, _ *struct{}) { d.nodeListen(kv.val, p, false) }},
			{name: "ssl", decode: func(d *decoder, kv keyValue, p string, _ *struct{}) { d.apisixSSL(kv.val, p) }},
			{name: "enable_admin", decode: func(d *decoder, kv keyValue, p string, _ *struct{}) {
				// Only deployment.admin heeds it (mqgate's admin block does
				// not), so it is still listed as ignored.
				if on, ok := d.bool(kv.val, p); ok {
					d.b.enableAdmin = &on
				}
				d.ignore(kv.keyNode, p)
			}},
		},
		open: true,
	}
}

func (d *decoder) streamProxy(n *yaml.Node, path string) {
	streamProxySection().decode(d, n, path, &d.b.streamProxy)
}

// setOnce records that the setting name is set by kv and reports false with
// an error naming both places when an earlier file (or key) already set it.
// Null values set nothing.
func (d *decoder) setOnce(name string, kv keyValue, path string) bool {
	if isNull(kv.val) {
		return false
	}
	if first, ok := d.b.setAt[name]; ok {
		d.errorf(kv.keyNode, path, "already set at %s:%d; set it in one place only", first.file, first.line)
		return false
	}
	d.b.setAt[name] = location{file: d.file, line: kv.keyNode.Line}
	return true
}

func (d *decoder) log(kv keyValue) {
	if !d.setOnce("log", kv, kv.key) {
		return
	}
	logSection().decode(d, kv.val, "log", &d.b.log)
}

// accessLog reads stdout, stderr, off or a path; a YAML false means off.
func (d *decoder) accessLog(n *yaml.Node, path string, l *Log) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		if on, ok := d.bool(n, path); ok && !on {
			l.AccessLog = "off"
			return
		}
		d.errorf(n, path, `must be "stdout", "stderr", "off" or a file path, got %s`, describe(n))
		return
	}
	if v, ok := d.str(n, path); ok {
		if v == "" {
			d.errorf(n, path, `must not be empty; use "off" to disable the access log`)
			return
		}
		l.AccessLog = v
	}
}

// finish merges what all documents declared, checks references across
// files and returns the configuration (meaningful only without errors).
func (b *builder) finish() *Config {
	b.resolveDeploymentAdmin()
	cfg := &Config{StreamProxy: b.streamProxy, Log: b.log, Admin: b.admin, Reload: b.reload, Rebalance: b.rebalance, Deployment: b.deployment}
	b.checkDeployment()
	b.defaultHTTPListener()
	b.mergeHTTPListeners()
	b.checkListeners()
	b.nameRoutes()
	b.applyOverlay()
	for _, l := range b.listeners {
		if b.deployment != nil && !b.deployment.ServesTraffic() {
			break // a control plane opens no listener (checkListeners warned)
		}
		cfg.StreamProxy.TCP = append(cfg.StreamProxy.TCP, l.Listener)
	}
	b.checkRoutes()
	for _, r := range b.routes {
		cfg.StreamRoutes = append(cfg.StreamRoutes, r.StreamRoute)
	}
	for _, u := range b.upstreams {
		cfg.Upstreams = append(cfg.Upstreams, u.Upstream)
	}
	b.checkHTTPRoutes(cfg)
	b.checkSSLs()
	b.applySSLGlobal()
	for _, s := range b.ssls {
		if !s.disabled {
			cfg.SSLs = append(cfg.SSLs, s.SSL)
		}
	}
	if len(cfg.StreamRoutes) == 0 && !cfg.DeploymentSettings().UsesEtcd() {
		b.p.warnf("", 0, "", "no stream routes: every client connection will be refused")
	}
	return cfg
}

// at formats a place for messages that point at a second one.
func at(file string, line int) string {
	return fmt.Sprintf("%s:%d", file, line)
}
