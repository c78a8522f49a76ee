package admin_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// digits stands for the numbers of a stub_status page, which differ
// between two servers; the rest must be the same bytes.
var digits = regexp.MustCompile(`[0-9]+`)

// TestStubStatusLikeNGINX: /stub_status is a real NGINX's stub_status page
// byte for byte but for the numbers, and the numbers say what MQTT
// connections do: one proxied (Waiting), one still before its CONNECT
// (Reading), accepts and handled counting both, requests the proxied one.
func TestStubStatusLikeNGINX(t *testing.T) {
	t.Parallel()
	nginx := mqtttest.StartNGINXHTTP(t, "server { listen LISTEN; location /stub_status { stub_status; } }")
	resp, err := http.Get("http://" + nginx + "/stub_status")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	broker := mqtttest.StartMochi(t)
	g := startGate(t, configYAML(0, fmt.Sprintf("stream_routes: [{id: r1, upstream: {nodes: {%q: 1}}}]\n", broker.Addr())))
	proxied := connectLive(t, g.mqttAddr, "dev-1")
	defer proxied.Close()
	silent, err := net.Dial("tcp", g.mqttAddr) // no CONNECT yet
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	mqtttest.WaitFor(t, "two connections, one before its CONNECT", func() bool {
		st := g.srv.Stats()
		return st.Active == 2 && st.Unfinished == 1
	})
	code, got := g.doRaw(t, "GET", "/stub_status", viewerKey, "")
	if code != 200 {
		t.Fatalf("/stub_status: %d %s", code, got)
	}
	if a, b := digits.ReplaceAllString(string(got), "N"), digits.ReplaceAllString(string(want), "N"); a != b {
		t.Errorf("mqgate's /stub_status:\n%q\nNGINX's:\n%q", got, want)
	}
	if wantNums := "Active connections: 2 \nserver accepts handled requests\n 2 2 1 \nReading: 1 Writing: 0 Waiting: 1 \n"; string(got) != wantNums {
		t.Errorf("/stub_status:\n%q\nwant\n%q", got, wantNums)
	}
	// What nginx-prometheus-exporter does with the page: the active count
	// after the colon of line 1, three counters by position on line 3, and
	// the fields of line 4.
	lines := strings.Split(string(got), "\n")
	if f := strings.Fields(lines[3]); len(f) != 6 || f[0] != "Reading:" || f[2] != "Writing:" || f[4] != "Waiting:" {
		t.Errorf("line 4 fields %q", f)
	}
	if code, _ := g.doRaw(t, "GET", "/stub_status", "", ""); code != http.StatusUnauthorized {
		t.Errorf("/stub_status without a key: %d, want 401 (public_status is off)", code)
	}
}
