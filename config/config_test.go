package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"

	mqttproxy "github.com/mqgate/mqgate/plugin/mqtt-proxy"
)

// TestLoadAPISIXSeed loads the config.yaml + apisix.yaml pair from the
// APISIX MQTT proxy guide unchanged.
func TestLoadAPISIXSeed(t *testing.T) {
	t.Parallel()
	cfg, err := Load("testdata/apisix-config.yaml", "testdata/apisix.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		Files: []string{"testdata/apisix-config.yaml", "testdata/apisix.yaml"},
		StreamProxy: StreamProxy{
			TCP:            []Listener{{Addr: ":9000", File: "testdata/apisix-config.yaml", Line: 6}},
			ConnectTimeout: 10 * time.Second,
			MaxConnectSize: 65536,
			DataPath:       DataPathEpoll,
		},
		Log: Log{Level: "info", AccessLog: "stdout"},
		StreamRoutes: []StreamRoute{{
			ID:         "1",
			UpstreamID: "1",
			Plugins:    []RoutePlugin{{Name: mqttproxy.Name, Settings: &mqttproxy.Settings{ProtocolName: "MQTT", ProtocolLevel: 5}, Line: 5}},
			File:       "testdata/apisix.yaml", Line: 2,
		}},
		Upstreams: []Upstream{{
			ID:   "1",
			Type: "chash",
			Key:  "mqtt_client_id",
			Nodes: []Node{
				{Host: "host.docker.internal", Port: 1883, Weight: 1},
				{Host: "host.docker.internal", Port: 1884, Weight: 1},
			},
			Retries: 1,
			Timeout: Timeout{Connect: 5 * time.Second, Connack: 5 * time.Second},
			Scheme:  "tcp",
			File:    "testdata/apisix.yaml", Line: 10,
		}},
		Deployment: &Deployment{Role: RoleDataPlane, ConfigProvider: ProviderYAML, File: "testdata/apisix-config.yaml", Line: 8},
		Ignored: []string{
			"testdata/apisix-config.yaml:2: apisix.enable_admin",
			"testdata/apisix-config.yaml:12: stream_plugins",
			// only: false without HTTP routes: nothing to serve on 9080.
			"testdata/apisix-config.yaml:4: apisix.stream_proxy.only",
		},
		// The guide's chash upstream: mqgate says how to keep APISIX's
		// placement (hash_method: apisix), rather than move its clients.
		Warnings: []*Error{{File: "testdata/apisix.yaml", Line: 10, Path: "upstreams[0].type", Msg: apisixChashWarning}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", cfg, want)
	}
	if got, want := cfg.Summary(), "2 files, 1 listener (:9000), 1 stream route, 1 upstream with 2 nodes"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

// TestLoadAPISIXSeedTLS loads the guide's TLS variant (tls: true, a route
// sni, scheme: tls) unchanged: without certificates the listener is
// refused with one clear error; with an ssls file beside it, it loads.
func TestLoadAPISIXSeedTLS(t *testing.T) {
	t.Parallel()
	_, err := Load("testdata/apisix-config-tls.yaml", "testdata/apisix-tls.yaml")
	want := "testdata/apisix-config-tls.yaml:6: apisix.stream_proxy.tcp[0]: a TLS listener needs certificates: add an ssls entry"
	if err == nil || err.Error() != want {
		t.Errorf("Load error =\n%v\nwant\n%s", err, want)
	}

	dir := t.TempDir()
	ca := certtest.NewCA(t, "seed CA")
	certPath, keyPath := ca.Server(t, certtest.ECDSA, "mqtt.navendu.me").WriteFiles(t, dir, "server")
	sslsPath := filepath.Join(dir, "ssls.yaml")
	certtest.WriteFile(t, sslsPath, []byte("ssls:\n  - id: 1\n    cert: server.crt\n    key: "+keyPath+"\n    snis: [mqtt.navendu.me]\n"))
	cfg, err := Load("testdata/apisix-config-tls.yaml", "testdata/apisix-tls.yaml", sslsPath)
	if err != nil {
		t.Fatalf("Load with ssls: %v", err)
	}
	if !cfg.StreamProxy.TCP[0].TLS || cfg.StreamRoutes[0].SNI != "mqtt.navendu.me" {
		t.Errorf("listener %+v, route sni %q", cfg.StreamProxy.TCP[0], cfg.StreamRoutes[0].SNI)
	}
	u := cfg.Upstreams[0]
	if u.Scheme != "tls" || u.TLS == nil || !u.TLS.Verify {
		t.Errorf("upstream scheme %q tls %+v, want tls verifying", u.Scheme, u.TLS)
	}
	// APISIX would not verify the brokers here; mqgate does, and says so
	// (review item 4): the seed's brokers are typically self-signed.
	var warned bool
	for _, w := range cfg.Warnings {
		warned = warned || w.File == "testdata/apisix-tls.yaml" && w.Path == "upstreams[0].scheme" && strings.Contains(w.Msg, "set tls: {ca: <the broker's CA>}, or tls: {verify: false}")
	}
	if !warned {
		t.Errorf("no warning that the TLS brokers are verified: %v", cfg.Warnings)
	}
	// A relative path is relative to the YAML file that names it.
	if got := cfg.SSLs[0].Pairs[0].Cert.Path; got != certPath {
		t.Errorf("cert path %q, want %q", got, certPath)
	}
}

// TestLoadNative loads a single mqgate-native file that uses every key.
func TestLoadNative(t *testing.T) {
	t.Parallel()
	cfg, err := Load("testdata/mqgate.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	const file = "testdata/mqgate.yaml"
	for i, r := range cfg.StreamRoutes {
		if r.MQTTClientID != nil && r.MQTTClientID.Regex != "" && r.MQTTClientID.re == nil {
			t.Errorf("route %d: regex not compiled at load", i)
		}
		if r.MQTTClientID != nil {
			cfg.StreamRoutes[i].MQTTClientID.re = nil // compared by source below
		}
	}
	want := &Config{
		Files: []string{file},
		StreamProxy: StreamProxy{
			TCP: []Listener{
				{Addr: ":9000", File: file, Line: 4},
				{Addr: "127.0.0.1:9001", File: file, Line: 5},
				{Addr: "[::1]:9002", File: file, Line: 6},
			},
			ConnectTimeout: 5 * time.Second,
			MaxConnectSize: 4096,
			DataPath:       DataPathEpoll,
		},
		Log: Log{Level: "debug", AccessLog: "/var/log/mqgate/access.log"},
		StreamRoutes: []StreamRoute{
			{
				ID: "sensors", Name: "sensors", Desc: "flow meters and light sensors",
				ServerPort:   9000,
				ServerAddr:   netip.MustParseAddr("127.0.0.1"),
				RemoteAddr:   netip.MustParsePrefix("10.0.0.0/8"),
				MQTTClientID: &StringMatch{Prefix: "sensor-"},
				MQTTUsername: &StringMatch{Exact: "ingest"},
				UpstreamID:   "1",
				Plugins:      []RoutePlugin{{Name: mqttproxy.Name, Settings: &mqttproxy.Settings{ProtocolName: "MQTT", ProtocolLevel: 5}, Line: 26}},
				File:         file, Line: 14,
			},
			{
				ID:           "legacy",
				ServerPort:   9001,
				RemoteAddr:   netip.MustParsePrefix("2001:db8::1/128"),
				MQTTClientID: &StringMatch{Regex: "^legacy-[0-9]+$"},
				MQTTUsername: &StringMatch{Exact: "old"},
				Plugins:      []RoutePlugin{{Name: mqttproxy.Name, Settings: &mqttproxy.Settings{ProtocolName: "MQIsdp", ProtocolLevel: 3}, Line: 37}},
				Upstream: &Upstream{
					ID: "route:legacy", Name: "legacy brokers", Type: "least_conn",
					Nodes: []Node{
						{Host: "::1", Port: 1883, Weight: 1},
						{Host: "broker-2.internal", Port: 1884, Weight: 0, Priority: -1},
					},
					Retries: 1,
					Timeout: Timeout{Connect: 5 * time.Second, Connack: 5 * time.Second},
					Scheme:  "tcp",
					File:    file, Line: 41,
				},
				File: file, Line: 29,
			},
		},
		Upstreams: []Upstream{{
			ID: "1", Name: "cloud", Desc: "brokers in the cloud",
			Type: "chash", Key: "remote_addr",
			Nodes: []Node{
				{Host: "10.0.0.1", Port: 1883, Weight: 2},
				{Host: "2001:db8::2", Port: 1883, Weight: 1},
			},
			Retries: 3,
			Timeout: Timeout{Connect: 500 * time.Millisecond, Send: 6 * time.Second, Read: 90 * time.Second, Connack: 5 * time.Second},
			Scheme:  "tcp",
			File:    file, Line: 51,
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", cfg, want)
		for i := range min(len(cfg.StreamRoutes), len(want.StreamRoutes)) {
			if g, w := cfg.StreamRoutes[i], want.StreamRoutes[i]; !reflect.DeepEqual(g, w) {
				t.Errorf("route %d =\n%+v\nwant\n%+v", i, g, w)
			}
		}
	}
	wantSummary := "1 file, 3 listeners (:9000, 127.0.0.1:9001, [::1]:9002), 2 stream routes, 2 upstreams with 4 nodes"
	if got := cfg.Summary(); got != wantSummary {
		t.Errorf("Summary() = %q, want %q", got, wantSummary)
	}
	if got := cfg.RouteUpstream(&cfg.StreamRoutes[0]); got != &cfg.Upstreams[0] {
		t.Errorf("RouteUpstream(route 0) = %p, want upstreams[0] %p", got, &cfg.Upstreams[0])
	}
	if got := cfg.RouteUpstream(&cfg.StreamRoutes[1]); got != cfg.StreamRoutes[1].Upstream {
		t.Errorf("RouteUpstream(route 1) = %p, want its inline upstream", got)
	}
}

// TestMerge loads an APISIX config.yaml, an mqgate-native file and an
// apisix.yaml together: lists concatenate in file order.
func TestMerge(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(
		Document{Name: "config.yaml", Data: []byte(`
apisix:
  stream_proxy:
    tcp: [9000]
    connect_timeout: 3
`)},
		Document{Name: "mqgate.yaml", Data: []byte(`
stream_proxy:
  tcp: ["9001"]
log:
  level: warn
stream_routes:
  - upstream_id: a
`)},
		Document{Name: "apisix.yaml", Data: []byte(`
stream_routes:
  - upstream_id: a
    server_port: 9001
upstreams:
  - id: a
    nodes: {"b1:1883": 1}
#END
`)},
	)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var addrs, routes []string
	for _, l := range cfg.StreamProxy.TCP {
		addrs = append(addrs, l.File+" "+l.Addr)
	}
	for _, r := range cfg.StreamRoutes {
		routes = append(routes, r.File+" "+r.ID)
	}
	if want := []string{"config.yaml :9000", "mqgate.yaml :9001"}; !slices.Equal(addrs, want) {
		t.Errorf("listeners = %q, want %q", addrs, want)
	}
	if want := []string{"mqgate.yaml route-0", "apisix.yaml route-1"}; !slices.Equal(routes, want) {
		t.Errorf("routes = %q, want %q", routes, want)
	}
	if cfg.StreamProxy.ConnectTimeout != 3*time.Second || cfg.Log.Level != "warn" {
		t.Errorf("connect_timeout = %v, log.level = %q; want 3s from config.yaml and warn from mqgate.yaml",
			cfg.StreamProxy.ConnectTimeout, cfg.Log.Level)
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "w.yaml", Data: []byte(`stream_proxy:
  tcp: [9000]
stream_routes:
  - server_port: 9100
    upstream_id: used
upstreams:
  - id: used
    nodes: {"b:1883": 1}
  - id: spare
    nodes: {"b:1884": 1}
` + sslYAML(t, "ssls:\n  - id: a\n    snis: [a.example]\n", certtest.NewCA(t, "CA").Server(t, certtest.ECDSA, "a.example")))})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.Error())
	}
	want := []string{
		"w.yaml:4: stream_routes[0].server_port: no listener on port 9100, so this route never matches",
		`w.yaml:9: upstreams[1]: upstream "spare" is not used by any stream route or HTTP route`,
		"w.yaml:12: ssls: 1 certificate(s) not used: no listener has tls: true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Warnings =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	cfg, err = Parse(Document{Name: "empty.yaml", Data: []byte("stream_proxy: {tcp: [9000]}\n")})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Error() != "no stream routes: every client connection will be refused" {
		t.Errorf("Warnings without routes = %v", cfg.Warnings)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load("testdata/apisix-config.yaml", "testdata/missing.yaml")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load error = %v, want one wrapping fs.ErrNotExist", err)
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Error() != "testdata/missing.yaml: cannot read: no such file or directory" {
		t.Errorf("Load error = %#v, want an ErrorList with the read error only", err)
	}
}

func TestStringMatch(t *testing.T) {
	t.Parallel()
	loaded, err := Parse(Document{Name: "m.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
stream_routes:
  - mqtt_client_id: {regex: "^dev-[0-9]+$"}
    upstream: {nodes: {"b:1883": 1}}
`)})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tests := []struct {
		name string
		m    *StringMatch
		in   string
		want bool
	}{
		{"nil matches anything", nil, "x", true},
		{"exact", &StringMatch{Exact: "dev-1"}, "dev-1", true},
		{"exact differs", &StringMatch{Exact: "dev-1"}, "dev-10", false},
		{"zero matches empty", &StringMatch{}, "", true},
		{"zero rejects non-empty", &StringMatch{}, "a", false},
		{"prefix", &StringMatch{Prefix: "dev-"}, "dev-7", true},
		{"prefix differs", &StringMatch{Prefix: "dev-"}, "de", false},
		{"loaded regex", loaded.StreamRoutes[0].MQTTClientID, "dev-42", true},
		{"loaded regex differs", loaded.StreamRoutes[0].MQTTClientID, "dev-4x", false},
		{"hand-built regex", &StringMatch{Regex: "^a+$"}, "aaa", true},
		{"hand-built regex differs", &StringMatch{Regex: "^a+$"}, "ab", false},
		{"hand-built bad regex", &StringMatch{Regex: "[a-"}, "[a-", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.m.Match(tt.in); got != tt.want {
				t.Errorf("%v.Match(%q) = %v, want %v", tt.m, tt.in, got, tt.want)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{File: "a.yaml", Line: 3, Path: "log.level", Msg: "bad"}, "a.yaml:3: log.level: bad"},
		{&Error{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad"},
		{&Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
		{&Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want string
	}{
		{"upstrem_id", "upstream_id"},
		{"Upstream_ID", "upstream_id"},
		{"protocol", "protocol_name"}, // shared prefix, distance 5
		{"remote_ip", "remote_addr"},  // shared prefix "remote_"
		{"plugin", "plugins"},
		{"xyz", ""},
		{"ab", ""}, // distance 2 to "id" would replace the whole key
		{"completely_different", ""},
	}
	candidates := append(routeSection().names(), "protocol_name", "protocol_level") // and mqtt-proxy's
	for _, tt := range tests {
		if got := suggest(tt.key, candidates); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// TestAccessLogFormat: log.access_log_format is parsed when the file loads,
// and a misspelt variable is an error with the file and line.
func TestAccessLogFormat(t *testing.T) {
	cfg, err := Parse(Document{Name: "f.yaml", Data: []byte("stream_proxy: {tcp: [1883]}\nlog: {access_log_format: '$remote_addr [$time_local] $status'}\n")})
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Log.AccessLogFormat; f == nil || f.String() != "$remote_addr [$time_local] $status" {
		t.Errorf("format %v", f)
	}
	_, err = Parse(Document{Name: "f.yaml", Data: []byte("stream_proxy: {tcp: [1883]}\nlog:\n  access_log_format: '$remote_adr'\n")})
	if err == nil || !strings.HasPrefix(err.Error(), "f.yaml:3: log.access_log_format: unknown variable $remote_adr (known: remote_addr, ") {
		t.Errorf("error %v", err)
	}
}

// TestSourceAddresses: source_addresses, source_hash_key and
// source_port_range load, and what is wrong with them is said with the line.
func TestSourceAddresses(t *testing.T) {
	cfg, err := Parse(Document{Name: "s.yaml", Data: []byte(`stream_proxy: {tcp: [1883]}
stream_routes: [{upstream_id: u}]
upstreams:
  - id: u
    nodes: {"b:1883": 1}
    source_addresses: [127.0.0.2, "::1", 127.0.0.3]
    source_hash_key: mqtt_client_id
    source_port_range: 40000-40999
`)})
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams[0]
	if fmt.Sprint(u.SourceAddresses) != "[127.0.0.2 ::1 127.0.0.3]" || u.SourceHashKey != "mqtt_client_id" || u.SourcePortRange != [2]uint16{40000, 40999} {
		t.Errorf("upstream: %v %q %v", u.SourceAddresses, u.SourceHashKey, u.SourcePortRange)
	}
	_, err = Parse(Document{Name: "s.yaml", Data: []byte(`stream_proxy: {tcp: [1883]}
stream_routes: [{upstream_id: u}, {upstream_id: v}]
upstreams:
  - id: u
    nodes: {"b:1883": 1}
    source_addresses: [10.0.0.300, 0.0.0.0, 127.0.0.2, 127.0.0.2]
    source_port_range: 9-8
  - id: v
    nodes: {"b:1883": 1}
    source_hash_key: mqtt_client_id
    source_port_range: 1-2
`)})
	want := []string{
		`s.yaml:6: upstreams[0].source_addresses[0]: must be an IP address of this host, got "10.0.0.300"`,
		`s.yaml:6: upstreams[0].source_addresses[1]: must be an address of this host, not 0.0.0.0`,
		`s.yaml:6: upstreams[0].source_addresses[3]: 127.0.0.2 is listed twice`,
		`s.yaml:7: upstreams[0].source_port_range: must be "low-high", ports 1..65535, low <= high, got "9-8"`,
		`s.yaml:10: upstreams[1].source_hash_key: only used with two source_addresses or more`,
		`s.yaml:11: upstreams[1].source_port_range: only used with source_addresses`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}
