package proxy_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestClientIDSticksToBroker: the same client id lands on the same broker on
// every reconnect, and 100 ids spread over 3 brokers.
func TestClientIDSticksToBroker(t *testing.T) {
	t.Parallel()
	brokers := []mqtttest.Broker{mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)}
	gw := startGateway(t, chashConfig(brokers...))

	var ids []string
	for i := range 100 {
		ids = append(ids, fmt.Sprintf("meter-%03d", i))
	}
	for round := 1; round <= 3; round++ {
		for _, id := range ids {
			mqtttest.ConnectOK(t, gw.addr, id, mqtt.Level311)
		}
		mqtttest.WaitFor(t, "brokers to see every connect", mqtttest.SeenTotal(brokers, round*len(ids)))
	}
	where := mqtttest.Owners(t, brokers, ids, 3)

	// Every broker owns some of the ids: the hash spreads them. How evenly
	// is balance's TestConsistentHashSpread, on fixed node names: here the
	// nodes are random ports, so the shares change from run to run, and a
	// band of 19..48 of 100 (3 binomial sd) failed in a test run (a ring's
	// shares vary more than a binomial's).
	per := make([]int, len(brokers))
	for _, bi := range where {
		per[bi]++
	}
	for bi, n := range per {
		if n == 0 {
			t.Errorf("broker %d got none of the 100 client ids (spread %v)", bi, per)
		}
	}
}

// TestAllLevelsRouteAlike: 3.1, 3.1.1 and 5.0 CONNECTs of one client id go to
// the same broker.
func TestAllLevelsRouteAlike(t *testing.T) {
	t.Parallel()
	brokers := []mqtttest.Broker{mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)}
	gw := startGateway(t, chashConfig(brokers...))
	ids := []string{"a", "valve-17", "phone-x"}
	for _, id := range ids {
		for _, level := range []byte{mqtt.Level31, mqtt.Level311, mqtt.Level5} {
			mqtttest.ConnectOK(t, gw.addr, id, level)
		}
	}
	mqtttest.WaitFor(t, "brokers to see every connect", mqtttest.SeenTotal(brokers, 9))
	mqtttest.Owners(t, brokers, ids, 3)
}

// TestDownBrokerSkipped: the clients of a broker that is down go to their
// next broker; the other clients stay where they were.
func TestDownBrokerSkipped(t *testing.T) {
	t.Parallel()
	m := []*mqtttest.Mochi{mqtttest.StartMochi(t), mqtttest.StartMochi(t), mqtttest.StartMochi(t)}
	brokers := []mqtttest.Broker{m[0], m[1], m[2]}
	gw := startGateway(t, chashConfig(brokers...))
	var ids []string
	for i := range 60 {
		ids = append(ids, fmt.Sprintf("dev-%d", i))
	}
	for _, id := range ids {
		mqtttest.ConnectOK(t, gw.addr, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see every connect", mqtttest.SeenTotal(brokers, len(ids)))
	before := mqtttest.Owners(t, brokers, ids, 1)

	m[0].Close()
	for _, id := range ids {
		mqtttest.ConnectOK(t, gw.addr, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see every reconnect", mqtttest.SeenTotal(brokers, 2*len(ids)))
	moved := 0
	for _, id := range ids {
		var now []int
		for bi, b := range brokers {
			if slices.Contains(b.Seen(), id) {
				now = append(now, bi)
			}
		}
		switch {
		case before[id] == 0:
			moved++
			if len(now) != 2 || now[0] != 0 {
				t.Errorf("%s was on the stopped broker 0; now seen by %v, want 0 then one other", id, now)
			}
		case len(now) != 1 || now[0] != before[id]:
			t.Errorf("%s was on broker %d and moved: seen by %v", id, before[id], now)
		}
	}
	if moved == 0 {
		t.Fatal("no client id hashed to broker 0; the test proves nothing")
	}
}
