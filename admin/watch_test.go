package admin_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// watchedRoute returns, for a broker, a document part: the file watch at
// interval (seconds) and one stream route to that broker.
func watchedRoute(interval string) func(mqtttest.Broker) string {
	return func(br mqtttest.Broker) string {
		return fmt.Sprintf("reload: {watch_interval: %s}\nstream_routes: [{upstream: {nodes: {%q: 1}}}]\n", interval, br.Addr())
	}
}

// startWatch runs g's file watch until the test ends.
func startWatch(t *testing.T, g *gate) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go g.mgr.Watch(ctx)
}

// TestWatchSeesAnEditBeforeItStarts is finding 6 of issue #10 made
// deterministic: the file changes after it was loaded but before Watch
// looks at it for the first time (an edit during start-up). Watch's
// baseline is what was loaded, so it reloads.
func TestWatchSeesAnEditBeforeItStarts(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	route := watchedRoute("0.05")
	g := startGate(t, configYAML(port, route(a)))
	if err := os.WriteFile(g.file, []byte(configYAML(port, route(b))), 0o644); err != nil {
		t.Fatal(err)
	}
	startWatch(t, g)
	mqtttest.WaitFor(t, "the watch to reload the edit made before it started", func() bool {
		return strings.Contains(g.log.String(), "source=watch config=")
	})
	connack(t, g.mqttAddr, "after-edit", mqtt.Level311)
	mqtttest.WaitFor(t, "the client at the new broker", func() bool { return slices.Equal(b.Seen(), []string{"after-edit"}) })
}

// TestWatchUnreadableIsNoChange is finding 3 of issue #10: a file that
// cannot be read (here: gone while it is replaced) is logged once as
// unreadable, not as a change, and its return unchanged reloads nothing.
func TestWatchUnreadableIsNoChange(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	route := watchedRoute("0.02")
	g := startGate(t, configYAML(port, route(a)))
	startWatch(t, g)
	orig, err := os.ReadFile(g.file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(g.file, g.file+".away"); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the unreadable file to be logged", func() bool {
		return strings.Contains(g.log.String(), "cannot read the configuration files")
	})
	if err := os.WriteFile(g.file, orig, 0o644); err != nil { // back, unchanged
		t.Fatal(err)
	}
	// A real change next: once it is reloaded, the watch has looked at the
	// unchanged file in between.
	if err := os.Rename(g.file+".away", g.file+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.file+".new", []byte(configYAML(port, route(b))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(g.file+".new", g.file); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the watch to reload the real change", func() bool {
		return strings.Contains(g.log.String(), "source=watch config=")
	})
	logs := g.log.String()
	for what, want := range map[string]int{
		"configuration files changed":         1,
		"cannot read the configuration files": 1,
		"msg=reloaded":                        1,
		"reload refused":                      0,
	} {
		if n := strings.Count(logs, what); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", what, n, want, logs)
		}
	}
}
