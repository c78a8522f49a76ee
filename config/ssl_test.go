package config

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/certtest"

	mqttrewrite "github.com/mqgate/mqgate/plugin/mqtt-rewrite"
)

// sslYAML appends pair's certificate and key, inline, to the YAML of an
// ssls item that ends yml.
func sslYAML(t testing.TB, yml string, pair *certtest.Pair) string {
	t.Helper()
	return yml + "    cert: |\n" + indent(pair.CertPEM, 6) + "    key: |\n" + indent(pair.KeyPEM, 6)
}

func indent(b []byte, n int) string {
	pad := strings.Repeat(" ", n)
	var out strings.Builder
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		out.WriteString(pad + line + "\n")
	}
	return out.String()
}

// TestTLSConfig loads every TLS key: a TLS listener behind a load balancer,
// certificates from files and inline (ECDSA and RSA side by side), mTLS,
// protocols, a route on a wildcard SNI with mqtt-rewrite, and an upstream
// spoken to over TLS with a PROXY v2 header.
func TestTLSConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ecCert, ecKey := ca.Server(t, certtest.ECDSA, "mqtt.example.com").WriteFiles(t, dir, "ec")
	rsa := ca.Server(t, certtest.RSA, "mqtt.example.com")
	caPath := filepath.Join(dir, "ca.pem")
	certtest.WriteFile(t, caPath, ca.CertPEM)
	cli := ca.Client(t, "mqgate")
	yml := `
stream_proxy:
  tcp:
    - {addr: 8883, tls: true, proxy_protocol: true, real_ip_from: ["10.0.0.0/8", "192.0.2.1"]}
    - addr: 9883
      tls: true
      proxy_protocol: true
      real_ip_from: 0.0.0.0/0
stream_routes:
  - id: devices
    sni: "*.Example.com."
    plugins:
      mqtt-rewrite: {client_id: "site-$ssl_client_s_dn_cn", username: "${ssl_client_serial}"}
    upstream_id: cloud
upstreams:
  - id: cloud
    type: chash
    key: ssl_client_s_dn_cn
    scheme: tls
    proxy_protocol: v2
    nodes: {"broker.internal:8883": 1}
    tls:
      client_cert: ` + filepath.Join(dir, "cli.crt") + `
      client_key: ` + filepath.Join(dir, "cli.key") + `
      verify: false
      server_name: broker.example.com
ssls:
  - id: 1
    cert: ` + ecCert + `
    key: ` + ecKey + `
    snis: ["mqtt.example.com", "*.example.com"]
    client: {ca: ` + caPath + `, depth: 2}
    ssl_protocols: [TLSv1.1, TLSv1.2, TLSv1.3]
    labels: {team: iot}
    certs:
      - |
` + indent(rsa.CertPEM, 8) + `    keys:
      - |
` + indent(rsa.KeyPEM, 8)
	cli.WriteFiles(t, dir, "cli")
	cfg, err := Parse(Document{Name: filepath.Join(dir, "tls.yaml"), Data: []byte(strings.TrimPrefix(yml, "\n"))})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	l := cfg.StreamProxy.TCP[0]
	if !l.TLS || !l.ProxyProtocol || !slices.Equal(l.RealIPFrom, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}) {
		t.Errorf("listener %+v", l)
	}
	if got := cfg.StreamProxy.TCP[1].RealIPFrom; len(got) != 1 || got[0].String() != "0.0.0.0/0" {
		t.Errorf("second listener real_ip_from %v", got)
	}
	s := cfg.SSLs[0]
	if len(s.Pairs) != 2 || s.Pairs[0].Cert.Path != ecCert || s.Pairs[1].Cert.Inline == "" {
		t.Errorf("pairs %+v", s.Pairs)
	}
	if !slices.Equal(s.SNIs, []string{"mqtt.example.com", "*.example.com"}) || s.ClientCA == nil || s.ClientCA.Path != caPath || s.ClientDepth != 2 {
		t.Errorf("ssl %+v", s)
	}
	if s.MinVersion != tls.VersionTLS11 || s.MaxVersion != tls.VersionTLS13 {
		t.Errorf("versions %x..%x", s.MinVersion, s.MaxVersion)
	}
	r := cfg.StreamRoutes[0]
	if r.SNI != "*.example.com" || !rewritesClientID(&r, "site-$ssl_client_s_dn_cn") {
		t.Errorf("route %+v", r)
	}
	u := cfg.Upstreams[0]
	if u.Key != "ssl_client_s_dn_cn" || u.Scheme != "tls" || u.ProxyProtocol != "v2" || u.TLS.Verify || u.TLS.ServerName != "broker.example.com" || u.TLS.ClientCert.IsZero() {
		t.Errorf("upstream %+v tls %+v", u, u.TLS)
	}
	var warnings []string
	for _, w := range cfg.Warnings {
		warnings = append(warnings, w.Msg)
	}
	for _, want := range []string{"TLSv1.1 is obsolete and insecure (RFC 8996); allowed because listed", "brokers' certificates are not verified"} {
		if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("warnings %q lack %q", warnings, want)
		}
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "CA")
	a := ca.Server(t, certtest.ECDSA, "a.example")
	b := ca.Server(t, certtest.ECDSA, "b.example")
	dir := t.TempDir()
	aCert, _ := a.WriteFiles(t, dir, "a")
	_, bKey := b.WriteFiles(t, dir, "b")
	tests := []struct {
		name, yml string
		want      []string
	}{
		{"mismatched key", `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: 1, snis: [a.example], cert: ` + aCert + `, key: ` + bKey + `}
`, []string{"t.yaml:3: ssls[0].cert: cert " + aCert + ", key " + bKey + ": tls: private key does not match public key"}},
		{"missing file, no SNI, no id", `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {cert: nowhere.pem, key: ` + bKey + `}
`, []string{
			`t.yaml:3: ssls[0].cert: not PEM text (no -----BEGIN) and not a readable file "nowhere.pem": no such file or directory`,
			"t.yaml:3: ssls[0].id: required",
			`t.yaml:3: ssls[0].snis: required: the names this certificate serves, like ["mqtt.example.com", "*.example.com"]`,
		}},
		{"bad names, protocols, client, type", `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - id: 1
    cert: ` + aCert + `
    key: ` + aCert + `
    snis: ["a.*.example", "*"]
    ssl_protocols: [TLSv1.1, TLSv1.3]
    client: {depth: 3}
    type: client
`, []string{
			"t.yaml:4: ssls[0].cert: cert " + aCert + ", key " + aCert + ": tls: found a certificate rather than a key in the PEM for the private key",
			`t.yaml:6: ssls[0].snis[0]: must be a host name like "mqtt.example.com" or a wildcard like "*.example.com", got "a.*.example"`,
			`t.yaml:6: ssls[0].snis[1]: must be a host name like "mqtt.example.com" or a wildcard like "*.example.com", got "*"`,
			"t.yaml:7: ssls[0].ssl_protocols: must be a contiguous range of versions (crypto/tls takes a minimum and a maximum)",
			"t.yaml:8: ssls[0].client.ca: required: the CA that client certificates must chain to",
			`t.yaml:9: ssls[0].type: must be "server"; a client certificate for brokers goes in the upstream's tls.client_cert`,
		}},
		{"duplicate SNI and id, certs without keys", `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: 1, snis: [a.example], cert: ` + aCert + `, key: ` + aCert + `.missing}
  - {id: 1, snis: [A.example], cert: ` + aCert + `, key: ` + aCert + `.missing, certs: [` + aCert + `]}
`, []string{
			`t.yaml:3: ssls[0].key: not PEM text (no -----BEGIN) and not a readable file "` + aCert + `.missing": no such file or directory`,
			`t.yaml:4: ssls[1].key: not PEM text (no -----BEGIN) and not a readable file "` + aCert + `.missing": no such file or directory`,
			"t.yaml:4: ssls[1].keys: certs has 1 item(s) but keys has 0: they pair up by position",
			`t.yaml:4: ssls[1].id: duplicate id "1", first at t.yaml:3`,
			`t.yaml:4: ssls[1].snis[0]: SNI "a.example" is already served by ssl "1" at t.yaml:3`,
		}},
		{"PROXY protocol in needs real_ip_from", `
stream_proxy:
  tcp:
    - {addr: 1883, proxy_protocol: true}
    - {addr: 1884, real_ip_from: 10.0.0.0/8}
    - {addr: 1885, proxy_protocol: true, real_ip_from: [10.0.0.300/8]}
`, []string{
			`t.yaml:3: stream_proxy.tcp[0].real_ip_from: required with proxy_protocol: the load balancers' addresses, like ["10.0.0.0/8"] ("0.0.0.0/0" and "::/0" trust everyone)`,
			"t.yaml:4: stream_proxy.tcp[1].real_ip_from: only used with proxy_protocol: true or websocket",
			`t.yaml:5: stream_proxy.tcp[2].real_ip_from[0]: must be an IP address or a CIDR like "10.0.0.0/8", got "10.0.0.300/8"`,
		}},
		{"upstream tls and routes", `
stream_proxy: {tcp: [1883]}
stream_routes:
  - upstream_id: 1
    sni: "bad name"
    plugins:
      mqtt-rewrite: {client_id: "$ssl_client_cn", password: ""}
  - upstream_id: 1
    plugins:
      mqtt-rewrite: {}
upstreams:
  - id: 1
    nodes: {"b:1883": 1}
    proxy_protocol: v3
    tls: {verify: true}
  - id: 2
    scheme: tls
    nodes: {"b:1883": 1}
    tls: {client_cert: ` + aCert + `, ca: ` + bKey + `}
`, []string{
			`t.yaml:4: stream_routes[0].sni: must be a host name like "mqtt.example.com" or a wildcard like "*.example.com", got "bad name"`,
			"t.yaml:6: stream_routes[0].plugins.mqtt-rewrite.client_id: unknown variable $ssl_client_cn (known: mqtt_client_id, remote_addr, mqtt_username, ssl_server_name, ssl_client_serial, ssl_client_s_dn, ssl_client_s_dn_cn, ssl_client_fingerprint)",
			"t.yaml:6: stream_routes[0].plugins.mqtt-rewrite.password: must not be empty; leave the key out to keep the client's value",
			"t.yaml:9: stream_routes[1].plugins.mqtt-rewrite: set at least one of client_id, username or password",
			`t.yaml:13: upstreams[0].proxy_protocol: must be v1 or v2, got "v3"`,
			"t.yaml:14: upstreams[0].tls: only used with scheme: tls, wss or https",
			"t.yaml:18: upstreams[1].tls.ca: CA " + bKey + ": no PEM CERTIFICATE found",
			"t.yaml:18: upstreams[1].tls.client_key: required with client_cert",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(Document{Name: "t.yaml", Data: []byte(strings.TrimPrefix(tt.yml, "\n"))})
			if err == nil {
				t.Fatalf("Parse succeeded, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if got := err.Error(); got != strings.Join(tt.want, "\n") {
				t.Errorf("Parse errors:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestSSLOverlay: an Admin API ssl replaces the file's ssl with the same id
// in place (so the first entry, the default certificate, stays first) and
// new ones come after.
func TestSSLOverlay(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "CA")
	a, b, c := ca.Server(t, certtest.ECDSA, "a.example"), ca.Server(t, certtest.ECDSA, "a.example"), ca.Server(t, certtest.ECDSA, "c.example")
	file := Document{Name: "mqgate.yaml", Data: []byte(sslYAML(t, `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - id: 1
    snis: [a.example]
`, a))}
	jsonPEM := func(p *certtest.Pair) string {
		return fmt.Sprintf(`"cert": %q, "key": %q`, p.CertPEM, p.KeyPEM)
	}
	state := Document{Name: "state.json", Overlay: true, Data: []byte(`{"ssls": [
{"id": "2", "snis": ["c.example"], ` + jsonPEM(c) + `},
{"id": 1, "snis": ["a.example"], ` + jsonPEM(b) + `}]}`)}
	cfg, err := Parse(file, state)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.SSLs) != 2 || cfg.SSLs[0].ID != "1" || cfg.SSLs[0].File != "state.json" || cfg.SSLs[1].ID != "2" {
		t.Fatalf("ssls = %+v", cfg.SSLs)
	}
	if got, _ := cfg.SSLs[0].Pairs[0].LoadKeyPair(); !got.Leaf.Equal(b.Cert) {
		t.Error("ssl 1 is not the Admin API's certificate")
	}
}

func rewritesClientID(r *StreamRoute, template string) bool {
	rw, _ := r.Plugin(mqttrewrite.Name).(*mqttrewrite.Settings)
	return rw != nil && rw.Rule != nil && rw.ClientID == template
}

func TestAPISIXSSLCiphers(t *testing.T) {
	t.Parallel()
	parse := func(ssl string) (*Config, error) {
		return Parse(Document{Name: "c.yaml", Data: []byte("apisix:\n  ssl: " + ssl + "\nstream_proxy: {tcp: [9000]}\nstream_routes: [{upstream: {nodes: {\"127.0.0.1:1883\": 1}}}]\n")})
	}
	// APISIX's default list: the DHE suites are left out with a warning.
	cfg, err := parse(`{ssl_ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256", ssl_protocols: "TLSv1.2 TLSv1.3", ssl_session_tickets: false}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), "c.yaml:2: apisix.ssl.ssl_ciphers: left out, not implemented by crypto/tls: DHE-RSA-AES128-GCM-SHA256") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
	for _, tc := range []struct{ ssl, want string }{
		{`{ssl_ciphers: "HIGH:!aNULL:!MD5"}`, ""}, // NGINX's default: crypto/tls's own
		{`{ssl_ciphers: "HIGH:ECDHE-RSA-AES128-GCM-SHA256"}`, "mixes cipher names with OpenSSL keywords (HIGH)"},
		{`{ssl_ciphers: "DHE-RSA-AES128-GCM-SHA256"}`, "none of DHE-RSA-AES128-GCM-SHA256 is a TLS 1.2 cipher suite crypto/tls implements"},
		{`{ssl_protocols: "TLSv1.2 TLSv1.4"}`, `apisix.ssl.ssl_protocols[1]: must be TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3, got "TLSv1.4"`},
		{`{ssl_session_tickets: maybe}`, "apisix.ssl.ssl_session_tickets"},
	} {
		_, err := parse(tc.ssl)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.ssl, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.ssl, err, tc.want)
		}
	}
}
