package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

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

	// While the page runs: once a page's subscription is in (its
	// browser/seen arrived) and, on data_path epoll, its pair is in an
	// event loop, send it a second message. A wss pair moves into a loop
	// only once it has stayed (tlsMove), so the page waits for that
	// message, and the loop is what carries it.
	epollPath := os.Getenv(dataPathEnv) == "" || os.Getenv(dataPathEnv) == config.DataPathEpoll
	looped := map[string]func() bool{
		"ws": func() bool { return ws.srv.Stats().WebSocketLooped == 1 },
		"wss": func() bool {
			st := wss.srv.Stats()
			return st.WebSocketLooped == 1 && st.TLSRecordLooped == 1 // its frames inside the records
		},
	}
	sent := make(chan error, 1)
	go func() {
		for _, scheme := range []string{"ws", "wss"} {
			if _, err := nextMessage(seen, "browser/seen", []byte("seen over "+scheme)); err != nil {
				sent <- err
				return
			}
			for deadline := time.Now().Add(20 * time.Second); epollPath && !looped[scheme](); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					sent <- fmt.Errorf("the %s pair never went into an event loop", scheme)
					return
				}
			}
			if tok := watcher.c.Publish("browser/"+scheme, 1, false, "after over "+scheme); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				sent <- fmt.Errorf("publish to the %s page: %v", scheme, tok.Error())
				return
			}
		}
		sent <- nil
	}()
	out := browsertest.Run(t, "testdata/ws_browser.js", "PAGE="+site.URL,
		"URLS=ws://"+ws.addr+"/mqtt,wss://"+wss.addr+"/mqtt")
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	var got map[string]struct {
		Messages []struct{ Topic, Payload string }
		Error    string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	for _, scheme := range []string{"ws", "wss"} {
		r := got[scheme]
		var payloads []string
		for _, m := range r.Messages {
			if m.Topic == "browser/"+scheme {
				payloads = append(payloads, m.Payload)
			}
		}
		slices.Sort(payloads)
		if want := []string{"after over " + scheme, "hello over " + scheme}; r.Error != "" || !slices.Equal(payloads, want) {
			t.Errorf("page over %s:// received %+v, want %q on browser/%s", scheme, r, want, scheme)
		}
	}
	mqtttest.WaitFor(t, "Mosquitto to log both browser clients", func() bool {
		s := mosq.Seen()
		return slices.Contains(s, "browser-ws") && slices.Contains(s, "browser-wss")
	})
	if rec := wss.waitRecord(t, "the wss record", func(r map[string]any) bool { return r["client_id"] == "browser-wss" }); rec["transport"] != "wss" {
		t.Errorf("wss record %v", rec)
	}
}
