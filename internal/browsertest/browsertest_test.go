package browsertest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mqgate/mqgate/internal/browsertest"
)

// TestRun loads a page served by the test into Chromium, with MQTT.js, and
// reads back what the page shows: the harness the browser tests stand on.
func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>mqgate test</title><p id="greeting">hello from `+r.URL.Path+`</p>`)
	}))
	defer srv.Close()

	out := browsertest.Run(t, "testdata/page.js", "URL="+srv.URL+"/probe")
	var got struct{ Title, Text, MQTT string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	want := struct{ Title, Text, MQTT string }{"mqgate test", "hello from /probe", "function"}
	if got != want {
		t.Errorf("page reported %+v, want %+v", got, want)
	}
}
