package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
)

const testKey = "0123456789abcdef0123456789abcdef"

func TestAdminAndReload(t *testing.T) {
	t.Setenv("MQGATE_TEST_VIEWER_KEY", "fedcba9876543210fedcba9876543210")
	// admin.tls paths are relative to the file that names them.
	dir := t.TempDir()
	certtest.NewCA(t, "admin CA").Server(t, certtest.ECDSA, "localhost").WriteFiles(t, dir, "admin")
	file := filepath.Join(dir, "mqgate.yaml")
	cfg, err := Parse(Document{Name: file, Data: []byte(listen + `
stream_routes: [{upstream_id: 1}]
upstreams: [{id: 1, nodes: {"b:1883": 1}}]
admin:
  listen: 127.0.0.1:9180
  keys:
    - {name: ops, key: ` + testKey + `}
    - {key_env: MQGATE_TEST_VIEWER_KEY, role: viewer}
  allow: [127.0.0.1, 10.0.0.0/8]
  tls: {cert: admin.crt, key: admin.key}
  public_status: true
reload: {watch: false, drain_removed: true, drain_window: 1m}
`)})
	if err != nil {
		t.Fatal(err)
	}
	want := &Admin{
		Listen: "127.0.0.1:9180",
		Keys: []AdminKey{
			{Name: "ops", Key: testKey, Role: RoleAdmin},
			{Key: "fedcba9876543210fedcba9876543210", Env: "MQGATE_TEST_VIEWER_KEY", Role: RoleViewer},
		},
		Allow:        []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")},
		TLS:          &AdminTLS{Cert: filepath.Join(dir, "admin.crt"), Key: filepath.Join(dir, "admin.key")},
		StateFile:    filepath.Join(dir, DefaultAdminStateFile),
		PublicStatus: true,
		File:         file, Line: 4,
	}
	if !reflect.DeepEqual(cfg.Admin, want) {
		t.Errorf("Admin =\n%+v\nwant\n%+v", cfg.Admin, want)
	}
	if got, want := cfg.ReloadSettings(), (Reload{Watch: false, WatchInterval: 2 * time.Second, DrainRemoved: true, DrainWindow: time.Minute}); got != want {
		t.Errorf("Reload = %+v, want %+v", got, want)
	}
}

func TestAdminDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "conf/mqgate.yaml", Data: []byte(listen + "\nstream_routes: [{upstream: {nodes: {\"b:1\": 1}}}]\nadmin: {keys: [{key: " + testKey + "}]}\n")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != DefaultAdminListen || cfg.Admin.StateFile != filepath.Join("conf", DefaultAdminStateFile) {
		t.Errorf("Admin = %+v", cfg.Admin)
	}
	if got, want := cfg.ReloadSettings(), (Reload{Watch: true, WatchInterval: DefaultWatchInterval}); got != want {
		t.Errorf("ReloadSettings() = %+v, want %+v", got, want)
	}
	noAdmin, err := Parse(Document{Name: "x.yaml", Data: []byte(listen + "\nstream_routes: [{upstream: {nodes: {\"b:1\": 1}}}]\n")})
	if err != nil || noAdmin.Admin != nil {
		t.Errorf("without an admin block: Admin = %+v, err %v", noAdmin.Admin, err)
	}
}

func TestAdminErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, admin, want string }{
		{"no keys", `admin: {listen: "127.0.0.1:9180"}`,
			"m.yaml:2: admin.keys: at least one key is required: the Admin API has no default key (generate one with: openssl rand -hex 16)"},
		{"empty key list", `admin: {keys: []}`,
			"m.yaml:2: admin.keys: at least one key is required: the Admin API has no default key (generate one with: openssl rand -hex 16)"},
		{"APISIX example key", `admin: {keys: [{key: edd1c9f034335f136f87ad84b625c8f1}]}`,
			"m.yaml:2: admin.keys[0]: this is APISIX's documented example key, known to everyone; generate your own (openssl rand -hex 16)"},
		{"short key", `admin: {keys: [{key: secret}]}`,
			"m.yaml:2: admin.keys[0]: too short (6 characters): use at least 16 (openssl rand -hex 16)"},
		{"unset env", `admin: {keys: [{key_env: MQGATE_TEST_SURELY_UNSET}]}`,
			"m.yaml:2: admin.keys[0].key_env: environment variable MQGATE_TEST_SURELY_UNSET is not set or empty"},
		{"key and env", `admin: {keys: [{key: ` + testKey + `, key_env: HOME}]}`,
			"m.yaml:2: admin.keys[0]: set key or key_env, not both"},
		{"bad role", `admin: {keys: [{key: ` + testKey + `, role: root}]}`,
			`m.yaml:2: admin.keys[0].role: must be admin or viewer, got "root"`},
		{"same key twice", `admin: {keys: [{key: ` + testKey + `}, {key: ` + testKey + `, role: viewer}]}`,
			"m.yaml:2: admin.keys[1]: the same key as admin.keys[0]; every key must be different"},
		{"bad listen", `admin: {listen: 9180, keys: [{key: ` + testKey + `}]}`,
			`m.yaml:2: admin.listen: must be "ip:port", got "9180"`},
		{"bad allow", `admin: {allow: [10.0.0.0/33], keys: [{key: ` + testKey + `}]}`,
			`m.yaml:2: admin.allow[0]: must be an IP address or a CIDR like "10.0.0.0/8", got "10.0.0.0/33"`},
		{"tls without key", `admin: {tls: {cert: a.pem}, keys: [{key: ` + testKey + `}]}`,
			"m.yaml:2: admin.tls: needs both cert and key (PEM file paths)"},
		{"tls files missing", `admin: {tls: {cert: nowhere.crt, key: nowhere.key}, keys: [{key: ` + testKey + `}]}`,
			"m.yaml:2: admin.tls: open nowhere.crt: no such file or directory"},
		{"unknown admin key", `admin: {admin_key: x, keys: [{key: ` + testKey + `}]}`,
			"m.yaml:2: admin.admin_key: unknown key (known: listen, keys, allow, tls, state_file, public_status)"},
		{"zero watch interval", `reload: {watch_interval: 0}`,
			"m.yaml:2: reload.watch_interval: must be greater than 0; set watch: false to stop watching"},
		{"unknown reload key", `reload: {drain: true}`,
			`m.yaml:2: reload.drain: unknown key (did you mean "drain_window"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(Document{Name: "m.yaml", Data: []byte(listen + "\n" + tt.admin + "\nstream_routes: [{upstream: {nodes: {\"b:1\": 1}}}]\n")})
			if err == nil || err.Error() != tt.want {
				t.Errorf("error =\n%v\nwant\n%s", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), testKey) {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}
}

// TestOverlay: Admin API objects replace file objects with the same id in
// place, and add the others after them.
func TestOverlay(t *testing.T) {
	t.Parallel()
	file := Document{Name: "mqgate.yaml", Data: []byte(listen + `
stream_routes:
  - {id: a, mqtt_client_id: {prefix: a}, upstream_id: 1}
  - {upstream_id: 1}
upstreams:
  - {id: 1, nodes: {"file:1883": 1}}
`)}
	state := Document{Name: "state.json", Overlay: true, Data: []byte(`{
"stream_routes": [{"id": "a", "upstream_id": "2"}, {"id": "new", "upstream": {"nodes": {"x:1": 1}}}],
"upstreams": [{"id": 1, "nodes": [{"host": "admin", "port": 1883}]}, {"id": 2, "nodes": {"two:1883": 1}}]
}`)}
	cfg, err := Parse(file, state)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, r := range cfg.StreamRoutes {
		routes = append(routes, r.ID+"@"+r.File+"->"+cfg.RouteUpstream(&r).Nodes[0].Host)
	}
	if want := []string{"a@state.json->two", "route-1@mqgate.yaml->admin", "new@state.json->x"}; !reflect.DeepEqual(routes, want) {
		t.Errorf("routes = %v, want %v", routes, want)
	}
	if len(cfg.Upstreams) != 2 || cfg.Upstreams[0].File != "state.json" {
		t.Errorf("upstreams = %+v", cfg.Upstreams)
	}

	for _, tt := range []struct{ data, want string }{
		{`{"log": {"level": "debug"}}`, "state.json:1: log: not allowed in Admin API state (only stream_routes, upstreams, ssls and routes)"},
		{`{"stream_routes": [{"upstream_id": 1}]}`, "state.json:1: stream_routes[0].id: required in Admin API state"},
		{`{"stream_routes": [{"id": 9, "upstream_id": 7}]}`, `state.json:1: stream_routes[0].upstream_id: no upstream with id "7" (known: 1)`},
	} {
		_, err := Parse(file, Document{Name: "state.json", Overlay: true, Data: []byte(tt.data)})
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: error =\n%v\nwant\n%s", tt.data, err, tt.want)
		}
	}
}

func TestDeploymentAdminConfig(t *testing.T) {
	t.Parallel()
	const key = "6f1ed002ab5595859014ebf0951522d9"
	parse := func(extra string) (*Config, error) {
		return Parse(Document{Name: "d.yaml", Data: []byte("stream_proxy: {tcp: [9000]}\nstream_routes: [{upstream: {nodes: {\"127.0.0.1:1883\": 1}}}]\n" + extra)})
	}
	cfg, err := parse("deployment:\n  admin:\n    admin_key: [{name: admin, key: " + key + "}]\n")
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a == nil || a.Listen != "0.0.0.0:9180" || len(a.Allow) != 1 || a.Allow[0].String() != "127.0.0.0/24" || len(a.Keys) != 1 || a.Keys[0].Role != RoleAdmin {
		t.Errorf("admin %+v: want APISIX's defaults, 0.0.0.0:9180 allowing 127.0.0.0/24", cfg.Admin)
	}
	for _, tc := range []struct{ extra, want string }{
		{"deployment:\n  role: data_plane\n  admin:\n    admin_key: [{key: " + key + "}]\n", ""},
		{"apisix: {enable_admin: false}\ndeployment:\n  admin:\n    admin_key: [{key: " + key + "}]\n", ""},
	} {
		cfg, err := parse(tc.extra)
		if err != nil || cfg.Admin != nil {
			t.Errorf("%s: admin %+v, %v; want none, as APISIX serves none", tc.extra, cfg.Admin, err)
		}
	}
	for _, tc := range []struct{ extra, want string }{
		{"deployment:\n  admin:\n    admin_key_required: false\n    admin_key: [{key: " + key + "}]\n", "d.yaml:5: deployment.admin.admin_key_required: mqgate's Admin API always needs a key"},
		{"deployment:\n  admin:\n    admin_key: [{key: edd1c9f034335f136f87ad84b625c8f1}]\n", "deployment.admin.admin_key[0]: this is APISIX's documented example key"},
		{"deployment:\n  admin: {allow_admin: [10.0.0.0/8]}\n", "deployment.admin.admin_key: at least one key is required"},
		{"deployment:\n  admin:\n    admin_key: [{key: " + key + "}]\n    https_admin: true\n", "https_admin: true needs admin_ssl_cert and admin_ssl_cert_key"},
		{"deployment:\n  admin:\n    admin_key: [{key: " + key + "}]\n    admin_api_mtls: {admin_ssl_ca_cert: ca.pem}\n", "client certificates for the Admin API are not supported"},
		{"admin: {keys: [{key: " + key + "}]}\ndeployment:\n  admin:\n    admin_key: [{key: " + key + "}]\n", "d.yaml:5: deployment.admin: the Admin API is set twice, here and by admin at d.yaml:3: keep one"},
	} {
		_, err := parse(tc.extra)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.extra, err, tc.want)
		}
	}
}
