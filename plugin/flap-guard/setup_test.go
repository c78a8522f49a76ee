package flapguard_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	flapguard "github.com/mqgate/mqgate/plugin/flap-guard"
)

func parse(plugin string) (*config.Config, error) {
	return config.Parse(config.Document{Name: "f.yaml", Data: []byte(`stream_proxy: {tcp: [9000]}
stream_routes:
  - upstream: {nodes: {"b:1883": 1}}
    plugins:
      flap-guard: ` + plugin + "\n")})
}

func TestSetup(t *testing.T) {
	t.Parallel()
	cfg, err := parse("{max_connects: 5, window: 10, key: remote_addr}")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := cfg.StreamRoutes[0].Plugin(flapguard.Name).(*flapguard.Settings)
	want := flapguard.Settings{MaxConnects: 5, Window: 10 * time.Second, Backoff: 10 * time.Second, Key: "remote_addr", RejectedMsg: flapguard.DefaultRejectedMsg}
	if got == nil || *got != want {
		t.Errorf("settings = %+v, want %+v (backoff defaults to the window)", got, want)
	}
	for _, tc := range []struct{ plugin, want string }{
		{"{window: 10}", "f.yaml:5: stream_routes[0].plugins.flap-guard.max_connects: required"},
		{"{max_connects: 5, window: 0}", "f.yaml:5: stream_routes[0].plugins.flap-guard.window: must be greater than 0 (seconds), got 0"},
		{"{max_connects: 5, window: 1, key: route_id}", "f.yaml:5: stream_routes[0].plugins.flap-guard.key: must be"},
		{"{max_conects: 5, window: 1}", "max_conects"},
	} {
		if _, err := parse(tc.plugin); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.plugin, err, tc.want)
		}
	}
}
