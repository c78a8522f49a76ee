package admin_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/browsertest"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestDashboardInBrowser drives the dashboard in headless Chromium with
// MQTT.js clients connecting through mqgate to three brokers: without a
// key it is refused; a viewer key signs in and sees the numbers follow the
// clients, per listener, node and connection, and finds a client by id; an
// admin key's kick button closes that client (its MQTT.js connection sees
// the close); a node without a broker shows unhealthy; on a phone's width
// nothing sticks out.
//
// MQGATE_DASHBOARD_SCREENSHOT=docs/dashboard.png also keeps traffic going
// for 30 s and saves the README's screenshot there.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	browsertest.Require(t)
	a, b, c := mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	// A fourth node where no broker listens: the checks mark it unhealthy,
	// and the page shows it so.
	dead := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	g := startGate(t, configYAML(0, fmt.Sprintf(`upstreams:
  - id: plant
    type: chash
    nodes: {%q: 1, %q: 1, %q: 1, %q: 1}
    checks:
      active: {type: mqtt, healthy: {interval: 1}, unhealthy: {interval: 1}}
stream_routes:
  - id: devices
    mqtt_client_id: {regex: "^(dash|meter)-"}
    upstream_id: plant
`, a.Addr(), b.Addr(), c.Addr(), dead)))

	env := []string{"URL=" + g.url, "MQTT=" + g.mqttAddr, "VIEWER_KEY=" + viewerKey, "ADMIN_KEY=" + adminKey, "DEAD=" + dead}
	if shot := os.Getenv("MQGATE_DASHBOARD_SCREENSHOT"); shot != "" {
		abs, err := filepath.Abs(filepath.Join("..", shot)) // relative to the repository
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "SCREENSHOT="+abs, "SCREENSHOT_PHONE="+strings.TrimSuffix(abs, ".png")+"-phone.png")
	}
	out := browsertest.Run(t, "testdata/dashboard.js", env...)
	var got struct {
		AnonStatus        int
		AnonHasForm       bool
		AnonHasNumbers    bool
		WrongStatus       int
		WrongError        string
		ViewerRole        string
		ActiveBefore      int
		ActiveAfter       int
		NodeActiveSum     int
		ListenerAccepted  int
		ViewerKickButtons int
		DeadReason        string
		HealthyCard       string
		SearchRows        []string
		RefusedShown      int
		AdminURL          string
		KickClosedClient  bool
		Toast             string
		ActiveAfterKick   int
		PhoneOverflow     int
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	t.Logf("the page saw: %+v", got)
	if got.AnonStatus != 401 || !got.AnonHasForm || got.AnonHasNumbers {
		t.Errorf("without a key: status %d, form %v, numbers %v; want 401, the form, no numbers", got.AnonStatus, got.AnonHasForm, got.AnonHasNumbers)
	}
	if got.WrongStatus != 401 || !strings.Contains(got.WrongError, "not one of this mqgate's keys") {
		t.Errorf("wrong key: %d %q", got.WrongStatus, got.WrongError)
	}
	if got.ViewerRole != "viewer key" || got.ActiveBefore != 0 || got.ActiveAfter != 5 || got.NodeActiveSum != 5 || got.ListenerAccepted < 5 {
		t.Errorf("viewer's numbers: role %q, live %d then %d, nodes %d, accepted %d; want 0 then 5 on the nodes", got.ViewerRole, got.ActiveBefore, got.ActiveAfter, got.NodeActiveSum, got.ListenerAccepted)
	}
	if !strings.Contains(got.DeadReason, "mqtt probe") || got.HealthyCard != "3 / 4" {
		t.Errorf("the node without a broker: reason %q, healthy nodes %q; want an mqtt probe reason, 3 / 4", got.DeadReason, got.HealthyCard)
	}
	if got.ViewerKickButtons != 0 {
		t.Errorf("a viewer sees %d kick buttons", got.ViewerKickButtons)
	}
	if len(got.SearchRows) != 1 || got.SearchRows[0] != "dash-3" {
		t.Errorf("search for dash-3 shows %v", got.SearchRows)
	}
	if got.RefusedShown != 1 {
		t.Errorf("no_route refusals shown: %d, want 1", got.RefusedShown)
	}
	if got.AdminURL != "/dashboard" {
		t.Errorf("after ?key= the page is at %q, want /dashboard (the key out of the address)", got.AdminURL)
	}
	if !got.KickClosedClient || !strings.Contains(got.Toast, "closed 1 connection of dash-3") || got.ActiveAfterKick != 4 {
		t.Errorf("kick: client closed %v, toast %q, live after %d; want closed, 4 left", got.KickClosedClient, got.Toast, got.ActiveAfterKick)
	}
	if got.PhoneOverflow > 0 {
		t.Errorf("on a 390 px wide phone the page is %d px wider than the screen", got.PhoneOverflow)
	}
	if _, v := g.do(t, "GET", "/connections?client_id=dash-3", viewerKey, ""); v["total"] != float64(0) {
		t.Errorf("dash-3 still in the connection table after the kick: %v", v)
	}
}
