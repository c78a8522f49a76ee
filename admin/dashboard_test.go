package admin_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// signIn signs in with key as the form does and returns the cookie.
func signIn(t *testing.T, g *gate, key string) *http.Cookie {
	t.Helper()
	resp, err := noRedirect.PostForm(g.url+"/dashboard/login", url.Values{"key": {key}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard" {
		t.Fatalf("sign in: %d to %q, want 303 to /dashboard", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == "mqgate_key" {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("cookie %v: want HttpOnly and SameSite=Strict", c)
			}
			return c
		}
	}
	t.Fatal("sign in set no mqgate_key cookie")
	return nil
}

func getWith(t *testing.T, g *gate, method, path string, c *http.Cookie, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, g.url+path, nil)
	if c != nil {
		req.AddCookie(c)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestDashboardKeys: without a key the dashboard is a sign-in form answered
// with 401; a wrong key stays there; a viewer key gets the page and may
// read, not close; an admin key's cookie closes a connection only with the
// dashboard's header, so another site cannot make the browser do it.
func TestDashboardKeys(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, `upstreams: [{id: b, nodes: {"`+broker.Addr()+`": 1}}]
stream_routes: [{id: r, upstream_id: b}]
`))

	resp, body := getWith(t, g, "GET", "/dashboard", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `action="/dashboard/login"`) || strings.Contains(body, "status.json") {
		t.Fatalf("no key: %d, want 401 with the sign-in form only:\n%s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	lr, err := noRedirect.PostForm(g.url+"/dashboard/login", url.Values{"key": {"not-a-key-of-this-mqgate"}})
	if err != nil {
		t.Fatal(err)
	}
	lr.Body.Close()
	if lr.StatusCode != http.StatusUnauthorized || len(lr.Cookies()) != 0 {
		t.Fatalf("wrong key: %d %v, want 401 and no cookie", lr.StatusCode, lr.Cookies())
	}

	viewer := signIn(t, g, viewerKey)
	resp, body = getWith(t, g, "GET", "/dashboard", viewer, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-role="viewer"`) {
		t.Fatalf("viewer: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := getWith(t, g, "GET", "/status.json", viewer, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status.json with the viewer's cookie: %d", resp.StatusCode)
	}

	conn := connectLive(t, g.mqttAddr, "meter-1")
	defer conn.Close()
	mqtttest.WaitFor(t, "meter-1 in the table", func() bool {
		_, v := g.do(t, "GET", "/connections?client_id=meter-1", viewerKey, "")
		return v["total"] == float64(1)
	})
	hdr := map[string]string{"X-Mqgate-Dashboard": "1"}
	if resp, _ := getWith(t, g, "DELETE", "/connections/meter-1", viewer, hdr); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer kick: %d, want 403", resp.StatusCode)
	}
	admin := signIn(t, g, adminKey)
	if resp, _ := getWith(t, g, "DELETE", "/connections/meter-1", admin, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin cookie without the header: %d, want 403", resp.StatusCode)
	}
	conn.ping(t) // still up
	if resp, body := getWith(t, g, "DELETE", "/connections/meter-1", admin, hdr); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin kick: %d %s", resp.StatusCode, body)
	}

	// ?key= signs in and sends the browser to the address without it.
	resp, _ = getWith(t, g, "GET", "/dashboard?key="+viewerKey, nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard" || len(resp.Cookies()) != 1 {
		t.Fatalf("?key=: %d to %q cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
}

// TestStatusListeners: /status.json counts connections per listener.
func TestStatusListeners(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, `upstreams: [{id: b, nodes: {"`+broker.Addr()+`": 1}}]
stream_routes: [{id: r, upstream_id: b, mqtt_client_id: {prefix: ok-}}]
`))
	conn := connectLive(t, g.mqttAddr, "ok-1")
	defer conn.Close()
	if code := connack(t, g.mqttAddr, "other", 4); code != 3 {
		t.Fatalf("unrouted client: CONNACK %d, want 3", code)
	}
	mqtttest.WaitFor(t, "listener counts", func() bool {
		_, v := g.do(t, "GET", "/status.json", viewerKey, "")
		ls, _ := v["listeners"].([]any)
		if len(ls) != 1 {
			return false
		}
		l := ls[0].(map[string]any)
		return l["active"] == float64(1) && l["accepted"] == float64(2) && l["refused"] == float64(1) && l["bound"] == g.mqttAddr
	})
}
