package demo_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqgate/mqgate/demo"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestDemo: the quick start serves real clients, spreads them over its three
// brokers, and puts each client id on one broker.
func TestDemo(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.DiscardHandler)
	d, err := demo.Start(demo.Options{Listen: "127.0.0.1:0", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Close(ctx)
	})

	const n = 30
	for i := range n {
		url := "tcp://" + d.Addr
		if i%3 == 0 {
			url = d.WebSocket // every third over MQTT over WebSocket, on the same port
		}
		opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("sensor-%d", i)).
			SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
		c := pahov3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("connect through the demo: %v", tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
	}
	mqtttest.WaitFor(t, "all clients on the brokers", func() bool {
		c := d.Counts()
		return c[0]+c[1]+c[2] == n
	})
	for i, c := range d.Counts() {
		if c == 0 {
			t.Errorf("broker %d has no client: %v", i+1, d.Counts())
		}
	}
	seen := map[string]bool{}
	for _, ids := range d.ClientIDs() {
		for _, id := range ids {
			if seen[id] {
				t.Errorf("%s is on two brokers", id)
			}
			seen[id] = true
		}
	}
}

// TestDemoDashboard: with AdminListen the demo serves the Admin API with a
// generated key, and its DashboardURL signs in with it.
func TestDemoDashboard(t *testing.T) {
	t.Parallel()
	d, err := demo.Start(demo.Options{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Close(ctx)
	})
	if len(d.AdminKey) != 32 || !strings.HasSuffix(d.DashboardURL, "/dashboard?key="+d.AdminKey) {
		t.Fatalf("key %q, dashboard %q", d.AdminKey, d.DashboardURL)
	}
	jar, _ := cookiejar.New(nil)
	resp, err := (&http.Client{Jar: jar}).Get(d.DashboardURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.RawQuery != "" || !strings.Contains(string(body), `data-role="admin"`) {
		t.Fatalf("GET %s: %d at %s\n%s", d.DashboardURL, resp.StatusCode, resp.Request.URL, body)
	}
	resp, err = http.Get(d.AdminURL + "/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the key: %d, want 401", resp.StatusCode)
	}
}
