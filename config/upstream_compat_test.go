package config

import (
	"strings"
	"testing"
)

// TestVariableSpellings: a variable may be written with NGINX's and
// APISIX's "$" and by NGINX Plus's mqtt_preread names; each is mqgate's
// variable after loading.
func TestVariableSpellings(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "v.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
log: {access_log_format: "$remote_addr $mqtt_preread_clientid"}
upstreams:
  - {id: a, type: chash, key: $mqtt_preread_clientid, nodes: {"127.0.0.1:1883": 1}}
  - {id: b, type: chash, key: "$remote_addr", nodes: {"127.0.0.1:1883": 1}}
  - {id: c, type: chash, key: mqtt_preread_username, nodes: {"127.0.0.1:1883": 1},
     source_addresses: [127.0.0.1, 127.0.0.2], source_hash_key: $mqtt_client_id}
stream_routes:
  - {id: a, upstream_id: a, plugins: {limit-conn: {conn: 1, key: $mqtt_preread_clientid}}}
  - {id: b, upstream_id: b, server_port: 9000}
  - {id: c, upstream_id: c, server_port: 9000}
`)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range cfg.Upstreams {
		got = append(got, u.Key)
	}
	if want := "mqtt_client_id remote_addr mqtt_username"; strings.Join(got, " ") != want || cfg.Upstreams[2].SourceHashKey != "mqtt_client_id" {
		t.Errorf("keys %q, source_hash_key %q; want %q, mqtt_client_id", got, cfg.Upstreams[2].SourceHashKey, want)
	}
	_, err = Parse(Document{Name: "v.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
upstreams: [{id: a, type: chash, key: $mqtt_preread_clientd, nodes: {"127.0.0.1:1883": 1}}]
stream_routes: [{upstream_id: a}]
`)})
	if err == nil || !strings.Contains(err.Error(), "v.yaml:2: upstreams[0].key: ") {
		t.Errorf("a misspelt variable: %v", err)
	}
}

// TestMQTTProxyOlderUpstream: seed 002's older mqtt-proxy form, the broker
// in the plugin's upstream {host | ip, port}, is the route's upstream.
func TestMQTTProxyOlderUpstream(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "o.yaml", Data: []byte(`stream_proxy: {tcp: [9100]}
stream_routes:
  - id: 1
    plugins:
      mqtt-proxy:
        protocol_name: MQTT
        protocol_level: 4
        upstream: {host: 127.0.0.1, port: 1995}
  - id: 2
    server_port: 9100
    plugins:
      mqtt-proxy: {protocol_name: MQTT, protocol_level: 4, upstream: {ip: 127.0.0.2, port: 1996}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"127.0.0.1:1995", "127.0.0.2:1996"} {
		u := cfg.StreamRoutes[i].Upstream
		if u == nil || len(u.Nodes) != 1 || u.Nodes[0].Addr() != want || u.Type != "roundrobin" || u.Scheme != "tcp" {
			t.Errorf("route %d: upstream %+v, want one node %s, round robin", i, u, want)
		}
	}
	for _, tc := range []struct{ plugin, want string }{
		{`plugins: {mqtt-proxy: {upstream: {host: b.example, port: 1883}}}, upstream_id: u`, "o.yaml:3: stream_routes[0].plugins.mqtt-proxy.upstream: the route has an upstream too: keep one"},
		{`plugins: {mqtt-proxy: {upstream: {port: 1883}}}`, "o.yaml:3: stream_routes[0].plugins.mqtt-proxy.upstream.host: required"},
		{`plugins: {mqtt-proxy: {upstream: {host: a, ip: b, port: 1883}}}`, "set host or ip (its older name), not both"},
		{`plugins: {mqtt-proxy: {upstream: {host: a, port: 70000}}}`, "must be 1..65535, got 70000"},
	} {
		_, err := Parse(Document{Name: "o.yaml", Data: []byte("stream_proxy: {tcp: [9100]}\nupstreams: [{id: u, nodes: {\"127.0.0.1:1883\": 1}}]\nstream_routes: [{" + tc.plugin + "}]\n")})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.plugin, err, tc.want)
		}
	}
}
