package admin_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
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

// TestOlderMQTTProxyBody: seed 002's older mqtt-proxy form, the broker in
// the plugin's upstream ({ip, port}, later {host, port}), is accepted by
// the Admin API and routes new connections to that broker.
func TestOlderMQTTProxyBody(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(mqtttest.FreePort(t), ""))
	g.mustDo(t, 201, "PUT", "/apisix/admin/stream_routes/1", fmt.Sprintf(`{
  "plugins": {"mqtt-proxy": {"protocol_name": "MQTT", "protocol_level": 4,
    "upstream": {"ip": "127.0.0.1", "port": %d}}}
}`, portOf(t, broker.Addr())))
	if code := connack(t, g.mqttAddr, "old-form", mqtt.Level311); code != 0 {
		t.Fatalf("CONNACK %#x, want 0", code)
	}
	mqtttest.WaitFor(t, "the plugin's broker to see old-form", func() bool { return slices.Contains(broker.Seen(), "old-form") })

	code, v := g.do(t, "PUT", "/apisix/admin/stream_routes/2", adminKey, `{"plugins": {"mqtt-proxy": {"upstream": {"host": "127.0.0.1"}}}}`)
	if code != 400 || !strings.Contains(fmt.Sprint(v), "port") {
		t.Errorf("no port: %d %v, want 400 naming port", code, v)
	}
}
