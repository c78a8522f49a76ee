package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/mqgate/mqgate/tlsconf"
)

// PROXY protocol header sizes (haproxy.org/download/3.0/doc/proxy-protocol.txt).
const (
	proxyV1Max      = 107 // section 2.1: the longest v1 line, CRLF included
	proxyV1Min      = 15  // "PROXY UNKNOWN\r\n"
	proxyV2Fixed    = 16  // section 2.2: signature, version/command, family, length
	proxyV2MaxTotal = 4096
)

var errNotProxyHeader = errors.New("connection does not start with a PROXY protocol header")

// readProxyHeader reads one PROXY protocol header, v1 or v2, from r and
// parses it with go-proxyproto. It reads exactly the header and not one byte
// more, so that the MQTT or TLS bytes behind it stay in the socket and the
// connection stays a *net.TCPConn (whose pipe parks without a buffer). A
// v2 header takes three reads; a v1 line is read a byte at a time past its
// shortest form, which costs at most 92 small reads once per connection.
func readProxyHeader(r io.Reader) (*proxyproto.Header, error) {
	buf := make([]byte, proxyV1Min, proxyV2Fixed)
	if _, err := io.ReadFull(r, buf[:8]); err != nil {
		return nil, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch {
	case bytes.Equal(buf[:8], proxyproto.SIGV2[:8]):
		buf = buf[:proxyV2Fixed]
		if _, err := io.ReadFull(r, buf[8:]); err != nil {
			return nil, fmt.Errorf("reading PROXY v2 header: %w", err)
		}
		if !bytes.Equal(buf[:12], proxyproto.SIGV2) {
			return nil, errNotProxyHeader
		}
		n := int(binary.BigEndian.Uint16(buf[14:16]))
		if proxyV2Fixed+n > proxyV2MaxTotal {
			return nil, fmt.Errorf("PROXY v2 header of %d bytes is longer than %d", proxyV2Fixed+n, proxyV2MaxTotal)
		}
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(r, buf[proxyV2Fixed:]); err != nil {
			return nil, fmt.Errorf("reading PROXY v2 header: %w", err)
		}
	case bytes.Equal(buf[:6], []byte("PROXY ")):
		if _, err := io.ReadFull(r, buf[8:proxyV1Min]); err != nil {
			return nil, fmt.Errorf("reading PROXY v1 header: %w", err)
		}
		var one [1]byte
		for !bytes.HasSuffix(buf, []byte("\r\n")) {
			if len(buf) >= proxyV1Max {
				return nil, fmt.Errorf("PROXY v1 header has no CRLF within %d bytes", proxyV1Max)
			}
			if _, err := io.ReadFull(r, one[:]); err != nil {
				return nil, fmt.Errorf("reading PROXY v1 header: %w", err)
			}
			buf = append(buf, one[0])
		}
	default:
		return nil, errNotProxyHeader
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(buf), len(buf)))
	if err != nil {
		return nil, fmt.Errorf("malformed PROXY header: %w", err)
	}
	return h, nil
}

// writeProxyHeader sends the PROXY header of version "v1" or "v2" for a
// client at src that connected to dst. A v2 header of a TLS client carries
// what HAProxy's send-proxy-v2-ssl-cn sends: PP2_TYPE_SSL with the version,
// cipher and client certificate CN, and the SNI as PP2_TYPE_AUTHORITY.
func writeProxyHeader(w io.Writer, version string, src, dst netip.AddrPort, cs *tls.ConnectionState) error {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if src.Addr().Is4() != dst.Addr().Is4() {
		// The header holds one address family: say it in the source's.
		h = proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(unspecifiedLike(src)))
	}
	if v == 2 && cs != nil {
		if err := h.SetTLVs(tlsTLVs(cs)); err != nil {
			return err
		}
	}
	_, err := h.WriteTo(w)
	return err
}

func unspecifiedLike(a netip.AddrPort) netip.AddrPort {
	if a.Addr().Is4() {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
}

// tlsTLVs describes the client's TLS session as PROXY v2 TLVs (section
// 2.2.5 and 2.2.6).
func tlsTLVs(cs *tls.ConnectionState) []proxyproto.TLV {
	ssl := tlvparse.PP2SSL{
		Client: tlvparse.PP2_BITFIELD_CLIENT_SSL,
		Verify: 1, // "zero if the client presented a certificate and it was successfully verified"
		TLV: []proxyproto.TLV{
			{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(tlsconf.VersionName(cs.Version))},
			{Type: proxyproto.PP2_SUBTYPE_SSL_CIPHER, Value: []byte(tls.CipherSuiteName(cs.CipherSuite))},
		},
	}
	if len(cs.PeerCertificates) > 0 {
		ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
		if !cs.DidResume {
			ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN
		}
		if len(cs.VerifiedChains) > 0 {
			ssl.Verify = 0
		}
		if cn := cs.PeerCertificates[0].Subject.CommonName; cn != "" {
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CN, Value: []byte(cn)})
		}
	}
	var tlvs []proxyproto.TLV
	if cs.ServerName != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(cs.ServerName)})
	}
	sslTLV, err := ssl.Marshal()
	if err == nil { // fails only for a value over 65535 bytes
		tlvs = append(tlvs, sslTLV)
	}
	return tlvs
}
