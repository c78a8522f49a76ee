package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/mqgate/mqgate/config"
)

// Reasons a request is refused before it is served, as counted in
// mqgate_admin_auth_failures_total.
const (
	failMissing     = "missing_key"
	failWrong       = "wrong_key"
	failForbidden   = "viewer_key_cannot_write"
	failNotAllowed  = "address_not_allowed"
	failCookieWrite = "cookie_write_without_header"
)

// requestKey returns the key of the X-API-KEY header, of "Authorization:
// Bearer" for scrapers that can only send that, or of the dashboard's
// cookie; fromCookie says it was the cookie.
func requestKey(r *http.Request) (key string, fromCookie bool) {
	if k := r.Header.Get("X-API-KEY"); k != "" {
		return k, false
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:]), false
	}
	if c, err := r.Cookie(keyCookie); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

// refusal is why a request is not served: its status code, the reason
// counted and the message answered.
type refusal struct {
	code        int
	reason, msg string
}

// authorize checks the client address and the key of r and returns the
// key's role ("" where status pages are public and no key was sent), or
// why r is refused. A key from the dashboard's cookie may write only with
// the dashboard's header: a browser sends cookies along with requests that
// other sites make it send, but a cross-site request cannot add a header
// without CORS, which this listener never grants.
func (s *Server) authorize(r *http.Request, write, status bool) (string, *refusal) {
	cfg := s.m.Config().Admin
	if cfg == nil {
		return "", &refusal{http.StatusServiceUnavailable, "", "the Admin API is off: the configuration has no admin block"}
	}
	if !allowed(cfg.Allow, r.RemoteAddr) {
		return "", &refusal{http.StatusForbidden, failNotAllowed, "client address not allowed"}
	}
	if status && cfg.PublicStatus {
		return "", nil
	}
	key, fromCookie := requestKey(r)
	if key == "" {
		return "", &refusal{http.StatusUnauthorized, failMissing, "missing X-API-KEY header"}
	}
	role := roleOf(cfg.Keys, key)
	if role == "" {
		return "", &refusal{http.StatusUnauthorized, failWrong, "wrong X-API-KEY"}
	}
	if write && role != config.RoleAdmin {
		return "", &refusal{http.StatusForbidden, failForbidden, "this key is a viewer key: it cannot change anything"}
	}
	if write && fromCookie && r.Header.Get(dashboardHeader) == "" {
		return "", &refusal{http.StatusForbidden, failCookieWrite, "a write with the dashboard's cookie needs the " + dashboardHeader + " header"}
	}
	return role, nil
}

// refuse counts and logs a refused request.
func (s *Server) refuse(r *http.Request, ref *refusal) {
	if ref.reason == "" {
		return
	}
	s.fails.add(ref.reason)
	// Never log the key, not even a wrong one: it may be a real key sent
	// to the wrong place.
	s.log.Warn("admin request refused", "reason", ref.reason, "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
}

// roleOf returns the role of key, or "" when no configured key matches.
// Every configured key is compared, each in constant time over SHA-256
// digests (equal lengths), so the time taken says nothing about the keys.
func roleOf(keys []config.AdminKey, key string) string {
	got := sha256.Sum256([]byte(key))
	role := ""
	for _, k := range keys {
		want := sha256.Sum256([]byte(k.Key))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			role = k.Role
		}
	}
	return role
}

// allowed reports whether the client address is in the allow-list; an
// empty list allows every address.
func allowed(allow []netip.Prefix, remoteAddr string) bool {
	if len(allow) == 0 {
		return true
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// failures counts refused requests by reason.
type failures struct {
	mu sync.Mutex
	by map[string]uint64
}

func (f *failures) add(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = make(map[string]uint64)
	}
	f.by[reason]++
}

func (f *failures) snapshot() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]uint64, len(f.by))
	for k, v := range f.by {
		out[k] = v
	}
	return out
}
