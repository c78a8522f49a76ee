package admin_test

import (
	"fmt"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestDeploymentAdmin serves the Admin API APISIX's deployment.admin
// describes: its admin_key (an admin and a viewer), admin_listen and
// allow_admin; the example's answers show each applied.
func TestDeploymentAdmin(t *testing.T) {
	t.Parallel()
	yml := func(allow string) string {
		return fmt.Sprintf(`apisix:
  enable_admin: true
  stream_proxy:
    tcp: ["127.0.0.1:%d"]
deployment:
  role: traditional
  role_traditional: {config_provider: yaml}
  admin:
    admin_key_required: true
    admin_key:
      - {name: admin, key: %s, role: admin}
      - {name: viewer, key: %s, role: viewer}
    enable_admin_cors: true
    allow_admin: %s
    admin_listen: {ip: 127.0.0.1, port: 0}
log: {access_log: "off"}
`, mqtttest.FreePort(t), adminKey, viewerKey, allow)
	}
	g := startGate(t, yml("[127.0.0.0/24]"))
	if code, _ := g.do(t, "GET", "/apisix/admin/upstreams", adminKey, ""); code != 200 {
		t.Errorf("admin key: %d, want 200", code)
	}
	if code, _ := g.do(t, "GET", "/apisix/admin/upstreams", viewerKey, ""); code != 200 {
		t.Errorf("viewer key reading: %d, want 200", code)
	}
	if code, _ := g.do(t, "PUT", "/apisix/admin/upstreams/1", viewerKey, `{"nodes": {"127.0.0.1:1883": 1}}`); code != 403 {
		t.Errorf("viewer key writing: %d, want 403", code)
	}
	if code, _ := g.do(t, "GET", "/apisix/admin/upstreams", "", ""); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}
	if code, _ := g.do(t, "PUT", "/apisix/admin/upstreams/1", adminKey, `{"nodes": {"127.0.0.1:1883": 1}}`); code != 201 && code != 200 {
		t.Errorf("admin key writing: %d, want 200 or 201", code)
	}

	// allow_admin without loopback: this client is turned away.
	far := startGate(t, yml("[10.0.0.0/8]"))
	if code, _ := far.doRaw(t, "GET", "/apisix/admin/upstreams", adminKey, ""); code != 403 {
		t.Errorf("allow_admin [10.0.0.0/8], from 127.0.0.1: %d, want 403", code)
	}
}
