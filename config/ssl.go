package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SSL is one server certificate object, APISIX-shaped: the certificates a
// TLS listener presents for some SNIs and, optionally, the CA that client
// certificates must chain to.
type SSL struct {
	ID    string
	Pairs []CertPair // cert/key first, then certs[i]/keys[i]
	SNIs  []string   // lower case; "*.example.com" matches one label
	// ClientCA, when set, makes client certificates required and verified
	// (mTLS); ClientDepth bounds the certificates above the client's own.
	ClientCA    *PEMSource
	ClientDepth int
	// MinVersion and MaxVersion are the tls.VersionTLS* range that
	// ssl_protocols allows (TLS 1.2 to 1.3 by default).
	MinVersion, MaxVersion uint16
	// CipherSuites are the TLS 1.2 suites apisix.ssl.ssl_ciphers allows,
	// nil for crypto/tls's defaults. (TLS 1.3's are not configurable.)
	CipherSuites []uint16
	// SessionTicketsDisabled is apisix.ssl.ssl_session_tickets: false: no
	// session resumption.
	SessionTicketsDisabled bool
	// SessionTimeout is apisix.ssl.ssl_session_timeout: a session older
	// than this is not resumed (a full handshake instead); 0: until its
	// ticket key retires.
	SessionTimeout time.Duration
	Line           int
	File           string
}

// CertPair is a certificate chain and its private key.
type CertPair struct {
	Cert, Key PEMSource
}

// PEMSource is PEM text given inline in the YAML or the path of a file
// holding it. A value containing "-----BEGIN" is inline PEM; anything else
// is a path, relative to the directory of the YAML file that names it.
type PEMSource struct {
	Inline string
	Path   string
}

// IsZero reports whether nothing was given.
func (p PEMSource) IsZero() bool { return p.Inline == "" && p.Path == "" }

// String names the source for messages: the path, or "inline PEM".
func (p PEMSource) String() string {
	if p.Path != "" {
		return p.Path
	}
	return "inline PEM"
}

// Read returns the PEM bytes, reading the file when p is a path.
func (p PEMSource) Read() ([]byte, error) {
	if p.Path == "" {
		return []byte(p.Inline), nil
	}
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p.Path, err)
	}
	return b, nil
}

// LoadKeyPair reads and parses a certificate chain and its key, checking
// that they match; Leaf is set.
func (cp CertPair) LoadKeyPair() (tls.Certificate, error) {
	certPEM, err := cp.Cert.Read()
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := cp.Key.Read()
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert %s, key %s: %w", cp.Cert, cp.Key, err)
	}
	return pair, nil
}

// LoadCertPool reads a PEM bundle of CA certificates. A bundle with no
// certificate, or with a block that does not parse, is an error.
func (p PEMSource) LoadCertPool() (*x509.CertPool, error) {
	b, err := p.Read()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA %s: certificate %d: %w", p, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA %s: no PEM CERTIFICATE found", p)
	}
	return pool, nil
}

// UpstreamTLS is how mqgate talks TLS to the nodes of an upstream.
type UpstreamTLS struct {
	ClientCert, ClientKey PEMSource // zero: no client certificate
	Verify                bool      // verify the node's certificate; default true
	CA                    PEMSource // zero: the system roots
	ServerName            string    // SNI and name to verify; default the node's host
}

var (
	sslProtocols     = []string{"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
	sslProtocolValue = map[string]uint16{"TLSv1": tls.VersionTLS10, "TLSv1.1": tls.VersionTLS11, "TLSv1.2": tls.VersionTLS12, "TLSv1.3": tls.VersionTLS13}
)

// DefaultClientDepth is APISIX's client.depth default: the client
// certificate is signed by a CA the configuration names.
const DefaultClientDepth = 1

// sslDecl is an SSL with what the cross checks report at.
type sslDecl struct {
	SSL
	path     string
	idLine   int
	disabled bool // status: 0
	sniLines []int
	overlay  bool // from an Admin API document
	// protocolsSet is whether the object has its own ssl_protocols, which
	// apisix.ssl.ssl_protocols then does not override.
	protocolsSet bool
}

// ssl decodes one item of ssls and loads its certificates so that a bad
// one is reported with its file and line.
func (d *decoder) ssl(n *yaml.Node, path string) sslDecl {
	s := sslDecl{SSL: SSL{File: d.file, Line: n.Line, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, ClientDepth: DefaultClientDepth}, path: path, overlay: d.overlay}
	f := sslFields{sslDecl: &s}
	sslSection().decode(d, n, path, &f)
	cert, key, certNode, keyNode, certs, keys, certsNode, keysNode, snisNode := f.cert, f.key, f.certNode, f.keyNode, f.certs, f.keys, f.certsNode, f.keysNode, f.snisNode
	if s.ID == "" && s.idLine == 0 {
		d.errorf(n, join(path, "id"), "required")
	}
	switch {
	case cert.IsZero() && certNode == nil:
		d.errorf(n, join(path, "cert"), "required (PEM text or a file path)")
	case key.IsZero() && keyNode == nil:
		d.errorf(n, join(path, "key"), "required (PEM text or a file path)")
	case !cert.IsZero() && !key.IsZero():
		s.Pairs = append(s.Pairs, CertPair{Cert: cert, Key: key})
	}
	if len(certs) != len(keys) {
		at := certsNode
		if at == nil { // keys without certs
			at = keysNode
		}
		d.errorf(at, join(path, "keys"), "certs has %d item(s) but keys has %d: they pair up by position", len(certs), len(keys))
	} else {
		for i := range certs {
			if !certs[i].IsZero() && !keys[i].IsZero() {
				s.Pairs = append(s.Pairs, CertPair{Cert: certs[i], Key: keys[i]})
			}
		}
	}
	if len(s.SNIs) == 0 && isNull(snisNode) {
		d.errorf(n, join(path, "snis"), `required: the names this certificate serves, like ["mqtt.example.com", "*.example.com"]`)
	}
	for i, pair := range s.Pairs {
		if _, err := pair.LoadKeyPair(); err != nil {
			at := certNode
			p := join(path, "cert")
			if i > 0 {
				at, p = certsNode, index(join(path, "certs"), i-1)
			}
			if at == nil {
				at = n
			}
			d.errorf(at, p, "%v", err)
		}
	}
	return s
}

// pemSource reads inline PEM or a file path (made relative to the YAML
// file's directory); the file must exist now.
func (d *decoder) pemSource(n *yaml.Node, path string) PEMSource {
	v, ok := d.str(n, path)
	if !ok {
		return PEMSource{}
	}
	switch {
	case strings.Contains(v, "-----BEGIN"):
		return PEMSource{Inline: v}
	case strings.TrimSpace(v) == "":
		d.errorf(n, path, "must be PEM text or a file path, got an empty string")
		return PEMSource{}
	case strings.HasPrefix(v, "$secret://") || strings.HasPrefix(v, "$env://"):
		d.errorf(n, path, "APISIX secret references are not supported; give PEM text or a file path")
		return PEMSource{}
	}
	p := d.relative(v)
	if _, err := os.Stat(p); err != nil {
		msg := err.Error()
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		d.errorf(n, path, "not PEM text (no -----BEGIN) and not a readable file %q: %s", p, msg)
		return PEMSource{}
	}
	return PEMSource{Path: p}
}

// sniName reads a server name, "*.example.com" allowed, and lower-cases it.
func (d *decoder) sniName(n *yaml.Node, path string) (string, bool) {
	v, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	name := strings.ToLower(strings.TrimSuffix(v, "."))
	host := strings.TrimPrefix(name, "*.")
	if strings.Contains(host, "*") || !validHost(host) {
		d.errorf(n, path, `must be a host name like "mqtt.example.com" or a wildcard like "*.example.com", got %q`, v)
		return "", false
	}
	return name, true
}

func (d *decoder) sslClient(n *yaml.Node, path string, s *SSL) {
	c := sslClientFields{SSL: s}
	sslClientSection().decode(d, n, path, &c)
	ca := c.ca
	if ca.IsZero() {
		if !isNull(n) {
			d.errorf(n, join(path, "ca"), "required: the CA that client certificates must chain to")
		}
		return
	}
	s.ClientCA = &ca
}

// sslProtocols reads a list like ["TLSv1.2", "TLSv1.3"] into a version
// range; TLS 1.0 and 1.1 are allowed with a warning.
func (d *decoder) sslProtocols(n *yaml.Node, path string, s *SSL) {
	var vs []uint16
	var items []*yaml.Node
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		// NGINX's and APISIX's config.yaml spelling: "TLSv1.2 TLSv1.3".
		for _, f := range strings.Fields(n.Value) {
			items = append(items, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: f, Line: n.Line, Column: n.Column})
		}
	} else {
		items = d.items(n, path)
	}
	for i, item := range items {
		p := index(path, i)
		name, ok := d.oneOf(item, p, sslProtocols...)
		if !ok {
			continue
		}
		v := sslProtocolValue[name]
		if v < tls.VersionTLS12 {
			d.p.warnf(d.file, item.Line, p, "%s is obsolete and insecure (RFC 8996); allowed because listed", name)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		if !isNull(n) && len(items) == 0 {
			d.errorf(n, path, "must list at least one of %s", orList(sslProtocols))
		}
		return
	}
	slices.Sort(vs)
	vs = slices.Compact(vs)
	if int(vs[len(vs)-1]-vs[0]) != len(vs)-1 {
		d.errorf(n, path, "must be a contiguous range of versions (crypto/tls takes a minimum and a maximum)")
		return
	}
	s.MinVersion, s.MaxVersion = vs[0], vs[len(vs)-1]
}

// upstreamTLS decodes an upstream's tls block.
func (d *decoder) upstreamTLS(n *yaml.Node, path string) *UpstreamTLS {
	t := &UpstreamTLS{Verify: true}
	tf := upstreamTLSFields{UpstreamTLS: t}
	upstreamTLSSection().decode(d, n, path, &tf)
	certNode, keyNode, verifyNode := tf.certNode, tf.keyNode, tf.verifyNode
	switch {
	case certNode != nil && keyNode == nil:
		d.errorf(certNode, join(path, "client_key"), "required with client_cert")
	case keyNode != nil && certNode == nil:
		d.errorf(keyNode, join(path, "client_cert"), "required with client_key")
	case !t.ClientCert.IsZero() && !t.ClientKey.IsZero():
		if _, err := (CertPair{Cert: t.ClientCert, Key: t.ClientKey}).LoadKeyPair(); err != nil {
			d.errorf(certNode, join(path, "client_cert"), "%v", err)
		}
	}
	if verifyNode != nil && !t.Verify {
		d.p.warnf(d.file, verifyNode.Line, join(path, "verify"), "brokers' certificates are not verified: anyone on the path can read and change the traffic")
	}
	return t
}

// sslFields is one item of ssls while it decodes.
type sslFields struct {
	*sslDecl
	cert, key                              PEMSource
	certs, keys                            []PEMSource
	certNode, keyNode, certsNode, snisNode *yaml.Node
	keysNode                               *yaml.Node
}

func (d *decoder) snis(kv keyValue, p string, s *sslFields) {
	s.snisNode = kv.val
	var nodes []*yaml.Node
	if kv.key == "sni" {
		nodes = []*yaml.Node{kv.val}
	} else {
		nodes = d.items(kv.val, p)
	}
	for i, item := range nodes {
		ip := p
		if kv.key == "snis" {
			ip = index(p, i)
		}
		if name, ok := d.sniName(item, ip); ok {
			s.SNIs = append(s.SNIs, name)
			s.sniLines = append(s.sniLines, item.Line)
		}
	}
}

func sslSection() section[sslFields] {
	type f = field[sslFields]
	return section[sslFields]{
		name: "ssls[]",
		fields: []f{
			{name: "id", def: "required, unique", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				s.ID, _ = d.id(kv.val, p)
				s.idLine = kv.val.Line
			}},
			{name: "cert", def: "required", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				s.cert, s.certNode = d.pemSource(kv.val, p), kv.val
			}},
			{name: "key", def: "required", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				s.key, s.keyNode = d.pemSource(kv.val, p), kv.val
			}},
			{name: "certs", def: "none", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				s.certsNode = kv.val
				for i, item := range d.items(kv.val, p) {
					s.certs = append(s.certs, d.pemSource(item, index(p, i)))
				}
			}},
			{name: "keys", def: "none", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				s.keysNode = kv.val
				for i, item := range d.items(kv.val, p) {
					s.keys = append(s.keys, d.pemSource(item, index(p, i)))
				}
			}},
			{name: "snis", def: "required", decode: func(d *decoder, kv keyValue, p string, s *sslFields) { d.snis(kv, p, s) }},
			{name: "sni", def: "required", decode: func(d *decoder, kv keyValue, p string, s *sslFields) { d.snis(kv, p, s) }},
			{name: "client", sub: sslClientSection().reference(0).Keys, decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				d.sslClient(kv.val, p, &s.SSL)
			}},
			{name: "ssl_protocols", def: "`[TLSv1.2, TLSv1.3]`", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				d.sslProtocols(kv.val, p, &s.SSL)
				s.protocolsSet = true
			}},
			{name: "status", def: "`1`", decode: func(d *decoder, kv keyValue, p string, s *sslFields) {
				if v, ok := d.intIn(kv.val, p, 0, 1); ok && v == 0 {
					s.disabled = true
				}
			}},
			{name: "type", def: "`server`", decode: func(d *decoder, kv keyValue, p string, _ *sslFields) {
				if t, ok := d.str(kv.val, p); ok && t != "server" {
					d.errorf(kv.val, p, `must be "server"; a client certificate for brokers goes in the upstream's tls.client_cert`)
				}
			}},
		},
		ignored: []string{"labels", "desc", "create_time", "update_time", "validity_start", "validity_end"},
	}
}

// sslClientFields is an ssl's client block while it decodes.
type sslClientFields struct {
	*SSL
	ca PEMSource
}

func sslClientSection() section[sslClientFields] {
	type f = field[sslClientFields]
	return section[sslClientFields]{
		name: "ssls[]",
		fields: []f{
			{name: "ca", def: "no mTLS", decode: func(d *decoder, kv keyValue, p string, c *sslClientFields) {
				c.ca = d.pemSource(kv.val, p)
				if !c.ca.IsZero() {
					if _, err := c.ca.LoadCertPool(); err != nil {
						d.errorf(kv.val, p, "%v", err)
					}
				}
			}},
			{name: "depth", def: fmt.Sprintf("`%d`", DefaultClientDepth), decode: func(d *decoder, kv keyValue, p string, c *sslClientFields) {
				c.ClientDepth, _ = d.intIn(kv.val, p, 1, 16)
			}},
			{name: "skip_mtls_uri_regex", hidden: true, decode: func(d *decoder, kv keyValue, p string, _ *sslClientFields) {
				d.errorf(kv.keyNode, p, "applies to HTTP routes only; mqgate's listeners are MQTT streams")
			}},
		},
	}
}

// upstreamTLSFields is an upstream's tls while it decodes.
type upstreamTLSFields struct {
	*UpstreamTLS
	certNode, keyNode, verifyNode *yaml.Node
}

func upstreamTLSSection() section[upstreamTLSFields] {
	type f = field[upstreamTLSFields]
	return section[upstreamTLSFields]{
		name: "upstreams[]",
		fields: []f{
			{name: "verify", def: "`true`", decode: func(d *decoder, kv keyValue, p string, t *upstreamTLSFields) {
				if v, ok := d.bool(kv.val, p); ok {
					t.Verify, t.verifyNode = v, kv.val
				}
			}},
			{name: "ca", def: "the system's roots", decode: func(d *decoder, kv keyValue, p string, t *upstreamTLSFields) {
				t.CA = d.pemSource(kv.val, p)
				if !t.CA.IsZero() {
					if _, err := t.CA.LoadCertPool(); err != nil {
						d.errorf(kv.val, p, "%v", err)
					}
				}
			}},
			{name: "server_name", def: "the node's host", decode: func(d *decoder, kv keyValue, p string, t *upstreamTLSFields) {
				if s, ok := d.str(kv.val, p); ok && s != "" {
					if !validHost(s) {
						d.errorf(kv.val, p, "must be a host name, got %q", s)
						return
					}
					t.ServerName = s
				}
			}},
			{name: "client_cert", def: "none", decode: func(d *decoder, kv keyValue, p string, t *upstreamTLSFields) {
				t.ClientCert, t.certNode = d.pemSource(kv.val, p), kv.val
			}},
			{name: "client_key", def: "none", decode: func(d *decoder, kv keyValue, p string, t *upstreamTLSFields) {
				t.ClientKey, t.keyNode = d.pemSource(kv.val, p), kv.val
			}},
			{name: "client_cert_id", hidden: true, decode: func(d *decoder, kv keyValue, p string, _ *upstreamTLSFields) {
				d.errorf(kv.keyNode, p, "not supported; give client_cert and client_key")
			}},
		},
	}
}

// checkSSLs checks ids and SNIs across files and that TLS listeners have
// certificates to present.
func (b *builder) checkSSLs() {
	idAt := make(map[string]*sslDecl)
	sniAt := make(map[string]string)
	for i := range b.ssls {
		s := &b.ssls[i]
		if s.ID != "" {
			if first, dup := idAt[s.ID]; dup {
				b.p.errorf(s.File, s.idLine, join(s.path, "id"), "duplicate id %q, first at %s", s.ID, at(first.File, first.idLine))
			} else {
				idAt[s.ID] = s
			}
		}
		if s.disabled {
			continue
		}
		for j, name := range s.SNIs {
			if first, dup := sniAt[name]; dup {
				b.p.errorf(s.File, s.sniLines[j], index(join(s.path, "snis"), j), "SNI %q is already served by %s", name, first)
				continue
			}
			sniAt[name] = fmt.Sprintf("ssl %q at %s", s.ID, at(s.File, s.Line))
		}
	}
	tlsListeners := 0
	for _, l := range b.listeners {
		if l.TLS {
			tlsListeners++
		}
	}
	enabled := 0
	for _, s := range b.ssls {
		if !s.disabled {
			enabled++
		}
	}
	switch {
	case tlsListeners > 0 && enabled == 0:
		for _, l := range b.listeners {
			if l.TLS {
				b.p.errorf(l.File, l.Line, l.path, "a TLS listener needs certificates: add an ssls entry")
			}
		}
	case tlsListeners == 0 && enabled > 0:
		b.p.warnf(b.ssls[0].File, b.ssls[0].Line, "ssls", "%d certificate(s) not used: no listener has tls: true", enabled)
	}
	for _, r := range b.routes {
		if r.SNI != "" && tlsListeners == 0 {
			b.p.warnf(r.File, r.sniLine, join(r.path, "sni"), "no listener has tls: true, so this route never matches")
		}
	}
}

// sslGlobal is apisix.ssl's TLS settings, which every ssls entry takes.
type sslGlobal struct {
	protocols  *[2]uint16 // ssl_protocols: the default of entries without their own
	ciphers    []uint16   // ssl_ciphers; nil: crypto/tls's
	ciphersSet bool
	ticketsOff bool          // ssl_session_tickets: false
	timeout    time.Duration // ssl_session_timeout
}

// opensslCiphers maps OpenSSL's names of the TLS 1.2 suites crypto/tls
// implements to crypto/tls's names.
var opensslCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
	"ECDHE-RSA-DES-CBC3-SHA":        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
}

// sslCiphers reads an OpenSSL cipher list (APISIX's and NGINX's
// ssl_ciphers, names separated by ':') into crypto/tls suite ids for TLS
// 1.2. A list of keywords alone ("HIGH:!aNULL:!MD5", NGINX's default)
// means crypto/tls's own choice, which is within it; names of suites
// crypto/tls does not implement (the DHE ones of APISIX's default) are
// left out with a warning, as OpenSSL leaves out what it lacks. TLS 1.3
// suites are always crypto/tls's: their names are accepted.
func (d *decoder) sslCiphers(n *yaml.Node, path, list string) []uint16 {
	ids := make(map[string]uint16)
	insecure := make(map[uint16]bool)
	for _, c := range tls.CipherSuites() {
		ids[c.Name] = c.ID
	}
	for _, c := range tls.InsecureCipherSuites() {
		ids[c.Name], insecure[c.ID] = c.ID, true
	}
	var out []uint16
	var keywords, missing, weak []string
	excluded := make(map[uint16]bool)
	for _, tok := range strings.FieldsFunc(list, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		name := strings.TrimLeft(tok, "!-+")
		goName, known := opensslCiphers[name]
		switch {
		case name != tok || strings.HasPrefix(tok, "@"):
			if known && tok[0] != '+' {
				excluded[ids[goName]] = true
			}
		case strings.HasPrefix(tok, "TLS_AES_") || strings.HasPrefix(tok, "TLS_CHACHA20_"):
			// TLS 1.3: crypto/tls always offers its three.
		case known:
			if id := ids[goName]; !slices.Contains(out, id) {
				out = append(out, id)
				if insecure[id] {
					weak = append(weak, tok)
				}
			}
		case !strings.Contains(tok, "-"):
			keywords = append(keywords, tok)
		default:
			missing = append(missing, tok)
		}
	}
	out = slices.DeleteFunc(out, func(id uint16) bool { return excluded[id] })
	switch {
	case len(out) == 0 && len(missing) == 0:
		return nil // keywords only: crypto/tls's secure defaults
	case len(keywords) > 0:
		d.errorf(n, path, "mixes cipher names with OpenSSL keywords (%s): list the names only, or the keywords only for crypto/tls's defaults", strings.Join(keywords, ", "))
		return nil
	case len(out) == 0:
		d.errorf(n, path, "none of %s is a TLS 1.2 cipher suite crypto/tls implements (known: %s)", strings.Join(missing, ", "), strings.Join(slices.Sorted(maps.Keys(opensslCiphers)), ", "))
		return nil
	}
	if len(missing) > 0 {
		d.p.warnf(d.file, n.Line, path, "left out, not implemented by crypto/tls: %s", strings.Join(missing, ", "))
	}
	if len(weak) > 0 {
		d.p.warnf(d.file, n.Line, path, "%s: insecure (CBC-SHA256 or 3DES); allowed because listed", strings.Join(weak, ", "))
	}
	return out
}

// applySSLGlobal gives every ssls entry apisix.ssl's settings.
func (b *builder) applySSLGlobal() {
	g := b.sslGlobal
	for i := range b.ssls {
		s := &b.ssls[i]
		if g.protocols != nil && !s.protocolsSet {
			s.MinVersion, s.MaxVersion = g.protocols[0], g.protocols[1]
		}
		if g.ciphersSet {
			s.CipherSuites = g.ciphers
		}
		s.SessionTicketsDisabled = g.ticketsOff
		s.SessionTimeout = g.timeout
	}
}
