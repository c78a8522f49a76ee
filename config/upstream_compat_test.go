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
