package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

const (
	adminKey  = "6f1ed002ab5595859014ebf0951522d9"
	viewerKey = "b5e2a1ac39ab51b3c8bf0f2f8b0f1d1c"
)

// gate is an mqgate with its Admin API, run in process.
type gate struct {
	mgr       *admin.Manager
	srv       *proxy.Server
	api       *admin.Server
	mqttAddr  string
	url       string // http://127.0.0.1:port
	dir       string
	file      string
	statePath string
	log       *mqtttest.LogBuffer
}

// configYAML is a configuration with one listener on port, the Admin API on
// an ephemeral port, and extra appended.
func configYAML(port int, extra string) string {
	return fmt.Sprintf(`stream_proxy:
  tcp: ["127.0.0.1:%d"]
log: {access_log: "off"}
admin:
  listen: "127.0.0.1:0"
  keys:
    - {name: ops, key: %s}
    - {name: grafana, key: %s, role: viewer}
%s`, port, adminKey, viewerKey, extra)
}

// startGate writes yml (from configYAML) to a file in a fresh directory and
// runs mqgate from it.
func startGate(t *testing.T, yml string) *gate {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "mqgate.yaml")
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return openGate(t, dir, file)
}

func openGate(t *testing.T, dir, file string) *gate {
	t.Helper()
	logBuf := &mqtttest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mgr, err := admin.Open([]string{file}, log)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	srv, err := proxy.New(mgr.Config(), proxy.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mgr.Attach(srv, nil)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	var api *admin.Server
	m := metrics.New(metrics.Sources{Proxy: srv.Stats, Reloads: mgr.ReloadStats, AuthFailures: func() map[string]uint64 { return api.AuthFailures() }})
	api = admin.New(admin.Options{Manager: mgr, Proxy: srv, Metrics: m.Handler(), Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	if err := api.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		api.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	g := &gate{mgr: mgr, srv: srv, api: api, url: "http://" + api.Addr().String(), dir: dir, file: file, statePath: mgr.StatePath(), log: logBuf}
	for _, a := range srv.ListenerAddrs() {
		g.mqttAddr = a.String()
	}
	return g
}

// do sends a request with key (none when empty) and returns the status and
// the decoded JSON body.
func (g *gate) do(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	code, raw := g.doRaw(t, method, path, key, body)
	var v map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &v) != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, raw)
	}
	return code, v
}

func (g *gate) doRaw(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-KEY", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// mustDo is do that fails the test unless the status is want.
func (g *gate) mustDo(t *testing.T, want int, method, path, body string) map[string]any {
	t.Helper()
	code, v := g.do(t, method, path, adminKey, body)
	if code != want {
		t.Fatalf("%s %s: %d %v, want %d", method, path, code, v, want)
	}
	return v
}

// seedBody reads a seed 001 request body with its broker ports replaced.
func seedBody(t *testing.T, name string, ports map[string]int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/seed001", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for from, to := range ports {
		s = strings.ReplaceAll(s, from, strconv.Itoa(to))
	}
	return s
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func connack(t *testing.T, addr, id string, level byte) byte {
	t.Helper()
	_, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 30, ClientID: id})
	_, code, err := mqtt.ParseConnack(ack, level)
	if err != nil {
		t.Fatalf("%s: CONNACK % x: %v", id, ack, err)
	}
	return byte(code)
}

// TestSeed001Bodies sends the seed's curl bodies as written (only the broker
// ports changed): each is accepted and routes new connections at once.
func TestSeed001Bodies(t *testing.T) {
	t.Parallel()
	one := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, ""))

	// Round robin to one node, MQTT 3.1.1 only.
	v := g.mustDo(t, http.StatusCreated, "PUT", "/apisix/admin/stream_routes/1", seedBody(t, "roundrobin.json", map[string]int{"1980": portOf(t, one.Addr())}))
	if v["key"] != "/apisix/stream_routes/1" || v["createdIndex"] == nil || v["modifiedIndex"] == nil {
		t.Errorf("PUT answer: %v", v)
	}
	if val := v["value"].(map[string]any); val["id"] != "1" || val["create_time"] == nil {
		t.Errorf("PUT value: %v", val)
	}
	if code := connack(t, g.mqttAddr, "seed-rr", mqtt.Level311); code != 0 {
		t.Fatalf("3.1.1 client: CONNACK code %d", code)
	}
	mqtttest.WaitFor(t, "the broker to see seed-rr", func() bool { return slices.Contains(one.Seen(), "seed-rr") })
	if code := connack(t, g.mqttAddr, "seed-v5", mqtt.Level5); code != byte(mqtt.UnsupportedProtocolVersion) {
		t.Errorf("5.0 client on a protocol_level 4 route: CONNACK code %#x, want %#x", code, mqtt.UnsupportedProtocolVersion)
	}
	live := connectLive(t, g.mqttAddr, "live-before-change")

	// The chash body: nodes 127.0.0.1:1995 and 127.0.0.2:1995, so both
	// brokers share a port on two loopback addresses.
	a, b := mochiPair(t)
	port := portOf(t, a.Addr())
	v = g.mustDo(t, http.StatusOK, "PUT", "/apisix/admin/stream_routes/1", seedBody(t, "chash.json", map[string]int{"1995": port}))
	if v["modifiedIndex"].(float64) <= v["createdIndex"].(float64) {
		t.Errorf("modifiedIndex %v not above createdIndex %v", v["modifiedIndex"], v["createdIndex"])
	}
	for i := range 20 {
		id := fmt.Sprintf("sensor-%d", i)
		if code := connack(t, g.mqttAddr, id, mqtt.Level311); code != 0 {
			t.Fatalf("%s: CONNACK code %d", id, code)
		}
	}
	mqtttest.WaitFor(t, "both chash brokers to get clients", func() bool { return len(a.Seen())+len(b.Seen()) == 20 })
	if len(a.Seen()) == 0 || len(b.Seen()) == 0 {
		t.Errorf("chash spread 20 clients as %d and %d", len(a.Seen()), len(b.Seen()))
	}
	for i := range 20 { // the same broker again for each client id
		connack(t, g.mqttAddr, fmt.Sprintf("sensor-%d", i), mqtt.Level311)
	}
	mqtttest.WaitFor(t, "the reconnects", func() bool { return len(a.Seen())+len(b.Seen()) == 40 })
	for _, id := range a.Seen() {
		if slices.Contains(b.Seen(), id) {
			t.Errorf("%s reached both brokers", id)
		}
	}

	// The mTLS body as the page prints it, placeholder and all: refused
	// with the field and why; with a real name in the placeholder it is
	// stored (docs/tls.md shows it served over TLS).
	mtls := seedBody(t, "mtls.json", map[string]int{"1980": portOf(t, one.Addr())})
	code, v := g.do(t, "PUT", "/apisix/admin/stream_routes/1", adminKey, mtls)
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(v["errors"]), "field:sni") {
		t.Errorf("mTLS body: %d %v", code, v)
	}
	g.mustDo(t, http.StatusOK, "PUT", "/apisix/admin/stream_routes/1", strings.Replace(mtls, "${your_sni_name}", "mqtt.example.com", 1))

	// The seed's DELETE: new clients find no route, live ones keep going.
	g.mustDo(t, http.StatusOK, "DELETE", "/apisix/admin/stream_routes/1", "")
	if code := connack(t, g.mqttAddr, "after-delete", mqtt.Level311); code != 3 {
		t.Errorf("after DELETE: CONNACK code %#x, want 3 (server unavailable)", code)
	}
	live.ping(t)
	g.mustDo(t, http.StatusNotFound, "GET", "/apisix/admin/stream_routes/1", "")
}

// liveConn is a connected MQTT 3.1.1 client for checking that a
// connection keeps flowing.
type liveConn struct{ net.Conn }

func connectLive(t *testing.T, addr, id string) liveConn {
	t.Helper()
	c, ack := mqtttest.Connect(t, addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 60, ClientID: id})
	if len(ack) != 4 || ack[3] != 0 {
		t.Fatalf("%s: CONNACK % x", id, ack)
	}
	return liveConn{c}
}

func (c liveConn) ping(t *testing.T) {
	t.Helper()
	if _, err := c.Write([]byte{0xc0, 0}); err != nil {
		t.Fatalf("PINGREQ: %v", err)
	}
	if got := mqtttest.ReadPacket(t, c); !bytes.Equal(got, []byte{0xd0, 0}) {
		t.Fatalf("PINGRESP: % x", got)
	}
}

// TestKeys: a missing or wrong key is 401, a viewer key reads but cannot
// write, and nothing changes; failures are counted and logged without the key.
func TestKeys(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(0, ""))
	body := `{"upstream": {"nodes": {"127.0.0.1:1883": 1}}}`
	wrong := "ffffffffffffffffffffffffffffffff"
	for _, tt := range []struct {
		key  string
		want int
	}{{"", 401}, {wrong, 401}, {adminKey[:31], 401}, {viewerKey, 403}} {
		if code, v := g.do(t, "PUT", "/apisix/admin/stream_routes/1", tt.key, body); code != tt.want || v["error_msg"] == "" {
			t.Errorf("PUT with key %q: %d %v, want %d", tt.key, code, v, tt.want)
		}
	}
	if code, _ := g.do(t, "DELETE", "/connections/x", viewerKey, ""); code != 403 {
		t.Errorf("viewer DELETE /connections: %d", code)
	}
	if code, _ := g.do(t, "GET", "/status.json", "", ""); code != 401 {
		t.Errorf("GET /status.json without a key: %d", code)
	}
	if code, v := g.do(t, "GET", "/apisix/admin/stream_routes", viewerKey, ""); code != 200 || v["total"].(float64) != 0 {
		t.Errorf("viewer list: %d %v", code, v)
	}
	if _, err := os.Stat(g.statePath); !os.IsNotExist(err) {
		t.Errorf("state file written after refused writes: %v", err)
	}
	// Bearer works for scrapers.
	req, _ := http.NewRequest("GET", g.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+viewerKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics with Bearer: %v %v", resp, err)
	}
	resp.Body.Close()

	fails := g.api.AuthFailures()
	if fails["missing_key"] != 2 || fails["wrong_key"] != 2 || fails["viewer_key_cannot_write"] != 2 {
		t.Errorf("failures: %v", fails)
	}
	if logs := g.log.String(); strings.Contains(logs, wrong) || strings.Contains(logs, adminKey[:31]) || strings.Contains(logs, viewerKey) {
		t.Errorf("the log shows a key:\n%s", logs)
	} else if !strings.Contains(logs, "reason=wrong_key") {
		t.Errorf("the log lacks the refusals:\n%s", logs)
	}
}

// TestValidation: every write goes through the configuration decoder and is
// answered 400 with the field and why; nothing is stored.
func TestValidation(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(0, ""))
	for _, tt := range []struct {
		path, body, field, msg string
	}{
		{"/apisix/admin/stream_routes/1", `{"upstream": {"nodes": [{"host": "127.0.0.1", "port": 70000}]}}`, "upstream.nodes[0].port", "must be 1..65535, got 70000"},
		{"/apisix/admin/stream_routes/1", `{"upstream_id": 9}`, "upstream_id", `no upstream with id "9": no upstreams are defined`},
		{"/apisix/admin/stream_routes/1", `{"upstrem_id": 9}`, "upstrem_id", `unknown key (did you mean "upstream_id"?)`},
		{"/apisix/admin/stream_routes/1", `{"plugins": {"mqtt-proxy": {"protocol_level": 7}}, "upstream_id": 1}`, "plugins.mqtt-proxy.protocol_level", "must be 3, 4 or 5, got 7"},
		{"/apisix/admin/upstreams/u", `{"type": "chash", "key": "uri", "nodes": {"b:1883": 1}}`, "key", `must be mqtt_client_id, remote_addr, mqtt_username, ssl_server_name, ssl_client_serial, ssl_client_s_dn, ssl_client_s_dn_cn or ssl_client_fingerprint, got "uri"`},
		{"/apisix/admin/upstreams/bad%20id", `{"nodes": {"b:1883": 1}}`, "id", `may contain only letters, digits, '-', '_' and '.', got "bad id"`},
		{"/apisix/admin/upstreams/u", `{"nodes": {"b:1883": 1.5}}`, `nodes["b:1883"]`, "must be an integer, got 1.5"},
	} {
		code, v := g.do(t, "PUT", tt.path, adminKey, tt.body)
		want := map[string]any{"field": tt.field, "message": tt.msg}
		if code != 400 || !slices.ContainsFunc(v["errors"].([]any), func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(want) }) {
			t.Errorf("PUT %s %s: %d %v, want 400 with %v", tt.path, tt.body, code, v, want)
		}
	}
	for _, tt := range []struct{ method, path, body, msg string }{
		{"PUT", "/apisix/admin/upstreams/u", `not json`, "body must be a JSON object"},
		{"PUT", "/apisix/admin/upstreams/u", `[1]`, "body must be a JSON object"},
		{"PUT", "/apisix/admin/upstreams/u", ``, "empty body"},
		{"PUT", "/apisix/admin/upstreams/u", `{"desc": "` + strings.Repeat("x", 1<<20) + `"}`, "body larger than 1048576 bytes"},
		{"PUT", "/apisix/admin/upstreams/u", `{"id": "v", "nodes": {"b:1": 1}}`, `id: the body says "v", the path "u"`},
		{"POST", "/apisix/admin/upstreams", `{"id": "v", "nodes": {"b:1": 1}}`, "id: POST makes the id"},
		{"PUT", "/apisix/admin/upstreams", `{"nodes": {"b:1": 1}}`, "id: required"},
		{"PUT", "/apisix/admin/services/1", `{}`, `unknown resource "services"`},
		{"PUT", "/apisix/admin/routes/1", `{}`, `needs upstream_id or upstream`},
		{"DELETE", "/apisix/admin/upstreams/u?drain=maybe", ``, "drain: must be true or false"},
	} {
		code, v := g.do(t, tt.method, tt.path, adminKey, tt.body)
		if (code != 400 && code != 404) || !strings.Contains(fmt.Sprint(v["error_msg"]), tt.msg) {
			t.Errorf("%s %s %q: %d %v, want an error with %q", tt.method, tt.path, tt.body, code, v, tt.msg)
		}
	}
	if _, err := os.Stat(g.statePath); !os.IsNotExist(err) {
		t.Errorf("state file written after refused writes: %v", err)
	}
}

// TestReferencesAndFileObjects: a used upstream is not deleted without
// force; file objects are listed, can be overridden by id and not deleted.
func TestReferencesAndFileObjects(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, fmt.Sprintf(`upstreams: [{id: file-up, nodes: {%q: 1}}]
stream_routes: [{id: file-route, mqtt_client_id: {prefix: file-}, upstream_id: file-up}]
`, broker.Addr())))
	g.mustDo(t, 201, "PUT", "/apisix/admin/upstreams/u1", fmt.Sprintf(`{"nodes": {%q: 1}}`, broker.Addr()))
	post := g.mustDo(t, 201, "POST", "/apisix/admin/stream_routes", `{"upstream_id": "u1", "mqtt_client_id": {"prefix": "adm-"}}`)
	rid := post["value"].(map[string]any)["id"].(string)
	if len(rid) != 20 {
		t.Errorf("POST id %q, want 20 digits", rid)
	}
	if code := connack(t, g.mqttAddr, "adm-1", mqtt.Level5); code != 0 {
		t.Errorf("admin route: CONNACK %d", code)
	}

	code, v := g.do(t, "DELETE", "/apisix/admin/upstreams/u1", adminKey, "")
	if code != 400 || !strings.Contains(v["error_msg"].(string), "stream_route ["+rid+"] is still using it") {
		t.Errorf("DELETE used upstream: %d %v", code, v)
	}
	v = g.mustDo(t, 200, "DELETE", "/apisix/admin/upstreams/u1?force=true", "")
	if fmt.Sprint(v["also_deleted"]) != "[/apisix/stream_routes/"+rid+"]" {
		t.Errorf("force DELETE: %v", v)
	}
	g.mustDo(t, 404, "GET", "/apisix/admin/stream_routes/"+rid, "")

	// File objects: listed with their place, overridden by id, not deleted.
	list := g.mustDo(t, 200, "GET", "/apisix/admin/stream_routes", "")
	if list["total"].(float64) != 1 || !strings.Contains(fmt.Sprint(list["list"]), "source:"+g.file+":10") {
		t.Errorf("list: %v", list)
	}
	code, v = g.do(t, "DELETE", "/apisix/admin/stream_routes/file-route", adminKey, "")
	if code != 409 || !strings.Contains(v["error_msg"].(string), g.file+":10: change it there") {
		t.Errorf("DELETE file route: %d %v", code, v)
	}
	code, v = g.do(t, "DELETE", "/apisix/admin/upstreams/file-up", adminKey, "")
	if code != 409 {
		t.Errorf("DELETE file upstream: %d %v", code, v)
	}
	if code := connack(t, g.mqttAddr, "other-1", mqtt.Level5); code != byte(mqtt.ServerUnavailable) {
		t.Errorf("before the override: CONNACK %#x", code)
	}
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/file-route", `{"upstream_id": "file-up"}`)
	if code := connack(t, g.mqttAddr, "other-1", mqtt.Level5); code != 0 {
		t.Errorf("after overriding the file route: CONNACK %#x", code)
	}
	got := g.mustDo(t, 200, "GET", "/apisix/admin/stream_routes/file-route", "")
	if got["source"] != nil || got["value"].(map[string]any)["mqtt_client_id"] != nil {
		t.Errorf("the override: %v", got)
	}
	// Deleting the override brings the file's route back.
	g.mustDo(t, 200, "DELETE", "/apisix/admin/stream_routes/file-route", "")
	if code := connack(t, g.mqttAddr, "other-2", mqtt.Level5); code != byte(mqtt.ServerUnavailable) {
		t.Errorf("after deleting the override: CONNACK %#x", code)
	}
}

// TestStateSurvivesRestart: the state file holds what was acknowledged, and
// a new process reads it back with the files.
func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, ""))
	g.mustDo(t, 201, "PUT", "/apisix/admin/upstreams/1", fmt.Sprintf(`{"nodes": {%q: 1}, "type": "chash"}`, broker.Addr()))
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/r", `{"upstream_id": 1}`)
	pair := certtest.NewCA(t, "test CA").Server(t, certtest.ECDSA, "a.example")
	body, _ := json.Marshal(map[string]any{"snis": []string{"a.example"}, "cert": string(pair.CertPEM), "key": string(pair.KeyPEM)})
	g.mustDo(t, 201, "PUT", "/apisix/admin/ssls/s1", string(body))
	fi, err := os.Stat(g.statePath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	if v := g.mustDo(t, 200, "GET", "/apisix/admin/ssls/s1", ""); v["value"].(map[string]any)["key"] != "(redacted)" {
		t.Errorf("ssl key shown: %v", v)
	}

	g2 := openGate(t, g.dir, g.file)
	if code := connack(t, g2.mqttAddr, "after-restart", mqtt.Level5); code != 0 {
		t.Errorf("after restart: CONNACK %#x", code)
	}
	v := g2.mustDo(t, 200, "GET", "/apisix/admin/stream_routes/r", "")
	if v["modifiedIndex"].(float64) != 2 {
		t.Errorf("after restart: %v", v)
	}
	if v := g2.mustDo(t, 200, "GET", "/apisix/admin/upstreams", ""); v["total"].(float64) != 1 {
		t.Errorf("upstreams after restart: %v", v)
	}
}

// TestReloadKeepsAdminObjects: a reload of the files keeps the admin
// objects, and a broken file is refused with the old configuration serving.
func TestReloadKeepsAdminObjects(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, ""))
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/r", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, broker.Addr()))
	if err := os.WriteFile(g.file, []byte(configYAML(portOf(t, g.mqttAddr), "log: {level: debug}\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.mgr.Reload("test"); err == nil || !strings.Contains(err.Error(), "log: duplicate key") {
		t.Fatalf("broken reload: %v", err)
	}
	if code := connack(t, g.mqttAddr, "after-broken", mqtt.Level5); code != 0 {
		t.Errorf("after a refused reload: CONNACK %#x", code)
	}
	if err := os.WriteFile(g.file, []byte(configYAML(portOf(t, g.mqttAddr), "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.mgr.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if code := connack(t, g.mqttAddr, "after-good", mqtt.Level5); code != 0 {
		t.Errorf("after a good reload: CONNACK %#x", code)
	}
	counts, last := g.mgr.ReloadStats()
	if last == 0 || !slices.Contains(counts, metrics.Reload{Source: "test", Result: "refused", Count: 1}) {
		t.Errorf("reload stats: %v %v", counts, last)
	}
}

// TestWatchReloads: changing the file is enough.
func TestWatchReloads(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	route := watchedRoute("0.05")
	g := startGate(t, configYAML(port, route(a)))
	startWatch(t, g)
	connack(t, g.mqttAddr, "one", mqtt.Level311)
	if err := os.WriteFile(g.file, []byte("stream_proxy: [broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the broken file to be refused", func() bool { return strings.Contains(g.log.String(), "reload refused") })
	connack(t, g.mqttAddr, "two", mqtt.Level311)
	if err := os.WriteFile(g.file, []byte(configYAML(port, route(b))), 0o644); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the watch to reload", func() bool { return strings.Contains(g.log.String(), "source=watch config=") })
	connack(t, g.mqttAddr, "three", mqtt.Level311)
	mqtttest.WaitFor(t, "the clients at their brokers", func() bool {
		return slices.Equal(a.Seen(), []string{"one", "two"}) && slices.Equal(b.Seen(), []string{"three"})
	})
}

// TestStatusAndConnections reads the status pages and the connection
// table, and closes exactly one client.
func TestStatusAndConnections(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, fmt.Sprintf("stream_routes: [{id: r1, upstream: {nodes: {%q: 1}}}]\n", broker.Addr())))
	clients := map[string]liveConn{}
	for _, id := range []string{"dev/1", "dev-2", "dev-3"} {
		clients[id] = connectLive(t, g.mqttAddr, id)
	}
	refused, err := net.Dial("tcp", g.mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	refused.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: 9, ClientID: "x"}))
	if ack := mqtttest.ReadPacket(t, refused); len(ack) != 4 || ack[3] != 1 {
		t.Fatalf("level 9: CONNACK % x, want code 1", ack)
	}
	refused.Close()
	mqtttest.WaitFor(t, "the refused client to be gone", func() bool { return g.srv.Stats().Active == 3 })

	code, raw := g.doRaw(t, "GET", "/status", viewerKey, "")
	if code != 200 || !strings.HasPrefix(string(raw), "Active connections: 3\nserver accepts handled refused\n 4 3 ") {
		t.Errorf("/status: %d\n%s", code, raw)
	}
	st := g.mustDo(t, 200, "GET", "/status.json", "")
	ups := st["upstreams"].([]any)
	node := ups[0].(map[string]any)["nodes"].([]any)[0].(map[string]any)
	if st["active"].(float64) != 3 || st["handled"].(float64) != 3 || node["active"].(float64) != 3 || node["health"] != "healthy" || node["addr"] != broker.Addr() {
		t.Errorf("/status.json: %v", st)
	}
	if r := st["routes"].([]any)[0].(map[string]any); r["id"] != "r1" || r["total"].(float64) != 3 {
		t.Errorf("/status.json routes: %v", st["routes"])
	}
	// The data path's counters, zero here (plain TCP): present by name.
	if ws, ok := st["websocket"].(map[string]any); !ok || ws["looped"] != 0.0 || ws["parked"] != 0.0 || ws["upstream_parked"] != 0.0 {
		t.Errorf("/status.json websocket: %v", st["websocket"])
	}
	if tl, ok := st["tls"].(map[string]any); !ok || tl["record_carried"] != 0.0 || tl["record_looped"] != 0.0 || tl["record_parked"] != 0.0 || tl["handshake_failures"] != 0.0 {
		t.Errorf("/status.json tls: %v", st["tls"])
	}

	v := g.mustDo(t, 200, "GET", "/connections?client_id=dev%2F1", "")
	row := v["list"].([]any)[0].(map[string]any)
	if v["total"].(float64) != 1 || row["client_id"] != "dev/1" || row["node"] != broker.Addr() || row["route"] != "r1" || row["since"] == "" {
		t.Errorf("/connections?client_id=dev/1: %v", v)
	}
	if v := g.mustDo(t, 200, "GET", "/connections?route=r1&limit=2", ""); v["total"].(float64) != 3 || len(v["list"].([]any)) != 2 {
		t.Errorf("/connections?route=r1&limit=2: %v", v)
	}
	g.mustDo(t, 404, "DELETE", "/connections/nobody", "")
	v = g.mustDo(t, 200, "DELETE", "/connections/dev%2F1", "")
	if v["closed"].(float64) != 1 {
		t.Errorf("DELETE: %v", v)
	}
	_ = clients["dev/1"].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := clients["dev/1"].Read(make([]byte, 1)); err == nil {
		t.Error("the closed client can still read")
	}
	clients["dev-2"].ping(t)
	clients["dev-3"].ping(t)
	mqtttest.WaitFor(t, "two left", func() bool {
		_, total := g.srv.Connections(proxy.ConnFilter{}, 0)
		return total == 2
	})
}

// TestDrainParam: ?drain=true closes the connections of the node a PUT
// removed, and only those.
func TestDrainParam(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, fmt.Sprintf("stream_routes: [{id: other, mqtt_client_id: keep, upstream: {nodes: {%q: 1}}}]\n", a.Addr())))
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/r", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, a.Addr()))
	moved := []liveConn{connectLive(t, g.mqttAddr, "m1"), connectLive(t, g.mqttAddr, "m2")}
	kept := connectLive(t, g.mqttAddr, "keep")

	// Without drain, live connections stay on the removed node.
	g.mustDo(t, 200, "PUT", "/apisix/admin/stream_routes/r?drain=false", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, b.Addr()))
	moved[0].ping(t)
	g.mustDo(t, 200, "PUT", "/apisix/admin/stream_routes/r", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, a.Addr()))
	m3 := connectLive(t, g.mqttAddr, "m3")
	v := g.mustDo(t, 200, "PUT", "/apisix/admin/stream_routes/r?drain=true&drain_window=10ms", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, b.Addr()))
	if v["draining"].(float64) != 3 {
		t.Fatalf("draining: %v, want 3 (m1, m2, m3 on the removed node)", v["draining"])
	}
	for _, c := range append(moved, m3) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a drained connection is still open")
		}
	}
	kept.ping(t)
	connack(t, g.mqttAddr, "m1", mqtt.Level311)
	mqtttest.WaitFor(t, "m1 back, on the new node", func() bool { return slices.Contains(b.Seen(), "m1") })
}

// TestDrainEndpoint: POST /drain drains, paced, the connections a write
// without drain left on a removed node; pause and cancel answer 409 when no
// job runs, and /status says how the drain went.
func TestDrainEndpoint(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, "rebalance: {rate: 50}\n"))
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/r", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, a.Addr()))
	moved := []liveConn{connectLive(t, g.mqttAddr, "m1"), connectLive(t, g.mqttAddr, "m2")}
	g.mustDo(t, 200, "PUT", "/apisix/admin/stream_routes/r", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, b.Addr()))
	moved[0].ping(t)

	v := g.mustDo(t, 200, "POST", "/drain", "")
	if v["reason"] != "drain" || v["total"] != 2.0 || v["rate"] != 50.0 {
		t.Fatalf("POST /drain: %v; want a drain of 2 at rebalance.rate 50", v)
	}
	for _, c := range moved {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a drained connection is still open")
		}
	}
	mqtttest.WaitFor(t, "/status to say the drain is done", func() bool {
		_, raw := g.doRaw(t, "GET", "/status", adminKey, "")
		return strings.Contains(string(raw), "rebalance: drain done, 2 of 2 moved (0 skipped) at 50/s")
	})
	if code, _ := g.do(t, "POST", "/rebalance/pause", adminKey, ""); code != http.StatusConflict {
		t.Errorf("pause with no job running: %d, want 409", code)
	}
	if v := g.mustDo(t, 200, "POST", "/drain?drain_window=1s", ""); v["total"] != 0.0 || v["state"] != "done" {
		t.Errorf("POST /drain with nothing to drain: %v; want a done job of 0", v)
	}
	if code, _ := g.do(t, "POST", "/drain?drain_window=soon", adminKey, ""); code != http.StatusBadRequest {
		t.Errorf("POST /drain?drain_window=soon: %d, want 400", code)
	}
}

// TestReloadRestartOnly: a reload that changes keys read only at start
// applies the rest and says once which keys wait for a restart; a reload
// that changes nothing of them says nothing.
func TestReloadRestartOnly(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(0, ""))
	port := portOf(t, g.mqttAddr)
	write := func(yml string) {
		t.Helper()
		if err := os.WriteFile(g.file, []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := g.mgr.Reload("test"); err != nil {
			t.Fatal(err)
		}
	}
	const warning = "reloaded, but these settings apply only when mqgate restarts"
	write(configYAML(port, "reload: {drain_window: 1m}\n"))
	if strings.Contains(strings.Join(g.log.Lines(), "\n"), warning) {
		t.Errorf("a reload of live keys only warned:\n%s", strings.Join(g.log.Lines(), "\n"))
	}
	yml := strings.Replace(configYAML(port, ""), `log: {access_log: "off"}`, `log: {access_log: stderr}`, 1)
	yml = strings.Replace(yml, `listen: "127.0.0.1:0"`, `listen: "127.0.0.1:1"`, 1)
	write(yml)
	var found []string
	for _, l := range g.log.Lines() {
		if strings.Contains(l, warning) {
			found = append(found, l)
		}
	}
	if len(found) != 1 || !strings.Contains(found[0], warning+": log.access_log, admin.listen") {
		t.Errorf("warnings %q, want one naming log.access_log and admin.listen", found)
	}
}

// TestReloadRestartOnlyOncePerChange: a restart-only key that differs from
// what the process started with is named by the reload that changes it, not
// again by later reloads that leave it as it is; changed again it is named
// again, and put back as the process runs it, it is not.
func TestReloadRestartOnlyOncePerChange(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(0, ""))
	port := portOf(t, g.mqttAddr)
	const warning = "reloaded, but these settings apply only when mqgate restarts"
	warnings := func() []string {
		var found []string
		for _, l := range g.log.Lines() {
			if strings.Contains(l, warning) {
				found = append(found, l)
			}
		}
		return found
	}
	steps := []struct {
		accessLog, listen, extra string
		want                     []string // the warnings' keys so far
	}{
		{"stderr", "127.0.0.1:0", "", []string{"log.access_log"}},
		{"stderr", "127.0.0.1:0", "reload: {drain_window: 1m}\n", []string{"log.access_log"}},       // a live change only
		{"stderr", "127.0.0.1:1", "", []string{"log.access_log", "admin.listen"}},                   // only the new one
		{"stdout", "127.0.0.1:1", "", []string{"log.access_log", "admin.listen", "log.access_log"}}, // changed again
		{`"off"`, "127.0.0.1:1", "", []string{"log.access_log", "admin.listen", "log.access_log"}},  // back as started
		{"stderr", "127.0.0.1:1", "", []string{"log.access_log", "admin.listen", "log.access_log", "log.access_log"}},
	}
	for i, st := range steps {
		yml := strings.Replace(configYAML(port, st.extra), `log: {access_log: "off"}`, "log: {access_log: "+st.accessLog+"}", 1)
		yml = strings.Replace(yml, `listen: "127.0.0.1:0"`, `listen: "`+st.listen+`"`, 1)
		if err := os.WriteFile(g.file, []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := g.mgr.Reload("test"); err != nil {
			t.Fatal(err)
		}
		found := warnings()
		ok := len(found) == len(st.want)
		for j := 0; ok && j < len(found); j++ {
			ok = strings.Contains(found[j], warning+": "+st.want[j]+`" keys=`)
		}
		if !ok {
			t.Fatalf("after reload %d (access_log %s, listen %s): warnings %q, want one each naming %q", i+1, st.accessLog, st.listen, found, st.want)
		}
	}
}

// TestHTTPRoutesByAdminAPI: /apisix/admin/routes in APISIX's shape: a
// route PUT through the Admin API serves HTTP on the node_listen port (the
// MQTT port too) at once; DELETE takes it away.
func TestHTTPRoutesByAdminAPI(t *testing.T) {
	t.Parallel()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web saw %s", r.URL.Path)
	}))
	defer web.Close()
	port := mqtttest.FreePort(t)
	g := startGate(t, configYAML(port, fmt.Sprintf("node_listen: [\"127.0.0.1:%d\"]\n", port)))
	g.mustDo(t, http.StatusCreated, http.MethodPut, "/apisix/admin/routes/web",
		fmt.Sprintf(`{"uri": "/status/*", "upstream": {"scheme": "http", "type": "roundrobin", "nodes": {%q: 1}}}`, strings.TrimPrefix(web.URL, "http://")))
	get := func() (int, string) {
		resp, err := http.Get("http://" + g.mqttAddr + "/status/ok")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || body != "web saw /status/ok" {
		t.Errorf("after PUT: %d %q", code, body)
	}
	v := g.mustDo(t, http.StatusOK, http.MethodGet, "/apisix/admin/routes/web", "")
	if fmt.Sprint(v["value"]) == "" {
		t.Errorf("GET: %v", v)
	}
	g.mustDo(t, http.StatusOK, http.MethodDelete, "/apisix/admin/routes/web", "")
	if code, _ := get(); code != http.StatusNotFound {
		t.Errorf("after DELETE: %d, want 404", code)
	}
}

// mochiPair starts two mochi brokers on one port, on 127.0.0.1 and
// 127.0.0.2. The port comes from 127.0.0.1:0, so another process may hold
// it on 127.0.0.2: then another port is tried.
func mochiPair(t *testing.T) (a, b *mqtttest.Mochi) {
	t.Helper()
	for range 20 {
		a = mqtttest.StartMochi(t)
		at := net.JoinHostPort("127.0.0.2", strconv.Itoa(portOf(t, a.Addr())))
		if ln, err := net.Listen("tcp", at); err == nil {
			ln.Close()
			return a, mqtttest.StartMochiAt(t, at)
		}
		a.Close()
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries")
	return nil, nil
}
