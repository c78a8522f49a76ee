package route

import (
	"net/netip"
	"testing"

	"github.com/mqgate/mqgate/config"
)

func TestMatchSNI(t *testing.T) {
	tests := []struct {
		pattern, sni string
		want         bool
	}{
		{"mqtt.example.com", "mqtt.example.com", true},
		{"mqtt.example.com", "MQTT.Example.com.", true},
		{"mqtt.example.com", "other.example.com", false},
		{"mqtt.example.com", "", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", ".example.com", true}, // an empty first label: not a valid name, no harm
		{"*.example.com", "aexample.com", false},
	}
	for _, tt := range tests {
		if got := MatchSNI(tt.pattern, tt.sni); got != tt.want {
			t.Errorf("MatchSNI(%q, %q) = %v, want %v", tt.pattern, tt.sni, got, tt.want)
		}
	}
}

// TestSNIRoutesFirst: a route with an sni wins over an earlier route
// without one; without TLS (no SNI) it never matches.
func TestSNIRoutesFirst(t *testing.T) {
	table := NewTable([]config.StreamRoute{
		{ID: "any"},
		{ID: "wild", SNI: "*.example.com"},
		{ID: "exact", SNI: "mqtt.example.com"},
	})
	local := netip.MustParseAddrPort("127.0.0.1:8883")
	for sni, want := range map[string]string{"": "any", "a.example.com": "wild", "mqtt.example.com": "wild", "other.org": "any"} {
		i, ok := table.Match(Input{Local: local, SNI: sni})
		if !ok || table.routes[i].ID != want {
			t.Errorf("SNI %q matched %v %q, want %q", sni, ok, table.routes[i].ID, want)
		}
	}
}
