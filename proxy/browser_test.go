package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/browsertest"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestBrowserMQTTOverWebSocket: MQTT.js in headless Chromium, on a page
// of an origin the listeners allow, connects through mqgate over ws:// and
// wss:// (a certificate the test makes) to Mosquitto, subscribes and
// publishes; what the page received comes back as JSON, a Go client on
// plain MQTT sees the browser's messages, and Mosquitto saw both browser
// clients. On data_path epoll both pairs were carried by event loops.
func TestBrowserMQTTOverWebSocket(t *testing.T) {
	t.Parallel()
	browsertest.Require(t)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>devices</title><p>dashboard</p>`)
	}))
	defer site.Close()

	mosq := mqtttest.StartMosquitto(t, "")
	p := newPKI(t)
	ws := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, websocket: {origins: [%[1]q]}}]
stream_routes:
  - {id: 1, upstream: {nodes: {%[2]q: 1}}}
`, site.URL, mosq.Addr()))
	wss := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true, websocket: {origins: [%[1]q]}}]
ssls:
  - {id: a, snis: [a.example], cert: %[3]s/a.crt, key: %[3]s/a.key}
stream_routes:
  - {id: 1, upstream: {nodes: {%[2]q: 1}}}
`, site.URL, mosq.Addr(), p.dir))

	seen := make(chan message, 10)
	watcher := dialV3(t, ws.addr, "watcher", 4, seen)
	watcher.subscribe(t, "browser/seen", 1)

	out := browsertest.Run(t, "testdata/ws_browser.js", "PAGE="+site.URL,
		"URLS=ws://"+ws.addr+"/mqtt,wss://"+wss.addr+"/mqtt")
	var got map[string]struct{ Topic, Payload, Error string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	for _, scheme := range []string{"ws", "wss"} {
		r := got[scheme]
		if r.Error != "" || r.Topic != "browser/"+scheme || r.Payload != "hello over "+scheme {
			t.Errorf("page over %s:// received %+v, want hello over %s on browser/%s", scheme, r, scheme, scheme)
		}
	}
	receive(t, seen, "browser/seen", []byte("seen over ws"))
	receive(t, seen, "browser/seen", []byte("seen over wss"))
	mqtttest.WaitFor(t, "Mosquitto to log both browser clients", func() bool {
		s := mosq.Seen()
		return slices.Contains(s, "browser-ws") && slices.Contains(s, "browser-wss")
	})
	if dp := os.Getenv(dataPathEnv); dp == "" || dp == config.DataPathEpoll {
		// The ws page's pair was carried by an event loop (pipe/epoll/ws.go).
		mqtttest.WaitFor(t, "the ws pair in an event loop", func() bool { return ws.srv.Stats().WebSocketLooped == 1 })
		// And so the wss page's, its frames inside the records (AddWSS).
		mqtttest.WaitFor(t, "the wss pair in an event loop", func() bool {
			st := wss.srv.Stats()
			return st.WebSocketLooped == 1 && st.TLSRecordLooped == 1
		})
	}
	if rec := wss.waitRecord(t, "the wss record", func(r map[string]any) bool { return r["client_id"] == "browser-wss" }); rec["transport"] != "wss" {
		t.Errorf("wss record %v", rec)
	}
}
