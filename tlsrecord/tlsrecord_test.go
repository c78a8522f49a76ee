package tlsrecord_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/tlsrecord"
)

// server is a TLS listener whose connections are carried by tlsrecord
// after crypto/tls's handshake.
type server struct {
	ln    net.Listener
	cfg   *tls.Config
	log   *tlsrecord.KeyLog
	conns chan net.Conn // *tlsrecord.Conn, or the *tls.Conn Protect left
	errs  chan error
	ca    *certtest.CA
}

func newServer(t *testing.T, tweak func(*tls.Config)) *server {
	t.Helper()
	ca := certtest.NewCA(t, "tlsrecord CA")
	pair := ca.Server(t, certtest.ECDSA, "a.example")
	s := &server{log: tlsrecord.NewKeyLog(), conns: make(chan net.Conn, 16), errs: make(chan error, 16), ca: ca}
	s.cfg = &tls.Config{Certificates: []tls.Certificate{pair.TLS}, KeyLogWriter: s.log}
	if tweak != nil {
		tweak(s.cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tr := tlsrecord.NewTransport(c)
				tc := tls.Server(tr, s.cfg)
				if err := tc.Handshake(); err != nil {
					tr.Forget(s.log)
					s.errs <- err
					c.Close()
					return
				}
				rc, err := tr.Protect(tc.ConnectionState(), s.log)
				if err != nil {
					s.conns <- tc
					return
				}
				s.conns <- rc
			}()
		}
	}()
	return s
}

func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case err := <-s.errs:
		t.Fatalf("server handshake: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no connection")
	}
	return nil
}

func (s *server) clientConfig() *tls.Config {
	return &tls.Config{ServerName: "a.example", RootCAs: s.ca.Pool()}
}

func dial(t *testing.T, s *server, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", s.ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCarriesBothWays: after full and resumed handshakes (the session
// ticket is the record Protect must count) and with no ticket at all, the
// carried connection moves a small message and 1 MiB each way intact,
// written in pieces of every size, and its secrets leave the KeyLog.
func TestCarriesBothWays(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	noTickets := newServer(t, func(c *tls.Config) { c.SessionTicketsDisabled = true })
	cache := tls.NewLRUClientSessionCache(4)
	for _, tc := range []struct {
		name   string
		s      *server
		resume bool
	}{
		{"full", s, false},
		{"resumed", s, true},
		{"no tickets", noTickets, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.s.clientConfig()
			cfg.ClientSessionCache = cache
			c := dial(t, tc.s, cfg)
			sc := tc.s.accept(t)
			if _, ok := sc.(*tlsrecord.Conn); !ok {
				t.Fatalf("Protect left the connection to crypto/tls (%T)", sc)
			}
			if c.ConnectionState().DidResume != tc.resume {
				t.Fatalf("DidResume = %v, want %v", c.ConnectionState().DidResume, tc.resume)
			}
			exchange(t, c, sc)
			if n := tc.s.log.Len(); n != 0 {
				t.Errorf("KeyLog keeps %d handshakes' secrets", n)
			}
		})
	}
}

func exchange(t *testing.T, c, sc net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(sc, got); err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v", got, err)
	}
	up, down := make([]byte, 1<<20), make([]byte, 1<<20)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	errs := make(chan error, 2)
	write := func(w net.Conn, b []byte) {
		for off, k := 0, 1; off < len(b); off, k = off+k, k*3%40000+1 {
			if _, err := w.Write(b[off:min(off+k, len(b))]); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}
	go write(c, up)
	go write(sc, down)
	gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
	if _, err := io.ReadFull(sc, gotUp); err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("server read 1 MiB intact: %v, %v", bytes.Equal(gotUp, up), err)
	}
	if _, err := io.ReadFull(c, gotDown); err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("client read 1 MiB intact: %v, %v", bytes.Equal(gotDown, down), err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientCertAndRSA: with a client certificate asked for (the session
// ticket, sent after it is checked, carries it) and with an RSA server
// certificate (a Certificate record of its own size), Protect still
// carries the connection, resumed too.
func TestClientCertAndRSA(t *testing.T) {
	t.Parallel()
	var client *certtest.Pair
	var ca *certtest.CA
	s := newServer(t, func(c *tls.Config) {
		ca = certtest.NewCA(t, "client CA")
		client = ca.Client(t, "meter-7")
		rsa := ca.Server(t, certtest.RSA, "a.example")
		c.Certificates = []tls.Certificate{rsa.TLS}
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = ca.Pool()
	})
	s.ca = ca
	cache := tls.NewLRUClientSessionCache(4)
	for _, resume := range []bool{false, true} {
		cfg := s.clientConfig()
		cfg.Certificates = []tls.Certificate{client.TLS}
		cfg.ClientSessionCache = cache
		c := dial(t, s, cfg)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil { // completes the client's side of the handshake
			t.Fatal(err)
		}
		sc := s.accept(t)
		if _, ok := sc.(*tlsrecord.Conn); !ok {
			t.Fatalf("resume %v: Protect left the connection to crypto/tls (%T)", resume, sc)
		}
		got := make([]byte, 4)
		_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(sc, got); err != nil || string(got) != "ping" {
			t.Fatalf("server read %q, %v", got, err)
		}
		if _, err := sc.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
			t.Fatalf("client read %q, %v", got, err)
		}
		if c.ConnectionState().DidResume != resume {
			t.Fatalf("DidResume = %v, want %v", c.ConnectionState().DidResume, resume)
		}
	}
}

// TestCloseNotify: CloseWrite sends close_notify, which the client reads
// as EOF; the client's close_notify reads as EOF on the server.
func TestCloseNotify(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := dial(t, s, s.clientConfig())
	sc := s.accept(t)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := sc.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := sc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want bye then EOF", b, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := sc.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("server read %d, %v; want EOF", n, err)
	}
}

// TestTLS12StaysWithCryptoTLS: a TLS 1.2 handshake is not carried.
func TestTLS12StaysWithCryptoTLS(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
	c := dial(t, s, s.clientConfig())
	sc := s.accept(t)
	if _, ok := sc.(*tls.Conn); !ok {
		t.Fatalf("TLS 1.2 connection is %T, want *tls.Conn", sc)
	}
	exchange(t, c, sc)
	if n := s.log.Len(); n != 0 {
		t.Errorf("KeyLog keeps %d handshakes' secrets", n)
	}
}

// TestKeyUpdate: OpenSSL's s_client asks for a key update ("K": update
// and request the peer's); the carried connection updates its read key,
// answers with its own KeyUpdate and updates its write key, and bytes go
// on both ways.
func TestKeyUpdate(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	s := newServer(t, nil)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, s.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(openssl, "s_client", "-connect", s.ln.Addr().String(), "-servername", "a.example",
		"-CAfile", caFile, "-tls1_3") // interactive: neither -quiet nor -ign_eof, so that "K" is a command
	stdin, _ := cmd.StdinPipe()
	stdout, w, err := os.Pipe() // s_client's output and its messages ("KEYUPDATE") in one stream
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); stdout.Close() })
	sc := s.accept(t)
	if _, ok := sc.(*tlsrecord.Conn); !ok {
		t.Fatalf("Protect left the connection to crypto/tls (%T)", sc)
	}
	_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
	out := bufio.NewReader(stdout)
	lines := make(chan string, 4)
	go func() {
		for {
			l, err := out.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- strings.TrimSpace(l)
		}
	}()
	readLine := func(want string) {
		t.Helper()
		b := make([]byte, 0, 64)
		for !bytes.HasSuffix(b, []byte("\n")) {
			var one [1]byte
			if _, err := io.ReadFull(sc, one[:]); err != nil {
				t.Fatalf("server read %q then %v", b, err)
			}
			b = append(b, one[0])
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Fatalf("server read %q, want %q", got, want)
		}
	}
	expect := func(want string) { // s_client prints the session first, then what it reads
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("s_client ended before printing %q", want)
				}
				if l == want {
					return
				}
			case <-timeout:
				t.Fatalf("s_client did not print %q", want)
			}
		}
	}
	if _, err := io.WriteString(stdin, "before\n"); err != nil {
		t.Fatal(err)
	}
	readLine("before")
	if _, err := io.WriteString(stdin, "K\n"); err != nil { // a KeyUpdate asking for ours
		t.Fatal(err)
	}
	// s_client takes a whole read of its input as the command: the next
	// line goes once it has acted on this one.
	expect("KEYUPDATE")
	if _, err := io.WriteString(stdin, "after\n"); err != nil {
		t.Fatal(err)
	}
	readLine("after")
	if _, err := sc.Write([]byte("answer\n")); err != nil {
		t.Fatal(err)
	}
	expect("answer")
}

// TestHelloRetryRequest: a client whose key share the server does not
// take gets a HelloRetryRequest and sends a second ClientHello (with the
// same random, RFC 8446 4.1.2); the connection is still carried.
func TestHelloRetryRequest(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP256} })
	cfg := s.clientConfig()
	cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256} // a share for X25519 only
	c := dial(t, s, cfg)
	sc := s.accept(t)
	if !c.ConnectionState().HelloRetryRequest {
		t.Fatal("no HelloRetryRequest: the test does not test it")
	}
	if _, ok := sc.(*tlsrecord.Conn); !ok {
		t.Fatalf("Protect left the connection to crypto/tls (%T)", sc)
	}
	exchange(t, c, sc)
}

// TestOpenSSLSuites: OpenSSL's s_client with each TLS 1.3 suite: the
// AES-GCM ones are carried (SHA-384 and 32-byte keys for AES-256), ChaCha20
// stays with crypto/tls; bytes go both ways either way.
func TestOpenSSLSuites(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	s := newServer(t, nil)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, s.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		suite   string
		carried bool
	}{
		{"TLS_AES_128_GCM_SHA256", true},
		{"TLS_AES_256_GCM_SHA384", true},
		{"TLS_CHACHA20_POLY1305_SHA256", false},
	} {
		cmd := exec.Command(openssl, "s_client", "-connect", s.ln.Addr().String(), "-servername", "a.example",
			"-CAfile", caFile, "-tls1_3", "-ciphersuites", tc.suite, "-quiet")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sc := s.accept(t)
		if _, ok := sc.(*tlsrecord.Conn); ok != tc.carried {
			t.Errorf("%s: server side is %T, carried %v", tc.suite, sc, tc.carried)
		}
		_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(stdin, "ping\n"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(sc, got); err != nil || string(got) != "ping\n" {
			t.Fatalf("%s: server read %q, %v", tc.suite, got, err)
		}
		if _, err := sc.Write([]byte("pong\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "pong\n" {
			t.Errorf("%s: s_client read %q, %v", tc.suite, line, err)
		}
	}
}

// heldConn is a client's TCP connection whose writes after the first (the
// ClientHello) wait until flush, so that the client's Finished and its
// first records reach the server in one segment.
type heldConn struct {
	net.Conn
	writes  int
	held    []byte
	flushed bool
}

func (h *heldConn) Write(b []byte) (int, error) {
	if h.writes++; h.writes == 1 || h.flushed {
		return h.Conn.Write(b)
	}
	h.held = append(h.held, b...)
	return len(b), nil
}

func (h *heldConn) flush() error {
	_, err := h.Conn.Write(h.held)
	h.held, h.flushed = nil, true
	return err
}

// TestFirstRecordsWithFinished: what the Transport read past the client's
// Finished (the client's first records, in the same segment) reaches the
// server's reads, whether the Conn carries the connection or crypto/tls
// keeps it (here: no secrets logged, so Protect leaves it).
func TestFirstRecordsWithFinished(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tweak   func(*tls.Config)
		carried bool
	}{
		{"carried", nil, true},
		{"left to crypto/tls", func(c *tls.Config) { c.KeyLogWriter = nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, tc.tweak)
			raw, err := net.Dial("tcp", s.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() })
			_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
			h := &heldConn{Conn: raw}
			c := tls.Client(h, s.clientConfig())
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			first := bytes.Repeat([]byte("first records "), 100) // a few records
			for i := 0; i < len(first); i += 300 {
				if _, err := c.Write(first[i:min(i+300, len(first))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.flush(); err != nil {
				t.Fatal(err)
			}
			sc := s.accept(t)
			if _, ok := sc.(*tlsrecord.Conn); ok != tc.carried {
				t.Fatalf("server side is %T, want carried %v", sc, tc.carried)
			}
			_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
			got := make([]byte, len(first))
			if _, err := io.ReadFull(sc, got); err != nil || !bytes.Equal(got, first) {
				t.Fatalf("server read %q, %v", got, err)
			}
			exchange(t, c, sc)
		})
	}
}

// TestKeyLogLines: the KeyLog keeps a handshake's entry only for the
// application traffic secrets of a well-formed NSS key log line ("LABEL
// <64 hex digits of client random> <hex secret>"); any other line is
// taken (no error, crypto/tls would fail the handshake on one) and
// ignored.
func TestKeyLogLines(t *testing.T) {
	random := strings.Repeat("ab", 32)
	secret := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		name string
		line string
		kept int
	}{
		{"client traffic secret", "CLIENT_TRAFFIC_SECRET_0 " + random + " " + secret + "\n", 1},
		{"server traffic secret", "SERVER_TRAFFIC_SECRET_0 " + random + " " + secret + "\n", 1},
		{"no newline", "SERVER_TRAFFIC_SECRET_0 " + random + " " + secret, 1},
		{"handshake secret", "CLIENT_HANDSHAKE_TRAFFIC_SECRET " + random + " " + secret + "\n", 0},
		{"two fields", "CLIENT_TRAFFIC_SECRET_0 " + random + "\n", 0},
		{"four fields", "CLIENT_TRAFFIC_SECRET_0 " + random + " " + secret + " extra\n", 0},
		{"short random", "CLIENT_TRAFFIC_SECRET_0 " + random[2:] + " " + secret + "\n", 0},
		{"random not hex", "CLIENT_TRAFFIC_SECRET_0 " + strings.Repeat("zz", 32) + " " + secret + "\n", 0},
		{"secret not hex", "CLIENT_TRAFFIC_SECRET_0 " + random + " 0g\n", 0},
		{"empty", "", 0},
		{"spaces only", "   \n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := tlsrecord.NewKeyLog()
			n, err := log.Write([]byte(tc.line))
			if n != len(tc.line) || err != nil {
				t.Errorf("Write = %d, %v; want %d, nil", n, err, len(tc.line))
			}
			if got := log.Len(); got != tc.kept {
				t.Errorf("KeyLog keeps %d handshakes, want %d", got, tc.kept)
			}
		})
	}
}
