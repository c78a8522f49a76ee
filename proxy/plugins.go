package proxy

import (
	"reflect"
	"sync/atomic"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/keyed"
	"github.com/mqgate/mqgate/plugin"
	pluginregistry "github.com/mqgate/mqgate/plugin/registry"
)

// routePlugins are one route's stream plugins compiled, by phase, in the
// order they run.
type routePlugins struct {
	checks, limits []plugin.Instance
}

// compiledPlugin is a plugin instance and the settings it was built from.
// It outlives snapshots while its route keeps the same settings, so a
// reload neither resets a limit's counts nor lets it be exceeded.
type compiledPlugin struct {
	settings any
	inst     plugin.Instance
}

type pluginKey struct{ route, plugin string }

// plugins are the stream plugin modules by name and the counts of the
// refusals they make, fixed when the Server is made.
type plugins struct {
	modules  map[string]plugin.Module
	compiled keyed.Map[pluginKey, *compiledPlugin]
}

func newPlugins() *plugins {
	p := &plugins{modules: make(map[string]plugin.Module)}
	for _, m := range pluginregistry.Modules() {
		p.modules[m.Name] = m
	}
	return p
}

// reasons lists the refusal reasons the modules count.
func (p *plugins) reasons() []string {
	var out []string
	for _, m := range pluginregistry.Modules() {
		out = append(out, m.Reasons...)
	}
	return out
}

// compile returns the plugins of cfg's routes, index-aligned with
// cfg.StreamRoutes, reusing each instance whose route and settings are
// unchanged, and forgets the others.
func (p *plugins) compile(cfg *config.Config) []routePlugins {
	out := make([]routePlugins, len(cfg.StreamRoutes))
	used := make(map[pluginKey]bool)
	for i := range cfg.StreamRoutes {
		rt := &cfg.StreamRoutes[i]
		for _, rp := range rt.Plugins {
			m := p.modules[rp.Name]
			k := pluginKey{rt.ID, rp.Name}
			used[k] = true
			c := p.compiled.Update(k, func(old *compiledPlugin, ok bool) *compiledPlugin {
				if ok && reflect.DeepEqual(old.settings, rp.Settings) {
					return old
				}
				return &compiledPlugin{settings: rp.Settings, inst: m.New(rp.Settings)}
			})
			switch m.Phase {
			case plugin.Check:
				out[i].checks = append(out[i].checks, c.inst)
			case plugin.Limit:
				out[i].limits = append(out[i].limits, c.inst)
			}
		}
	}
	p.compiled.Prune(func(k pluginKey, _ *compiledPlugin) bool { return used[k] })
	return out
}

// refusals counts refused CONNECTs by reason. The map is filled when the
// Server is made and only read after, so counting takes no lock.
type refusals map[string]*atomic.Uint64

func newRefusals(reasons ...[]string) refusals {
	r := make(refusals)
	for _, list := range reasons {
		for _, reason := range list {
			r[reason] = new(atomic.Uint64)
		}
	}
	return r
}

func (r refusals) add(reason string) {
	if c := r[reason]; c != nil {
		c.Add(1)
	}
}
