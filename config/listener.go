package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"gopkg.in/yaml.v3"
)

// listenerDecl is a Listener with what the overlap check needs.
type listenerDecl struct {
	Listener
	path string
	host netip.Addr // zero for all addresses
	port int

	realIPFromSet bool
}

// wildcard reports whether l listens on all addresses of its port.
func (l listenerDecl) wildcard() bool {
	return !l.host.IsValid() || l.host.IsUnspecified()
}

// listener decodes one item of stream_proxy.tcp: a port (9000 or "9000"),
// "ip:port", or {addr: <port or ip:port>, tls: bool}.
func (d *decoder) listener(n *yaml.Node, path string) (listenerDecl, bool) {
	l := listenerDecl{Listener: Listener{File: d.file, Line: n.Line}, path: path}
	addr := n
	if n.Kind == yaml.MappingNode {
		m := listenerMapping{l: &l}
		listenerSection().decode(d, n, path, &m)
		addr = m.addr
		if isNull(addr) {
			d.errorf(n, join(path, "addr"), "required")
			return l, false
		}
		d.checkProxyProtocol(n, path, &l)
		path = join(path, "addr")
	}
	if addr.Kind != yaml.ScalarNode || addr.Tag != "!!int" && addr.Tag != "!!str" {
		d.errorf(addr, path, `must be a port, "ip:port" or {addr, tls, proxy_protocol, real_ip_from, websocket}, got %s`, describe(addr))
		return l, false
	}
	host, port, msg := parseListenAddr(addr.Value)
	if msg != "" {
		d.errorf(addr, path, "%s", msg)
		return l, false
	}
	if port == 0 {
		d.p.warnf(d.file, addr.Line, path, "port 0: the kernel picks a free port at every start, which clients cannot be told (for tests that read the bound address back)")
	}
	l.host, l.port = host, port
	l.Addr = ":" + strconv.Itoa(port)
	if host.IsValid() {
		l.Addr = net.JoinHostPort(host.String(), strconv.Itoa(port))
	}
	return l, true
}

// parseListenAddr parses "9000", "127.0.0.1:9000" or "[::1]:9000". An
// empty host means all addresses. msg is empty on success.
func parseListenAddr(s string) (host netip.Addr, port int, msg string) {
	if p, err := strconv.Atoi(s); err == nil {
		if p == 0 {
			p = -1 // a bare 0 is a mistake, not a test's "ip:0"
		}
		return host, p, listenPortMsg(p, s)
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return host, 0, fmt.Sprintf(`must be a port or "ip:port" (IPv6 as "[::1]:9000"), got %q`, s)
	}
	p, err := strconv.Atoi(ps)
	if err != nil {
		p = -1
	}
	if msg := listenPortMsg(p, ps); msg != "" {
		return host, 0, msg
	}
	if h == "" {
		return host, p, ""
	}
	host, err = netip.ParseAddr(h)
	if err != nil || host.Zone() != "" {
		return netip.Addr{}, 0, fmt.Sprintf("host must be an IP address, got %q", h)
	}
	return host, p, ""
}

// listenPortMsg checks a listener's port, with the message nodes have too.
// "ip:0" lets the kernel pick, for tests that read the bound address back;
// it is warned about (see listener).
func listenPortMsg(p int, text string) string {
	if p < 0 || p > 65535 {
		return fmt.Sprintf("port must be 1..65535, got %s", text)
	}
	return ""
}

// checkListeners requires at least one listener and reports listeners that
// could not both bind: the same address twice, or a port shared with a
// listener on all addresses.
func (b *builder) checkListeners() {
	if b.deployment != nil && !b.deployment.ServesTraffic() {
		if len(b.listeners) > 0 {
			l := b.listeners[0]
			b.p.warnf(l.File, l.Line, l.path, "not opened: a control_plane serves no traffic")
		}
		return
	}
	if len(b.listeners) == 0 {
		if b.tcpSet || b.syntaxError {
			return // its items, or the file that may hold them, are reported already
		}
		b.p.errorf("", 0, "", "no listeners: set stream_proxy.tcp")
		return
	}
	for i, l := range b.listeners {
		for _, prev := range b.listeners[:i] {
			if prev.port != l.port {
				continue
			}
			if prev.Addr == l.Addr {
				b.p.errorf(l.File, l.Line, l.path, "duplicate listener %q, first at %s", l.Addr, at(prev.File, prev.Line))
				break
			}
			if prev.wildcard() || l.wildcard() {
				b.p.errorf(l.File, l.Line, l.path, "listener %q overlaps %q at %s: a listener on all addresses takes the whole port",
					l.Addr, prev.Addr, at(prev.File, prev.Line))
				break
			}
		}
	}
}
