package config

import (
	"net/netip"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/plugin"
	"github.com/mqgate/mqgate/plugin/registry"
)

// RoutePlugin is one stream plugin on a route, as its module decoded it.
type RoutePlugin struct {
	Name     string
	Settings any // the module's own type, e.g. *limitconn.Settings
	Line     int
}

// Plugin returns the settings of the route's plugin name, or nil.
func (r *StreamRoute) Plugin(name string) any {
	for _, p := range r.Plugins {
		if p.Name == name {
			return p.Settings
		}
	}
	return nil
}

// plugins decodes a route's plugins with their modules, in the registry's
// order (the order they run), whatever the order in the file.
func (d *decoder) plugins(n *yaml.Node, path string) []RoutePlugin {
	modules := registry.Modules()
	names := make([]string, len(modules))
	for i, m := range modules {
		names[i] = m.Name
	}
	var out []RoutePlugin
	for _, kv := range d.fields(n, path) {
		i := slices.Index(names, kv.key)
		if i < 0 {
			d.unknownKey(kv, path, "plugin", names)
			continue
		}
		mark := len(d.p.errs)
		settings := modules[i].Decode(&pluginNode{d: d, n: kv.val, path: join(path, kv.key)})
		if len(d.p.errs) > mark {
			continue // the module's New needs settings without errors
		}
		out = append(out, RoutePlugin{Name: kv.key, Settings: settings, Line: kv.keyNode.Line})
	}
	slices.SortStableFunc(out, func(a, b RoutePlugin) int {
		return slices.Index(names, a.Name) - slices.Index(names, b.Name)
	})
	return out
}

// pluginNode is a YAML value as plugin modules decode it, reported in the
// same style as every other key.
type pluginNode struct {
	d    *decoder
	n    *yaml.Node
	path string
}

func (p *pluginNode) at(n *yaml.Node, path string) *pluginNode {
	return &pluginNode{d: p.d, n: n, path: path}
}

func (p *pluginNode) Fields(known, ignored []string, explained ...string) []plugin.Field {
	var out []plugin.Field
	for _, kv := range p.d.fields(p.n, p.path) {
		switch {
		case slices.Contains(known, kv.key), slices.Contains(explained, kv.key):
		case slices.Contains(ignored, kv.key):
			p.d.ignore(kv.keyNode, join(p.path, kv.key))
			continue
		default:
			p.d.unknownKey(kv, p.path, "key", known, ignored)
			continue
		}
		kp := join(p.path, kv.key)
		out = append(out, plugin.Field{Name: kv.key, Key: p.at(kv.keyNode, kp), Val: p.at(kv.val, kp)})
	}
	return out
}

func (p *pluginNode) Errorf(format string, args ...any) { p.d.errorf(p.n, p.path, format, args...) }

func (p *pluginNode) ErrorfAt(key, format string, args ...any) {
	p.d.errorf(p.n, join(p.path, key), format, args...)
}

func (p *pluginNode) IsNull() bool              { return isNull(p.n) }
func (p *pluginNode) String() (string, bool)    { return p.d.str(p.n, p.path) }
func (p *pluginNode) Int() (int, bool)          { return p.d.int(p.n, p.path) }
func (p *pluginNode) IntMin(lo int) (int, bool) { return p.d.intMin(p.n, p.path, lo) }
func (p *pluginNode) Float() (float64, bool)    { return p.d.float(p.n, p.path) }
func (p *pluginNode) OneOf(allowed ...string) (string, bool) {
	return p.d.oneOf(p.n, p.path, allowed...)
}
func (p *pluginNode) Prefixes() []netip.Prefix { return p.d.prefixes(p.n, p.path) }
