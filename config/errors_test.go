package config

import (
	"strings"
	"testing"
)

// listen is a stream_proxy section for documents that test something else.
const listen = "stream_proxy: {tcp: [9000]}"

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		docs []Document // each Data has its leading newline trimmed
		want []string
	}{
		{
			name: "unknown key suggests the nearest",
			docs: []Document{{Name: "mqgate.yaml", Data: []byte(`
stream_proxy: {tcp: [9000]}
stream_routes:
  - upstrem_id: 1
upstreams:
  - id: 1
    nodes: {"b:1883": 1}
    retry: 2
    hash_by: vars
`)}},
			want: []string{
				`mqgate.yaml:3: stream_routes[0].upstrem_id: unknown key (did you mean "upstream_id"?)`,
				`mqgate.yaml:3: stream_routes[0]: needs upstream_id or upstream`,
				`mqgate.yaml:7: upstreams[0].retry: unknown key (did you mean "retries"?)`,
				`mqgate.yaml:8: upstreams[0].hash_by: unknown key (did you mean "hash_method"?)`,
			},
		},
		{
			name: "unknown top-level keys, APISIX keys accepted",
			docs: []Document{{Name: "config.yaml", Data: []byte(`
apisix:
  node_listen: 9080
  stream_proxy:
    tcp: [9000]
    udp: [9200]
    tpc: [9001]
nginx_config: {}
plugin: [a]
stream_route: []
`)}},
			want: []string{
				`config.yaml:6: apisix.stream_proxy.tpc: unknown key (did you mean "tcp"?)`,
				`config.yaml:8: plugin: unknown key (did you mean "plugins"?)`,
				`config.yaml:9: stream_route: unknown key (did you mean "stream_routes"?)`,
			},
		},
		{
			name: "node port out of range, both node shapes",
			docs: []Document{{Name: "apisix.yaml", Data: []byte(listen + `
upstreams:
  - id: 1
    nodes:
      - host: 10.0.0.1
        port: 1883
      - host: "::1"
        port: 70000
  - id: 2
    nodes:
      "b:70000": 1
      "b": 1
      "::1:1883": 1
      "[::1]:1883": -1
      "bad host:1883": 1
`)}},
			want: []string{
				`apisix.yaml:8: upstreams[0].nodes[1].port: must be 1..65535, got 70000`,
				`apisix.yaml:11: upstreams[1].nodes["b:70000"]: port must be 1..65535, got "70000"`,
				`apisix.yaml:12: upstreams[1].nodes["b"]: must be "host:port" (IPv6 as "[::1]:1883"), got "b"`,
				`apisix.yaml:13: upstreams[1].nodes["::1:1883"]: must be "host:port" (IPv6 as "[::1]:1883"), got "::1:1883"`,
				`apisix.yaml:14: upstreams[1].nodes["[::1]:1883"]: must be >= 0, got -1`,
				`apisix.yaml:15: upstreams[1].nodes["bad host:1883"]: host must be a hostname or an IP address, got "bad host"`,
			},
		},
		{
			name: "list nodes need host and port, weights and duplicates",
			docs: []Document{{Name: "apisix.yaml", Data: []byte(listen + `
upstreams:
  - id: 1
    nodes:
      - host: b
      - port: 1883
        weight: 1
        metadata: {}
  - id: 2
    nodes:
      - {host: "[::1]", port: 1883, weight: 0}
      - {host: "::1", port: 1883}
  - id: 3
    nodes: {"b:1883": 0, "c:1883": 0}
  - id: 4
    nodes: []
  - id: 5
    nodes: b:1883
`)}},
			want: []string{
				`apisix.yaml:5: upstreams[0].nodes[0].port: required (the broker's MQTT port, e.g. 1883)`,
				`apisix.yaml:8: upstreams[0].nodes[1].metadata: unknown key (known: host, port, weight, priority)`,
				`apisix.yaml:12: upstreams[1].nodes[1]: duplicate node "[::1]:1883", first at line 11`,
				`apisix.yaml:14: upstreams[2].nodes: every node has weight 0; at least one needs weight > 0`,
				`apisix.yaml:15: upstreams[3].nodes: at least one node is required`,
				`apisix.yaml:18: upstreams[4].nodes: must be a mapping {"host:port": weight} or a list of {host, port, weight}, got "b:1883"`,
			},
		},
		{
			name: "ids: int and string are the same id",
			docs: []Document{{Name: "apisix.yaml", Data: []byte(listen + `
stream_routes:
  - id: 1
    upstream_id: 2
  - id: "1"
    upstream_id: "1"
  - id: "a b"
    upstream_id: 1.5
upstreams:
  - id: 1
    nodes: {"b:1883": 1}
  - id: "1"
    nodes: {"b:1883": 1}
  - nodes: {"b:1883": 1}
`)}},
			want: []string{
				`apisix.yaml:4: stream_routes[0].upstream_id: no upstream with id "2" (known: 1)`,
				`apisix.yaml:5: stream_routes[1].id: duplicate id "1", first at apisix.yaml:3`,
				`apisix.yaml:7: stream_routes[2].id: may contain only letters, digits, '-', '_' and '.', got "a b"`,
				`apisix.yaml:8: stream_routes[2].upstream_id: must be a string or an integer, got 1.5`,
				`apisix.yaml:12: upstreams[1].id: duplicate id "1", first at apisix.yaml:10`,
				`apisix.yaml:14: upstreams[2].id: required`,
			},
		},
		{
			name: "route addresses: IPv6, CIDR",
			docs: []Document{{Name: "r.yaml", Data: []byte(listen + `
upstreams: [{id: u, nodes: {"b:1883": 1}}]
stream_routes:
  - upstream_id: u
    remote_addr: 10.0.0.0/33
    server_addr: "::1%eth0"
  - upstream_id: u
    remote_addr: "2001:db8::/32"
    server_addr: "::ffff:127.0.0.1"
    server_port: 70000
  - upstream_id: u
    remote_addr: localhost
`)}},
			want: []string{
				`r.yaml:5: stream_routes[0].remote_addr: must be an IP address or a CIDR like "10.0.0.0/8", got "10.0.0.0/33"`,
				`r.yaml:6: stream_routes[0].server_addr: must be an IP address, got "::1%eth0"`,
				`r.yaml:10: stream_routes[1].server_port: must be 0..65535, got 70000`,
				`r.yaml:12: stream_routes[2].remote_addr: must be an IP address or a CIDR like "10.0.0.0/8", got "localhost"`,
			},
		},
		{
			name: "string matches and regex errors",
			docs: []Document{{Name: "m.yaml", Data: []byte(listen + `
upstreams: [{id: u, nodes: {"b:1883": 1}}]
stream_routes:
  - upstream_id: u
    mqtt_client_id: {regex: "[a-"}
    mqtt_username: {regex: "(?<name"}
  - upstream_id: u
    mqtt_client_id: {prefix: a, exact: b}
    mqtt_username: {}
  - upstream_id: u
    mqtt_client_id: {prefix: ""}
    mqtt_username: {glob: "a*"}
  - upstream_id: u
    mqtt_client_id: [a]
`)}},
			want: []string{
				"m.yaml:5: stream_routes[0].mqtt_client_id.regex: invalid regex: missing closing ]: `[a-`",
				"m.yaml:6: stream_routes[0].mqtt_username.regex: invalid regex: invalid named capture: `(?<name`",
				`m.yaml:8: stream_routes[1].mqtt_client_id: set exactly one of exact, prefix or regex`,
				`m.yaml:9: stream_routes[1].mqtt_username: set exactly one of exact, prefix or regex`,
				`m.yaml:11: stream_routes[2].mqtt_client_id.prefix: must not be empty`,
				`m.yaml:12: stream_routes[2].mqtt_username.glob: unknown key (known: exact, prefix, regex)`,
				`m.yaml:12: stream_routes[2].mqtt_username: set exactly one of exact, prefix or regex`,
				`m.yaml:14: stream_routes[3].mqtt_client_id: must be a string or one of {exact: s}, {prefix: s}, {regex: s}, got a list`,
			},
		},
		{
			name: "mqtt-proxy plugin",
			docs: []Document{{Name: "p.yaml", Data: []byte(listen + `
upstreams: [{id: u, nodes: {"b:1883": 1}}]
stream_routes:
  - upstream_id: u
    plugins:
      mqtt-proxy: {protocol_name: MQIsdp, protocol_level: 5}
  - upstream_id: u
    plugins:
      mqtt-proxy: {protocol_name: MQTT, protocol_level: 3}
  - upstream_id: u
    plugins:
      mqtt-proxy: {protocol_name: mqtt, protocol_level: 6, upstream: {host: b, port: 1883}}
  - upstream_id: u
    plugins:
      mqtt_proxy: {}
      limit-count: {count: 1}
`)}},
			want: []string{
				`p.yaml:6: stream_routes[0].plugins.mqtt-proxy.protocol_level: protocol_name "MQIsdp" (MQTT 3.1) is level 3, got 5`,
				`p.yaml:9: stream_routes[1].plugins.mqtt-proxy.protocol_level: protocol_name "MQTT" is level 4 or 5, got 3 (level 3 is "MQIsdp")`,
				`p.yaml:12: stream_routes[2].plugins.mqtt-proxy.protocol_name: must be MQTT or MQIsdp, got "mqtt"`,
				`p.yaml:12: stream_routes[2].plugins.mqtt-proxy.protocol_level: must be 3, 4 or 5, got 6`,
				`p.yaml:15: stream_routes[3].plugins.mqtt_proxy: unknown plugin (did you mean "mqtt-proxy"?)`,
				`p.yaml:16: stream_routes[3].plugins.limit-count: unknown plugin (did you mean "limit-conn"?)`,
			},
		},
		{
			name: "upstream type, key, scheme, retries, timeouts",
			docs: []Document{{Name: "u.yaml", Data: []byte(listen + `
stream_routes:
  - upstream_id: 1
    upstream: {nodes: {"b:1883": 1}}
  - upstream:
      id: 9
      type: ewma
      nodes: {"b:1883": 1}
upstreams:
  - id: 1
    key: mqtt_client_id
    nodes: {"b:1883": 1}
    scheme: udp
    retries: -1
  - id: 2
    type: chash
    key: uri
    nodes: {"b:1883": 1}
    timeout: {connect: 0, send: -1, read: soon, idle: 5}
`)}},
			want: []string{
				`u.yaml:3: stream_routes[0]: set exactly one of upstream_id or upstream, not both`,
				`u.yaml:6: stream_routes[1].upstream.id: an inline upstream takes no id; declare it under upstreams and use upstream_id`,
				`u.yaml:7: stream_routes[1].upstream.type: must be roundrobin, chash or least_conn, got "ewma"`,
				`u.yaml:11: upstreams[0].key: only used with type chash, not roundrobin`,
				`u.yaml:13: upstreams[0].scheme: must be tcp, tls, ws, wss, http or https, got "udp"`,
				`u.yaml:14: upstreams[0].retries: must be >= 0, got -1`,
				`u.yaml:17: upstreams[1].key: must be mqtt_client_id, remote_addr, mqtt_username, ssl_server_name, ssl_client_serial, ssl_client_s_dn, ssl_client_s_dn_cn or ssl_client_fingerprint, got "uri"`,
				`u.yaml:19: upstreams[1].timeout.connect: must be greater than 0`,
				`u.yaml:19: upstreams[1].timeout.send: must not be negative, got -1s`,
				`u.yaml:19: upstreams[1].timeout.read: must be seconds as a number (6, 0.5) or a duration like "10s", got "soon"`,
				`u.yaml:19: upstreams[1].timeout.idle: unknown key (known: connect, send, read, connack)`,
			},
		},
		{
			name: "listeners",
			docs: []Document{{Name: "config.yaml", Data: []byte(`
apisix:
  stream_proxy:
    tcp:
      - 9000
      - "9000"
      - addr: "127.0.0.1:9001"
      - 9001
      - "::1:9002"
      - "localhost:9003"
      - addr: 0
      - {tls: false}
      - {addr: 9004, tls: yes}
      - [9005]
`)}},
			want: []string{
				`config.yaml:5: apisix.stream_proxy.tcp[1]: duplicate listener ":9000", first at config.yaml:4`,
				`config.yaml:7: apisix.stream_proxy.tcp[3]: listener ":9001" overlaps "127.0.0.1:9001" at config.yaml:6: a listener on all addresses takes the whole port`,
				`config.yaml:8: apisix.stream_proxy.tcp[4]: must be a port or "ip:port" (IPv6 as "[::1]:9000"), got "::1:9002"`,
				`config.yaml:9: apisix.stream_proxy.tcp[5]: host must be an IP address, got "localhost"`,
				`config.yaml:10: apisix.stream_proxy.tcp[6].addr: port must be 1..65535, got 0`,
				`config.yaml:11: apisix.stream_proxy.tcp[7].addr: required`,
				`config.yaml:12: apisix.stream_proxy.tcp[8].tls: must be true or false, got "yes"`,
				`config.yaml:13: apisix.stream_proxy.tcp[9]: must be a port, "ip:port" or {addr, tls, proxy_protocol, real_ip_from, websocket}, got a list`,
			},
		},
		{
			name: "no listeners",
			docs: []Document{{Name: "apisix.yaml", Data: []byte(`
upstreams: [{id: u, nodes: {"b:1883": 1}}]
stream_routes: [{upstream_id: u}]
`)}},
			want: []string{`no listeners: set stream_proxy.tcp`},
		},
		{
			name: "an empty listener list is no listeners",
			docs: []Document{{Name: "config.yaml", Data: []byte(`
apisix: {stream_proxy: {tcp: []}}
stream_routes: [{upstream: {nodes: {"b:1883": 1}}}]
`)}},
			want: []string{`no listeners: set stream_proxy.tcp`},
		},
		{
			name: "an invalid only listener is reported once",
			docs: []Document{{Name: "config.yaml", Data: []byte(`
apisix: {stream_proxy: {tcp: [99999]}}
stream_routes: [{upstream: {nodes: {"b:1883": 1}}}]
`)}},
			want: []string{`config.yaml:1: apisix.stream_proxy.tcp[0]: port must be 1..65535, got 99999`},
		},
		{
			name: "stream_proxy settings and log",
			docs: []Document{{Name: "mqgate.yaml", Data: []byte(listen[:len(listen)-1] + `, connect_timeout: 0, max_connect_size: 10}
log:
  level: verbose
  access_log: ""
  format: json
`)}},
			want: []string{
				`mqgate.yaml:1: stream_proxy.connect_timeout: must be greater than 0`,
				`mqgate.yaml:1: stream_proxy.max_connect_size: must be 64..268435455, got 10`,
				`mqgate.yaml:3: log.level: must be debug, info, warn or error, got "verbose"`,
				`mqgate.yaml:4: log.access_log: must not be empty; use "off" to disable the access log`,
				`mqgate.yaml:5: log.format: unknown key (known: level, access_log, access_log_format)`,
			},
		},
		{
			name: "a setting in two files names both places",
			docs: []Document{
				{Name: "config.yaml", Data: []byte(`
apisix:
  stream_proxy:
    tcp: [9000]
    connect_timeout: 5
log: {level: info}
`)},
				{Name: "mqgate.yaml", Data: []byte(`
stream_proxy:
  connect_timeout: 10s
  max_connect_size: 1024
log:
  level: debug
`)},
				{Name: "apisix.yaml", Data: []byte(`
stream_proxy:
  max_connect_size: 2048
`)},
			},
			want: []string{
				`mqgate.yaml:2: stream_proxy.connect_timeout: already set at config.yaml:4; set it in one place only`,
				`mqgate.yaml:4: log: already set at config.yaml:5; set it in one place only`,
				`apisix.yaml:2: stream_proxy.max_connect_size: already set at mqgate.yaml:3; set it in one place only`,
			},
		},
		{
			name: "types",
			docs: []Document{{Name: "t.yaml", Data: []byte(listen + `
stream_routes:
  upstream_id: 1
upstreams:
  - id: {a: 1}
    nodes: {"b:1883": "1"}
    name: [x]
`)}},
			want: []string{
				`t.yaml:3: stream_routes: must be a list, got a mapping`,
				`t.yaml:5: upstreams[0].id: must be a string or an integer, got a mapping`,
				`t.yaml:6: upstreams[0].nodes["b:1883"]: must be an integer, got "1"`,
				`t.yaml:7: upstreams[0].name: must be a string, got a list`,
			},
		},
		{
			name: "YAML syntax, duplicate keys, several documents",
			docs: []Document{
				{Name: "a.yaml", Data: []byte(listen + `
upstreams:
  - id: 1
    id: 2
    nodes: {"b:1883": 1}
`)},
				{Name: "b.yaml", Data: []byte(`
stream_routes:
  - upstream_id: 1
    name: a: b
`)},
				{Name: "c.yaml", Data: []byte(`
stream_routes: []
---
upstreams: []
`)},
				{Name: "d.yaml", Data: []byte(`
- 9000
`)},
			},
			want: []string{
				`a.yaml:4: upstreams[0].id: duplicate key, first at line 3`,
				`b.yaml:3: invalid YAML: mapping values are not allowed in this context`,
				`c.yaml:2: only one YAML document per file is supported; split it into files`,
				`d.yaml:1: must be a mapping, got a list`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			docs := make([]Document, len(tt.docs))
			for i, d := range tt.docs {
				docs[i] = Document{Name: d.Name, Data: []byte(strings.TrimPrefix(string(d.Data), "\n"))}
			}
			cfg, err := Parse(docs...)
			if err == nil {
				t.Fatalf("Parse succeeded (%s), want errors:\n%s", cfg.Summary(), strings.Join(tt.want, "\n"))
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("Parse error is %T, want ErrorList", err)
			}
			got := strings.Split(list.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Parse errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
