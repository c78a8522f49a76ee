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
	failMissing    = "missing_key"
	failWrong      = "wrong_key"
	failForbidden  = "viewer_key_cannot_write"
	failNotAllowed = "address_not_allowed"
)

// requestKey returns the key of the X-API-KEY header, or of
// "Authorization: Bearer" for scrapers that can only send that.
func requestKey(r *http.Request) string {
	if k := r.Header.Get("X-API-KEY"); k != "" {
		return k
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
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
