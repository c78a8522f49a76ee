package config

import (
	"fmt"
	"strings"
)

// UpstreamByID returns the top-level upstream with the given id, or nil.
func (c *Config) UpstreamByID(id string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].ID == id {
			return &c.Upstreams[i]
		}
	}
	return nil
}

// RouteUpstream returns the upstream r sends clients to: its inline
// upstream or the one its upstream_id names.
func (c *Config) RouteUpstream(r *StreamRoute) *Upstream {
	if r.Upstream != nil {
		return r.Upstream
	}
	return c.UpstreamByID(r.UpstreamID)
}

// Summary describes the configuration in one line for the startup log, like
// "2 files, 1 listener (:9000), 1 stream route, 1 upstream with 2 nodes".
// Inline upstreams count as upstreams.
func (c *Config) Summary() string {
	addrs := make([]string, len(c.StreamProxy.TCP))
	for i, l := range c.StreamProxy.TCP {
		addrs[i] = l.Addr
	}
	upstreams, nodes := len(c.Upstreams), 0
	for _, u := range c.Upstreams {
		nodes += len(u.Nodes)
	}
	for _, r := range c.StreamRoutes {
		if r.Upstream != nil {
			upstreams++
			nodes += len(r.Upstream.Nodes)
		}
	}
	return fmt.Sprintf("%s, %s (%s), %s, %s with %s",
		count(len(c.Files), "file"), count(len(addrs), "listener"), strings.Join(addrs, ", "),
		count(len(c.StreamRoutes), "stream route"), count(upstreams, "upstream"), count(nodes, "node"))
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
