package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// lineOf is the 1-based line of the first line of doc containing marker.
func lineOf(t *testing.T, doc, marker string) int {
	t.Helper()
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	t.Fatalf("no %q in the document", marker)
	return 0
}

// TestYAMLErrorPositions is finding 5 of issue #10: a syntax error is
// reported at the line it is on (checked against the document itself, not
// a number written down), and alone: no "no listeners" follows it.
func TestYAMLErrorPositions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, at string // at: a text on the line the error is on
		msg           string
	}{
		{"unclosed [ on line 2", "stream_proxy:\n  tcp: [9000\nupstreams: []\n", "tcp: [9000", "did not find expected ',' or ']'"},
		{"unclosed { at the end", "stream_proxy:\n  tcp: [9000]\nlog: {level: info\n", "log: {", "did not find expected ',' or '}'"},
		{"bad indent on line 9", `stream_proxy:
  tcp: [9000]
upstreams:
  - id: 1
    nodes: {"a:1883": 1}
stream_routes:
  - id: r1
    upstream_id: 1
   name: oops
`, "name: oops", "did not find expected '-' indicator"},
		{"outdented key", "stream_proxy:\n  tcp: [9000]\nlog:\n  level: info\n access_log: off\n", "access_log", "did not find expected key"},
		{"list item in a mapping", "stream_proxy:\n  tcp: [9000]\n- 1\n", "- 1", "did not find expected key"},
		{"tab", "stream_proxy:\n  tcp: [9000]\n\tlog: {}\n", "\tlog", "found character that cannot start any token"},
		{"unclosed quote", "stream_proxy:\n  tcp: [9000]\nlog: {level: \"info}\n", "level: \"info", "found unexpected end of stream"},
		{"in the second document", "stream_proxy:\n  tcp: [9000]\n---\na: [1\n", "a: [1", "did not find expected ',' or ']'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(Document{Name: "f.yaml", Data: []byte(tc.doc)})
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want an ErrorList, got %v", err)
			}
			want := fmt.Sprintf("f.yaml:%d: invalid YAML: ", lineOf(t, tc.doc, tc.at))
			if len(list) != 1 || !strings.HasPrefix(list[0].Error(), want) || !strings.Contains(list[0].Error(), tc.msg) {
				t.Fatalf("errors:\n%v\nwant one, starting %q, with %q", err, want, tc.msg)
			}
		})
	}
}

// TestValidationGaps is finding 4 of issue #10.
func TestValidationGaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, want string
	}{
		{"IPv4 out of range as a node key", "stream_proxy: {tcp: [9000]}\nupstreams: [{id: 1, nodes: {\"300.1.1.1:1883\": 1}}]\n",
			`f.yaml:2: upstreams[0].nodes["300.1.1.1:1883"]: host must be an IPv4 address (four numbers 0..255) or a hostname, got "300.1.1.1"`},
		{"IPv4 out of range as a node host", "stream_proxy: {tcp: [9000]}\nupstreams: [{id: 1, nodes: [{host: 1.2.3.256, port: 1883}]}]\n",
			`f.yaml:2: upstreams[0].nodes[0].host: must be an IPv4 address (four numbers 0..255) or a hostname, got "1.2.3.256"`},
		{"a key of spaces", "stream_proxy: {tcp: [9000]}\nadmin: {keys: [{key: \"                \"}]}\n",
			`f.yaml:2: admin.keys[0]: must be printable ASCII without spaces, as an HTTP header carries it`},
		{"a key with a space inside", "stream_proxy: {tcp: [9000]}\nadmin: {keys: [{key: \"0123456789 abcdef\"}]}\n",
			`f.yaml:2: admin.keys[0]: must be printable ASCII without spaces`},
		{"a key of one letter", "stream_proxy: {tcp: [9000]}\nadmin: {keys: [{key: aaaaaaaaaaaaaaaa}]}\n",
			`f.yaml:2: admin.keys[0]: too easy to guess: fewer than 8 different characters`},
		{"listener port out of range, number", "stream_proxy: {tcp: [70000]}\n",
			`f.yaml:1: stream_proxy.tcp[0]: port must be 1..65535, got 70000`},
		{"listener port out of range, ip:port", "stream_proxy: {tcp: [\"127.0.0.1:70000\"]}\n",
			`f.yaml:1: stream_proxy.tcp[0]: port must be 1..65535, got 70000`},
		{"node port out of range", "stream_proxy: {tcp: [9000]}\nupstreams: [{id: 1, nodes: {\"a:70000\": 1}}]\n",
			`port must be 1..65535, got "70000"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(Document{Name: "f.yaml", Data: []byte(tc.doc)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("errors:\n%v\nwant %q", err, tc.want)
			}
		})
	}
	// Real names with digits, and real keys, still pass.
	cfg, err := Parse(Document{Name: "f.yaml", Data: []byte(`stream_proxy: {tcp: ["127.0.0.1:0"]}
admin: {keys: [{key: 2c0f6a5b8e1d4f3a9b7c6d5e4f3a2b1c}]}
upstreams: [{id: 1, nodes: {"broker-1.example.com:1883": 1, "10.0.0.1:1883": 1, "1a.example:1883": 1}}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	// Port 0 binds a random port: valid (tests read the address back), and
	// warned about, so that check shows it.
	if len(cfg.Warnings) == 0 || !strings.Contains(cfg.Warnings[0].Error(), "f.yaml:1: stream_proxy.tcp[0]: port 0: the kernel picks a free port") {
		t.Fatalf("warnings %v, want one for port 0", cfg.Warnings)
	}
}
