package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/certtest"
)

// load parses yml (with DIR standing for dir) into a configuration.
func load(t *testing.T, dir, yml string) *config.Config {
	t.Helper()
	yml = strings.ReplaceAll(yml, "DIR", dir)
	cfg, err := config.Parse(config.Document{Name: filepath.Join(dir, "t.yaml"), Data: []byte(yml)})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func newStore(t *testing.T, cfg *config.Config) *Store {
	t.Helper()
	s := NewStore(slog.New(slog.DiscardHandler))
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake runs a TLS handshake between the store's server side and a
// client with cfg, over loopback TCP, and lets the client read one byte after it
// so that a TLS 1.3 session ticket arrives.
func handshake(t *testing.T, s *Store, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	cs, _, err := handshakeBoth(t, s, cfg)
	return cs, err
}

// tcpPair returns both ends of a loopback TCP connection: unlike
// net.Pipe, it buffers, as the TLS handshake's flights need.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// handshakeBoth is handshake that also returns the server's view.
func handshakeBoth(t *testing.T, s *Store, cfg *tls.Config) (client, server tls.ConnectionState, err error) {
	t.Helper()
	sc, cc := tcpPair(t)
	defer sc.Close()
	defer cc.Close()
	srvErr := make(chan error, 1)
	go func() {
		srv := tls.Server(sc, s.ServerConfig())
		err := srv.Handshake()
		if err == nil {
			server = srv.ConnectionState()
			_, err = srv.Write([]byte{1})
		}
		srvErr <- err
		sc.Close()
	}()
	cli := tls.Client(cc, cfg)
	err = cli.Handshake()
	if err == nil {
		var b [1]byte
		_, err = io.ReadFull(cli, b[:])
	}
	client = cli.ConnectionState()
	cc.Close() // a server blocked writing to a failed client gives up
	if serr := <-srvErr; err == nil && serr != nil {
		err = serr
	}
	return client, server, err
}

const twoSSLs = `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: a, snis: [a.example], cert: DIR/a.crt, key: DIR/a.key}
  - id: b
    snis: ["*.b.example"]
    cert: DIR/b-rsa.crt
    key: DIR/b-rsa.key
    certs: [DIR/b-ec.crt]
    keys: [DIR/b-ec.key]
`

func TestSNIPicksTheCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ca.Server(t, certtest.ECDSA, "a.example").WriteFiles(t, dir, "a")
	ca.Server(t, certtest.RSA, "*.b.example").WriteFiles(t, dir, "b-rsa")
	ca.Server(t, certtest.ECDSA, "*.b.example").WriteFiles(t, dir, "b-ec")
	s := newStore(t, load(t, dir, twoSSLs))

	tests := []struct {
		name, sni string
		tls12RSA  bool // a client that can only take an RSA certificate
		wantName  string
		wantAlg   x509.PublicKeyAlgorithm
	}{
		{"exact name", "a.example", false, "a.example", x509.ECDSA},
		{"upper case", "A.EXAMPLE", false, "a.example", x509.ECDSA},
		{"wildcard, ECDSA first", "x.b.example", false, "*.b.example", x509.ECDSA},
		{"wildcard, RSA for an RSA-only client", "x.b.example", true, "*.b.example", x509.RSA},
		{"wildcard covers one label only: fallback", "y.x.b.example", false, "a.example", x509.ECDSA},
		{"unknown name: fallback", "c.example", false, "a.example", x509.ECDSA},
		{"no SNI: the first ssls object", "", false, "a.example", x509.ECDSA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true}
			if tt.tls12RSA {
				cfg.MaxVersion = tls.VersionTLS12
				cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
			}
			cs, err := handshake(t, s, cfg)
			if err != nil {
				t.Fatal(err)
			}
			leaf := cs.PeerCertificates[0]
			if leaf.Subject.CommonName != tt.wantName || leaf.PublicKeyAlgorithm != tt.wantAlg {
				t.Errorf("got %s %v, want %s %v", leaf.Subject.CommonName, leaf.PublicKeyAlgorithm, tt.wantName, tt.wantAlg)
			}
			if tt.sni != "" && tt.wantName != "a.example" {
				// The client verifies the certificate for its name.
				verify := &tls.Config{ServerName: tt.sni, RootCAs: ca.Pool(), MaxVersion: cfg.MaxVersion, CipherSuites: cfg.CipherSuites}
				if _, err := handshake(t, s, verify); err != nil {
					t.Errorf("verifying client: %v", err)
				}
			}
		})
	}
}

func TestClientCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "Device CA")
	other := certtest.NewCA(t, "Other CA")
	inter := ca.Intermediate(t, "Device Intermediate")
	ca.Server(t, certtest.ECDSA, "mqtt.example", "deep.example").WriteFiles(t, dir, "srv")
	certtest.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM)
	s := newStore(t, load(t, dir, `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: 1, snis: [mqtt.example], cert: DIR/srv.crt, key: DIR/srv.key, client: {ca: DIR/ca.pem}}
  - {id: 2, snis: [deep.example], cert: DIR/srv.crt, key: DIR/srv.key, client: {ca: DIR/ca.pem, depth: 2}}
`))
	good, viaInter, stranger := ca.Client(t, "meter-7"), inter.Client(t, "meter-8"), other.Client(t, "intruder")
	tests := []struct {
		name, sni string
		cert      *certtest.Pair
		wantErr   string
	}{
		{"certificate from the CA", "mqtt.example", good, ""},
		{"no certificate", "mqtt.example", nil, "certificate required"},
		{"certificate from another CA", "mqtt.example", stranger, "unknown certificate authority"},
		{"intermediate beyond depth 1", "mqtt.example", viaInter, "bad certificate"},
		{"intermediate within depth 2", "deep.example", viaInter, ""},
	}
	// A resumed session still knows the client certificate: the
	// variables and mqtt-rewrite depend on it.
	t.Run("resumed session keeps the certificate", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "mqtt.example", RootCAs: ca.Pool(), Certificates: []tls.Certificate{good.TLS}, ClientSessionCache: tls.NewLRUClientSessionCache(2)}
		for i := range 2 {
			_, srv, err := handshakeBoth(t, s, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if srv.DidResume != (i == 1) || len(srv.PeerCertificates) == 0 || srv.PeerCertificates[0].Subject.CommonName != "meter-7" || len(srv.VerifiedChains) == 0 {
				t.Fatalf("handshake %d: resumed %v, peer certificates %d, verified chains %d", i, srv.DidResume, len(srv.PeerCertificates), len(srv.VerifiedChains))
			}
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: tt.sni, RootCAs: ca.Pool()}
			if tt.cert != nil {
				// Send the certificate whatever CAs the server names, as a
				// misconfigured or hostile client would.
				cert := tt.cert.TLS
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			}
			_, err := handshake(t, s, cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("handshake error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestProtocolsAndResumption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ca.Server(t, certtest.ECDSA, "new.example").WriteFiles(t, dir, "srv")
	s := newStore(t, load(t, dir, `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: 1, snis: [new.example], cert: DIR/srv.crt, key: DIR/srv.key}
  - {id: 2, snis: [old.example], cert: DIR/srv.crt, key: DIR/srv.key, ssl_protocols: [TLSv1.1, TLSv1.2]}
`))
	old := &tls.Config{ServerName: "new.example", InsecureSkipVerify: true, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}
	if _, err := handshake(t, s, old); err == nil {
		t.Error("TLS 1.1 accepted by default")
	}
	old.ServerName = "old.example"
	if cs, err := handshake(t, s, old); err != nil || cs.Version != tls.VersionTLS11 {
		t.Errorf("TLS 1.1 where asked for: %v, version %x", err, cs.Version)
	}
	if cs, err := handshake(t, s, &tls.Config{ServerName: "old.example", InsecureSkipVerify: true}); err != nil || cs.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.3 client on a 1.1-1.2 object: %v, version %x", err, cs.Version)
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(VersionName(v), func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			cfg := &tls.Config{ServerName: "new.example", RootCAs: ca.Pool(), MaxVersion: v, ClientSessionCache: cache}
			if cs, err := handshake(t, s, cfg); err != nil || cs.DidResume {
				t.Fatalf("first handshake: %v, resumed %v", err, cs.DidResume)
			}
			if cs, err := handshake(t, s, cfg); err != nil || !cs.DidResume {
				t.Fatalf("second handshake: %v, resumed %v", err, cs.DidResume)
			}
			// A rotation keeps the previous key for decryption.
			s.RotateTicketKeys()
			if cs, err := handshake(t, s, cfg); err != nil || !cs.DidResume {
				t.Fatalf("after a rotation: %v, resumed %v", err, cs.DidResume)
			}
			// A ticket older than TicketKeys rotations no longer resumes.
			fresh := &tls.Config{ServerName: "new.example", RootCAs: ca.Pool(), MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if _, err := handshake(t, s, fresh); err != nil {
				t.Fatal(err)
			}
			for range TicketKeys {
				s.RotateTicketKeys()
			}
			if cs, err := handshake(t, s, fresh); err != nil || cs.DidResume {
				t.Fatalf("after %d rotations: %v, resumed %v", TicketKeys, err, cs.DidResume)
			}
		})
	}
}

// TestReload: a changed file is picked up; an invalid one is refused and
// the certificate in use kept; fixing it is picked up again.
func TestReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	first := ca.Server(t, certtest.ECDSA, "mqtt.example")
	first.WriteFiles(t, dir, "srv")
	s := newStore(t, load(t, dir, `
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls:
  - {id: 1, snis: [mqtt.example], cert: DIR/srv.crt, key: DIR/srv.key}
`))
	serial := func() string {
		t.Helper()
		cs, err := handshake(t, s, &tls.Config{ServerName: "mqtt.example", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(cs.PeerCertificates[0].SerialNumber)
	}
	if s.CheckFiles() {
		t.Error("CheckFiles reloaded unchanged files")
	}
	if got := serial(); got != first.Cert.SerialNumber.String() {
		t.Fatalf("serving %s, want the first certificate", got)
	}

	second := ca.Server(t, certtest.ECDSA, "mqtt.example")
	second.WriteFiles(t, dir, "srv")
	if !s.CheckFiles() {
		t.Fatal("CheckFiles did not reload changed files")
	}
	if got := serial(); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serving %s, want the second certificate", got)
	}

	// A new certificate whose key has not been written yet: refused.
	third := ca.Server(t, certtest.ECDSA, "mqtt.example")
	certtest.WriteFile(t, filepath.Join(dir, "srv.crt"), third.CertPEM)
	if s.CheckFiles() {
		t.Fatal("CheckFiles installed a certificate with the wrong key")
	}
	if got := serial(); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serving %s after a refused reload, want the second certificate", got)
	}
	certtest.WriteFile(t, filepath.Join(dir, "srv.key"), third.KeyPEM)
	if !s.CheckFiles() {
		t.Fatal("CheckFiles did not reload once the key matched")
	}
	if got := serial(); got != third.Cert.SerialNumber.String() {
		t.Fatalf("serving %s, want the third certificate", got)
	}
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "Broker CA")
	ca.Client(t, "mqgate").WriteFiles(t, dir, "cli")
	certtest.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM)
	s := newStore(t, load(t, dir, `
stream_proxy: {tcp: [1883]}
stream_routes:
  - {upstream_id: plain}
  - {upstream_id: verified}
  - upstream: {scheme: tls, nodes: {"b:1": 1}, tls: {verify: false}}
upstreams:
  - {id: plain, nodes: {"b:1": 1}}
  - id: verified
    scheme: tls
    nodes: {"b:1": 1}
    tls: {ca: DIR/ca.pem, client_cert: DIR/cli.crt, client_key: DIR/cli.key, server_name: broker.example}
`))
	if c := s.ClientConfig("plain", "b"); c != nil {
		t.Errorf("plain upstream got a TLS config")
	}
	c := s.ClientConfig("verified", "b")
	if c == nil || c.ServerName != "broker.example" || c.InsecureSkipVerify || c.RootCAs == nil || len(c.Certificates) != 1 {
		t.Errorf("verified upstream: %+v", c)
	}
	c = s.ClientConfig("route:route-2", "10.0.0.1")
	if c == nil || c.ServerName != "10.0.0.1" || !c.InsecureSkipVerify {
		t.Errorf("inline upstream: %+v", c)
	}
}

// TestSessionTimeout: apisix.ssl.ssl_session_timeout lets a session resume
// while its ticket is younger than the timeout, on TLS 1.2 and 1.3; an
// older one, or one issued before the limit (no issue time in it), gets a
// full handshake and a new ticket. The clock is the test's.
func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ca.Server(t, certtest.ECDSA, "a.example").WriteFiles(t, dir, "srv")
	const yml = `
apisix: {ssl: {ssl_session_timeout: 10m}}
stream_proxy: {tcp: [{addr: 8883, tls: true}]}
ssls: [{id: 1, snis: [a.example], cert: DIR/srv.crt, key: DIR/srv.key}]
`
	cfg := load(t, dir, yml)
	if got := cfg.SSLs[0].SessionTimeout; got != 10*time.Minute {
		t.Fatalf("SessionTimeout = %v, want 10m", got)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(VersionName(v), func(t *testing.T) {
			t.Parallel()
			s := newStore(t, load(t, dir, strings.Replace(yml, "ssl_session_timeout: 10m", "ssl_session_tickets: true", 1)))
			client := &tls.Config{ServerName: "a.example", RootCAs: ca.Pool(), MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			resumes := func(want bool, when string) {
				t.Helper()
				if cs, err := handshake(t, s, client); err != nil || cs.DidResume != want {
					t.Fatalf("%s: %v, resumed %v, want %v", when, err, cs.DidResume, want)
				}
			}
			resumes(false, "first handshake, no limit")
			resumes(true, "no limit")
			now := time.Unix(1_800_000_000, 0)
			limitSessions(s.cur.Load().fallback, 10*time.Minute, func() time.Time { return now })
			resumes(false, "a ticket from before the limit")
			now = now.Add(9 * time.Minute)
			resumes(true, "9 minutes after the ticket")
			now = now.Add(10*time.Minute + time.Millisecond) // the ticket of 9 minutes ago is 10 min 1 ms old
			resumes(false, "10 minutes and 1 ms after the ticket")
			resumes(true, "the new ticket at once")
		})
	}
	// Through the configuration: a session resumes within the timeout.
	s := newStore(t, cfg)
	client := &tls.Config{ServerName: "a.example", RootCAs: ca.Pool(), ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i, want := range []bool{false, true} {
		if cs, err := handshake(t, s, client); err != nil || cs.DidResume != want {
			t.Fatalf("handshake %d: %v, resumed %v", i, err, cs.DidResume)
		}
	}
	if _, err := config.Parse(config.Document{Name: "t.yaml", Data: []byte(strings.Replace(yml, "10m", "0", 1))}); err == nil ||
		!strings.Contains(err.Error(), "t.yaml:2: apisix.ssl.ssl_session_timeout: must be greater than 0") {
		t.Errorf("ssl_session_timeout: 0: %v", err)
	}
}
