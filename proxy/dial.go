package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/tlsconf"
)

// noTCPKeepAlive turns off the TCP keepalive Go enables by default (probes
// every 15 s) on client and broker connections, as HAProxy and NGINX do:
// MQTT has its own keepalive, which the idle limit enforces, and probes on a
// million idle connections would cost the proxy and the network for
// nothing. It also saves the four setsockopt calls per connection.
const noTCPKeepAlive = -1

// dialer reaches the nodes of one upstream: TCP, then the PROXY header,
// then TLS, then the WebSocket handshake, as the upstream asks. The snapshot builds one per upstream;
// client connections and health probes both dial through it, so a reload
// that changes how nodes are reached changes it for both.
type dialer struct {
	upstream      string
	proxyProtocol string                    // "v1", "v2" or ""
	certs         *tlsconf.Store            // the upstream's TLS client settings when its scheme is tls or wss
	ws            *config.UpstreamWebSocket // scheme ws or wss: the handshake to ask for MQTT over WebSocket
	tcp           net.Dialer
	fromSource    net.Dialer // tcp with the source_addresses socket options; LocalAddr set per dial
	firstSource   netip.Addr // where probes and HTTP routes dial from: the first source address, if any
}

func newDialer(u *config.Upstream, certs *tlsconf.Store) *dialer {
	return &dialer{
		upstream:      u.ID,
		proxyProtocol: u.ProxyProtocol,
		certs:         certs,
		ws:            u.WebSocket,
		tcp:           net.Dialer{KeepAlive: noTCPKeepAlive},
		fromSource:    net.Dialer{KeepAlive: noTCPKeepAlive, Control: bindControl(u.SourcePortRange)},
		firstSource:   firstOr(u.SourceAddresses),
	}
}

func firstOr(addrs []netip.Addr) netip.Addr {
	if len(addrs) == 0 {
		return netip.Addr{}
	}
	return addrs[0]
}

// proxySource is what a PROXY header sent to a broker says: the client's
// addresses and TLS session. A probe sends its own addresses, as HAProxy's
// check-send-proxy does.
type proxySource struct {
	remote, local netip.AddrPort
	tls           *tls.ConnectionState
}

// dial connects to addr (host is its host, the TLS server name unless the
// upstream names one) before ctx's deadline, from source when it is valid.
// from is nil for a probe.
func (d *dialer) dial(ctx context.Context, addr, host string, from *proxySource, source netip.Addr) (net.Conn, error) {
	tcp := &d.tcp
	if source.IsValid() {
		fd := d.fromSource
		fd.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
		tcp = &fd
	}
	c, err := tcp.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	if d.proxyProtocol != "" {
		src := proxySource{remote: addrPort(c.LocalAddr()), local: addrPort(c.RemoteAddr())}
		if from != nil {
			src = *from
		}
		_ = c.SetWriteDeadline(deadline)
		if err := writeProxyHeader(c, d.proxyProtocol, src.remote, src.local, src.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("sending PROXY header to %s: %w", addr, err)
		}
		_ = c.SetWriteDeadline(time.Time{})
	}
	if cfg := d.certs.ClientConfig(d.upstream, host); cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if d.ws == nil {
		return c, nil
	}
	// MQTT over WebSocket from here: the CONNECT, the CONNACK wait, the
	// pipe and probes all see MQTT bytes, framed and masked by mqttws.
	var header http.Header
	if from != nil && from.remote.IsValid() {
		// As NGINX's usual proxy_set_header lines do, so that a broker
		// behind mqgate (EMQX's proxy_address_header, say) sees the
		// client's address, not mqgate's; probes send none.
		ip := from.remote.Addr().Unmap().String()
		header = http.Header{"X-Real-Ip": {ip}, "X-Forwarded-For": {ip}}
	}
	wc, err := mqttws.DialHeader(ctx, c, addr, d.ws.Path, d.ws.Subprotocol, header)
	if err != nil {
		c.Close()
		return nil, err
	}
	return wc, nil
}

// probe is the dialer as health probes use it.
func (d *dialer) probe(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	return d.dial(ctx, addr, host, nil, d.firstSource)
}
