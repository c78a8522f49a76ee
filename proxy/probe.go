package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
)

// probeDialer makes the health probes of upstream u reach its nodes the way
// client connections do: with the PROXY header the brokers expect (carrying
// the probe's own addresses, as HAProxy's check-send-proxy does) and over TLS
// for scheme tls. It returns nil for plain TCP.
func (s *Server) probeDialer(u *config.Upstream) health.Dialer {
	if u.Scheme != "tls" && u.ProxyProtocol == "" {
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if deadline, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(deadline)
		}
		if u.ProxyProtocol != "" {
			if err := writeProxyHeader(c, u.ProxyProtocol, addrPort(c.LocalAddr()), addrPort(c.RemoteAddr()), nil); err != nil {
				c.Close()
				return nil, errors.Join(errors.New("sending PROXY header"), err)
			}
		}
		if u.Scheme != "tls" {
			return c, nil
		}
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(c, s.certs.ClientConfig(u.ID, host))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, errors.Join(errors.New("TLS handshake with "+addr), err)
		}
		return tc, nil
	}
}
