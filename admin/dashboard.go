package admin

import (
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
)

// The dashboard is one HTML page with its styles and script inline, so it
// needs no build step and no asset from anywhere else. It reads
// /status.json and /connections every second with the browser's cookie and
// computes the rates from the differences.

//go:embed dashboard.html
var dashboardHTML string

//go:embed dashboard_login.html
var loginHTML string

var (
	dashboardPage = template.Must(template.New("dashboard").Parse(dashboardHTML))
	loginPage     = template.Must(template.New("login").Parse(loginHTML))
)

const (
	// keyCookie carries the dashboard's key: HttpOnly, so the page's
	// script never sees it, and SameSite=Strict.
	keyCookie = "mqgate_key"
	// dashboardHeader must come with a write authorized by keyCookie.
	dashboardHeader = "X-Mqgate-Dashboard"
)

// dashboard serves the page to a request with a key (header or cookie),
// and the sign-in form, with 401, to one without. ?key= signs in with the
// key in the address, as `mqgate demo` prints it, and redirects to the
// address without it so it stays out of the history.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	if key := r.URL.Query().Get("key"); key != "" {
		s.signIn(w, r, key)
		return
	}
	role, ref := s.authorize(r, false, false)
	if ref != nil {
		s.refuse(r, ref)
		s.renderLogin(w, ref.code, "")
		return
	}
	nonce := newNonce()
	securityHeaders(w, nonce)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = dashboardPage.Execute(w, map[string]string{"Nonce": nonce, "Role": role})
}

// login is the form's POST: key=...
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	s.signIn(w, r, strings.TrimSpace(r.PostFormValue("key")))
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request, key string) {
	check := r.Clone(r.Context())
	check.Header = r.Header.Clone()
	check.Header.Del("Authorization")
	check.Header.Set("X-API-KEY", key)
	if key == "" {
		check.Header.Del("X-API-KEY")
	}
	if _, ref := s.authorize(check, false, false); ref != nil {
		s.refuse(r, ref)
		msg := "That key is not one of this mqgate's keys."
		if ref.code == http.StatusForbidden {
			msg = ref.msg
		}
		s.renderLogin(w, ref.code, msg)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: keyCookie, Value: key, Path: "/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
}

// logout forgets the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: keyCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
}

func (s *Server) renderLogin(w http.ResponseWriter, code int, msg string) {
	nonce := newNonce()
	securityHeaders(w, nonce)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = loginPage.Execute(w, map[string]string{"Nonce": nonce, "Error": msg})
}

// securityHeaders allow the page its own inline style and script (by
// nonce) and requests to this listener, and nothing else.
func securityHeaders(w http.ResponseWriter, nonce string) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; "+
		"connect-src 'self'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawStdEncoding.EncodeToString(b[:])
}
