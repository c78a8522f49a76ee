package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsconf"
	"github.com/mqgate/mqgate/tlsrecord"
	"github.com/mqgate/mqgate/vars"
)

// Why a connection ended before its CONNECT was read.
const (
	EndProxyProtocol pipe.End = "proxy_protocol" // PROXY header missing, malformed or from a sender not in real_ip_from
	EndTLSHandshake  pipe.End = "tls_handshake"  // the TLS handshake failed (bad or missing client certificate, ...)
)

// identity is who the client is beyond its TCP connection: the address a
// PROXY header gave and the TLS session. It is part of the access record,
// kept for the connection's life; the variables derived from it (vars.Set,
// 128 bytes) are needed only by the stages up to the dial and live in
// connPath, but for a TLS session's ssl_ ones, which the access log prints.
type identity struct {
	tls   *tlsIdentity   // nil on a plain listener
	local netip.AddrPort // the address the client connected to (from the PROXY header when read)
	more  *moreIdentity  // nil without a PROXY header, a trusted proxy in front or a rewritten client id
}

// moreIdentity is what few connections have, kept out of the record of
// every idle one (48 bytes there, 8 here).
type moreIdentity struct {
	peer     netip.AddrPort // the load balancer that sent a PROXY header, or the trusted proxy in front
	upstream string         // the client id sent to the broker when mqtt-rewrite changed it
}

// peer is the load balancer that sent a PROXY header (or the proxy in
// front that named the client); zero without one.
func (id *identity) peer() netip.AddrPort {
	if id.more == nil {
		return netip.AddrPort{}
	}
	return id.more.peer
}

// upstream is the client id sent to the broker when mqtt-rewrite changed
// it, else empty.
func (id *identity) upstream() string {
	if id.more == nil {
		return ""
	}
	return id.more.upstream
}

// extra is id.more, made when first needed.
func (id *identity) extra() *moreIdentity {
	if id.more == nil {
		id.more = new(moreIdentity)
	}
	return id.more
}

// clone is a copy of id that shares nothing it may change: an upgraded
// WebSocket connection's record starts from its HTTP connection's.
func (id identity) clone() identity {
	if id.more != nil {
		m := *id.more
		id.more = &m
	}
	return id
}

// tlsIdentity is a TLS client's session and its ssl_ variables.
type tlsIdentity struct {
	state tls.ConnectionState
	vars  vars.Set // only the ssl_ variables are set (vars.Set.SetTLS)
}

// tlsState is the TLS session, nil on a plain listener.
func (id *identity) tlsState() *tls.ConnectionState {
	if id.tls == nil {
		return nil
	}
	return &id.tls.state
}

// open runs the stages between accept and the CONNECT: the PROXY header
// and the TLS handshake, as the listener's current configuration asks. It
// returns the connection to read MQTT from, or false when it ended the
// connection (recorded in rec). It sets the variables of vs it knows. With
// the epoll data path a TLS connection is built on a pipe.ParkConn,
// returned too, so that its pipe can wait without goroutines (pipe.Park).
func (s *Server) open(l *listener, tc *net.TCPConn, snap *snapshot, rec *record, vs *vars.Set) (net.Conn, *pipe.ParkConn, bool) {
	lcfg := snap.listenerConfig(l.cfg.Addr, l.cfg)
	rec.id.local = addrPort(tc.LocalAddr())
	if lcfg.ProxyProtocol {
		// The header is bounded by connect_timeout; preread sets the
		// deadline again for the CONNECT.
		_ = tc.SetReadDeadline(time.Now().Add(snap.cfg.StreamProxy.ConnectTimeout))
		if !s.readProxy(tc, lcfg, rec) {
			return nil, nil, false
		}
	}
	vs.RemoteAddr = rec.remote.Addr().Unmap().String()
	if !lcfg.TLS {
		return tc, nil, true
	}
	// Under the tls.Conn, a tlsrecord.Transport over a pipe.ParkConn:
	// after the handshake the connection's records are carried by
	// tlsrecord (no tls.Conn kept), and its reads can be parked. With
	// tls_record off the tls.Conn reads the ParkConn itself.
	pc := pipe.NewParkConn(tc)
	var (
		tr      *tlsrecord.Transport
		tlsConn *tls.Conn
	)
	if snap.cfg.StreamProxy.TLSRecordOff {
		tlsConn = tls.Server(pc, s.tlsServer)
	} else {
		tr = tlsrecord.NewTransport(pc)
		tlsConn = tls.Server(tr, s.tlsServer)
	}
	// Bounded by connect_timeout with the socket's deadlines, not a
	// context: HandshakeContext with one that can end starts a goroutine
	// per handshake to watch it. Shutdown closes what is left of a
	// handshake when its drain ends (lc.close), as it closes the rest.
	start := time.Now()
	_ = pc.SetDeadline(start.Add(snap.cfg.StreamProxy.ConnectTimeout))
	err := tlsConn.Handshake()
	l.tls.observe(time.Since(start), err)
	if err != nil {
		if tr != nil {
			tr.Forget(s.keyLog)
		}
		rec.end, rec.detail = EndTLSHandshake, err.Error()
		s.stats.TLSHandshakeFailures.Add(1)
		s.log.Debug("TLS handshake failed", "client", rec.remote, "err", err)
		return nil, nil, false
	}
	_ = tc.SetWriteDeadline(time.Time{}) // preread sets the read deadline for the CONNECT
	ackNow(tc)
	ti := &tlsIdentity{state: tlsConn.ConnectionState()}
	ti.vars.SetTLS(ti.state)
	rec.id.tls = ti
	vs.SetTLS(ti.state)
	var conn net.Conn = tlsConn
	if tr != nil {
		if rc, err := tr.Protect(ti.state, s.keyLog); err == nil {
			conn = rc // tlsConn is not used again
			s.stats.TLSRecordCarried.Add(1)
		}
	}
	if snap.cfg.StreamProxy.DataPath != config.DataPathEpoll {
		pc = nil // piped by goroutines: nothing to park
	} else {
		// The pair starts busy, as a WebSocket one: a client's
		// SUBSCRIBEs (or a short session's DISCONNECT) follow its
		// CONNACK at once, not worth two notifier registrations and a
		// wake-up; an idle one parks lingerFor (50 ms) later.
		pc.StartBusy()
	}
	return conn, pc, true
}

// ackNow sends the ACK the kernel holds back for the last bytes read, with
// TCP_QUICKACK. After a TLS 1.3 handshake it is the ACK of the client's
// Finished: Go's server sent everything it had (session tickets included)
// before that Finished arrived, so no reply carries the ACK and Linux delays
// it by up to 40 ms; a client with Nagle's algorithm on (the socket default
// of C, Python, Java and most embedded TLS stacks) holds its CONNECT until
// then. OpenSSL's server sends its tickets after the Finished, which
// acknowledges it. One setsockopt per handshake; a failure only means the
// ACK comes late, as before.
func ackNow(tc *net.TCPConn) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}

// readProxy reads the PROXY header a listener with proxy_protocol requires
// and takes the client's address from it. A sender outside real_ip_from, a
// missing or malformed header close the connection with a warning.
func (s *Server) readProxy(tc *net.TCPConn, lcfg config.Listener, rec *record) bool {
	peer := rec.remote
	fail := func(msg string, err error) bool {
		rec.end, rec.detail = EndProxyProtocol, msg
		if err != nil {
			rec.detail += ": " + err.Error()
		}
		s.stats.ProxyProtocolRefused.Add(1)
		s.log.Warn("PROXY protocol: connection closed", "listener", lcfg.Addr, "peer", peer, "reason", rec.detail)
		return false
	}
	if !allowed(lcfg.RealIPFrom, peer.Addr()) {
		return fail("sender not in real_ip_from", nil)
	}
	h, err := readProxyHeader(tc)
	if err != nil {
		return fail("bad PROXY header", err)
	}
	rec.id.extra().peer = peer
	// A LOCAL header (the balancer's own health check) or an UNKNOWN one
	// carries no client address: the connection stands for itself.
	if src, dst, ok := h.TCPAddrs(); ok {
		rec.remote = unmap(src.AddrPort())
		rec.id.local = unmap(dst.AddrPort())
	}
	return true
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func allowed(prefixes []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// listenerConfig returns the current configuration of the listener opened
// at addr, so that a reload that turns tls or proxy_protocol on or off
// applies to the next connection (also when the configuration now names
// it by the address it is bound to: snapshot.renamed); fallback when the
// snapshot no longer has it (a listener being closed).
func (snap *snapshot) listenerConfig(addr string, fallback config.Listener) config.Listener {
	for _, l := range snap.cfg.StreamProxy.TCP {
		if l.Addr == addr {
			return l
		}
	}
	if to, ok := snap.renamed[addr]; ok {
		for _, l := range snap.cfg.StreamProxy.TCP {
			if l.Addr == to {
				return l
			}
		}
	}
	return fallback
}

// fill sets the access-log fields of the identity.
func (id *identity) fill(r *accesslog.Record) {
	r.ProxyProtocolPeer = id.peer()
	if id.tls != nil {
		r.TLS = true
		v := &id.tls.vars
		r.TLSVersion = tlsconf.VersionName(id.tls.state.Version)
		r.TLSResumed = id.tls.state.DidResume
		r.SNI = v.SSLServerName
		r.ClientSDN, r.ClientSerial, r.ClientFingerprint = v.SSLClientSDN, v.SSLClientSerial, v.SSLClientFingerprint
		r.ClientSDNCN = v.SSLClientSDNCN
	}
	r.UpstreamClientID = id.upstream()
}
