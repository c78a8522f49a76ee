package proxy_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// brokerOf maps each id to the index of the broker that saw it, failing the
// test when an id was seen by two brokers or seen `times` times in all.
func brokerOf(t *testing.T, brokers []mqtttest.Broker, ids []string, times int) map[string]int {
	t.Helper()
	where := make(map[string]int)
	count := make(map[string]int)
	for bi, b := range brokers {
		for _, id := range b.Seen() {
			if prev, ok := where[id]; ok && prev != bi {
				t.Errorf("client id %s reached broker %d and broker %d", id, prev, bi)
			}
			where[id] = bi
			count[id]++
		}
	}
	for _, id := range ids {
		if count[id] != times {
			t.Errorf("client id %s: brokers saw %d connects, want %d", id, count[id], times)
		}
	}
	return where
}

func seenAll(brokers []mqtttest.Broker, n int) func() bool {
	return func() bool {
		total := 0
		for _, b := range brokers {
			total += len(b.Seen())
		}
		return total >= n
	}
}

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
		mqtttest.WaitFor(t, "brokers to see every connect", seenAll(brokers, round*len(ids)))
	}
	where := brokerOf(t, brokers, ids, 3)

	// 100 keys over 3 equal nodes: 33.3 expected, binomial sd 4.7; allow
	// 3 sd either way.
	per := make([]int, len(brokers))
	for _, bi := range where {
		per[bi]++
	}
	for bi, n := range per {
		if n < 19 || n > 48 {
			t.Errorf("broker %d got %d of 100 client ids, want 19..48 (spread %v)", bi, n, per)
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
	mqtttest.WaitFor(t, "brokers to see every connect", seenAll(brokers, 9))
	brokerOf(t, brokers, ids, 3)
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
	mqtttest.WaitFor(t, "brokers to see every connect", seenAll(brokers, len(ids)))
	before := brokerOf(t, brokers, ids, 1)

	m[0].Close()
	for _, id := range ids {
		mqtttest.ConnectOK(t, gw.addr, id, mqtt.Level311)
	}
	mqtttest.WaitFor(t, "brokers to see every reconnect", seenAll(brokers, 2*len(ids)))
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
