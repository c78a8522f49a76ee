package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDeploymentEtcd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := `stream_proxy: {tcp: [9000]}
deployment:
  role: data_plane
  role_data_plane:
    config_provider: etcd
  instance_name: dp-1
  etcd:
    host:
      - "http://127.0.0.1:2379"
      - "https://etcd-2.example:2379"
    prefix: /mqtt/
    timeout: 5
    user: root
    password: secret
    resync_delay: 5
    tls: {ca: ` + ca + `, verify: false}
`
	cfg, err := Parse(Document{Name: filepath.Join(dir, "config.yaml"), Data: []byte(doc)})
	if err != nil {
		t.Fatal(err)
	}
	want := &Deployment{
		Role: RoleDataPlane, ConfigProvider: ProviderEtcd, InstanceName: "dp-1",
		Etcd: &Etcd{
			Hosts:  []string{"http://127.0.0.1:2379", "https://etcd-2.example:2379"},
			Prefix: "/mqtt", Timeout: 5 * time.Second, User: "root", Password: "secret",
			TLS:       &EtcdTLS{CA: ca, Verify: false},
			CacheFile: filepath.Join(dir, DefaultEtcdCacheFile), Line: 7,
		},
		File: filepath.Join(dir, "config.yaml"), Line: 2,
	}
	if !reflect.DeepEqual(cfg.Deployment, want) {
		t.Errorf("Deployment =\n%+v %+v\nwant\n%+v %+v", cfg.Deployment, cfg.Deployment.Etcd, want, want.Etcd)
	}
	if !cfg.Deployment.UsesEtcd() || cfg.Deployment.AdminWrites() || !cfg.Deployment.ServesTraffic() {
		t.Errorf("data_plane with etcd: UsesEtcd %v AdminWrites %v ServesTraffic %v", cfg.Deployment.UsesEtcd(), cfg.Deployment.AdminWrites(), cfg.Deployment.ServesTraffic())
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v (no routes is normal with etcd)", cfg.Warnings)
	}
	if !strings.Contains(strings.Join(cfg.Ignored, " "), "deployment.etcd.resync_delay") {
		t.Errorf("APISIX's resync_delay should be accepted and ignored: %v", cfg.Ignored)
	}
}

func TestDeploymentDefaults(t *testing.T) {
	t.Parallel()
	// Without config_provider, deployment.etcd makes etcd the provider, as
	// in APISIX's traditional role; the seed's data_plane with yaml reads files.
	cfg, err := Parse(Document{Name: "c.yaml", Data: []byte("stream_proxy: {tcp: [9000]}\ndeployment: {etcd: {host: \"http://127.0.0.1:2379\"}}\n")})
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Deployment
	if d.Role != RoleTraditional || d.ConfigProvider != ProviderEtcd || d.Etcd.Prefix != "/apisix" || d.Etcd.Timeout != 30*time.Second || d.Etcd.CacheFile != DefaultEtcdCacheFile {
		t.Errorf("defaults: %+v %+v", d, d.Etcd)
	}
	none, err := Parse(Document{Name: "c.yaml", Data: []byte("stream_proxy: {tcp: [9000]}\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n")})
	if err != nil {
		t.Fatal(err)
	}
	if s := none.DeploymentSettings(); s.Role != RoleTraditional || s.UsesEtcd() || !s.AdminWrites() {
		t.Errorf("no deployment block: %+v", s)
	}
	if a, b := (&Deployment{InstanceName: "x"}).Name(), (&Deployment{}).Name(); a != "x" || b == "" {
		t.Errorf("Name: %q %q", a, b)
	}
	// A control plane needs no listeners, and says it opens none.
	cp, err := Parse(Document{Name: "cp.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
deployment: {role: control_plane, role_control_plane: {config_provider: etcd}, etcd: {host: ["http://127.0.0.1:2379"]}}
admin: {keys: [{key: 0123456789abcdef0123}]}
`)})
	if err != nil {
		t.Fatal(err)
	}
	if cp.Deployment.ServesTraffic() || len(cp.Warnings) != 1 || !strings.Contains(cp.Warnings[0].Error(), "cp.yaml:1: stream_proxy.tcp[0]: not opened: a control_plane serves no traffic") {
		t.Errorf("control plane: %+v warnings %v", cp.Deployment, cp.Warnings)
	}
}

func TestDeploymentErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc string
		want      []string
	}{
		{
			name: "unknown keys suggest the nearest",
			doc: `stream_proxy: {tcp: [9000]}
deployment:
  rol: data_plane
  etcd:
    hosts: ["http://127.0.0.1:2379"]
    prefx: /apisix
`,
			want: []string{
				`c.yaml:3: deployment.rol: unknown key (did you mean "role"?)`,
				`c.yaml:4: deployment.etcd.host: required: a list of etcd client URLs, like ["http://127.0.0.1:2379"]`,
				`c.yaml:5: deployment.etcd.hosts: unknown key (did you mean "host"?)`,
				`c.yaml:6: deployment.etcd.prefx: unknown key (did you mean "prefix"?)`,
			},
		},
		{
			name: "bad values",
			doc: `stream_proxy: {tcp: [9000]}
deployment:
  role: edge
  role_traditional: {config_provider: consul}
  etcd:
    host: ["127.0.0.1:2379", "grpc://127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:2379", "http://127.0.0.1:2379"]
    prefix: apisix
    timeout: 0
    user: root
    tls: {cert: /nonexistent/client.pem, verfy: true}
`,
			want: []string{
				`c.yaml:3: deployment.role: must be traditional, data_plane or control_plane, got "edge"`,
				`c.yaml:4: deployment.role_traditional.config_provider: must be etcd or yaml, got "consul"`,
				`c.yaml:6: deployment.etcd.host[0]: must be a URL like "http://127.0.0.1:2379" or "https://etcd.example:2379", got "127.0.0.1:2379"`,
				`c.yaml:6: deployment.etcd.host[1]: scheme must be http or https, got "grpc://127.0.0.1:2379"`,
				`c.yaml:6: deployment.etcd.host[2]: needs a port: must be a URL like "http://127.0.0.1:2379" or "https://etcd.example:2379", got "http://127.0.0.1"`,
				`c.yaml:6: deployment.etcd.host[4]: duplicate host "http://127.0.0.1:2379"`,
				`c.yaml:7: deployment.etcd.prefix: must start with "/", like "/apisix", got "apisix"`,
				`c.yaml:8: deployment.etcd.timeout: must be greater than 0`,
				`c.yaml:9: deployment.etcd.password: required with user`,
				`c.yaml:10: deployment.etcd.tls.cert: cannot read "/nonexistent/client.pem": no such file or directory`,
				`c.yaml:10: deployment.etcd.tls.verfy: unknown key (did you mean "verify"?)`,
			},
		},
		{
			name: "etcd provider without etcd, control plane without etcd or admin",
			doc: `stream_proxy: {tcp: [9000]}
deployment:
  role: data_plane
  role_data_plane: {config_provider: etcd}
`,
			want: []string{`c.yaml:4: deployment.etcd: required: config_provider is etcd (set deployment.etcd.host)`},
		},
		{
			name: "control plane",
			doc: `deployment:
  role: control_plane
  role_control_plane: {config_provider: yaml}
`,
			want: []string{
				`c.yaml:1: deployment.role: a control_plane serves only the Admin API: add an admin block`,
				`c.yaml:3: deployment.role_control_plane.config_provider: a control_plane writes to etcd: must be etcd`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(Document{Name: "c.yaml", Data: []byte(tt.doc)})
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got := err.Error(); got != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
		})
	}
}
