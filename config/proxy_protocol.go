package config

import (
	"gopkg.in/yaml.v3"
)

// listenerProxyProtocol decodes a listener's proxy_protocol (bool) or
// real_ip_from (a CIDR or a list of them).
func (d *decoder) realIPFrom(kv keyValue, p string, l *listenerDecl) {
	l.realIPFromSet = !isNull(kv.val)
	items := []*yaml.Node{kv.val}
	if kv.val.Kind == yaml.SequenceNode {
		items = d.items(kv.val, p)
	}
	for i, item := range items {
		ip := p
		if kv.val.Kind == yaml.SequenceNode {
			ip = index(p, i)
		}
		s, ok := d.str(item, ip)
		if !ok {
			continue
		}
		prefix, msg := parsePrefix(s)
		if msg != "" {
			d.errorf(item, ip, "%s", msg)
			continue
		}
		l.RealIPFrom = append(l.RealIPFrom, prefix)
	}
}

// checkProxyProtocol requires real_ip_from with proxy_protocol: trusting a
// client-supplied address from anyone would let any client pose as any other.
// On a websocket listener real_ip_from also says whose X-Real-IP and
// X-Forwarded-For headers are believed.
func (d *decoder) checkProxyProtocol(n *yaml.Node, path string, l *listenerDecl) {
	switch {
	case l.ProxyProtocol && len(l.RealIPFrom) == 0 && !l.realIPFromSet:
		d.errorf(n, join(path, "real_ip_from"), `required with proxy_protocol: the load balancers' addresses, like ["10.0.0.0/8"] ("0.0.0.0/0" and "::/0" trust everyone)`)
	case !l.ProxyProtocol && l.WebSocket == nil && l.realIPFromSet:
		d.errorf(n, join(path, "real_ip_from"), "only used with proxy_protocol: true or websocket")
	}
}
