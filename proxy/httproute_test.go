package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
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
	rec := g.waitRecord(t, "the /hang record", func(r map[string]any) bool { return r["uri"] == "/hang" })
	if rec["status"] != 504.0 || !strings.Contains(fmt.Sprint(rec["detail"]), "timeout") {
		t.Errorf("/hang record %v: want status 504 and the timeout in detail", rec)
	}
}

// zeros is an endless body that costs no memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHTTPAccessLog: each HTTP request, routed or not, is a record in the
// access log (JSON's http_request line, or the access_log_format line with
// NGINX's HTTP variables), and none goes to the process log.
func TestHTTPAccessLog(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d", len(body))
	}))
	t.Cleanup(srv.Close)
	node := strings.TrimPrefix(srv.URL, "http://")
	yml := fmt.Sprintf(`
node_listen: [LISTEN]
upstreams: [{id: web, scheme: http, nodes: {%q: 1}}]
routes: [{id: api, uri: "/api/*", upstream_id: web}]
`, node)
	process := &mqtttest.LogBuffer{}
	g := startGatewayLog(t, yml, process)
	base := "http://" + g.addr
	resp, err := http.Post(base+"/api/up?x=1", "text/plain", strings.NewReader("twelve bytes"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if code, _ := get(t, base+"/nowhere", "site.example", http.Header{"User-Agent": {"probe/1"}}); code != 404 {
		t.Errorf("GET /nowhere: %d", code)
	}
	rec := g.waitRecord(t, "the POST's record", func(r map[string]any) bool { return r["msg"] == "http_request" && r["method"] == "POST" })
	for k, v := range map[string]any{"route": "api", "uri": "/api/up?x=1", "proto": "HTTP/1.1", "status": 200.0, "node": node, "upstream": "web",
		"bytes_up": 12.0, "bytes_down": 6.0} {
		if rec[k] != v {
			t.Errorf("record %s: %v, want %v (%v)", k, rec[k], v, rec)
		}
	}
	if c := fmt.Sprint(rec["client"]); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("record client %q", c)
	}
	rec = g.waitRecord(t, "the 404's record", func(r map[string]any) bool { return r["msg"] == "http_request" && r["uri"] == "/nowhere" })
	if rec["status"] != 404.0 || rec["host"] != "site.example" || rec["http_user_agent"] != "probe/1" || rec["route"] != "" {
		t.Errorf("404 record %v", rec)
	}
	if strings.Contains(strings.Join(process.Lines(), "\n"), "http_request") {
		t.Errorf("HTTP requests in the process log:\n%s", strings.Join(process.Lines(), "\n"))
	}

	// The same through log.access_log_format.
	f := startGateway(t, yml+`log: {access_log_format: '"$request" $status $body_bytes_sent $host $upstream_addr $route_id'}`)
	if code, _ := get(t, "http://"+f.addr+"/api/a?b=c", "api.example", nil); code != 200 {
		t.Fatalf("GET through the second gateway: %d", code)
	}
	want := fmt.Sprintf(`"GET /api/a?b=c HTTP/1.1" 200 5 api.example %s api`, node)
	mqtttest.WaitFor(t, "the formatted line", func() bool { return slices.Contains(f.access.Lines(), want) })
}

// TestWebSocketListener404Logged: an HTTP request on a WebSocket listener
// for another path than MQTT's gets 404 and an http_request record.
func TestWebSocketListener404Logged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, wsConfig("", mqtttest.StartMochi(t)))
	if code, body := get(t, "http://"+g.addr+"/favicon.ico", "meters.example", nil); code != 404 || !strings.Contains(body, "/mqtt") {
		t.Errorf("GET /favicon.ico: %d %q", code, body)
	}
	rec := g.waitRecord(t, "the 404's record", func(r map[string]any) bool { return r["msg"] == "http_request" })
	if rec["uri"] != "/favicon.ico" || rec["status"] != 404.0 || rec["host"] != "meters.example" {
		t.Errorf("record %v", rec)
	}
}

// TestNetHTTPAnswersLogged: a request net/http answers itself, before any
// handler sees it, gets an http_request record all the same: a malformed
// header line (400) on a WebSocket listener, as the first request and as
// a keep-alive connection's second, and a header over net/http's
// limit (1 MiB and 4 KiB: 431), too long for the upgrade's fast path.
func TestNetHTTPAnswersLogged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, wsConfig("", mqtttest.StartMochi(t)))
	send := func(req string) string {
		t.Helper()
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		go func() { _, _ = io.WriteString(conn, req) }() // a 431 may come before the whole request is written
		answer, err := io.ReadAll(conn)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the answer (%.200q so far): %v", answer, err)
		}
		return string(answer)
	}
	if got := send("GET /x HTTP/1.1\r\nHost: a.example\r\nno colon here\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Fatalf("malformed header: answered %q, want net/http's 400", got)
	}
	rec := g.waitRecord(t, "the 400's record", func(r map[string]any) bool { return r["msg"] == "http_request" && r["status"] == 400.0 })
	if rec["method"] != "GET" || rec["uri"] != "/x" || !strings.Contains(fmt.Sprint(rec["detail"]), "answered by net/http: 400 Bad Request") {
		t.Errorf("400's record %v", rec)
	}
	// A keep-alive connection: the first request gets its 404 (and one
	// record), the second net/http's 400 (and one more).
	got := send("GET /first HTTP/1.1\r\nHost: b.example\r\n\r\nGET /second HTTP/1.1\r\nHost: b.example\r\nno colon\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 404 ") || !strings.Contains(got, "HTTP/1.1 400 ") {
		t.Fatalf("keep-alive: answered %q, want a 404 and then a 400", got)
	}
	g.waitRecord(t, "the second request's 400", func(r map[string]any) bool {
		return r["msg"] == "http_request" && r["status"] == 400.0 && r["method"] == "-"
	})
	if got := send("GET /big HTTP/1.1\r\nHost: c.example\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Fatalf("large header: answered %.80q, want net/http's 431", got)
	}
	rec = g.waitRecord(t, "the 431's record", func(r map[string]any) bool { return r["msg"] == "http_request" && r["status"] == 431.0 })
	if rec["uri"] != "/big" {
		t.Errorf("431's record %v", rec)
	}
	var records int
	for _, r := range accessRecords(t, g.access) {
		if r["msg"] == "http_request" {
			records++
		}
	}
	if records != 4 {
		t.Errorf("%d http_request records, want 4 (400, 404, 400, 431): %v", records, g.access.Lines())
	}
}
