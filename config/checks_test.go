package config

import (
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/plugin"
	iprestriction "github.com/mqgate/mqgate/plugin/ip-restriction"
	limitconn "github.com/mqgate/mqgate/plugin/limit-conn"
	limitreq "github.com/mqgate/mqgate/plugin/limit-req"
)

// parseOne parses one document, trimming its leading newline.
func parseOne(t *testing.T, yml string) (*Config, error) {
	t.Helper()
	return Parse(Document{Name: "h.yaml", Data: []byte(strings.TrimPrefix(yml, "\n"))})
}

func TestChecksAndLimits(t *testing.T) {
	t.Parallel()
	cfg, err := parseOne(t, `
stream_proxy:
  tcp: [9000]
  max_connections: 10000
  on_duplicate_client_id: keep_newest
stream_routes:
  - id: r
    upstream_id: u
    plugins:
      limit-conn: {conn: 5, burst: 1, key: mqtt_client_id, key_type: var, default_conn_delay: 0.1, rejected_msg: busy}
      limit-req: {rate: 2.5, burst: 10, key: route_id, nodelay: true}
      ip-restriction: {whitelist: [10.0.0.0/8, 192.0.2.1], message: go away}
  - id: defaults
    plugins:
      limit-conn: {conn: 1}
      limit-req: {rate: 100}
      ip-restriction: {blacklist: ["2001:db8::/32"]}
    upstream:
      type: chash
      nodes: {"b:1883": 1}
      checks: {active: {}, passive: {}}
upstreams:
  - id: u
    type: chash
    hash_balance_factor: 1.25
    hash_on: vars
    nodes: {"a:1883": 1, "b:1883": 1}
    checks:
      active:
        type: mqtt
        timeout: 0.5
        concurrency: 3
        port: 1884
        http_path: /status
        healthy: {interval: 2, successes: 3, http_statuses: [200]}
        unhealthy: {interval: 0.25, tcp_failures: 4, timeouts: 5, http_failures: 2}
        protocol_level: 5
        client_id: mqgate-probe-
        username: probe
        password: secret
      passive:
        type: tcp
        healthy: {successes: 3}
        unhealthy: {tcp_failures: 3, timeouts: 2}
        fail_timeout: 30s
      on_marked_down: close
      on_marked_up: move_back
      move_back_rate: 20
`)
	if err != nil {
		t.Fatal(err)
	}
	sp := cfg.StreamProxy
	if sp.MaxConnections != 10000 || sp.OnDuplicateClientID != DuplicateKeepNewest {
		t.Errorf("stream_proxy = %+v", sp)
	}
	u := cfg.Upstreams[0]
	if u.HashBalanceFactor != 1.25 {
		t.Errorf("hash_balance_factor = %v", u.HashBalanceFactor)
	}
	wantChecks := &Checks{
		Active: []*ActiveCheck{{
			Type: ProbeMQTT, Timeout: 500 * time.Millisecond, Concurrency: 3, Port: 1884,
			HealthyInterval: 2 * time.Second, Successes: 3,
			UnhealthyInterval: 250 * time.Millisecond, TCPFailures: 4, Timeouts: 5,
			ProtocolLevel: 5, ClientID: "mqgate-probe-", Username: "probe", Password: "secret",
		}},
		Passive:      &PassiveCheck{TCPFailures: 3, Timeouts: 2, FailTimeout: 30 * time.Second},
		OnMarkedDown: MarkedDownClose, OnMarkedUp: MarkedUpMoveBack, MoveBackRate: 20,
	}
	if !reflect.DeepEqual(u.Checks, wantChecks) {
		t.Errorf("checks =\n%+v %+v\nwant\n%+v %+v", u.Checks.Active, u.Checks.Passive, wantChecks.Active, wantChecks.Passive)
	}
	defaults := &Checks{
		Active: []*ActiveCheck{{
			Type: ProbeMQTT, Timeout: time.Second, Concurrency: 10,
			HealthyInterval: time.Second, Successes: 2,
			UnhealthyInterval: time.Second, TCPFailures: 2, Timeouts: 3, ProtocolLevel: 4,
		}},
		Passive:      &PassiveCheck{TCPFailures: 2, Timeouts: 7, FailTimeout: 10 * time.Second},
		OnMarkedDown: MarkedDownKeep, OnMarkedUp: MarkedUpKeep,
	}
	if got := cfg.StreamRoutes[1].Upstream.Checks; !reflect.DeepEqual(got, defaults) {
		t.Errorf("default checks =\n%+v %+v\nwant\n%+v %+v", got.Active, got.Passive, defaults.Active, defaults.Passive)
	}

	p := &cfg.StreamRoutes[0]
	if want := (&limitconn.Settings{Conn: 5, LimitSettings: plugin.LimitSettings{Burst: 1, Key: plugin.KeyClientID, RejectedMsg: "busy"}}); !reflect.DeepEqual(p.Plugin(limitconn.Name), want) {
		t.Errorf("limit-conn = %+v, want %+v", p.Plugin(limitconn.Name), want)
	}
	if want := (&limitreq.Settings{Rate: 2.5, LimitSettings: plugin.LimitSettings{Burst: 10, Key: plugin.KeyRoute, RejectedMsg: limitreq.DefaultRejectedMsg}}); !reflect.DeepEqual(p.Plugin(limitreq.Name), want) {
		t.Errorf("limit-req = %+v, want %+v", p.Plugin(limitreq.Name), want)
	}
	wantIP := &iprestriction.Settings{Whitelist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}, Message: "go away"}
	if !reflect.DeepEqual(p.Plugin(iprestriction.Name), wantIP) {
		t.Errorf("ip-restriction = %+v, want %+v", p.Plugin(iprestriction.Name), wantIP)
	}
	if names := pluginNames(p); !slices.Equal(names, []string{iprestriction.Name, limitreq.Name, limitconn.Name}) {
		t.Errorf("plugins in the order they run = %v", names)
	}
	d := &cfg.StreamRoutes[1]
	dc, dr, di := d.Plugin(limitconn.Name).(*limitconn.Settings), d.Plugin(limitreq.Name).(*limitreq.Settings), d.Plugin(iprestriction.Name).(*iprestriction.Settings)
	if dc.Key != plugin.KeyRemoteAddr || dc.Burst != 0 || dc.RejectedMsg != limitconn.DefaultRejectedMsg || dr.Key != plugin.KeyRemoteAddr ||
		len(di.Blacklist) != 1 || di.Message != iprestriction.DefaultMessage {
		t.Errorf("plugin defaults: %+v %+v %+v", dc, dr, di)
	}
	for _, want := range []string{
		"h.yaml:9: stream_routes[0].plugins.limit-conn.default_conn_delay",
		"h.yaml:10: stream_routes[0].plugins.limit-req.nodelay",
		"h.yaml:25: upstreams[0].hash_on",
		"h.yaml:33: upstreams[0].checks.active.http_path",
		"h.yaml:34: upstreams[0].checks.active.healthy.http_statuses",
		"h.yaml:42: upstreams[0].checks.passive.healthy",
	} {
		found := false
		for _, ig := range cfg.Ignored {
			found = found || ig == want
		}
		if !found {
			t.Errorf("Ignored lacks %q: %q", want, cfg.Ignored)
		}
	}
}

func TestChecksAndLimitsErrors(t *testing.T) {
	t.Parallel()
	_, err := parseOne(t, `
stream_proxy: {tcp: [9000], max_connections: -1, on_duplicate_client_id: newest}
stream_routes:
  - upstream_id: u
    plugins:
      limit-conn: {burst: -1, key: client_id, key_type: var_combination}
      limit-req: {rate: 0}
      ip-restriction: {whitelist: [10.0.0.0/33], blacklist: [1.2.3.4]}
  - upstream_id: u
    plugins:
      limit-req: {burst: 1}
      ip-restriction: {allowlist: [10.0.0.0/8]}
  - upstream_id: u
    plugins:
      ip-restriction: {whitelist: []}
upstreams:
  - id: u
    hash_balance_factor: 1.5
    hash_on: header
    nodes: {"a:1883": 1}
    checks:
      active:
        type: gopher
        timeout: 0
        healthy: {interval: 1, successes: 0}
        unhealthy: {tcp_failures: 255, timout: 1}
        protocol_level: 6
        client_id: a-very-long-probe-prefix
  - id: v
    type: chash
    hash_balance_factor: 0.5
    nodes: {"a:1883": 1}
    checks:
      active: {type: tcp, username: x}
      passive: {type: http, fail_timeout: 0, unhealthy: {timeouts: 0}}
  - id: w
    nodes: {"a:1883": 1}
    checks: {active: {protocol_level: 3}, activ: {}, on_marked_down: drop, move_back_rate: 0}
  - id: x
    nodes: {"a:1883": 1}
    checks: {on_marked_up: move_back}
`)
	want := []string{
		`h.yaml:1: stream_proxy.max_connections: must be >= 0, got -1`,
		`h.yaml:1: stream_proxy.on_duplicate_client_id: must be allow, keep_newest or keep_oldest, got "newest"`,
		`h.yaml:5: stream_routes[0].plugins.limit-conn.burst: must be >= 0, got -1`,
		`h.yaml:5: stream_routes[0].plugins.limit-conn.key: must be remote_addr, mqtt_client_id, mqtt_username or route_id, got "client_id"`,
		`h.yaml:5: stream_routes[0].plugins.limit-conn.key_type: must be "var" (combinations are not supported), got "var_combination"`,
		`h.yaml:5: stream_routes[0].plugins.limit-conn.conn: required: the most connections at once per key`,
		`h.yaml:6: stream_routes[0].plugins.limit-req.rate: must be greater than 0, got 0`,
		`h.yaml:7: stream_routes[0].plugins.ip-restriction.whitelist[0]: must be an IP address or a CIDR like "10.0.0.0/8", got "10.0.0.0/33"`,
		`h.yaml:7: stream_routes[0].plugins.ip-restriction.blacklist: set exactly one of whitelist or blacklist, not both`,
		`h.yaml:10: stream_routes[1].plugins.limit-req.rate: required: new connections per second per key`,
		`h.yaml:11: stream_routes[1].plugins.ip-restriction.allowlist: mqgate uses APISIX's names: whitelist or blacklist`,
		`h.yaml:11: stream_routes[1].plugins.ip-restriction: needs whitelist or blacklist`,
		`h.yaml:14: stream_routes[2].plugins.ip-restriction.whitelist: must list at least one IP or CIDR`,
		`h.yaml:17: upstreams[0].hash_balance_factor: only used with type chash, not roundrobin`,
		`h.yaml:18: upstreams[0].hash_on: mqgate hashes on vars only (set key), got "header"`,
		`h.yaml:22: upstreams[0].checks.active.type: must be mqtt, tcp, http or https, got "gopher"`,
		`h.yaml:23: upstreams[0].checks.active.timeout: must be greater than 0`,
		`h.yaml:24: upstreams[0].checks.active.healthy.successes: must be 1..254, got 0`,
		`h.yaml:25: upstreams[0].checks.active.unhealthy.tcp_failures: must be 1..254, got 255`,
		`h.yaml:25: upstreams[0].checks.active.unhealthy.timout: unknown key (did you mean "timeouts"?)`,
		`h.yaml:26: upstreams[0].checks.active.protocol_level: must be 3, 4 or 5, got 6`,
		`h.yaml:30: upstreams[1].hash_balance_factor: must be 0 (off) or a ratio >= 1 such as 1.25, got 0.5`,
		`h.yaml:33: upstreams[1].checks.active.username: only used with type mqtt, not tcp`,
		`h.yaml:34: upstreams[1].checks.passive.type: mqgate counts TCP failures only: must be tcp, got "http"`,
		`h.yaml:34: upstreams[1].checks.passive.fail_timeout: must be greater than 0`,
		`h.yaml:34: upstreams[1].checks.passive.unhealthy.timeouts: must be 1..254, got 0`,
		`h.yaml:37: upstreams[2].checks.active.client_id: MQTT 3.1 (protocol_level 3) does not allow an empty client id: set a prefix`,
		`h.yaml:37: upstreams[2].checks.activ: unknown key (did you mean "active"?)`,
		`h.yaml:37: upstreams[2].checks.on_marked_down: must be keep or close, got "drop"`,
		`h.yaml:37: upstreams[2].checks.move_back_rate: must be greater than 0, got 0`,
		`h.yaml:40: upstreams[3].checks.on_marked_up: needs checks.active or checks.passive to mark nodes`,
	}
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestREADMEExample: the README's complete example loads, so the reference
// shows working settings.
func TestREADMEExample(t *testing.T) {
	t.Setenv("MQGATE_ADMIN_KEY", "0123456789abcdef0123456789abcdef") // the example's admin.keys[0].key_env
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "### Example: everything in one file\n\n```yaml\n")
	if !ok {
		t.Fatal("README has no complete example")
	}
	example, _, _ := strings.Cut(rest, "```")
	cfg, err := Parse(Document{Name: "README.md", Data: []byte(example)})
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	u := cfg.Upstreams[0]
	if u.Checks == nil || u.Checks.Active == nil || u.Checks.Passive == nil || u.HashBalanceFactor != 1.25 {
		t.Errorf("README example upstream: %+v", u)
	}
	if p := &cfg.StreamRoutes[0]; p.Plugin(limitconn.Name) == nil || p.Plugin(limitreq.Name) == nil || p.Plugin(iprestriction.Name) == nil {
		t.Errorf("README example plugins: %+v", p.Plugins)
	}
	if cfg.Admin == nil || cfg.Reload == nil {
		t.Errorf("README example admin %+v, reload %+v", cfg.Admin, cfg.Reload)
	}
}

// TestHTTPChecks: checks.active is one mapping or a list; an http check
// takes APISIX's keys, with APISIX's defaults, and a probe type's keys are
// refused on another type (the HTTP ones are accepted and unused, as APISIX
// files carry them whatever the type).
func TestHTTPChecks(t *testing.T) {
	cfg, err := parseOne(t, `stream_proxy: {tcp: [1883]}
stream_routes: [{upstream_id: u}]
upstreams:
  - id: u
    nodes: {"a:1883": 1}
    checks:
      active:
        - {type: mqtt, http_path: /ignored}
        - type: http
          port: 18083
          http_path: /api/v5/status
          host: emqx.internal
          req_headers: ["Authorization: Bearer abc"]
          healthy: {successes: 1, http_statuses: [200]}
          unhealthy: {http_statuses: [503], http_failures: 2}
        - {type: https, https_verify_certificate: false}
`)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Upstreams[0].Checks.Active
	if len(got) != 3 {
		t.Fatalf("%d checks, want 3", len(got))
	}
	if got[0].Type != ProbeMQTT || got[0].HTTPPath != "" {
		t.Errorf("mqtt check: %+v", got[0])
	}
	h := got[1]
	want := ActiveCheck{Type: ProbeHTTP, Timeout: time.Second, Concurrency: 10, Port: 18083,
		HealthyInterval: time.Second, Successes: 1, UnhealthyInterval: time.Second, TCPFailures: 2, Timeouts: 3, ProtocolLevel: 4,
		HTTPPath: "/api/v5/status", Host: "emqx.internal", ReqHeaders: []string{"Authorization: Bearer abc"}, HTTPSVerify: true,
		HealthyStatuses: []int{200}, UnhealthyStatuses: []int{503}, HTTPFailures: 2}
	if !reflect.DeepEqual(*h, want) {
		t.Errorf("http check:\n%+v\nwant\n%+v", *h, want)
	}
	if s := got[2]; s.Type != ProbeHTTPS || s.HTTPSVerify || s.HTTPPath != "/" || !reflect.DeepEqual(s.UnhealthyStatuses, DefaultUnhealthyStatuses) || s.HTTPFailures != 5 {
		t.Errorf("https check with defaults: %+v", s)
	}

	_, err = parseOne(t, `stream_proxy: {tcp: [1883]}
stream_routes: [{upstream_id: u}]
upstreams:
  - id: u
    nodes: {"a:1883": 1}
    checks:
      active:
        - {type: http, http_path: status, client_id: x, req_headers: [no-colon], healthy: {http_statuses: [700]}}
        - {type: https, host: "a b", unhealthy: {http_failures: 0}}
  - id: v
    nodes: {"a:1883": 1}
    checks: {active: []}
`)
	wantErrs := []string{
		`h.yaml:8: upstreams[0].checks.active[0].http_path: must be a path starting with / and without spaces, got "status"`,
		`h.yaml:8: upstreams[0].checks.active[0].req_headers[0]: must be "Name: value", got "no-colon"`,
		`h.yaml:8: upstreams[0].checks.active[0].healthy.http_statuses[0]: must be 200..599, got 700`,
		`h.yaml:8: upstreams[0].checks.active[0].client_id: only used with type mqtt, not http`,
		`h.yaml:9: upstreams[0].checks.active[1].host: must be a host name, got "a b"`,
		`h.yaml:9: upstreams[0].checks.active[1].unhealthy.http_failures: must be 1..254, got 0`,
		`h.yaml:12: upstreams[1].checks.active: an empty list: write one check or more, or leave active out`,
	}
	if err == nil || err.Error() != strings.Join(wantErrs, "\n") {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(wantErrs, "\n"))
	}
}

func pluginNames(r *StreamRoute) []string {
	var out []string
	for _, p := range r.Plugins {
		out = append(out, p.Name)
	}
	return out
}
