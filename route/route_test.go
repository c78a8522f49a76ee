package route_test

import (
	"net/netip"
	"testing"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/route"
)

func TestMatchOrderAndConditions(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse(config.Document{Name: "routes.yaml", Data: []byte(`
stream_proxy:
  tcp: [1883, 8883]
upstreams:
  - id: u
    nodes: {"127.0.0.1:1884": 1}
stream_routes:
  - id: flow
    mqtt_client_id: {prefix: "flow-"}
    upstream_id: u
  - id: light
    mqtt_client_id: {regex: "^light-[0-9]+$"}
    server_port: 8883
    upstream_id: u
  - id: ingest-user
    mqtt_username: ingest
    upstream_id: u
  - id: lan
    remote_addr: 10.0.0.0/8
    server_addr: 127.0.0.1
    upstream_id: u
  - id: v6
    remote_addr: "2001:db8::/32"
    upstream_id: u
`)})
	if err != nil {
		t.Fatal(err)
	}
	table := route.NewTable(cfg.StreamRoutes)
	local1883 := netip.MustParseAddrPort("127.0.0.1:1883")
	local8883 := netip.MustParseAddrPort("127.0.0.1:8883")
	mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), 1883)
	wan := netip.MustParseAddr("203.0.113.9")
	tests := []struct {
		name string
		in   route.Input
		want string // route id, "" for no match
	}{
		{"prefix", route.Input{Local: local1883, Remote: wan, ClientID: "flow-7"}, "flow"},
		{"first route wins", route.Input{Local: local8883, Remote: wan, ClientID: "flow-7", Username: "ingest"}, "flow"},
		{"regex and port", route.Input{Local: local8883, Remote: wan, ClientID: "light-42"}, "light"},
		{"regex, wrong port", route.Input{Local: local1883, Remote: wan, ClientID: "light-42"}, ""},
		{"regex is anchored by the pattern", route.Input{Local: local8883, Remote: wan, ClientID: "light-42x"}, ""},
		{"username exact", route.Input{Local: local1883, Remote: wan, Username: "ingest"}, "ingest-user"},
		{"username exact, not prefix", route.Input{Local: local1883, Remote: wan, Username: "ingester"}, ""},
		{"cidr and server addr", route.Input{Local: local1883, Remote: netip.MustParseAddr("10.1.2.3")}, "lan"},
		{"cidr, v4-mapped local", route.Input{Local: mapped, Remote: netip.MustParseAddr("::ffff:10.1.2.3")}, "lan"},
		{"cidr v6", route.Input{Local: local1883, Remote: netip.MustParseAddr("2001:db8::1")}, "v6"},
		{"nothing matches", route.Input{Local: local1883, Remote: wan, ClientID: "other"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, ok := table.Match(tt.in)
			got := ""
			if ok {
				got = cfg.StreamRoutes[i].ID
			}
			if got != tt.want {
				t.Errorf("Match(%+v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
