package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

const testAdminKey = "2c0f6a5b8e1d4f3a9b7c6d5e4f3a2b1c"

var adminListening = regexp.MustCompile(`msg="admin API listening" addr=(\S+)`)

// adminURL waits for p to log its Admin API address.
func adminURL(t *testing.T, p *process) string {
	t.Helper()
	var addr string
	mqtttest.WaitFor(t, "the Admin API to listen", func() bool {
		select {
		case <-p.done:
			t.Fatalf("mqgate exited: %v; stderr:\n%s", p.err, p.stderr.String())
		default:
		}
		m := adminListening.FindStringSubmatch(p.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

func adminDo(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-KEY", testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// TestAdminStateSurvivesKill9: what the Admin API answered 200/201 for is
// there after kill -9 right after the answer, and routes clients.
func TestAdminStateSurvivesKill9(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mqgate.yaml")
	port := mqtttest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	yml := fmt.Sprintf("stream_proxy: {tcp: [%q]}\nadmin: {listen: \"127.0.0.1:0\", keys: [{key: %s}]}\n", addr, testAdminKey)
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startMQGate(t, "run", "-c", file)
	url := adminURL(t, p)
	if code, v := adminDo(t, "PUT", url+"/apisix/admin/upstreams/1", fmt.Sprintf(`{"nodes": {%q: 1}}`, broker.Addr())); code != 201 {
		t.Fatalf("PUT upstream: %d %v", code, v)
	}
	for i := range 5 {
		if code, v := adminDo(t, "PUT", fmt.Sprintf("%s/apisix/admin/stream_routes/%d", url, i), fmt.Sprintf(`{"upstream_id": 1, "mqtt_client_id": {"prefix": "r%d-"}}`, i)); code != 201 {
			t.Fatalf("PUT route %d: %d %v", i, code, v)
		}
	}
	_ = p.cmd.Process.Kill() // SIGKILL right after the last answer
	<-p.done

	p2 := startMQGate(t, "run", "-c", file)
	url = adminURL(t, p2)
	code, v := adminDo(t, "GET", url+"/apisix/admin/stream_routes", "")
	if code != 200 || v["total"].(float64) != 5 {
		t.Fatalf("after kill -9: %d %v", code, v)
	}
	mqtttest.ConnectOK(t, addr, "r4-after-kill", mqtt.Level5)
	mqtttest.WaitFor(t, "the broker to get the client", func() bool { return slices.Contains(broker.Seen(), "r4-after-kill") })
	p2.stop(t)
}

// TestRefusesAPISIXExampleKey: mqgate does not start its Admin API with the
// key every APISIX document prints.
func TestRefusesAPISIXExampleKey(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "mqgate.yaml")
	yml := "stream_proxy: {tcp: [\"127.0.0.1:0\"]}\nadmin: {keys: [{key: edd1c9f034335f136f87ad84b625c8f1}]}\n"
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startMQGate(t, "run", "-c", file)
	<-p.done
	if p.err == nil || !strings.Contains(p.stderr.String(), "admin.keys[0]: this is APISIX's documented example key") {
		t.Errorf("exit %v; stderr:\n%s", p.err, p.stderr.String())
	}
}

// mqttClient is one raw MQTT 3.1.1 connection subscribed to its own topic;
// a reader counts what arrives and notes if the connection ends.
type mqttClient struct {
	conn     net.Conn
	topic    string
	received atomic.Int64
	subacked atomic.Bool
	dropped  atomic.Bool
}

func dialClient(addr, id string) (*mqttClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &mqttClient{conn: conn, topic: "zd/" + id}
	if _, err := conn.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: id})); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		return nil, fmt.Errorf("%s: CONNACK % x: %v", id, ack, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	// SUBSCRIBE, packet id 1, the client's own topic at QoS 0.
	var sub []byte
	sub = append(sub, 0, 1, byte(len(c.topic)>>8), byte(len(c.topic)))
	sub = append(sub, c.topic...)
	sub = append(sub, 0)
	if _, err := conn.Write(append([]byte{0x82, byte(len(sub))}, sub...)); err != nil {
		return nil, err
	}
	go c.read(r)
	return c, nil
}

func (c *mqttClient) read(r *bufio.Reader) {
	for {
		h, err := r.ReadByte()
		if err != nil {
			c.dropped.Store(true)
			return
		}
		n, err := r.ReadByte() // every packet here is shorter than 128 bytes
		if err != nil || n >= 0x80 {
			c.dropped.Store(true)
			return
		}
		if _, err := r.Discard(int(n)); err != nil {
			c.dropped.Store(true)
			return
		}
		switch h & 0xf0 {
		case 0x90:
			c.subacked.Store(true)
		case 0x30:
			c.received.Add(1)
		}
	}
}

func (c *mqttClient) publish(payload string) error {
	body := append([]byte{byte(len(c.topic) >> 8), byte(len(c.topic))}, c.topic...)
	body = append(body, payload...)
	_, err := c.conn.Write(append([]byte{0x30, byte(len(body))}, body...))
	return err
}

// fleet is many connected clients.
type fleet struct {
	clients []*mqttClient
	sent    int64
}

func connectFleet(t *testing.T, addr, prefix string, n int) *fleet {
	t.Helper()
	f := &fleet{clients: make([]*mqttClient, n)}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := dialClient(addr, fmt.Sprintf("%s%04d", prefix, i))
				if err != nil {
					errs <- err
					return
				}
				f.clients[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	mqtttest.WaitFor(t, "every SUBACK", func() bool {
		return !slices.ContainsFunc(f.clients, func(c *mqttClient) bool { return !c.subacked.Load() })
	})
	return f
}

func (f *fleet) close() {
	for _, c := range f.clients {
		if c != nil {
			c.conn.Close()
		}
	}
}

// round has every client publish one message to its own topic and waits
// until each has received it back through the proxy and its broker.
func (f *fleet) round(t *testing.T, name string) {
	t.Helper()
	for _, c := range f.clients {
		if err := c.publish(name); err != nil {
			t.Fatalf("%s: publish: %v", name, err)
		}
	}
	f.sent += int64(len(f.clients))
	mqtttest.WaitFor(t, name+": every message back", func() bool {
		return f.received() == f.sent || f.drops() > 0
	})
	if d := f.drops(); d > 0 {
		t.Fatalf("%s: %d connections dropped", name, d)
	}
}

func (f *fleet) received() int64 {
	var n int64
	for _, c := range f.clients {
		n += c.received.Load()
	}
	return n
}

func (f *fleet) drops() int {
	n := 0
	for _, c := range f.clients {
		if c.dropped.Load() {
			n++
		}
	}
	return n
}

// TestZeroDrop keeps 1,000 connections publishing and receiving through a
// reload, a route change by the Admin API, and a binary upgrade (a second
// process takes the listeners and the Admin API while the first drains):
// none is dropped.
func TestZeroDrop(t *testing.T) {
	t.Parallel()
	const n = 1000
	a, b := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mqgate.yaml")
	port, adminPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	write := func(extra string) {
		yml := fmt.Sprintf(`stream_proxy: {tcp: [%q]}
log: {access_log: "off"}
admin: {listen: "127.0.0.1:%d", keys: [{key: %s}]}
reload: {watch: false}
upstreams:
  - {id: a, nodes: {%q: 1}}
  - {id: b, nodes: {%q: 1}}
stream_routes:
%s  - {id: main, upstream_id: a}
`, addr, adminPort, testAdminKey, a.Addr(), b.Addr(), extra)
		if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	old := startMQGate(t, "run", "-c", file, "--drain-timeout", "5m")
	url := adminURL(t, old)
	waitListening(t, addr, old)

	f := connectFleet(t, addr, "dev-", n)
	f.round(t, "connected")

	// 1. A reload that adds a route.
	write("  - {id: extra, mqtt_client_id: {prefix: extra-}, upstream_id: b}\n")
	_ = old.cmd.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, "the reload", func() bool { return strings.Contains(old.stderr.String(), "msg=reloaded source=sighup") })
	mqtttest.ConnectOK(t, addr, "extra-1", mqtt.Level311)
	mqtttest.WaitFor(t, "extra-1 at broker b", func() bool { return slices.Contains(b.Seen(), "extra-1") })
	f.round(t, "after-reload")

	// 2. The Admin API moves the main route to broker b: new clients go
	// there, live ones stay where they are.
	if code, v := adminDo(t, "PUT", url+"/apisix/admin/stream_routes/main", `{"upstream_id": "b"}`); code != 201 {
		t.Fatalf("PUT main: %d %v", code, v)
	}
	mqtttest.ConnectOK(t, addr, "new-after-route-change", mqtt.Level311)
	mqtttest.WaitFor(t, "the new client at broker b", func() bool { return slices.Contains(b.Seen(), "new-after-route-change") })
	f.round(t, "after-route-change")

	// 3. Binary upgrade: the new process binds the same port (SO_REUSEPORT)
	// and waits for the Admin API address; SIGTERM makes the old one close
	// its listeners and drain, keeping its live connections.
	next := startMQGate(t, "run", "-c", file, "--drain-timeout", "5m")
	waitListening(t, addr, next)
	_ = old.cmd.Process.Signal(syscall.SIGTERM)
	mqtttest.WaitFor(t, "the old process to stop listening", func() bool {
		return strings.Contains(old.stderr.String(), "draining connections")
	})
	newURL := adminURL(t, next)
	if newURL != url {
		t.Fatalf("the new process took the Admin API at %s, want %s", newURL, url)
	}
	f.round(t, "after-upgrade")
	late := connectFleet(t, addr, "late-", 50)
	late.round(t, "late")
	code, st := adminDo(t, "GET", url+"/status.json", "")
	if code != 200 || st["active"].(float64) != 50 {
		t.Errorf("the new process serves the 50 new clients: %d %v", code, st)
	}
	mqtttest.WaitFor(t, "the late clients at broker b (the admin route, read from the state file)", func() bool {
		return slices.Contains(b.Seen(), "late-0049")
	})

	t.Logf("zero-drop: %d connections before, %d after (dropped %d); %d messages sent, %d received; 50 new connections served by the new process",
		n, n-f.drops(), f.drops(), f.sent, f.received())
	f.close()
	select {
	case <-old.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the old process did not exit once its connections ended; stderr:\n%s", old.stderr.String())
	}
	if old.err != nil {
		t.Errorf("old process: %v", old.err)
	}
	late.close()
	next.stop(t)
}

// TestDrainSpread: with --drain-spread, SIGTERM closes the live connections
// (instead of waiting the whole drain timeout for them) and mqgate exits.
func TestDrainSpread(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	port := mqtttest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	file := filepath.Join(t.TempDir(), "mqgate.yaml")
	yml := fmt.Sprintf("stream_proxy: {tcp: [%q]}\nstream_routes: [{upstream: {nodes: {%q: 1}}}]\n", addr, broker.Addr())
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startMQGate(t, "run", "-c", file, "--drain-timeout", "10m", "--drain-spread", "100ms")
	waitListening(t, addr, p)
	f := connectFleet(t, addr, "spread-", 5)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	mqtttest.WaitFor(t, "every client closed", func() bool { return f.drops() == 5 })
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("mqgate did not exit; stderr:\n%s", p.stderr.String())
	}
	if p.err != nil || strings.Count(p.stdout.String(), `"end":"shutdown"`) != 5 {
		t.Errorf("exit %v; access log:\n%s", p.err, p.stdout.String())
	}
}
