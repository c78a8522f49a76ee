package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// willWatcher is a client of the broker itself, not through mqgate,
// subscribed to will/#: it counts the wills the broker publishes.
type willWatcher struct {
	pub  *pahoV5
	mu   sync.Mutex
	seen map[string]int // by topic
}

func watchWills(t *testing.T, broker string) *willWatcher {
	t.Helper()
	msgs := make(chan message, 256)
	w := &willWatcher{seen: map[string]int{}}
	w.pub = dialV5(t, broker, "will-watcher", msgs)
	w.pub.subscribe(t, "will/#", 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-msgs:
				w.mu.Lock()
				w.seen[m.topic]++
				w.mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return w
}

func (w *willWatcher) count(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen["will/"+id]
}

// published waits until the broker has published id's will.
func (w *willWatcher) published(t *testing.T, id, close string) {
	t.Helper()
	mqtttest.WaitFor(t, fmt.Sprintf("the will of %s (%s) from the broker", id, close), func() bool { return w.count(id) == 1 })
}

// notPublished checks that the broker has not published id's will by the
// time a message published after the close comes back.
func (w *willWatcher) notPublished(t *testing.T, id, close string) {
	t.Helper()
	marker := "marker-" + id
	w.pub.publish(t, "will/"+marker, 1, false, []byte("after "+id))
	mqtttest.WaitFor(t, "the marker after "+id, func() bool { return w.count(marker) == 1 })
	if n := w.count(id); n != 0 {
		t.Errorf("%s (%s): the broker published its will %d times, want none", id, close, n)
	}
}

// dialWill connects a paho.golang 5.0 client through addr with a will on
// will/<id>; connect, when not nil, changes its CONNECT first.
func dialWill(t *testing.T, addr, id string, connect func(*paho.Connect)) *watchedV5 {
	t.Helper()
	c := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "will/" + id, QoS: 1, Payload: []byte(id + " is gone")}}
	if connect != nil {
		connect(c)
	}
	return dialWatchedConnect(t, addr, c, nil)
}

// TestWillPerClose: for every close mqgate decides (the README's table of
// closes) a 5.0 client through mqgate to Mosquitto gets its DISCONNECT and
// Mosquitto publishes the client's will, because mqgate closes the broker
// connection without a DISCONNECT for the client; a client that ends with
// its own DISCONNECT (0x00) leaves no will, and one with a Will Delay
// Interval that resumes its session through mqgate within the delay
// leaves none either.
func TestWillPerClose(t *testing.T) {
	t.Parallel()
	home := mqtttest.StartMosquitto(t, "")
	w := watchWills(t, home.Addr())

	t.Run("closed_by_admin, taken_over, packet_too_large, drained, route_removed", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, reasonsConfig(home.Addr(), true))

		dialWill(t, g.addr, "ctrl-w", nil).c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		g.accessRecord(t, "ctrl-w")
		w.notPublished(t, "ctrl-w", "the client's own DISCONNECT 0x00")

		kicked := dialWill(t, g.addr, "kick-w", nil)
		g.srv.CloseClient("kick-w")
		kicked.expectDisconnect(t, "kick", mqtt.AdministrativeAction, "")
		w.published(t, "kick-w", "closed_by_admin")

		older := dialWill(t, g.addr, "dup-w", nil)
		dialWill(t, g.addr, "dup-w", nil)
		older.expectDisconnect(t, "keep_newest", mqtt.SessionTakenOver, "")
		w.published(t, "dup-w", "taken_over")

		big := dialWill(t, g.addr, "big-w", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = big.c.Publish(ctx, &paho.Publish{Topic: "big", Payload: make([]byte, 5000)})
		big.expectDisconnect(t, "max_packet_size", mqtt.PacketTooLarge, "")
		w.published(t, "big-w", "packet_too_large")

		// The session resumes within the Will Delay Interval: no will.
		delayed := func(c *paho.Connect) {
			delay, expiry := uint32(30), uint32(60)
			c.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
			c.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
		}
		late := dialWill(t, g.addr, "delay-w", delayed)
		g.srv.CloseClient("delay-w")
		late.expectDisconnect(t, "kick", mqtt.AdministrativeAction, "")
		dialWill(t, g.addr, "delay-w", func(c *paho.Connect) { delayed(c); c.CleanStart = false })
		w.notPublished(t, "delay-w", "closed_by_admin, its session resumed within its Will Delay Interval")

		drained := dialWill(t, g.addr, "drain-w", nil)
		routed := dialWill(t, g.addr, "rt-w", nil)
		other := mqtttest.StartMochi(t)
		g.apply(t, fmt.Sprintf(`stream_proxy: {tcp: ["127.0.0.1:0"], server_reference: "mqtt-b.example:1883"}
upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes: [{id: all, upstream_id: 1}]
`, other.Addr()))
		g.srv.DrainRemoved(0)
		drained.expectDisconnect(t, "drain", mqtt.UseAnotherServer, "mqtt-b.example:1883")
		routed.expectDisconnect(t, "route removed", mqtt.ServerMoved, "mqtt-b.example:1883")
		w.published(t, "drain-w", "drained")
		w.published(t, "rt-w", "route_removed")
	})

	t.Run("idle_timeout", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, fmt.Sprintf(`stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, nodes: {%q: 1}, timeout: {read: 0.3}}]
stream_routes: [{upstream_id: 1}]
`, home.Addr()))
		dialWill(t, g.addr, "idle-w", nil).expectDisconnect(t, "idle limit", mqtt.KeepAliveTimeout, "")
		w.published(t, "idle-w", "idle_timeout")
	})

	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		srv, addr := startUnmanaged(t, home.Addr())
		c := dialWill(t, addr, "shutdown-w", nil)
		shutdownOutOfTime(t, srv)
		c.expectDisconnect(t, "shutdown", mqtt.ServerShuttingDown, "")
		w.published(t, "shutdown-w", "shutdown")
	})

	t.Run("node_down", func(t *testing.T) {
		t.Parallel()
		// Mosquitto answers MQTT all along; its status endpoint says 503
		// when the test wants the node down.
		var status atomic.Int32
		status.Store(http.StatusOK)
		health := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(int(status.Load())) }))
		t.Cleanup(health.Close)
		g := startGateway(t, fmt.Sprintf(`stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: 1
    nodes: {%q: 1}
    checks:
      active: {type: http, port: %s, http_path: /healthz, healthy: {interval: 0.05, successes: 1}, unhealthy: {interval: 0.05, http_failures: 1}}
      on_marked_down: close
stream_routes: [{id: r, upstream_id: 1}]
`, home.Addr(), port(strings.TrimPrefix(health.URL, "http://"))))
		mqtttest.WaitFor(t, "the node healthy", func() bool { return nodeHealth(g, "1", home.Addr()).Healthy })
		c := dialWill(t, g.addr, "down-w", nil)
		status.Store(http.StatusServiceUnavailable)
		c.expectDisconnect(t, "on_marked_down: close", mqtt.UseAnotherServer, "")
		w.published(t, "down-w", "node_down")
	})

	t.Run("rebalanced", func(t *testing.T) {
		t.Parallel()
		other := mqtttest.StartMochi(t)
		g := startGateway(t, fmt.Sprintf(`stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, type: chash, key: mqtt_client_id, nodes: {%q: 1}}]
stream_routes: [{upstream_id: 1}]
`, home.Addr()))
		// A client id that hashes to the node about to be added.
		id := ""
		for i := 0; id == ""; i++ {
			cand := fmt.Sprintf("rb-w-%d", i)
			if hashedToAddr(t, cand, home.Addr(), other.Addr()) == other.Addr() {
				id = cand
			}
		}
		c := dialWill(t, g.addr, id, nil)
		g.apply(t, fmt.Sprintf(`stream_proxy: {tcp: ["127.0.0.1:0"]}
upstreams: [{id: 1, type: chash, key: mqtt_client_id, nodes: {%q: 1, %q: 1}}]
stream_routes: [{upstream_id: 1}]
`, home.Addr(), other.Addr()))
		c.expectDisconnect(t, "node added", mqtt.UseAnotherServer, "")
		w.published(t, id, "rebalanced")
	})

	t.Run("moved_back", func(t *testing.T) {
		t.Parallel()
		preferred := mqtttest.StartMochi(t)
		addr := preferred.Addr()
		preferred.Close() // down from the start: the client lands on home
		g := startGateway(t, tiersConfig(addr, home.Addr(), "      on_marked_up: move_back\n"))
		mqtttest.WaitFor(t, "the preferred node marked down", func() bool {
			st := nodeHealth(g, "1", addr)
			return st.Addr != "" && !st.Healthy
		})
		c := dialWill(t, g.addr, "mb-w", nil)
		mqtttest.StartMochiAt(t, addr)
		stopFirst(t, g)
		c.expectDisconnect(t, "move_back", mqtt.UseAnotherServer, "")
		w.published(t, "mb-w", "moved_back")
	})
}

// hashedToAddr is the node of addrs that chash, with equal weights,
// picks first for key.
func hashedToAddr(t *testing.T, key string, addrs ...string) string {
	t.Helper()
	var nodes []balance.Node
	for _, a := range addrs {
		nodes = append(nodes, balance.Node{Addr: a, Weight: 1})
	}
	bal, err := balance.New(nodes, balance.Options{Type: balance.TypeConsistentHash})
	if err != nil {
		t.Fatal(err)
	}
	for first := range bal.Order(key) {
		return addrs[first]
	}
	return ""
}
