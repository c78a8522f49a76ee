package admin

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/mqgate/mqgate/config"
)

// FuzzAdminBody sends arbitrary bytes as the body of a PUT of each kind
// through what a write does before it stores anything: the shape bounds,
// the JSON decoding and id rules, the state's overlay document and the
// configuration decoder over a file. Nothing panics, and every refusal is
// an error the API can answer with 400. Seeds: the seed001 bodies and
// testdata/fuzz/FuzzAdminBody.
func FuzzAdminBody(f *testing.F) {
	files, _ := filepath.Glob("testdata/seed001/*.json")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for kind := range Kinds {
			f.Add(uint8(kind), b)
		}
	}
	base := config.Document{Name: "mqgate.yaml", Data: []byte("stream_proxy: {tcp: [9000]}\nupstreams: [{id: 1, nodes: {\"a:1883\": 1}}]\n")}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := Kinds[int(kind)%len(Kinds)]
		r := httptest.NewRequest("PUT", "/apisix/admin/"+k+"/x", bytes.NewReader(body))
		value, id, err := decodeBody(r, "x", false)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error message")
			}
			return
		}
		if id != "x" {
			t.Fatalf("id %q, want the path's", id)
		}
		st := &State{Objects: make(map[string][]Object)}
		st.put(k, id, value, 1)
		_, err = config.Parse(base, st.overlay("admin-state.json"))
		var list config.ErrorList
		if err != nil && !errors.As(err, &list) {
			t.Fatalf("error %T %v, want an ErrorList", err, err)
		}
	})
}
