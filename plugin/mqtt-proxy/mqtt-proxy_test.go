package mqttproxy

import (
	"testing"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/plugin"
)

// TestAdmit: a route's mqtt-proxy admits the protocol it names and refuses
// others with 0x84, saying only what the route restricts.
func TestAdmit(t *testing.T) {
	t.Parallel()
	v5 := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5}
	v311 := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311}
	v31 := &mqtt.Connect{ProtocolName: "MQIsdp", Level: 3}
	tests := []struct {
		name     string
		settings Settings
		connect  *mqtt.Connect
		refusal  string // "" admits
	}{
		{"any", Settings{}, v31, ""},
		{"level matches", Settings{ProtocolLevel: 5}, v5, ""},
		{"level only", Settings{ProtocolLevel: 5}, v311, "this endpoint accepts level 5 only"},
		{"name only", Settings{ProtocolName: "MQTT"}, v31, "this endpoint accepts MQTT only"},
		{"both", Settings{ProtocolName: "MQTT", ProtocolLevel: 4}, v5, "this endpoint accepts MQTT level 4 only"},
		{"both match", Settings{ProtocolName: "MQTT", ProtocolLevel: 4}, v311, ""},
	}
	for _, tt := range tests {
		s := tt.settings
		release, refused := Module().New(&s).Admit(&plugin.Conn{Connect: tt.connect})
		if release != nil {
			t.Errorf("%s: a check takes nothing, got a release", tt.name)
		}
		switch {
		case tt.refusal == "" && refused != nil:
			t.Errorf("%s: refused %+v", tt.name, refused)
		case tt.refusal != "" && (refused == nil || refused.Text != tt.refusal || refused.Code != mqtt.UnsupportedProtocolVersion || refused.Reason != ReasonProtocolLevel):
			t.Errorf("%s: refusal %+v, want 0x84 %q", tt.name, refused, tt.refusal)
		}
	}
}
