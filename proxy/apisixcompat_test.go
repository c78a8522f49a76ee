package proxy_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// tlsConnack opens a TLS connection with cfg, sends a 3.1.1 CONNECT and
// reads the CONNACK (which also takes in TLS 1.3's session tickets), and
// returns the connection's state, or the handshake's error.
func tlsConnack(t *testing.T, addr, id string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	connect := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, byte(len(id))}, id...)
	if _, err := c.Write(connect); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	var connack [4]byte
	if _, err := io.ReadFull(c, connack[:]); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", connack, err)
	}
	return c.ConnectionState(), nil
}

// TestAPISIXSSLSettings: apisix.ssl's ssl_protocols, ssl_ciphers and
// ssl_session_tickets (APISIX's config.yaml) apply to the TLS listeners:
// a TLSv1.3-only setting refuses a TLS 1.2 client, a cipher list refuses a
// client without one of its suites and picks one, and tickets off means no
// resumption where the default resumes.
func TestAPISIXSSLSettings(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	gateway := func(ssl string) *tlsGateway {
		return startTLSGateway(t, fmt.Sprintf(`
apisix:
  ssl: %s
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
ssls:
  - {id: a, snis: [a.example], cert: %s/a.crt, key: %[2]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%q: 1}}}
`, ssl, p.dir, broker.Addr()))
	}
	tls12 := func(suites ...uint16) *tls.Config {
		c := p.clientTLS("a.example", nil)
		c.MaxVersion, c.CipherSuites = tls.VersionTLS12, suites
		return c
	}

	only13 := gateway(`{ssl_protocols: "TLSv1.3"}`)
	if _, err := tlsConnack(t, only13.addr, "v12", tls12()); err == nil {
		t.Error("ssl_protocols TLSv1.3: a TLS 1.2 client connected")
	}
	if st, err := tlsConnack(t, only13.addr, "v13", p.clientTLS("a.example", nil)); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("ssl_protocols TLSv1.3: TLS 1.3 client: version %x, %v", st.Version, err)
	}

	ciphers := gateway(`{ssl_protocols: [TLSv1.2], ssl_ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"}`)
	if _, err := tlsConnack(t, ciphers.addr, "aes128", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)); err == nil {
		t.Error("ssl_ciphers without AES-128: a client offering only it connected")
	}
	st, err := tlsConnack(t, ciphers.addr, "both", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	if err != nil || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Errorf("ssl_ciphers: suite %s, %v; want TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", tls.CipherSuiteName(st.CipherSuite), err)
	}

	resumes := func(g *tlsGateway) bool {
		c := p.clientTLS("a.example", nil)
		c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		if _, err := tlsConnack(t, g.addr, "first", c); err != nil {
			t.Fatal(err)
		}
		st, err := tlsConnack(t, g.addr, "second", c)
		if err != nil {
			t.Fatal(err)
		}
		return st.DidResume
	}
	if !resumes(gateway(`{ssl_session_tickets: true}`)) {
		t.Error("ssl_session_tickets true: the second connection did not resume")
	}
	if resumes(gateway(`{ssl_session_tickets: false}`)) {
		t.Error("ssl_session_tickets false: the second connection resumed")
	}
}

// TestAPISIXUpstreamHTTPDefaults: an HTTP route's upstream as APISIX writes
// it, no scheme (APISIX's default http) and pass_host: rewrite with
// upstream_host on the upstream, serves, and the node sees that Host; a
// route's own pass_host wins.
func TestAPISIXUpstreamHTTPDefaults(t *testing.T) {
	t.Parallel()
	web := startEcho(t, "web")
	g := startGateway(t, fmt.Sprintf(`
node_listen: [LISTEN]
stream_proxy:
  tcp: [LISTEN]
stream_routes: []
upstreams:
  - {id: web, nodes: {%q: 1}, pass_host: rewrite, upstream_host: internal.example}
routes:
  - {id: site, uri: /site, upstream_id: web}
  - {id: own, uri: /own, pass_host: pass, upstream_id: web}
`, strings.TrimPrefix(web.URL, "http://")))
	base := "http://" + g.addr
	if code, body := get(t, base+"/site", "www.example", nil); code != 200 || !strings.HasPrefix(body, "web host=internal.example") {
		t.Errorf("GET /site: %d %q, want the upstream's upstream_host", code, body)
	}
	if code, body := get(t, base+"/own", "www.example", nil); code != 200 || !strings.HasPrefix(body, "web host=www.example") {
		t.Errorf("GET /own: %d %q, want the client's Host (the route's pass_host)", code, body)
	}
}
