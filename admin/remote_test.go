package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReloadKeepsTheProvider: a reload that would move the configuration
// from the files to etcd is refused; that takes a restart.
func TestReloadKeepsTheProvider(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "mqgate.yaml")
	base := "stream_proxy: {tcp: [\"127.0.0.1:0\"]}\nstream_routes: [{upstream: {nodes: {\"127.0.0.1:1883\": 1}}}]\n"
	if err := os.WriteFile(file, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open([]string{file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(base+"deployment: {etcd: {host: [\"http://127.0.0.1:2379\"]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload("test"); err == nil || !strings.Contains(err.Error(), "restart mqgate") {
		t.Errorf("Reload = %v, want a refusal asking for a restart", err)
	}
	if m.Config().DeploymentSettings().UsesEtcd() {
		t.Error("the running configuration moved to etcd")
	}
}

// TestRemoteValue: APISIX's stored JSON is read as the decoder wants it:
// its times dropped, the id the key's; a value whose id is not the key's, or
// that is not a JSON object, is refused.
func TestRemoteValue(t *testing.T) {
	t.Parallel()
	v, err := remoteValue(RemoteObject{ID: "7", Value: []byte(`{"id": 7, "create_time": 1, "update_time": 2, "nodes": {"h:1": 1}}`)})
	if err != nil || string(v) != `{"id":"7","nodes":{"h:1":1}}` {
		t.Errorf("remoteValue = %s, %v", v, err)
	}
	for _, bad := range []string{`{"id": "8"}`, `[1]`, `init_dir`, `null`} {
		if _, err := remoteValue(RemoteObject{ID: "7", Value: []byte(bad)}); err == nil {
			t.Errorf("remoteValue(%s) accepted", bad)
		}
	}
}

// TestApplyRemoteRefusesOneObject: an invalid upstream from etcd is left
// out with its key and why, a route that uses it follows with its own
// reason, and the rest applies and is cached for a start with etcd down.
func TestApplyRemoteRefusesOneObject(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	yml := "stream_proxy: {tcp: [\"127.0.0.1:0\"]}\ndeployment: {etcd: {host: [\"http://127.0.0.1:2379\"]}}\n"
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open([]string{file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	objs := []RemoteObject{
		{Kind: "upstreams", ID: "good", Key: "/apisix/upstreams/good", Value: []byte(`{"nodes": {"127.0.0.1:1883": 1}}`), CreateRevision: 2, ModRevision: 2},
		{Kind: "upstreams", ID: "bad", Key: "/apisix/upstreams/bad", Value: []byte(`{"nodes": {"127.0.0.1:70000": 1}}`), CreateRevision: 3, ModRevision: 3},
		{Kind: "stream_routes", ID: "1", Key: "/apisix/stream_routes/1", Value: []byte(`{"upstream_id": "bad"}`), CreateRevision: 4, ModRevision: 4},
		{Kind: "stream_routes", ID: "2", Key: "/apisix/stream_routes/2", Value: []byte(`{"upstream_id": "good", "create_time": 1}`), CreateRevision: 5, ModRevision: 5},
		{Kind: "stream_routes", ID: "3", Key: "/apisix/stream_routes/3", Value: []byte(`not json`), CreateRevision: 6, ModRevision: 6},
	}
	if err := m.ApplyRemote(6, objs); err != nil {
		t.Fatal(err)
	}
	cfg := m.Config()
	if len(cfg.StreamRoutes) != 1 || cfg.StreamRoutes[0].ID != "2" || len(cfg.Upstreams) != 1 {
		t.Errorf("applied %d routes, %d upstreams; want route 2 and upstream good", len(cfg.StreamRoutes), len(cfg.Upstreams))
	}
	rs, _ := m.Remote()
	var got []string
	for _, r := range rs.Refused {
		got = append(got, r.Key+": "+r.Reason)
	}
	want := []string{
		`/apisix/stream_routes/3: not a JSON object: "not json"`,
		"/apisix/upstreams/bad: nodes",
		"/apisix/stream_routes/1: upstream_id",
	}
	if len(got) != len(want) {
		t.Fatalf("refused:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("refused[%d] = %q, want it to start with %q", i, got[i], want[i])
		}
	}
	// The cache holds what applied; a new Manager starts from it.
	m2, err := Open([]string{file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cached, _, rev := m2.StartedFromCache(); !cached || rev != 6 || len(m2.Config().StreamRoutes) != 1 {
		t.Errorf("from the cache: %v revision %d, %d routes", cached, rev, len(m2.Config().StreamRoutes))
	}
}

// TestApplyRemoteHTTPRoutes: APISIX's <prefix>/routes/<id> objects join
// the configuration as HTTP routes, replacing a file's route of the same id.
func TestApplyRemoteHTTPRoutes(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "config.yaml")
	yml := `stream_proxy: {tcp: ["127.0.0.1:0"]}
node_listen: ["127.0.0.1:0"]
deployment: {etcd: {host: ["http://127.0.0.1:2379"]}}
routes: [{id: web, uri: /old, upstream: {scheme: http, nodes: {"127.0.0.1:8080": 1}}}]
`
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open([]string{file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	objs := []RemoteObject{
		{Kind: "upstreams", ID: "web", Key: "/apisix/upstreams/web", Value: []byte(`{"scheme": "http", "nodes": {"127.0.0.1:8081": 1}}`), CreateRevision: 2, ModRevision: 2},
		{Kind: "routes", ID: "web", Key: "/apisix/routes/web", Value: []byte(`{"uri": "/new/*", "upstream_id": "web"}`), CreateRevision: 3, ModRevision: 3},
		{Kind: "routes", ID: "api", Key: "/apisix/routes/api", Value: []byte(`{"uri": "/api/*", "upstream_id": "missing"}`), CreateRevision: 4, ModRevision: 4},
	}
	if err := m.ApplyRemote(4, objs); err != nil {
		t.Fatal(err)
	}
	routes := m.Config().Routes
	if len(routes) != 1 || routes[0].ID != "web" || routes[0].UpstreamID != "web" || !slices.Equal(routes[0].URIs, []string{"/new/*"}) {
		t.Errorf("HTTP routes: %+v", routes)
	}
	rs, _ := m.Remote()
	if len(rs.Refused) != 1 || rs.Refused[0].Key != "/apisix/routes/api" || !strings.Contains(rs.Refused[0].Reason, "upstream_id") {
		t.Errorf("refused: %+v", rs.Refused)
	}
}

// TestApplyRemoteRefusesOneObjectWithoutPath: a problem the decoder finds
// across objects, reported at an object's line with no field path (a stream
// route naming an HTTP upstream, an HTTP upstream with an MQTT probe),
// refuses only the object at that line; the rest still applies.
func TestApplyRemoteRefusesOneObjectWithoutPath(t *testing.T) {
	t.Parallel()
	m := openFile(t, "stream_proxy: {tcp: [\"127.0.0.1:0\"]}\ndeployment: {etcd: {host: [\"http://127.0.0.1:2379\"]}}\n")
	objs := []RemoteObject{
		{Kind: "upstreams", ID: "mqtt", Key: "/apisix/upstreams/mqtt", Value: []byte(`{"nodes": {"127.0.0.1:1883": 1}}`), CreateRevision: 2, ModRevision: 2},
		{Kind: "upstreams", ID: "web", Key: "/apisix/upstreams/web", Value: []byte(`{"scheme": "https", "nodes": {"127.0.0.1:8443": 1}}`), CreateRevision: 3, ModRevision: 3},
		{Kind: "upstreams", ID: "probed", Key: "/apisix/upstreams/probed", Value: []byte(`{"scheme": "http", "nodes": {"127.0.0.1:8081": 1}, "checks": {"active": {"type": "mqtt"}}}`), CreateRevision: 4, ModRevision: 4},
		{Kind: "stream_routes", ID: "1", Key: "/apisix/stream_routes/1", Value: []byte(`{"upstream_id": "mqtt"}`), CreateRevision: 5, ModRevision: 5},
		{Kind: "stream_routes", ID: "2", Key: "/apisix/stream_routes/2", Value: []byte(`{"upstream_id": "web"}`), CreateRevision: 6, ModRevision: 6},
		{Kind: "stream_routes", ID: "3", Key: "/apisix/stream_routes/3", Value: []byte(`{"upstream_id": "mqtt", "server_port": 1884}`), CreateRevision: 7, ModRevision: 7},
	}
	if err := m.ApplyRemote(7, objs); err != nil {
		t.Fatalf("the whole snapshot was refused: %v", err)
	}
	cfg := m.Config()
	var routes, upstreams []string
	for _, r := range cfg.StreamRoutes {
		routes = append(routes, r.ID)
	}
	for _, u := range cfg.Upstreams {
		upstreams = append(upstreams, u.ID)
	}
	if !slices.Equal(routes, []string{"1", "3"}) || !slices.Equal(upstreams, []string{"mqtt", "web"}) {
		t.Errorf("applied routes %v, upstreams %v; want routes [1 3], upstreams [mqtt web]", routes, upstreams)
	}
	rs, _ := m.Remote()
	var got []string
	for _, r := range rs.Refused {
		got = append(got, r.Key+": "+r.Reason)
	}
	want := []string{
		`/apisix/upstreams/probed: upstream "probed" has scheme http: its active checks need type tcp, http or https`,
		// (scheme http on a stream route's upstream is what APISIX stores on
		// every upstream: ignored; https is an error.)
		`/apisix/stream_routes/2: stream route "2": upstream "web" has scheme https (HTTP over TLS)`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(got) != len(want) {
		t.Fatalf("refused:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("refused[%d] = %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

// TestAdminKeysShowThePrefix: with deployment.etcd.prefix set, the Admin
// API's list and get answers name the objects by their keys in
// etcd under that prefix, not under APISIX's default /apisix.
func TestAdminKeysShowThePrefix(t *testing.T) {
	t.Parallel()
	const key = "prefix-test-key-0123456789"
	m := openFile(t, `stream_proxy: {tcp: ["127.0.0.1:0"]}
deployment: {etcd: {host: ["http://127.0.0.1:2379"], prefix: /mqtt}}
admin: {listen: "127.0.0.1:0", keys: [{key: `+key+`}]}
upstreams: [{id: file, nodes: {"127.0.0.1:1885": 1}}]
`)
	objs := []RemoteObject{{Kind: "upstreams", ID: "u1", Key: "/mqtt/upstreams/u1", Value: []byte(`{"nodes": {"127.0.0.1:1883": 1}}`), CreateRevision: 2, ModRevision: 2}}
	if err := m.ApplyRemote(2, objs); err != nil {
		t.Fatal(err)
	}
	api := New(Options{Manager: m, Log: slog.New(slog.DiscardHandler)})
	get := func(path string, v any) {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("X-API-KEY", key)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
	var list struct {
		List []struct{ Key string } `json:"list"`
	}
	get("/apisix/admin/upstreams", &list)
	var keys []string
	for _, it := range list.List {
		keys = append(keys, it.Key)
	}
	if !slices.Equal(keys, []string{"/mqtt/upstreams/file", "/mqtt/upstreams/u1"}) {
		t.Errorf("list keys %q, want /mqtt/upstreams/file and /mqtt/upstreams/u1", keys)
	}
	var one struct{ Key string }
	get("/apisix/admin/upstreams/u1", &one)
	if one.Key != "/mqtt/upstreams/u1" {
		t.Errorf("get key %q, want /mqtt/upstreams/u1", one.Key)
	}
}

// openFile opens a Manager on yml, written to config.yaml in a fresh
// directory.
func openFile(t *testing.T, yml string) *Manager {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open([]string{file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
