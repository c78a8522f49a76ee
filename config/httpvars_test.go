package config

import (
	"strings"
	"testing"
	"time"
)

// TestHTTPRouteVarsAndTimeout: vars decode in APISIX's simple forms and
// match as lua-resty-expr does (a missing variable matches only ~=); a
// route's timeout overrides the upstream's per key.
func TestHTTPRouteVarsAndTimeout(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(Document{Name: "v.yaml", Data: []byte(`node_listen: 9080
routes:
  - uri: /v
    vars: [["arg_v", "==", 2], ["http_x_tenant", "in", [a, b]], ["cookie_s", "~~", "^s-"], ["host", "~*", "EXAMPLE$"], ["arg_n", "!", ">", "10"], ["uri", "~=", "/x"], ["arg_n", "<", 5]]
    timeout: {read: 2, send: 1.5}
    upstream: {scheme: http, timeout: {connect: 3, read: 60}, nodes: {"127.0.0.1:8080": 1}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Timeout != (Timeout{Send: 1500 * time.Millisecond, Read: 2 * time.Second}) {
		t.Errorf("route timeout %+v", r.Timeout)
	}
	if len(r.Vars) != 7 {
		t.Fatalf("vars %v", r.Vars)
	}
	for _, tc := range []struct {
		i     int
		value string
		ok    bool
		want  bool
	}{
		{0, "2", true, true}, {0, "3", true, false}, {0, "", false, false}, // ==; a number in YAML compares as its text
		{1, "b", true, true}, {1, "c", true, false}, {1, "", false, false}, // in
		{2, "s-1", true, true}, {2, "x-s-1", true, false}, // ~~ (RE2, unanchored unless written)
		{3, "api.example", true, true}, {3, "api.test", true, false}, // ~* any case
		{4, "11", true, false}, {4, "10", true, true}, {4, "", false, true}, // "!" ">": a missing one is not > 10
		{5, "/y", true, true}, {5, "/x", true, false}, {5, "", false, true}, // ~=: nil is not equal to anything
		{6, "4", true, true}, {6, "5", true, false}, {6, "four", true, false}, // < as numbers
	} {
		if got := r.Vars[tc.i].Match(tc.value, tc.ok); got != tc.want {
			t.Errorf("%s on %q (present %t): %t, want %t", r.Vars[tc.i].String(), tc.value, tc.ok, got, tc.want)
		}
	}

	_, err = Parse(Document{Name: "v.yaml", Data: []byte(`node_listen: 9080
upstreams: [{id: web, scheme: http, nodes: {"127.0.0.1:8080": 1}}]
routes:
  - {uri: /a, upstream_id: web, vars: ["arg_v", "==", "2"]}
  - {uri: /b, upstream_id: web, vars: [["OR", ["arg_v", "==", "1"], ["arg_v", "==", "2"]]]}
  - {uri: /c, upstream_id: web, vars: [["arg_v", "=", "2"], ["post_arg_v", "==", "2"], ["arg_v", "in", "a"], ["arg_v", ">", "ten"], ["arg_v", "~~", "("], ["arg_v", "=="]]}
  - {uri: /d, upstream_id: web, timeout: {read: 0, connack: 2}}
`)})
	want := []string{
		`v.yaml:4: routes[0].vars: must be a list of [var, operator, value] lists, like [["arg_name", "==", "json"]], got one list of "arg_v"`,
		`v.yaml:5: routes[1].vars[0]: OR expressions are not supported: list [var, operator, value] items, which must all hold`,
		`v.yaml:6: routes[2].vars[0][1]: must be ==, ~=, >, <, ~~, ~* or in, got "="`,
		`v.yaml:6: routes[2].vars[1][0]: unknown variable "post_arg_v" (known: arg_<name>, http_<name>, cookie_<name>, uri, host, request_method, remote_addr, scheme)`,
		`v.yaml:6: routes[2].vars[2][2]: must be a list of values for in, got "a"`,
		`v.yaml:6: routes[2].vars[3][2]: must be a number for >, got "ten"`,
		`v.yaml:6: routes[2].vars[4][2]: invalid regex: missing closing ): ` + "`(`",
		`v.yaml:6: routes[2].vars[5]: must be [var, operator, value] (or [var, "!", operator, value]), got 2 items`,
		`v.yaml:7: routes[3].timeout.read: must be greater than 0 (leave it out for the upstream's)`,
		`v.yaml:7: routes[3].timeout.connack: unknown key`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
