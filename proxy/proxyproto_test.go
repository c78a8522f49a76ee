package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// mqttConnect is the start of a CONNECT that follows the header: it must
// stay unread.
var mqttConnect = []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'}

// TestReadProxyHeader walks the PROXY protocol specification
// (haproxy.org/download/3.0/doc/proxy-protocol.txt): every header is read
// exactly, leaving the MQTT bytes behind it unread.
func TestReadProxyHeader(t *testing.T) {
	sig := "0d0a0d0a000d0a515549540a"
	tests := []struct {
		name    string
		header  []byte
		wantSrc string // "" for a header without addresses
		wantErr string
	}{
		// 2.1: "PROXY" SP protocol SP src SP dst SP srcport SP dstport CRLF
		{"v1 TCP4", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 56324 8883\r\n"), "203.0.113.7:56324", ""},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 56324 8883\r\n"), "[2001:db8::7]:56324", ""},
		// 2.1: UNKNOWN: the receiver must ignore the rest of the line.
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v1 longest", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535" + strings.Repeat(" ", 107-58-2) + "\r\n"), "", ""},
		{"v1 no CRLF within 107 bytes", []byte("PROXY UNKNOWN" + strings.Repeat(" ", 120)), "", "no CRLF within 107 bytes"},
		{"v1 bad address", []byte("PROXY TCP4 203.0.113.300 192.0.2.1 1 2\r\n"), "", "malformed PROXY header"},
		// 2.2: version 2, command PROXY (0x21), TCP over IPv4 (0x11), 12 address bytes.
		{"v2 TCP4", unhex(sig + "21 11 000c cb007107 c0000201 dc04 22b3"), "203.0.113.7:56324", ""},
		// A TLV after the addresses (2.2.7 PP2_TYPE_NOOP, 3 bytes of zeros).
		{"v2 TCP4 with a TLV", unhex(sig + "21 11 0012 cb007107 c0000201 dc04 22b3 04 0003 000000"), "203.0.113.7:56324", ""},
		// 2.2: command LOCAL (0x20): the balancer's own connection, no addresses.
		{"v2 LOCAL", unhex(sig + "20 00 0000"), "", ""},
		{"v2 version 3", unhex(sig + "31 11 000c cb007107 c0000201 dc04 22b3"), "", "malformed PROXY header"},
		{"v2 length shorter than the addresses", unhex(sig + "21 11 0004 cb007107"), "", "malformed PROXY header"},
		{"v2 truncated", unhex(sig + "21 11 000c cb00"), "", "reading PROXY v2 header"},
		{"no header: an MQTT CONNECT", mqttConnect, "", "does not start with a PROXY protocol header"},
		{"no header: a TLS ClientHello", unhex("16 0301 00f1 01 0000ed 0303"), "", "does not start with a PROXY protocol header"},
		{"signature broken after 8 bytes", unhex("0d0a0d0a000d0a51 00000000 21 11 0000"), "", "does not start with a PROXY protocol header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(append(append([]byte{}, tt.header...), mqttConnect...))
			h, err := readProxyHeader(r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Len() != len(mqttConnect) {
				t.Errorf("%d bytes left after the header, want the %d of the CONNECT", r.Len(), len(mqttConnect))
			}
			src, _, ok := h.TCPAddrs()
			switch {
			case tt.wantSrc == "" && ok:
				t.Errorf("source %v, want none", src)
			case tt.wantSrc != "" && (!ok || src.String() != tt.wantSrc):
				t.Errorf("source %v, want %s", src, tt.wantSrc)
			}
		})
	}
}

// TestWriteProxyHeader: what mqgate sends reads back with go-proxyproto,
// TLS TLVs included.
func TestWriteProxyHeader(t *testing.T) {
	src, dst := netip.MustParseAddrPort("203.0.113.7:56324"), netip.MustParseAddrPort("192.0.2.1:8883")
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "meter-7"}}
	cs := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, ServerName: "mqtt.example.com",
		PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	for _, v := range []string{"v1", "v2"} {
		var buf bytes.Buffer
		if err := writeProxyHeader(&buf, v, src, dst, cs); err != nil {
			t.Fatal(err)
		}
		h, err := readProxyHeader(&buf)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		s, d, _ := h.TCPAddrs()
		if s.AddrPort() != src || d.AddrPort() != dst || buf.Len() != 0 {
			t.Errorf("%s: %v -> %v, %d bytes left", v, s, d, buf.Len())
		}
		if v == "v1" {
			continue
		}
		tlvs, _ := h.TLVs()
		var authority string
		var ssl tlvparse.PP2SSL
		for _, tlv := range tlvs {
			switch tlv.Type {
			case proxyproto.PP2_TYPE_AUTHORITY:
				authority = string(tlv.Value)
			case proxyproto.PP2_TYPE_SSL:
				ssl, err = tlvparse.SSL(tlv)
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		cn, _ := ssl.ClientCN()
		version, _ := ssl.SSLVersion()
		if authority != "mqtt.example.com" || cn != "meter-7" || version != "TLSv1.3" || !ssl.ClientSSL() || !ssl.ClientCertConn() || !ssl.Verified() {
			t.Errorf("TLVs: authority %q cn %q version %q ssl %+v", authority, cn, version, ssl)
		}
	}
	// An IPv6 client behind an IPv4 listener: one family in the header.
	var buf bytes.Buffer
	if err := writeProxyHeader(&buf, "v2", netip.MustParseAddrPort("[2001:db8::7]:1"), dst, nil); err != nil {
		t.Fatal(err)
	}
	if h, err := readProxyHeader(&buf); err != nil || h.TransportProtocol != proxyproto.TCPv6 {
		t.Errorf("mixed families: %v, %v", h, err)
	}
}

// FuzzReadProxyHeader: any input is read without panicking, never past a
// header it accepts, and never more than the longest header.
func FuzzReadProxyHeader(f *testing.F) {
	sig := "0d0a0d0a000d0a515549540a"
	for _, seed := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 192.0.2.1 56324 8883\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n"),
		unhex(sig + "21 11 000c cb007107 c0000201 dc04 22b3"),
		unhex(sig + "21 21 0024 20010db8000000000000000000000007 20010db8000000000000000000000001 0001 0002"),
		unhex(sig + "20 00 0000"),
		unhex(sig + "21 11 0012 cb007107 c0000201 dc04 22b3 04 0003 000000"),
		mqttConnect,
	} {
		f.Add(append(seed, mqttConnect...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		_, err := readProxyHeader(r)
		read := len(data) - r.Len()
		if read > proxyV2MaxTotal {
			t.Fatalf("read %d bytes", read)
		}
		if err == nil && bytes.HasPrefix(data, []byte("PROXY ")) && !bytes.HasSuffix(data[:read], []byte("\r\n")) {
			t.Fatalf("accepted a v1 header that does not end in CRLF: %q", data[:read])
		}
	})
}
