// Package tlsconf turns the configuration's certificates into crypto/tls
// configurations and keeps them current: a TLS listener takes its
// certificate by SNI from the ssls objects, an upstream with scheme tls gets
// its client configuration, and both follow their files as they change.
//
//	store := tlsconf.NewStore(log)
//	if err := store.Update(cfg); err != nil { ... } // bad certificate: nothing changes
//	go store.Watch(ctx, 5*time.Second)            // reload when a file changes
//	ln := tls.NewListener(tcpLn, store.ServerConfig())
//	brokerTLS := store.ClientConfig("cloud", "broker-1.internal") // nil: upstream speaks plain TCP
//
// Which certificate: the ssls object naming the client's SNI exactly, else
// the one whose wildcard "*.example.com" covers it (one label, as in
// certificates), else the first ssls object of the configuration, which
// also serves clients that send no SNI. Within one object, the first
// certificate the client supports is chosen, ECDSA before RSA.
//
// Session tickets are on. Their keys are random, rotated every
// TicketRotation and kept for TicketKeys rotations, and derived per ssls
// object and client CA, so a ticket never resumes a session under another
// object's client-certificate policy.
package tlsconf

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/config"
)

// Ticket key rotation: a new key every TicketRotation; tickets sealed with
// the TicketKeys-1 previous keys still resume.
const (
	TicketRotation = 6 * time.Hour
	TicketKeys     = 4
)

// Store holds the TLS configurations built from the running configuration.
type Store struct {
	log *slog.Logger

	mu      sync.Mutex      // serializes builds and rotations
	cfg     *config.Config  // what cur was built from
	stamps  map[string]stat // of the files cur was built from (or last refused)
	tickets [][32]byte      // newest first
	rotated time.Time

	cur atomic.Pointer[set]

	keyLog io.Writer // every server configuration's KeyLogWriter, under mu
}

// set is one consistent generation of TLS configurations.
type set struct {
	exact     map[string]*tls.Config // by lower-case SNI
	wildcard  map[string]*tls.Config // "*.example.com" under "example.com"
	fallback  *tls.Config            // the first ssls object
	upstreams map[string]*tls.Config // by upstream id; ServerName unset
	server    []*server              // for ticket key updates
}

type server struct {
	cfg  *tls.Config
	salt []byte // what the object's ticket keys are derived with
}

// stat identifies a version of a file.
type stat struct {
	mod  time.Time
	size int64
	ino  uint64
}

// NewStore returns an empty store; Update fills it.
func NewStore(log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{log: log}
	s.rotateLocked()
	s.cur.Store(&set{})
	return s
}

// Update builds the TLS configurations of cfg and makes them current. On
// error (a file that vanished or changed into something invalid since the
// configuration was loaded) the current ones stay.
func (s *Store) Update(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buildLocked(cfg)
}

func (s *Store) buildLocked(cfg *config.Config) error {
	stamps := statFiles(cfg)
	next, err := s.build(cfg)
	if err != nil {
		return err
	}
	s.cfg, s.stamps = cfg, stamps
	s.cur.Store(next)
	return nil
}

// LogKeys makes w the KeyLogWriter of the server configurations built
// from now on (the secrets of package tlsrecord); call it before Update.
func (s *Store) LogKeys(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyLog = w
}

// keyLogFor is the KeyLogWriter of cfg's server configurations: none
// when stream_proxy.tls_record is off, as nothing takes the secrets then.
func (s *Store) keyLogFor(cfg *config.Config) io.Writer {
	if cfg == nil || cfg.StreamProxy.TLSRecordOff {
		return nil
	}
	return s.keyLog
}

// ServerConfig is the configuration for TLS listeners: it picks the ssls
// object per connection from the current set.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{GetConfigForClient: s.configForClient}
}

func (s *Store) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	cur := s.cur.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if c := cur.exact[name]; c != nil {
		return c, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := cur.wildcard[parent]; c != nil {
			return c, nil
		}
	}
	if cur.fallback == nil {
		return nil, errors.New("no certificates configured")
	}
	return cur.fallback, nil
}

// ClientConfig returns the configuration to dial a node of the upstream
// with, or nil when the upstream does not use TLS. host is the node's host,
// the server name unless the upstream sets tls.server_name.
func (s *Store) ClientConfig(upstreamID, host string) *tls.Config {
	base := s.cur.Load().upstreams[upstreamID]
	if base == nil {
		return nil
	}
	c := base.Clone()
	if c.ServerName == "" {
		c.ServerName = host
	}
	return c
}

// Watch checks the certificate files every interval and reloads when one
// changed; it rotates the session ticket keys on schedule. It returns when
// ctx is done.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.CheckFiles()
			s.mu.Lock()
			if time.Since(s.rotated) >= TicketRotation {
				s.rotateLocked()
			}
			s.mu.Unlock()
		}
	}
}

// CheckFiles reloads the certificates when a file changed since the last
// build. A change that does not load (a key that no longer matches, a
// half-written file) is logged and refused: the certificates in use stay,
// and the files are tried again when they change next. It reports whether
// new certificates were installed.
func (s *Store) CheckFiles() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return false
	}
	stamps := statFiles(s.cfg)
	if equalStamps(stamps, s.stamps) {
		return false
	}
	if err := s.buildLocked(s.cfg); err != nil {
		s.stamps = stamps // do not retry until the files change again
		s.log.Error("certificate reload refused, keeping the certificates in use", "err", err)
		return false
	}
	s.log.Info("certificates reloaded from changed files")
	return true
}

// RotateTicketKeys starts a new session ticket key now; the previous ones
// still decrypt.
func (s *Store) RotateTicketKeys() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotateLocked()
}

func (s *Store) rotateLocked() {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	s.tickets = append([][32]byte{k}, s.tickets...)
	if len(s.tickets) > TicketKeys {
		s.tickets = s.tickets[:TicketKeys]
	}
	s.rotated = time.Now()
	if cur := s.cur.Load(); cur != nil {
		for _, srv := range cur.server {
			srv.cfg.SetSessionTicketKeys(s.ticketKeys(srv.salt))
		}
	}
}

// ticketKeys derives one object's keys from the shared ones.
func (s *Store) ticketKeys(salt []byte) [][32]byte {
	out := make([][32]byte, len(s.tickets))
	for i, k := range s.tickets {
		h := sha256.New()
		h.Write(k[:])
		h.Write(salt)
		copy(out[i][:], h.Sum(nil))
	}
	return out
}

// build makes a set from cfg, reading every certificate file.
func (s *Store) build(cfg *config.Config) (*set, error) {
	next := &set{
		exact:     make(map[string]*tls.Config),
		wildcard:  make(map[string]*tls.Config),
		upstreams: make(map[string]*tls.Config),
	}
	for i := range cfg.SSLs {
		ssl := &cfg.SSLs[i]
		srv, err := serverConfig(ssl)
		if err != nil {
			return nil, fmt.Errorf("ssl %q (%s:%d): %w", ssl.ID, ssl.File, ssl.Line, err)
		}
		srv.cfg.SetSessionTicketKeys(s.ticketKeys(srv.salt))
		srv.cfg.KeyLogWriter = s.keyLogFor(cfg)
		next.server = append(next.server, srv)
		if next.fallback == nil {
			next.fallback = srv.cfg
		}
		for _, name := range ssl.SNIs {
			if parent, ok := strings.CutPrefix(name, "*."); ok {
				next.wildcard[parent] = srv.cfg
			} else {
				next.exact[name] = srv.cfg
			}
		}
	}
	addUpstream := func(u *config.Upstream) error {
		if !u.UsesTLS() || u.TLS == nil {
			return nil
		}
		c, err := clientConfig(u.TLS)
		if err != nil {
			return fmt.Errorf("upstream %q (%s:%d): tls: %w", u.ID, u.File, u.Line, err)
		}
		next.upstreams[u.ID] = c
		return nil
	}
	for i := range cfg.Upstreams {
		if err := addUpstream(&cfg.Upstreams[i]); err != nil {
			return nil, err
		}
	}
	for i := range cfg.StreamRoutes {
		if u := cfg.StreamRoutes[i].Upstream; u != nil {
			if err := addUpstream(u); err != nil {
				return nil, err
			}
		}
	}
	return next, nil
}

func serverConfig(ssl *config.SSL) (*server, error) {
	c := &tls.Config{MinVersion: ssl.MinVersion, MaxVersion: ssl.MaxVersion,
		CipherSuites: ssl.CipherSuites, SessionTicketsDisabled: ssl.SessionTicketsDisabled}
	for _, p := range ssl.Pairs {
		pair, err := p.LoadKeyPair()
		if err != nil {
			return nil, err
		}
		c.Certificates = append(c.Certificates, pair)
	}
	// crypto/tls serves the first certificate the client supports: put
	// ECDSA (smaller, faster handshakes) before RSA.
	slices.SortStableFunc(c.Certificates, func(a, b tls.Certificate) int {
		return boolRank(a.Leaf.PublicKeyAlgorithm != x509.ECDSA) - boolRank(b.Leaf.PublicKeyAlgorithm != x509.ECDSA)
	})
	if ssl.SessionTimeout > 0 && !ssl.SessionTicketsDisabled {
		limitSessions(c, ssl.SessionTimeout, time.Now)
	}
	salt := []byte("ssl\x00" + ssl.ID + "\x00")
	if ssl.ClientCA != nil {
		caPEM, err := ssl.ClientCA.Read()
		if err != nil {
			return nil, fmt.Errorf("client.ca: %w", err)
		}
		pool, err := ssl.ClientCA.LoadCertPool()
		if err != nil {
			return nil, fmt.Errorf("client.ca: %w", err)
		}
		sum := sha256.Sum256(caPEM)
		salt = append(salt, sum[:]...)
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = pool
		depth := ssl.ClientDepth
		c.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
			// client.depth as NGINX's ssl_verify_depth: how many
			// certificates may stand above the client's own.
			for _, chain := range chains {
				if len(chain)-1 <= depth {
					return nil
				}
			}
			return fmt.Errorf("client certificate chain is longer than client.depth %d", depth)
		}
	}
	return &server{cfg: c, salt: salt}, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func clientConfig(t *config.UpstreamTLS) (*tls.Config, error) {
	c := &tls.Config{
		ServerName:         t.ServerName,
		InsecureSkipVerify: !t.Verify,
		MinVersion:         tls.VersionTLS12,
		// Reconnecting clients reconnect to brokers too: resume.
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
	if !t.CA.IsZero() {
		pool, err := t.CA.LoadCertPool()
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if !t.ClientCert.IsZero() {
		pair, err := (config.CertPair{Cert: t.ClientCert, Key: t.ClientKey}).LoadKeyPair()
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// statFiles stats every certificate file cfg names. A file that cannot be
// stat'ed gets a zero stamp, so that its coming back counts as a change.
func statFiles(cfg *config.Config) map[string]stat {
	out := make(map[string]stat)
	add := func(p config.PEMSource) {
		if p.Path == "" {
			return
		}
		var st stat
		if fi, err := os.Stat(p.Path); err == nil {
			st = stat{mod: fi.ModTime(), size: fi.Size()}
			if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
				st.ino = sys.Ino
			}
		}
		out[p.Path] = st
	}
	for _, ssl := range cfg.SSLs {
		for _, p := range ssl.Pairs {
			add(p.Cert)
			add(p.Key)
		}
		if ssl.ClientCA != nil {
			add(*ssl.ClientCA)
		}
	}
	addUpstream := func(u *config.Upstream) {
		if u.TLS != nil {
			add(u.TLS.ClientCert)
			add(u.TLS.ClientKey)
			add(u.TLS.CA)
		}
	}
	for i := range cfg.Upstreams {
		addUpstream(&cfg.Upstreams[i])
	}
	for _, r := range cfg.StreamRoutes {
		if r.Upstream != nil {
			addUpstream(r.Upstream)
		}
	}
	return out
}

func equalStamps(a, b map[string]stat) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !v.mod.Equal(w.mod) || v.size != w.size || v.ino != w.ino {
			return false
		}
	}
	return true
}

// VersionName is the TLS version as OpenSSL and HAProxy name it
// ("TLSv1.3"), for logs and PROXY protocol TLVs.
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// sessionIssued marks the SessionState.Extra entry limitSessions adds: the
// unix millisecond the session's ticket was issued, big-endian, after the
// mark.
const sessionIssued = "mqgate-issued\x00"

// limitSessions makes c resume only sessions whose ticket it issued less
// than timeout ago (ssl_session_timeout). crypto/tls keeps no session
// cache of its own and has no lifetime setting: it resumes any ticket its
// keys decrypt, up to 7 days old, and tells clients 7 days. So the issue
// time goes into the ticket (SessionState.Extra, which crypto/tls carries
// and ignores) and a ticket without it, or older, gets a full handshake.
func limitSessions(c *tls.Config, timeout time.Duration, now func() time.Time) {
	c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		// A resumed session's state comes back with the issue time of
		// its older ticket: the new ticket gets only the new one.
		ss.Extra = slices.DeleteFunc(ss.Extra, func(e []byte) bool { return strings.HasPrefix(string(e), sessionIssued) })
		e := binary.BigEndian.AppendUint64([]byte(sessionIssued), uint64(now().UnixMilli()))
		ss.Extra = append(ss.Extra, e)
		return c.EncryptTicket(cs, ss)
	}
	c.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := c.DecryptTicket(identity, cs)
		if ss == nil || err != nil {
			return nil, err // not one of ours (nil, nil: a full handshake)
		}
		for _, e := range ss.Extra {
			if at, ok := strings.CutPrefix(string(e), sessionIssued); ok && len(at) == 8 {
				issued := time.UnixMilli(int64(binary.BigEndian.Uint64([]byte(at))))
				if now().Sub(issued) < timeout {
					return ss, nil
				}
			}
		}
		return nil, nil
	}
}
