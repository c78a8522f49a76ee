package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// soakEnv set to a duration ("20m") runs TestSoak that long with 9,000
// clients and the long schedule; unset, it runs the short version (30 s,
// 300 clients) that CI runs.
const soakEnv = "MQGATE_SOAK"

// soakPlan is what TestSoak does, and how often.
type soakPlan struct {
	duration    time.Duration
	clients     int
	publish     time.Duration // each client publishes one QoS 1 message this often
	reload      time.Duration // SIGHUP
	adminChange time.Duration // an Admin API route or node change
	killEvery   time.Duration // a broker is killed...
	downFor     time.Duration // ...and restarted after this
	flood       int           // silent, slow and garbage connections kept open from 127.0.0.2
}

func soakPlanFromEnv(t *testing.T) soakPlan {
	p := soakPlan{duration: 30 * time.Second, clients: 300, publish: time.Second, reload: 10 * time.Second,
		adminChange: 5 * time.Second, killEvery: 12 * time.Second, downFor: 4 * time.Second, flood: 150}
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", soakEnv, v, err)
		}
		p = soakPlan{duration: d, clients: 9000, publish: 10 * time.Second, reload: 10 * time.Second,
			adminChange: 15 * time.Second, killEvery: 3 * time.Minute, downFor: 20 * time.Second, flood: 1500}
	}
	return p
}

// soakClient is one device: it connects through mqgate, subscribes to its
// own topic at QoS 1 and publishes QoS 1 messages to it, each numbered. A
// message counts as delivered when it comes back; until then it is
// pending, and a client whose connection ended sends its pending messages
// again once it is back (at least once, as QoS 1 promises).
type soakClient struct {
	id, topic string

	mu      sync.Mutex
	conn    net.Conn // nil while reconnecting
	next    uint32
	pending map[uint32]bool

	published, delivered, republished, connects atomic.Int64
}

func (c *soakClient) run(addr string, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		conn, err := c.connect(addr)
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+rand.IntN(800)) * time.Millisecond): // reconnect backoff with jitter
			}
			continue
		}
		c.connects.Add(1)
		c.mu.Lock()
		c.conn = conn
		for seq := range c.pending {
			c.republished.Add(1)
			_ = c.send(seq)
		}
		c.mu.Unlock()
		c.read(conn)
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		conn.Close()
	}
}

// connect opens a session: CONNECT, CONNACK, SUBSCRIBE at QoS 1, SUBACK.
func (c *soakClient) connect(addr string) (net.Conn, error) {
	body := binary.BigEndian.AppendUint16(nil, 1) // packet id 1
	body = binary.BigEndian.AppendUint16(body, uint16(len(c.topic)))
	body = append(append(body, c.topic...), 1) // QoS 1
	conn, connack, err := mqtttest.DialConnect(addr, 10*time.Second,
		&mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 120, ClientID: c.id},
		append([]byte{0x82, byte(len(body))}, body...))
	if err != nil {
		return nil, err
	}
	suback := make([]byte, 5)
	if _, err := io.ReadFull(conn, suback); err != nil || string(connack) != "\x20\x02\x00\x00" || suback[0] != 0x90 || suback[4] != 1 {
		conn.Close()
		return nil, fmt.Errorf("%s: CONNACK % x and SUBACK % x: %v", c.id, connack, suback, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// publish sends the next message, when connected. c.mu is not held.
func (c *soakClient) publish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return
	}
	seq := c.next
	c.next++
	c.pending[seq] = true
	c.published.Add(1)
	_ = c.send(seq)
}

// send writes the PUBLISH of seq at QoS 1. c.mu is held.
func (c *soakClient) send(seq uint32) error {
	body := binary.BigEndian.AppendUint16(nil, uint16(len(c.topic)))
	body = append(body, c.topic...)
	body = binary.BigEndian.AppendUint16(body, uint16(seq%65535)+1)
	body = binary.BigEndian.AppendUint32(body, seq)
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(append([]byte{0x32, byte(len(body))}, body...))
	return err
}

// read takes packets until the connection ends: a PUBLISH back is
// delivered and acknowledged.
func (c *soakClient) read(conn net.Conn) {
	r := bufio.NewReader(conn)
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		n, err := r.ReadByte() // every packet here is shorter than 128 bytes
		if err != nil || n >= 0x80 {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		if h&0xf0 != 0x30 || len(b) < 2 {
			continue // PUBACK
		}
		tl := int(binary.BigEndian.Uint16(b))
		rest := b[2+tl:]
		if h&0x06 != 0 { // QoS 1: packet id, then PUBACK it
			pid := rest[:2]
			rest = rest[2:]
			c.mu.Lock()
			_, _ = conn.Write([]byte{0x40, 2, pid[0], pid[1]})
			c.mu.Unlock()
		}
		if len(rest) == 4 {
			seq := binary.BigEndian.Uint32(rest)
			c.mu.Lock()
			if c.pending[seq] {
				delete(c.pending, seq)
				c.delivered.Add(1)
			}
			c.mu.Unlock()
		}
	}
}

func (c *soakClient) pendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// nodesOf maps each connected client id to its broker, from the Admin API.
func nodesOf(t *testing.T, url string) map[string]string {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/connections?limit=0", nil)
	req.Header.Set("X-API-KEY", testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("/connections: %v", err)
	}
	defer resp.Body.Close()
	var v struct {
		List []struct {
			ClientID string `json:"client_id"`
			Node     string `json:"node"`
		} `json:"list"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("/connections: %v", err)
	}
	out := make(map[string]string, len(v.List))
	for _, c := range v.List {
		out[c.ClientID] = c.Node
	}
	return out
}

// TestSoak runs mqgate through what a production day throws at it, at
// once: QoS 1 traffic of many clients over three Mosquitto brokers,
// SIGHUP reloads, Admin API route and node changes, brokers killed and
// restarted, and floods of silent, slow and garbage connections from
// another address. At the end no QoS 1 message is lost, every client is
// back on the broker its id hashes to, descriptors and goroutines are back
// near where they started, and nothing panicked. MQGATE_SOAK=20m for the
// long run.
func TestSoak(t *testing.T) {
	plan := soakPlanFromEnv(t)
	brokers := []*mqtttest.Mosquitto{mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, "")}
	dir := t.TempDir()
	file := filepath.Join(dir, "mqgate.yaml")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mqtttest.FreePort(t)))
	reloads := 0
	// A killed broker refuses connections and is marked down by its first
	// refused probe (tcp_failures: 1); probe timeouts are for hung
	// brokers, which the soak has none of, and kept lax: at 1 s × 2 a busy
	// machine marks a live broker down (as TestBrokerDies saw), and its
	// clients' way home waits for it to be healthy again.
	write := func() {
		yml := fmt.Sprintf(`stream_proxy:
  tcp: [%q]
  connect_timeout: 5s
admin: {listen: "127.0.0.1:0", keys: [{key: %s}]}
reload: {watch: false}
log: {access_log: "off"}
upstreams:
  - id: main
    type: chash
    key: mqtt_client_id
    nodes: {%q: 1, %q: 1, %q: 1}
    checks:
      active:
        type: mqtt
        timeout: 2
        healthy: {interval: 1, successes: 1}
        unhealthy: {interval: 0.5, tcp_failures: 1, timeouts: 10}
      on_marked_up: move_back
      move_back_rate: 1000
stream_routes:
  - {id: reload-%d, mqtt_client_id: {prefix: "never-"}, upstream_id: main}
  - {id: main, upstream_id: main}
`, addr, testAdminKey, brokers[0].Addr(), brokers[1].Addr(), brokers[2].Addr(), reloads)
		if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write()
	p := startMQGate(t, "run", "-c", file)
	url := adminURL(t, p)
	waitListening(t, addr, p)
	pid := p.cmd.Process.Pid
	before := readProcStats(t, pid, url)

	clients := make([]*soakClient, plan.clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		c := &soakClient{id: fmt.Sprintf("soak-%05d", i), pending: make(map[uint32]bool)}
		c.topic = "soak/" + c.id
		clients[i] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.run(addr, stop) }()
	}
	defer func() {
		close(stop)
		for _, c := range clients {
			c.mu.Lock()
			if c.conn != nil {
				c.conn.Close()
			}
			c.mu.Unlock()
		}
		wg.Wait()
	}()
	connecting := time.Now()
	waitUntilFor(t, "every client connected", 5*time.Minute, func() bool { return len(nodesOf(t, url)) == plan.clients })
	home := nodesOf(t, url)
	t.Logf("%d clients connected in %v; %v", plan.clients, time.Since(connecting).Round(time.Millisecond), readProcStats(t, pid, url))
	start := time.Now()

	// Traffic: every client publishes once per period, spread over it.
	pubStop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		tick := time.NewTicker(plan.publish / time.Duration(plan.clients/10+1))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-pubStop:
				return
			case <-tick.C:
			}
			for j := range 10 {
				clients[(i*10+j)%len(clients)].publish()
			}
		}
	}()
	flood := startFloodMix("127.0.0.2", addr, plan.flood, true)
	defer flood.end()

	// The chaos, on one schedule.
	var sighups, adminChanges, kills int
	nextReload, nextAdmin, nextKill := start.Add(plan.reload), start.Add(plan.adminChange), start.Add(plan.killEvery)
	var down *mqtttest.Mosquitto
	var upAt time.Time
	for time.Since(start) < plan.duration {
		now := time.Now()
		switch {
		case now.After(nextReload):
			reloads++
			write()
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
			sighups++
			nextReload = now.Add(plan.reload)
		case now.After(nextAdmin):
			var code int
			var v map[string]any
			b := brokers[adminChanges%len(brokers)]
			if adminChanges%2 == 0 {
				code, v = adminDo(t, "PUT", url+"/apisix/admin/upstreams/aux", fmt.Sprintf(`{"nodes": {%q: 1}}`, b.Addr()))
			} else {
				code, v = adminDo(t, "PUT", url+"/apisix/admin/stream_routes/aux", fmt.Sprintf(`{"mqtt_client_id": {"prefix": "aux-%d-"}, "upstream_id": "aux"}`, adminChanges))
			}
			if code != 200 && code != 201 {
				t.Fatalf("Admin API change %d: %d %v", adminChanges, code, v)
			}
			adminChanges++
			nextAdmin = now.Add(plan.adminChange)
		case down == nil && now.After(nextKill):
			down = brokers[kills%len(brokers)]
			down.Stop() // SIGKILL
			kills++
			upAt = now.Add(plan.downFor)
		case down != nil && now.After(upAt):
			down.Restart(t)
			down = nil
			nextKill = now.Add(plan.killEvery)
		default:
			time.Sleep(100 * time.Millisecond) // the schedule's resolution
		}
	}
	if down != nil {
		down.Restart(t)
	}
	flood.end()
	close(pubStop)
	pubWG.Wait()
	ran := time.Since(start)

	// Everyone back home, every message delivered.
	var wrong int
	t.Cleanup(func() {
		if t.Failed() {
			var health []string
			for _, l := range strings.Split(p.stderr.String(), "\n") {
				if strings.Contains(l, "msg=\"node ") || strings.Contains(l, "msg=\"moving connections") {
					health = append(health, l)
				}
			}
			t.Logf("%d clients away from home at the last look; mqgate's health and moves:\n%s", wrong, strings.Join(health, "\n"))
		}
	})
	waitUntilFor(t, "every client back on the broker its id hashes to", 3*time.Minute, func() bool {
		now := nodesOf(t, url)
		wrong = 0
		for id, node := range home {
			if now[id] != node {
				wrong++
			}
		}
		return wrong == 0
	})
	waitUntilFor(t, "every QoS 1 message delivered", 2*time.Minute, func() bool {
		for _, c := range clients {
			if c.pendingCount() > 0 {
				return false
			}
		}
		return true
	})
	var published, delivered, republished, connects int64
	for _, c := range clients {
		published += c.published.Load()
		delivered += c.delivered.Load()
		republished += c.republished.Load()
		connects += c.connects.Load()
	}
	during := readProcStats(t, pid, url)
	mqtttest.WaitFor(t, "the SIGHUP reloads", func() bool {
		return strings.Count(p.stderr.String(), "msg=reloaded source=sighup") == sighups
	})
	shed := metricValue(t, url, "mqgate_connections_shed_total")
	badConnect := metricValue(t, url, "mqgate_connect_errors_total")

	// The clients leave: the process returns to where it started.
	close(stop)
	stop = make(chan struct{}) // for the deferred close
	for _, c := range clients {
		c.mu.Lock()
		if c.conn != nil {
			c.conn.Close()
		}
		c.mu.Unlock()
	}
	wg.Wait()
	var after procStats
	waitUntilFor(t, "descriptors and goroutines back near the baseline", 2*time.Minute, func() bool {
		after = readProcStats(t, pid, url)
		return after.fds <= before.fds+10 && after.goroutines <= before.goroutines+10
	})
	// The memory of the clients that left is given back at the next calm look.
	waitUntilFor(t, "the memory of the clients that left to be given back", time.Minute, func() bool {
		return strings.Contains(p.stderr.String(), "memory given back after a burst")
	})
	released := readProcStats(t, pid, url)
	t.Logf("soak: %v with %d clients over 3 brokers; %d SIGHUP reloads, %d Admin API changes, %d brokers killed and restarted; flood of %d from 127.0.0.2 (%d dials, %.0f shed, %.0f bad or timed-out CONNECTs)",
		ran.Round(time.Second), plan.clients, sighups, adminChanges, kills, plan.flood, flood.dials.Load(), shed, badConnect)
	t.Logf("QoS 1: %d published, %d delivered, %d lost, %d sent again after a reconnect; %d connects (%d reconnects)",
		published, delivered, published-delivered, republished, connects, connects-int64(plan.clients))
	t.Logf("mqgate before: %v; with the clients at the end: %v; after they left: %v; after memory was given back: %v", before, during, after, released)
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(l, "memory given back") {
			t.Log(l)
		}
	}
	if published != delivered {
		t.Errorf("%d QoS 1 messages lost", published-delivered)
	}
	if strings.Contains(p.stderr.String(), "panic") {
		t.Errorf("panic in mqgate's log:\n%s", tail(p.stderr.String(), 4000))
	}
	p.stop(t)
}

// waitUntilFor polls cond every 100 ms until it holds or limit passes.
func waitUntilFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
