package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// nginxHashStream is an NGINX stream block that balances MQTT connections
// over brokers by `hash $mqtt_client_id consistent`, the client id read by
// the njs preread handler; the broker of index down, if any, is marked down.
func nginxHashStream(t *testing.T, brokers []mqtttest.Broker, weights []int, down int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "js_import mqtt from %s;\njs_var $mqtt_client_id \"\";\nupstream brokers {\n  hash $mqtt_client_id consistent;\n", mqtttest.NGINXJS(t))
	for i, br := range brokers {
		fmt.Fprintf(&b, "  server %s weight=%d", br.Addr(), weights[i])
		if i == down {
			b.WriteString(" down")
		}
		b.WriteString(";\n")
	}
	b.WriteString("}\nserver {\n  listen LISTEN;\n  js_preread mqtt.preread;\n  proxy_pass brokers;\n}\n")
	return b.String()
}

// TestHashMethodNGINXPlacesAsNGINX puts client ids through a real NGINX
// (`hash $mqtt_client_id consistent`) and through mqgate with `hash_method:
// nginx` onto the same weighted brokers: every id must reach the same broker
// both ways. Then, with one broker marked down in NGINX, the broker NGINX
// walks on to must be the first one mqgate's ring orders with that node
// unhealthy.
func TestHashMethodNGINXPlacesAsNGINX(t *testing.T) {
	t.Parallel()
	weights := []int{1, 2, 1, 3}
	var brokers []mqtttest.Broker
	for range weights {
		brokers = append(brokers, mqtttest.StartMochi(t))
	}
	var yml strings.Builder
	yml.WriteString("stream_proxy:\n  tcp:\n    - LISTEN\nupstreams:\n  - id: 1\n    type: chash\n    key: mqtt_client_id\n    hash_method: nginx\n    nodes:\n")
	for i, br := range brokers {
		fmt.Fprintf(&yml, "      %q: %d\n", br.Addr(), weights[i])
	}
	yml.WriteString("stream_routes:\n  - id: 1\n    upstream_id: 1\n")
	gw := startGateway(t, yml.String())
	nginx := mqtttest.StartNGINX(t, nginxHashStream(t, brokers, weights, -1))

	var ids []string
	for i := range 120 {
		ids = append(ids, fmt.Sprintf("dev-%03d", i))
	}
	for _, id := range ids {
		mqtttest.ConnectOK(t, nginx, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see the connects through NGINX", mqtttest.SeenTotal(brokers, len(ids)))
	for _, id := range ids {
		mqtttest.ConnectOK(t, gw.addr, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see the connects through mqgate", mqtttest.SeenTotal(brokers, 2*len(ids)))
	// Owners fails the test for an id that reached two brokers.
	where := mqtttest.Owners(t, brokers, ids, 2)
	used := map[int]bool{}
	for _, bi := range where {
		used[bi] = true
	}
	if len(used) != len(brokers) {
		t.Errorf("120 ids reached %d of %d brokers: the comparison says little", len(used), len(brokers))
	}

	// Broker 1 down: NGINX walks on along its ring.
	const down = 1
	nginxDown := mqtttest.StartNGINX(t, nginxHashStream(t, brokers, weights, down))
	nodes := make([]balance.Node, len(brokers))
	for i, br := range brokers {
		nodes[i] = balance.Node{Addr: br.Addr(), Weight: weights[i]}
	}
	ring, err := balance.New(nodes, balance.Options{Type: balance.TypeConsistentHash, HashMethod: balance.HashNGINX,
		State: balance.State{Healthy: func(n int) bool { return n != down }}})
	if err != nil {
		t.Fatal(err)
	}
	var moved []string
	for i := range 120 {
		id := fmt.Sprintf("down-%03d", i)
		moved = append(moved, id)
		mqtttest.ConnectOK(t, nginxDown, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see the connects through NGINX with a node down", mqtttest.SeenTotal(brokers, 2*len(ids)+len(moved)))
	got := mqtttest.Owners(t, brokers, moved, 1)
	for _, id := range moved {
		for first := range ring.Order(id) {
			if got[id] != first {
				t.Errorf("%s: NGINX with broker %d down chose broker %d, mqgate's ring %d", id, down, got[id], first)
			}
			break
		}
	}
}
