package admin_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// nested is a route body whose plugins hold depth nested objects.
func nested(depth int) string {
	return `{"upstream_id": 1, "plugins": {"x": ` + strings.Repeat(`{"a": `, depth) + "1" + strings.Repeat("}", depth) + "}}"
}

// TestDeepBodyRefusedBeforeDecoding is finding 2 of issue #10: a 54 KB PUT
// of 9,000 nested objects took 2.6 s and 500 MB. It is refused with a 400
// that says why, having cost no more than reading it. Not parallel: it
// counts the process's allocations.
func TestDeepBodyRefusedBeforeDecoding(t *testing.T) {
	g := startGate(t, configYAML(mqtttest.FreePort(t), ""))
	body := nested(9000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	code, v := g.do(t, "PUT", "/apisix/admin/stream_routes/x", adminKey, body)
	runtime.ReadMemStats(&after)
	if code != 400 || !strings.Contains(v["error_msg"].(string), "body nested deeper than 32 levels") {
		t.Fatalf("PUT of %d bytes nested 9,000 deep: %d %v", len(body), code, v)
	}
	// Reading the body and answering: a few times its size, not hundreds of MB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("the refused request allocated %d MB", alloc>>20)
	}
	// Arrays count as levels too; strings do not.
	code, v = g.do(t, "PUT", "/apisix/admin/upstreams/1", adminKey, `{"nodes": `+strings.Repeat("[", 40)+strings.Repeat("]", 40)+"}")
	if code != 400 || !strings.Contains(v["error_msg"].(string), "nested deeper") {
		t.Fatalf("deep arrays: %d %v", code, v)
	}
	code, v = g.do(t, "PUT", "/apisix/admin/stream_routes/x", adminKey, `{"upstream_id": 1, "desc": "`+strings.Repeat("{[", 100)+`\"{"}`)
	if code == 400 && strings.Contains(v["error_msg"].(string), "nested") {
		t.Fatalf("brackets inside a string counted as nesting: %v", v)
	}
	// 32 levels is within the limit: refused by validation, for its field.
	code, v = g.do(t, "PUT", "/apisix/admin/stream_routes/x", adminKey, nested(30))
	if code != 400 || strings.Contains(v["error_msg"].(string), "nested") {
		t.Fatalf("32 levels: %d %v, want a validation error", code, v)
	}
}

// TestWideBodyRefused: a body of more values than any object needs is
// refused before decoding as well.
func TestWideBodyRefused(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(mqtttest.FreePort(t), ""))
	body := `{"nodes": [` + strings.Repeat("1,", 200_000) + "1]}"
	code, v := g.do(t, "PUT", "/apisix/admin/upstreams/1", adminKey, body)
	if code != 400 || !strings.Contains(v["error_msg"].(string), "more than 100000 keys and values") {
		t.Fatalf("PUT of %d values: %d %v", 200_000, code, v)
	}
}
