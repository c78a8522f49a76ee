package config_test

import (
	"fmt"

	"github.com/mqgate/mqgate/config"
)

func ExampleParse() {
	cfg, err := config.Parse(
		config.Document{Name: "config.yaml", Data: []byte(`
apisix:
  enable_admin: false
  stream_proxy:
    tcp:
      - addr: 9000
`)},
		config.Document{Name: "apisix.yaml", Data: []byte(`
stream_routes:
  - id: 1
    upstream_id: 1
    plugins:
      mqtt-proxy: {protocol_name: MQTT, protocol_level: 5}
upstreams:
  - id: 1
    type: chash
    nodes:
      "broker-1:1883": 1
      "broker-2:1883": 1
#END
`)},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Summary())
	fmt.Println(cfg.Ignored)
	fmt.Println(cfg.Upstreams[0].Key, cfg.Upstreams[0].Nodes[1].Addr())

	_, err = config.Parse(config.Document{Name: "mqgate.yaml", Data: []byte(`
stream_proxy: {tcp: [9000]}
stream_routes:
  - upstrem_id: 1
`)})
	fmt.Println(err)
	// Output:
	// 2 files, 1 listener (:9000), 1 stream route, 1 upstream with 2 nodes
	// [config.yaml:3: apisix.enable_admin]
	// mqtt_client_id broker-2:1883
	// mqgate.yaml:4: stream_routes[0].upstrem_id: unknown key (did you mean "upstream_id"?)
	// mqgate.yaml:4: stream_routes[0]: needs upstream_id or upstream
}
