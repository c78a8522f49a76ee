package config

import (
	"slices"
	"testing"
)

// TestRestartOnlyNews: the restart-only keys a reload names are those that
// differ from the start and changed since the reload before; a change below
// a waiting section (admin.listen of an added admin block) names it again.
func TestRestartOnlyNews(t *testing.T) {
	t.Parallel()
	parse := func(yml string) *Config {
		t.Helper()
		cfg, err := Parse(Document{Name: "t.yaml", Data: []byte("stream_proxy: {tcp: [1883]}\nstream_routes: [{upstream: {nodes: {\"127.0.0.1:1884\": 1}}}]\n" + yml)})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	const admin = "admin: {listen: \"127.0.0.1:9180\", keys: [{key: k1234567890abcdef}]}\n"
	started := parse("")
	for _, tc := range []struct {
		name           string
		previous, next string
		changes, news  []string
	}{
		{"nothing", "", "log: {level: debug}\n", nil, nil},
		{"first change", "", "log: {access_log: stderr}\n", []string{"log.access_log"}, []string{"log.access_log"}},
		{"unchanged since", "log: {access_log: stderr}\n", "log: {access_log: stderr, level: debug}\n", []string{"log.access_log"}, nil},
		{"changed again", "log: {access_log: stderr}\n", "log: {access_log: /tmp/a.log}\n", []string{"log.access_log"}, []string{"log.access_log"}},
		{"put back", "log: {access_log: stderr}\n", "", nil, nil},
		{"admin added", "", admin, []string{"admin"}, []string{"admin"}},
		{"admin still added", admin, admin, []string{"admin"}, nil},
		{"added admin changed", admin, "admin: {listen: \"127.0.0.1:9181\", keys: [{key: k1234567890abcdef}]}\n", []string{"admin"}, []string{"admin"}},
		{"deployment", "", "deployment: {instance_name: edge-1}\n", []string{"deployment.instance_name"}, []string{"deployment.instance_name"}},
	} {
		prev, next := parse(tc.previous), parse(tc.next)
		if got := RestartOnlyChanges(started, next); !slices.Equal(got, tc.changes) {
			t.Errorf("%s: RestartOnlyChanges %q, want %q", tc.name, got, tc.changes)
		}
		if got := RestartOnlyNews(started, prev, next); !slices.Equal(got, tc.news) {
			t.Errorf("%s: RestartOnlyNews %q, want %q", tc.name, got, tc.news)
		}
	}
}
