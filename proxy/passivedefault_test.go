package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/mqtttest"
)

// dialFailures counts the process log's "dial failed" lines of upstream up.
func dialFailures(logs *mqtttest.LogBuffer, up string) int {
	n := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="dial failed"`) && strings.Contains(l, "upstream="+up+" ") {
			n++
		}
	}
	return n
}

// TestDefaultPassive: an upstream without checks counts failed dials as
// NGINX does by default (max_fails=1 fail_timeout=10s): a dead node of a
// round-robin pair is dialled once, then skipped, while every client
// connects through the live one. `checks: {passive: false}` turns that
// off (the dead node is dialled at every turn); a one-node upstream is never
// taken out; and when every node is out, the next client dials them all
// again instead of being refused unheard.
func TestDefaultPassive(t *testing.T) {
	t.Parallel()
	live := mqtttest.StartMochi(t)
	dead, dead2 := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	logs := &mqtttest.LogBuffer{}
	g := startGatewayLog(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - {id: def, nodes: {%[1]q: 1, %[2]q: 1}}
  - {id: off, nodes: {%[1]q: 1, %[2]q: 1}, checks: {passive: false}}
  - {id: one, nodes: {%[2]q: 1}}
  - {id: none, nodes: {%[2]q: 1, %[3]q: 1}}
stream_routes:
  - {id: def, upstream_id: def, mqtt_client_id: {prefix: def-}}
  - {id: off, upstream_id: off, mqtt_client_id: {prefix: off-}}
  - {id: one, upstream_id: one, mqtt_client_id: {prefix: one-}}
  - {id: none, upstream_id: none, mqtt_client_id: {prefix: none-}}
`, live.Addr(), dead, dead2), logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process log:\n%s", logs)
		}
	})
	connect := func(id string) error {
		d := &device{id: id}
		c, err := d.connect(g.addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := range 10 {
		for _, up := range []string{"def", "off"} {
			if err := connect(fmt.Sprintf("%s-%d", up, i)); err != nil {
				t.Fatalf("%s client %d: %v", up, i, err)
			}
		}
	}
	// Round robin alternates: without counting, 5 of 10 clients dial the
	// dead node first. With it, one does (two if 10 s passed meanwhile,
	// on a very slow machine: the node is on trial then).
	if n := dialFailures(logs, "def"); n < 1 || n > 2 {
		t.Errorf("default: the dead node was dialled %d times for 10 clients, want 1", n)
	}
	if s := nodeHealth(g, "def", dead); !s.OnTrial && (s.Healthy || !strings.Contains(s.Reason, "passive: 1 dial failures within 10s")) {
		t.Errorf("default: dead node %+v, want out by passive counting", s)
	}
	if s := nodeHealth(g, "def", live.Addr()); !s.Healthy {
		t.Errorf("default: live node %+v", s)
	}
	// The stats (status.json's nodes) say which counting applies: the
	// default's, none for passive: false or a single node.
	for _, n := range g.srv.Stats().Nodes {
		want := ""
		if n.Upstream == "def" || n.Upstream == "none" {
			want = "tcp_failures=1 timeouts=1 fail_timeout=10s (default)"
		}
		if n.Passive != want {
			t.Errorf("%s %s: passive %q, want %q", n.Upstream, n.Addr, n.Passive, want)
		}
		if n.Addr == live.Addr() && n.PassiveFailures+n.PassiveTimeouts != 0 {
			t.Errorf("%s %s: %d dial failures and %d timeouts counted, want none", n.Upstream, n.Addr, n.PassiveFailures, n.PassiveTimeouts)
		}
	}
	if n := dialFailures(logs, "off"); n != 5 {
		t.Errorf("passive: false: the dead node was dialled %d times for 10 clients, want 5", n)
	}
	if s := nodeHealth(g, "off", dead); !s.Healthy {
		t.Errorf("passive: false: dead node %+v, want never marked", s)
	}

	// One node: dialled by every client, never marked.
	for i := range 3 {
		if err := connect(fmt.Sprintf("one-%d", i)); err == nil {
			t.Fatal("a client connected through a dead node")
		}
	}
	if n := dialFailures(logs, "one"); n != 3 {
		t.Errorf("one node: dialled %d times for 3 clients, want 3", n)
	}
	if s := nodeHealth(g, "one", dead); !s.Healthy {
		t.Errorf("one node: %+v, want never marked", s)
	}

	// Every node dead: the first client takes both out; the second finds
	// none left, and dials both again rather than being refused unheard.
	for i := range 2 {
		if err := connect(fmt.Sprintf("none-%d", i)); err == nil || !strings.Contains(err.Error(), "refused: 20 02 00 03") {
			t.Fatalf("none client %d: %v, want the 3.1.1 refusal 0x03", i, err)
		}
	}
	if n := dialFailures(logs, "none"); n != 4 {
		t.Errorf("every node dead: %d dials for 2 clients, want 4 (both nodes, twice)", n)
	}
}
