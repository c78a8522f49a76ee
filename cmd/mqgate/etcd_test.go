package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mqgate/mqgate/internal/etcdtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// etcdInstance is one `mqgate run` child of a fleet sharing one etcd.
type etcdInstance struct {
	name, file, mqtt, admin string
	p                       *process
}

func startEtcdInstance(t *testing.T, e *etcdtest.Etcd, name string) *etcdInstance {
	t.Helper()
	return startEtcdRole(t, e, name, "traditional")
}

func startEtcdRole(t *testing.T, e *etcdtest.Etcd, name, role string) *etcdInstance {
	t.Helper()
	return startEtcdPrefix(t, e, name, role, "/apisix")
}

// startEtcdPrefix starts an instance reading etcd under prefix.
func startEtcdPrefix(t *testing.T, e *etcdtest.Etcd, name, role, prefix string) *etcdInstance {
	t.Helper()
	dir := t.TempDir()
	in := &etcdInstance{name: name, file: filepath.Join(dir, "config.yaml"),
		mqtt: net.JoinHostPort("127.0.0.1", strconv.Itoa(mqtttest.FreePort(t)))}
	yml := fmt.Sprintf(`apisix:
  stream_proxy:
    tcp: [%q]
deployment:
  role: %s
  role_%s: {config_provider: etcd}
  instance_name: %s
  etcd:
    host: [%q]
    prefix: %s
    timeout: 2
admin: {listen: "127.0.0.1:0", keys: [{key: %s}]}
log: {access_log: "off"}
`, in.mqtt, role, role, name, e.Endpoint(), prefix, testAdminKey)
	if err := os.WriteFile(in.file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	in.start(t, role != "control_plane")
	return in
}

func (in *etcdInstance) start(t *testing.T, listens bool) {
	t.Helper()
	in.p = startMQGate(t, "run", "-c", in.file)
	in.admin = adminURL(t, in.p)
	if listens {
		waitListening(t, in.mqtt, in.p)
	}
}

// tryConnect reports whether id gets an accepting CONNACK through addr.
// Most callers need it to (a false fails the test), so the answer may take
// 20 s: a busy machine is no reason to fail. A refusal, or no listener,
// answers at once.
func tryConnect(addr, id string) bool {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
		return false
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		return false
	}
	_, _ = conn.Write(mqtt.AppendDisconnect(nil, mqtt.Level311, 0, ""))
	return true
}

func statusJSON(t *testing.T, url string) map[string]any {
	t.Helper()
	code, v := adminDo(t, "GET", url+"/status.json", "")
	if code != 200 {
		t.Fatalf("status.json: %d %v", code, v)
	}
	return v
}

// hasRoute reports whether the instance's running configuration has the route.
func hasRoute(t *testing.T, url, id string) bool {
	t.Helper()
	routes, _ := statusJSON(t, url)["routes"].([]any)
	for _, r := range routes {
		if r.(map[string]any)["id"] == id {
			return true
		}
	}
	return false
}

func etcdConnected(v map[string]any) bool {
	e, _ := v["etcd"].(map[string]any)
	c, _ := e["connection"].(map[string]any)
	return c["connected"] == true
}

// TestEtcdFleet runs three mqgate instances on one real etcd in front of
// three Mosquitto brokers: a write through one Admin API serves on all, a
// client id reaches the same broker through each, an invalid object is
// refused by each with its key while the others apply, and with etcd
// stopped they serve, accept clients, answer writes 503 and restart from
// their cache; with etcd back they catch up.
func TestEtcdFleet(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	brokers := []mqtttest.Broker{mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, ""), mqtttest.StartMosquitto(t, "")}
	fleet := []*etcdInstance{startEtcdInstance(t, e, "a"), startEtcdInstance(t, e, "b"), startEtcdInstance(t, e, "c")}
	a := fleet[0]

	// One write through A's Admin API serves on all three.
	nodes := fmt.Sprintf(`{%q: 1, %q: 1, %q: 1}`, brokers[0].Addr(), brokers[1].Addr(), brokers[2].Addr())
	if code, v := adminDo(t, "PUT", a.admin+"/apisix/admin/upstreams/1", `{"type": "chash", "key": "mqtt_client_id", "nodes": `+nodes+`}`); code != 201 {
		t.Fatalf("PUT upstream: %d %v", code, v)
	}
	if code, v := adminDo(t, "PUT", a.admin+"/apisix/admin/stream_routes/1", `{"upstream_id": 1, "mqtt_client_id": {"prefix": "dev-"}}`); code != 201 {
		t.Fatalf("PUT route: %d %v", code, v)
	}
	// Each instance is tried at once, in parallel, from the write's answer.
	answered := time.Now()
	took := make([]time.Duration, len(fleet))
	var wg sync.WaitGroup
	for i, in := range fleet {
		wg.Go(func() {
			for deadline := answered.Add(10 * time.Second); time.Now().Before(deadline); {
				if tryConnect(in.mqtt, "dev-probe-"+in.name) {
					took[i] = time.Since(answered)
					return
				}
				time.Sleep(time.Millisecond) // polling, bounded by the deadline
			}
		})
	}
	wg.Wait()
	for i, in := range fleet {
		if took[i] == 0 {
			t.Fatalf("instance %s does not route 10 s after the write", in.name)
		}
		t.Logf("propagation: write answered -> first CONNACK through %s: %v", in.name, took[i].Round(100*time.Microsecond))
	}
	// What APISIX finds in etcd: its layout, its JSON.
	got, err := cli.Get(context.Background(), "/apisix/stream_routes/1")
	if err != nil || len(got.Kvs) != 1 || !strings.Contains(string(got.Kvs[0].Value), `"upstream_id":1`) || !strings.Contains(string(got.Kvs[0].Value), `"create_time"`) {
		t.Errorf("etcd holds %v (%v)", got, err)
	}

	// 300 client ids through A, then B, then C: each id reaches one broker.
	ids := make([]string, 300)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%03d", i)
	}
	for _, in := range fleet {
		for _, id := range ids {
			if !tryConnect(in.mqtt, id) {
				t.Fatalf("%s through %s: not accepted", id, in.name)
			}
		}
	}
	mqtttest.WaitFor(t, "the brokers to log 900 connects", mqtttest.SeenTotal(brokers, 900+3))
	owners := mqtttest.Owners(t, brokers, ids, 3)
	per := make([]int, len(brokers))
	for _, id := range ids {
		per[owners[id]]++
	}
	t.Logf("300 ids x 3 instances: per broker %v, every id on one broker", per)

	// An invalid object straight into etcd: refused by each instance with
	// its key; a valid route written beside it applies.
	if _, err := cli.Put(context.Background(), "/apisix/upstreams/bad", `{"nodes": {"127.0.0.1:70000": 1}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), "/apisix/stream_routes/2", `{"mqtt_client_id": {"prefix": "two-"}, "upstream": {"nodes": {`+fmt.Sprintf("%q: 1", brokers[1].Addr())+`}}}`); err != nil {
		t.Fatal(err)
	}
	for _, in := range fleet {
		mqtttest.WaitFor(t, in.name+" to refuse the bad upstream", func() bool {
			return strings.Contains(in.p.stderr.String(), `msg="etcd object refused" key=/apisix/upstreams/bad`)
		})
		mqtttest.WaitFor(t, in.name+" to apply route 2", func() bool { return hasRoute(t, in.admin, "2") })
		if !tryConnect(in.mqtt, "two-"+in.name) {
			t.Errorf("route 2 does not serve through %s", in.name)
		}
		mqtttest.WaitFor(t, "route 2's broker to get two-"+in.name, func() bool { return slices.Contains(brokers[1].Seen(), "two-"+in.name) })
	}
	refused := statusJSON(t, a.admin)["etcd"].(map[string]any)["config"].(map[string]any)["refused"].([]any)
	if len(refused) != 1 || !strings.Contains(refused[0].(map[string]any)["reason"].(string), "nodes") {
		t.Errorf("refused in /status.json: %v", refused)
	}

	// The fleet, from any instance, and the metrics.
	mqtttest.WaitFor(t, "the fleet in sync", func() bool {
		f, _ := statusJSON(t, fleet[1].admin)["fleet"].(map[string]any)
		insts, _ := f["instances"].([]any)
		return len(insts) == 3 && f["in_sync"] == true
	})
	metricsText := adminText(t, a.admin+"/metrics")
	for _, want := range []string{"mqgate_etcd_connected 1", "mqgate_etcd_refused_objects 1", "mqgate_etcd_fleet_instances 3", "mqgate_etcd_fleet_in_sync 1"} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A kick sent to A reaches the client connected through C.
	held, ack := mqtttest.Connect(t, fleet[2].mqtt, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "dev-kicked"})
	if ack == nil || ack[3] != 0 {
		t.Fatalf("dev-kicked: CONNACK % x", ack)
	}
	code, v := adminDo(t, "DELETE", a.admin+"/connections/dev-kicked", "")
	insts, _ := v["instances"].(map[string]any)
	onC, _ := insts["c"].(map[string]any)
	if code != 200 || v["closed"] != 1.0 || onC["closed"] != 1.0 {
		t.Errorf("kick through A: %d %v", code, v)
	}
	if mqtttest.ReadPacket(t, held) != nil {
		t.Errorf("the kicked connection got a packet instead of its end")
	}

	// etcd stopped: every instance serves and takes new clients; writes 503.
	e.Stop()
	for _, in := range fleet {
		mqtttest.WaitFor(t, in.name+" to see etcd down", func() bool { return !etcdConnected(statusJSON(t, in.admin)) })
		if !tryConnect(in.mqtt, "dev-while-down-"+in.name) {
			t.Errorf("%s does not accept clients while etcd is down", in.name)
		}
	}
	start := time.Now()
	code, v = adminDo(t, "PUT", fleet[1].admin+"/apisix/admin/stream_routes/3", `{"upstream_id": 1}`)
	if code != 503 || !strings.Contains(fmt.Sprint(v["error_msg"]), "etcd is unreachable") {
		t.Errorf("write while etcd is down: %d %v", code, v)
	}
	t.Logf("write while etcd is down answered %d in %v", code, time.Since(start).Round(time.Millisecond))
	if resp, err := http.Get(fleet[2].admin + "/status"); err == nil {
		resp.Body.Close()
	}

	// An instance restarted while etcd is down starts from its cache.
	c := fleet[2]
	c.p.stop(t)
	c.start(t, true)
	if !strings.Contains(c.p.stderr.String(), "etcd unreachable at start: serving the cached configuration") {
		t.Errorf("restart while etcd is down does not say it serves the cache:\n%s", c.p.stderr.String())
	}
	if !hasRoute(t, c.admin, "2") || !tryConnect(c.mqtt, "two-after-restart") {
		t.Fatalf("the restarted instance does not serve its cached routes")
	}
	mqtttest.WaitFor(t, "route 2's broker to get two-after-restart", func() bool { return slices.Contains(brokers[1].Seen(), "two-after-restart") })

	// etcd back, with a change made right away: all catch up.
	e.Restart()
	if _, err := cli.Put(context.Background(), "/apisix/stream_routes/4", `{"mqtt_client_id": {"prefix": "four-"}, "upstream_id": 1}`); err != nil {
		t.Fatal(err)
	}
	for _, in := range fleet {
		mqtttest.WaitFor(t, in.name+" to catch up", func() bool { return hasRoute(t, in.admin, "4") })
		mqtttest.WaitFor(t, in.name+" to see etcd again", func() bool { return etcdConnected(statusJSON(t, in.admin)) })
	}
	if code, v := adminDo(t, "DELETE", a.admin+"/apisix/admin/stream_routes/4", ""); code != 200 {
		t.Errorf("DELETE with etcd back: %d %v", code, v)
	}
	for _, in := range fleet {
		in.p.stop(t)
	}
}

// TestEtcdImport: `mqgate etcd-import` puts a file's objects into etcd as
// APISIX's layout, an instance reading etcd serves them, and `mqgate check`
// validates the deployment block.
func TestEtcdImport(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	broker := mqtttest.StartMochi(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "apisix.yaml")
	yml := fmt.Sprintf(`stream_routes:
  - id: 1
    upstream_id: 1
    mqtt_client_id: {prefix: "imp-"}
upstreams:
  - id: 1
    type: chash
    key: mqtt_client_id
    nodes: {%q: 1}
`, broker.Addr())
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"etcd-import", "-c", file, "--etcd", e.Endpoint()}, &stdout, &stderr); code != 0 {
		t.Fatalf("etcd-import: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "imported 1 stream_routes, 1 upstreams, 0 ssls, 0 routes into "+e.Endpoint()+" under /apisix") {
		t.Errorf("etcd-import said %q", stdout.String())
	}
	got, err := e.Client(t).Get(context.Background(), "/apisix/upstreams/1")
	if err != nil || len(got.Kvs) != 1 || !strings.Contains(string(got.Kvs[0].Value), `"type":"chash"`) {
		t.Fatalf("etcd holds %v (%v)", got, err)
	}

	in := startEtcdInstance(t, e, "imported")
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"check", "-c", in.file}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "traditional reading etcd "+e.Endpoint()+" under /apisix") {
		t.Errorf("check: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if !tryConnect(in.mqtt, "imp-1") {
		t.Fatal("the imported route does not serve")
	}
	mqtttest.WaitFor(t, "the broker to get imp-1", func() bool { return slices.Contains(broker.Seen(), "imp-1") })
	in.p.stop(t)
}

func adminText(t *testing.T, url string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-API-KEY", testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestEtcdRoles: a control_plane opens no listener and writes to etcd; a
// data_plane serves what it wrote and refuses Admin API writes.
func TestEtcdRoles(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	broker := mqtttest.StartMochi(t)
	cp := startEtcdRole(t, e, "cp", "control_plane")
	dp := startEtcdRole(t, e, "dp", "data_plane")
	if code, v := adminDo(t, "PUT", cp.admin+"/apisix/admin/stream_routes/1", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, broker.Addr())); code != 201 {
		t.Fatalf("PUT through the control plane: %d %v", code, v)
	}
	mqtttest.WaitFor(t, "the data plane to serve the route", func() bool { return tryConnect(dp.mqtt, "dp-1") })
	if tryConnect(cp.mqtt, "cp-1") {
		t.Error("the control plane serves traffic")
	}
	code, v := adminDo(t, "PUT", dp.admin+"/apisix/admin/stream_routes/2", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, broker.Addr()))
	if code != 403 || !strings.Contains(fmt.Sprint(v["error_msg"]), "data_plane") {
		t.Errorf("PUT through the data plane: %d %v", code, v)
	}
	if !strings.Contains(cp.p.stderr.String(), "not opened: a control_plane serves no traffic") {
		t.Errorf("the control plane does not warn about its listener:\n%s", cp.p.stderr.String())
	}
	cp.p.stop(t)
	dp.p.stop(t)
}

// TestEtcdRefusesOneObjectAcrossObjects: under a prefix of its own, a
// stream route written straight into etcd that names an HTTP upstream (a
// problem the decoder finds across objects, with no field path) is refused
// alone with its key; the route beside it serves, and the Admin API names
// the objects by their keys under that prefix.
func TestEtcdRefusesOneObjectAcrossObjects(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	broker := mqtttest.StartMochi(t)
	in := startEtcdPrefix(t, e, "solo", "traditional", "/mqtt")
	// One transaction, so that the watch brings the three objects in one
	// revision: written one by one, a snapshot could hold the route
	// without its upstream (refused for that, with the same key) and the
	// upstream not yet applied when the list below is read.
	if _, err := e.Client(t).Txn(context.Background()).Then(
		// https: scheme http on a stream route's upstream is what APISIX
		// stores on every upstream, and is ignored; https is refused.
		clientv3.OpPut("/mqtt/upstreams/web", `{"scheme": "https", "nodes": {"127.0.0.1:8443": 1}}`),
		clientv3.OpPut("/mqtt/stream_routes/web", `{"mqtt_client_id": {"prefix": "web-"}, "upstream_id": "web"}`),
		clientv3.OpPut("/mqtt/stream_routes/1", fmt.Sprintf(`{"upstream": {"nodes": {%q: 1}}}`, broker.Addr())),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, "the refusal of the route naming an https upstream", func() bool {
		return strings.Contains(in.p.stderr.String(), `msg="etcd object refused" key=/mqtt/stream_routes/web`)
	})
	if log := in.p.stderr.String(); !strings.Contains(log, `upstream \"web\" has scheme https`) {
		t.Errorf("the route is refused for another reason than its https upstream:\n%s", log)
	}
	mqtttest.WaitFor(t, "route 1 to apply", func() bool { return hasRoute(t, in.admin, "1") })
	if !tryConnect(in.mqtt, "solo-1") {
		t.Error("route 1 does not serve")
	}
	if strings.Contains(in.p.stderr.String(), "etcd snapshot refused") {
		t.Errorf("the whole snapshot was refused:\n%s", in.p.stderr.String())
	}
	code, v := adminDo(t, "GET", in.admin+"/apisix/admin/upstreams", "")
	list, _ := v["list"].([]any)
	if code != 200 || len(list) != 1 || list[0].(map[string]any)["key"] != "/mqtt/upstreams/web" {
		t.Errorf("GET upstreams: %d %v, want the one key /mqtt/upstreams/web", code, v)
	}
	in.p.stop(t)
}
