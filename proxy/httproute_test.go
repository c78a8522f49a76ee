package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHTTPRouteVars: routes on one uri told apart by APISIX's simple vars
// (a query argument, a header, a cookie; ==, ~=, ~~, ~*, in, >, and "!"),
// each request reaching the Go server of the route that matched, the
// others falling through to the route without vars.
func TestHTTPRouteVars(t *testing.T) {
	t.Parallel()
	names := []string{"v2", "tenant", "session", "beta", "big", "not-get", "rest"}
	var nodes []string
	for _, n := range names {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, n) }))
		t.Cleanup(srv.Close)
		nodes = append(nodes, strings.TrimPrefix(srv.URL, "http://"))
	}
	route := func(id, vars, node string) string {
		return fmt.Sprintf("  - {id: %s, uri: /v, vars: %s, upstream: {scheme: http, nodes: {%q: 1}}}\n", id, vars, node)
	}
	yml := "node_listen: [LISTEN]\nroutes:\n" +
		route("v2", `[["arg_version", "==", "2"]]`, nodes[0]) +
		route("tenant", `[["http_x_tenant", "in", ["a", "b"]], ["http_x_tenant", "~=", "b"]]`, nodes[1]) +
		route("session", `[["cookie_session", "~~", "^s-[0-9]+$"]]`, nodes[2]) +
		route("beta", `[["http_user_agent", "~*", "BETA"]]`, nodes[3]) +
		route("big", `[["arg_size", ">", 100]]`, nodes[4]) +
		route("not-get", `[["request_method", "!", "==", "GET"], ["scheme", "==", "http"]]`, nodes[5]) +
		fmt.Sprintf("  - {id: rest, uri: /v, upstream: {scheme: http, nodes: {%q: 1}}}\n", nodes[6])
	g := startGateway(t, yml)
	base := "http://" + g.addr
	for _, tc := range []struct {
		method, query string
		header        http.Header
		want          string
	}{
		{"GET", "?version=2", nil, "v2"},
		{"GET", "?version=3", nil, "rest"},
		{"GET", "?other=2", nil, "rest"}, // no such argument: == does not hold
		{"GET", "", http.Header{"X-Tenant": {"a"}}, "tenant"},
		{"GET", "", http.Header{"X-Tenant": {"b"}}, "rest"}, // in, but ~= b fails: every item must hold
		{"GET", "", http.Header{"X-Tenant": {"c"}}, "rest"},
		{"GET", "", http.Header{"Cookie": {"theme=dark; session=s-42"}}, "session"},
		{"GET", "", http.Header{"Cookie": {"session=s-x"}}, "rest"},
		{"GET", "", http.Header{"User-Agent": {"meter/beta-3"}}, "beta"},
		{"GET", "?size=101", nil, "big"},
		{"GET", "?size=100", nil, "rest"},
		{"GET", "?size=lots", nil, "rest"}, // not a number: > does not hold
		{"POST", "", nil, "not-get"},
	} {
		req, err := http.NewRequest(tc.method, base+"/v"+tc.query, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tc.header
		if req.Header == nil {
			req.Header = http.Header{}
		}
		if req.Header.Get("User-Agent") == "" {
			req.Header.Set("User-Agent", "test")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%s /v%s %v: %d %q, want route %s", tc.method, tc.query, tc.header, resp.StatusCode, body, tc.want)
		}
	}
}

// TestHTTPRouteTimeouts: a route's timeout.read and timeout.send apply to
// its requests (a node that does not answer, a node that does not read the
// body) with 504, over the upstream's longer ones; another route of the
// same upstream keeps the upstream's.
func TestHTTPRouteTimeouts(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang", "/upload":
			// Neither answers nor reads the body until the test ends.
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "quick")
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close: its handlers end first
	node := strings.TrimPrefix(srv.URL, "http://")
	g := startGateway(t, fmt.Sprintf(`
node_listen: [LISTEN]
upstreams:
  - {id: web, scheme: http, timeout: {connect: 5, send: 300, read: 300}, nodes: {%q: 1}}
routes:
  - {id: hang, uri: /hang, timeout: {read: 0.3}, upstream_id: web}
  - {id: upload, uri: /upload, timeout: {send: 0.3}, upstream_id: web}
  - {id: quick, uri: /quick, upstream_id: web}
`, node))
	base := "http://" + g.addr
	client := &http.Client{Timeout: 60 * time.Second} // a bound for a broken proxy, not an assertion

	resp, err := client.Get(base + "/hang")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "route hang") {
		t.Errorf("GET /hang: %d %q, want 504 from the route's read timeout", resp.StatusCode, body)
	}

	// 256 MiB the node never reads: the socket buffers fill, and the
	// route's send timeout ends the write.
	resp, err = client.Post(base+"/upload", "application/octet-stream", io.LimitReader(zeros{}, 256<<20))
	if err == nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout && resp.StatusCode != http.StatusBadGateway {
			t.Errorf("POST /upload: %d %q, want 504 (or 502) from the route's send timeout", resp.StatusCode, body)
		}
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("POST /upload: %v: the route's send timeout did not end it", err)
	} // else mqgate closed the connection while the client still sent: the timeout's doing

	if code, body := get(t, base+"/quick", "x", nil); code != 200 || body != "quick" {
		t.Errorf("GET /quick: %d %q", code, body)
	}
}

// zeros is an endless body that costs no memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
