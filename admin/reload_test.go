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

// badField is a configuration whose one error is a field's, on line 9 of
// the file configYAML writes.
func badField(port int) string {
	return configYAML(port, "stream_routes: [{upstream: {nodes: {\"127.0.0.1:1883\": 1}, retries: -2}}]\n")
}

// TestReloadEndpoint: POST /reload (what `mqgate reload` asks for) refuses
// an invalid file with every error as file:line: path: why and keeps the
// running configuration; a valid file is applied and the answer says so.
// A viewer key may not reload.
func TestReloadEndpoint(t *testing.T) {
	t.Parallel()
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	route := func(br mqtttest.Broker) string {
		return fmt.Sprintf("reload: {watch: false}\nstream_routes: [{upstream: {nodes: {%q: 1}}}]\n", br.Addr())
	}
	g := startGate(t, configYAML(port, route(a)))
	connack(t, g.mqttAddr, "one", mqtt.Level311)

	if err := os.WriteFile(g.file, []byte(badField(port)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, v := g.do(t, "POST", "/reload", adminKey, "")
	want := g.file + ":9: stream_routes[0].upstream.retries: must be >= 0, got -2"
	if errs, _ := v["errors"].([]any); code != 400 || len(errs) != 1 || errs[0] != want {
		t.Errorf("POST /reload of a bad file: %d %v, want 400 with %q", code, v, want)
	}
	connack(t, g.mqttAddr, "two", mqtt.Level311) // still to a

	if code, _ := g.do(t, "POST", "/reload", viewerKey, ""); code != 403 {
		t.Errorf("POST /reload with a viewer key: %d, want 403", code)
	}
	if err := os.WriteFile(g.file, []byte(configYAML(port, route(b))), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := g.mustDo(t, 200, "POST", "/reload", ""); v["reloaded"] != true || !strings.Contains(fmt.Sprint(v["config"]), "1 stream route") {
		t.Errorf("POST /reload: %v", v)
	}
	connack(t, g.mqttAddr, "three", mqtt.Level311)
	mqtttest.WaitFor(t, "the clients at their brokers", func() bool {
		return slices.Equal(a.Seen(), []string{"one", "two"}) && slices.Equal(b.Seen(), []string{"three"})
	})
	if !strings.Contains(g.log.String(), `msg="reload refused, keeping the running configuration" source=admin_api`) {
		t.Errorf("the refusal is not logged:\n%s", g.log)
	}
}

// TestWatchRefusesBadField: an edit that reload.watch sees is checked
// before it applies: one with a field error is refused, logged with
// file:line: path: why, and the last good configuration keeps serving.
func TestWatchRefusesBadField(t *testing.T) {
	t.Parallel()
	a := mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	g := startGate(t, configYAML(port, fmt.Sprintf("reload: {watch_interval: 0.05}\nstream_routes: [{upstream: {nodes: {%q: 1}}}]\n", a.Addr())))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.mgr.Watch(ctx)
	if err := os.WriteFile(g.file, []byte(badField(port)), 0o644); err != nil {
		t.Fatal(err)
	}
	want := g.file + ":9: stream_routes[0].upstream.retries: must be >= 0, got -2"
	mqtttest.WaitFor(t, "the edit refused with file, line, field and why", func() bool {
		return strings.Contains(g.log.String(), "reload refused") && strings.Contains(g.log.String(), want)
	})
	connack(t, g.mqttAddr, "still", mqtt.Level311)
	mqtttest.WaitFor(t, "the client at the old broker", func() bool { return slices.Equal(a.Seen(), []string{"still"}) })
}
