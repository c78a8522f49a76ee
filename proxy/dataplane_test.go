package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// dataPathEnv, when set, makes every gateway of the suite use that
// stream_proxy.data_path.
const dataPathEnv = "MQGATE_TEST_DATA_PATH"

var dataPaths = []string{config.DataPathEpoll, config.DataPathGoroutines}

// TestSuiteOnGoroutines runs this package's tests again, in a child process,
// with the goroutines data path (the default, epoll, runs in this one).
func TestSuiteOnGoroutines(t *testing.T) {
	if os.Getenv(dataPathEnv) != "" {
		t.Skip("already the child run")
	}
	t.Parallel()
	args := []string{"-test.count=1", "-test.skip=^TestSuiteOnGoroutines$"}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		args = append(args, "-test.run="+f.Value.String())
	}
	// The child has what is left of this run's -timeout, less a margin to
	// report in: a fixed 3 minutes was a wall a loaded machine could hit
	// (the package took 98 s of it at load 13), and a child past its own
	// -timeout panics with every goroutine's stack, which says why.
	if deadline, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+(time.Until(deadline)-30*time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), dataPathEnv+"="+config.DataPathGoroutines)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("proxy tests with data_path goroutines: %v\n%s", err, out)
	}
}

// gatewayOn starts a gateway over broker with the given data path (whatever
// the suite's) and an upstream read timeout (0 for none).
func gatewayOn(t *testing.T, dataPath string, broker mqtttest.Broker, read time.Duration) *gateway {
	t.Helper()
	yml := fmt.Sprintf(`stream_proxy:
  tcp: [LISTEN]
  data_path: %s
upstreams:
  - id: 1
    nodes: {%q: 1}
    timeout: {read: %g}
stream_routes:
  - upstream_id: 1
`, dataPath, broker.Addr(), read.Seconds())
	return startGateway(t, yml)
}

// accessRecord waits for the access-log record of clientID and returns it.
func (g *gateway) accessRecord(t *testing.T, clientID string) map[string]any {
	t.Helper()
	var rec map[string]any
	mqtttest.WaitFor(t, "the access record of "+clientID, func() bool {
		for _, l := range g.access.Lines() {
			var r map[string]any
			if json.Unmarshal([]byte(l), &r) == nil && r["client_id"] == clientID {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

// TestAccessRecordOfProxiedConn checks that a connection's record counts its
// bytes both ways and says which side ended it, on both data paths.
func TestAccessRecordOfProxiedConn(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	for _, dp := range dataPaths {
		t.Run(dp, func(t *testing.T) {
			g := gatewayOn(t, dp, broker, 0)
			connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "rec-" + dp})
			conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "rec-" + dp})
			if len(ack) != 4 || ack[0] != 0x20 {
				t.Fatalf("CONNACK = % x", ack)
			}
			for range 3 {
				if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil { // PINGREQ
					t.Fatal(err)
				}
				if p := mqtttest.ReadPacket(t, conn); len(p) != 2 || p[0] != 0xd0 {
					t.Fatalf("PINGRESP = % x", p)
				}
			}
			// DISCONNECT: the broker closes, the client then closes too.
			if _, err := conn.Write([]byte{0xe0, 0x00}); err != nil {
				t.Fatal(err)
			}
			if p := mqtttest.ReadPacket(t, conn); p != nil {
				t.Fatalf("got % x after DISCONNECT, want EOF", p)
			}
			conn.Close()
			rec := g.accessRecord(t, "rec-"+dp)
			wantUp, wantDown := float64(len(connect)+3*2+2), float64(4+3*2)
			if rec["bytes_up"] != wantUp || rec["bytes_down"] != wantDown || rec["end"] != "broker_closed" || rec["detail"] != nil {
				t.Errorf("record = %v; want bytes_up %v, bytes_down %v, end broker_closed, no detail", rec, wantUp, wantDown)
			}
			mqtttest.WaitFor(t, "no active connection", func() bool { return g.srv.Stats().Active == 0 })
			for _, n := range g.srv.Stats().Nodes {
				if n.Active != 0 || n.Total != 1 {
					t.Errorf("node stats = %+v; want 0 active, 1 total", n)
				}
			}
		})
	}
}

// TestIdleLimitOnBothPaths ends a silent connection after the upstream's
// read timeout, telling the 5.0 client 0x8D Keep Alive timeout.
func TestIdleLimitOnBothPaths(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	for _, dp := range dataPaths {
		t.Run(dp, func(t *testing.T) {
			g := gatewayOn(t, dp, broker, 300*time.Millisecond)
			conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: "idle-" + dp})
			if len(ack) < 4 || ack[0] != 0x20 {
				t.Fatalf("CONNACK = % x", ack)
			}
			if p := mqtttest.ReadPacket(t, conn); string(p) != "\xe0\x01\x8d" {
				t.Fatalf("got % x, want DISCONNECT 0x8D Keep Alive timeout", p)
			}
			if p := mqtttest.ReadPacket(t, conn); p != nil {
				t.Fatalf("got % x after the DISCONNECT, want the idle connection closed", p)
			}
			if rec := g.accessRecord(t, "idle-"+dp); rec["end"] != "idle_timeout" {
				t.Errorf("record = %v; want end idle_timeout", rec)
			}
		})
	}
}

// TestShutdownClosesLoopedConns lets a drain run out of time: connections
// still open, in an event loop or on goroutines, are closed and logged as
// shutdown.
func TestShutdownClosesLoopedConns(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	for _, dp := range dataPaths {
		t.Run(dp, func(t *testing.T) {
			g := gatewayOn(t, dp, broker, 0)
			var conns []interface{ Close() error }
			for i := range 3 {
				conn, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, ClientID: fmt.Sprintf("drain-%s-%d", dp, i)})
				if len(ack) != 4 {
					t.Fatalf("CONNACK = % x", ack)
				}
				conns = append(conns, conn)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := g.srv.Shutdown(ctx); err == nil {
				t.Fatal("Shutdown drained connections that never end")
			}
			for i := range conns {
				rec := g.accessRecord(t, fmt.Sprintf("drain-%s-%d", dp, i))
				if rec["end"] != "shutdown" {
					t.Errorf("record = %v; want end shutdown", rec)
				}
			}
			if a := g.srv.Stats().Active; a != 0 {
				t.Errorf("%d connections active after Shutdown", a)
			}
			if !strings.Contains(strings.Join(g.access.Lines(), "\n"), `"bytes_down":4`) {
				t.Error("no record counted the CONNACK")
			}
		})
	}
}

// TestIdleConnsHoldNoGoroutine checks that the epoll data path really takes
// proxied connections off goroutines: 50 idle connections through it leave
// the goroutine count where it was, while goroutines hold two each. It does
// not run in parallel: it counts the process's goroutines.
func TestIdleConnsHoldNoGoroutine(t *testing.T) {
	const n = 50
	for _, tc := range []struct {
		dataPath string
		ok       func(added int) bool
	}{
		{config.DataPathEpoll, func(added int) bool { return added < 10 }},
		// Counted by their frames, not against the base: goroutines of
		// the subtest or test before may still be ending (base 28, 10 s
		// of fewer than 100 added, in go test -race -count=3 ./...).
		{config.DataPathGoroutines, func(int) bool { return running("pipe.(*direction).run(") >= 2*n }},
	} {
		t.Run(tc.dataPath, func(t *testing.T) {
			// A broker stand-in that takes connections, accepts their
			// CONNECT and holds them, with no goroutine per connection.
			// Its accept loop ends, and every connection it took is closed,
			// before the subtest ends: a broker side left open would hold
			// its pair past the client's close (the half-close timeout is
			// 30 s) and the gateway's shutdown would run out of time; an
			// accept loop still ending would be counted by the next subtest.
			sink, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var held []net.Conn
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					c, err := sink.Accept()
					if err != nil {
						return
					}
					_, _ = c.Write([]byte{0x20, 2, 0, 0}) // CONNACK, before the CONNECT is read: TCP keeps the order
					mu.Lock()
					held = append(held, c)
					mu.Unlock()
				}
			}()
			defer func() {
				sink.Close() // connections not accepted yet are reset
				<-done
				for _, c := range held {
					c.Close()
				}
			}()
			g := startGateway(t, fmt.Sprintf(`stream_proxy:
  tcp: [LISTEN]
  data_path: %s
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, tc.dataPath, sink.Addr().String()))
			connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 60, ClientID: "idle"})
			dial := func() {
				c, err := net.Dial("tcp", g.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if _, err := c.Write(connect); err != nil {
					t.Fatal(err)
				}
			}
			// Start the loops (they are started on first use) before counting.
			dial()
			mqtttest.WaitFor(t, "the warm-up connection to be proxied", func() bool { return g.srv.Stats().Proxied == 1 })
			// Proxied counts it before its serveConn goroutine hands the
			// pair over and ends: not in the base, or the goroutines path
			// would look one short.
			mqtttest.WaitFor(t, "the warm-up's serveConn goroutine to end", func() bool { return !strings.Contains(stacks(), "(*Server).serveConn(") })
			base := lasting()
			for range n {
				dial()
			}
			mqtttest.WaitFor(t, "every connection proxied", func() bool { return g.srv.Stats().Proxied == n+1 })
			var now int
			mqtttest.WaitFor(t, fmt.Sprintf("goroutines to settle (base %d)", base), func() bool {
				now = lasting()
				return tc.ok(now - base)
			})
			t.Logf("%d goroutines for %d idle connections (%d to %d)", now-base, n, base, now)
		})
	}
}

// stacks is every goroutine's stack, as a panic prints them.
func stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// lasting counts the goroutines but those of timer functions
// (time.AfterFunc), which come and go on their own: one of the access
// log's delayed flushes, running when the base was counted, made the
// goroutines path look one short (99 of 100) under load.
func lasting() int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && !strings.Contains(g, "created by time.goFunc") {
			n++
		}
	}
	return n
}

// running counts the goroutines whose stack has frame in it.
func running(frame string) int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, frame) {
			n++
		}
	}
	return n
}

// TestIdleConnsParkWithoutGoroutines checks that on the epoll data path
// an idle TLS or WebSocket connection and its broker side wait with no
// goroutine (pipe.Park): 50 of them leave the goroutine count where it was,
// while the goroutines data path holds two each. Then bytes still pass both
// ways through parked pairs: a small packet each way, and a burst of many
// TLS records or WebSocket frames of every size. It does not run in
// parallel: it counts the process's goroutines.
func TestIdleConnsParkWithoutGoroutines(t *testing.T) {
	const n = 50
	p := newPKI(t)
	type transport struct {
		name     string
		listener string
		dial     func(t *testing.T, addr string) net.Conn
	}
	transports := []transport{
		{"tls", "{addr: LISTEN, tls: true}", func(t *testing.T, addr string) net.Conn {
			c, err := tls.Dial("tcp", addr, p.clientTLS("a.example", nil))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"websocket", "{addr: LISTEN, websocket: true}", func(t *testing.T, addr string) net.Conn {
			return mqtttest.MustDialWS(t, wsURL(addr), mqtttest.WSOptions{})
		}},
	}
	for _, tr := range transports {
		for _, tc := range []struct {
			dataPath string
			ok       func(added int) bool
		}{
			{config.DataPathEpoll, func(added int) bool { return added < 10 }},
			// Counted by their frames, not against the base: goroutines
			// of the subtest before may still be ending.
			{config.DataPathGoroutines, func(int) bool { return running("pipe.(*direction).run(") >= 2*n }},
		} {
			t.Run(tr.name+"/"+tc.dataPath, func(t *testing.T) { testParked(t, n, p, tr.listener, tc.dataPath, tc.ok, tr.dial) })
		}
	}
}

// testParked is one case of TestIdleConnsParkWithoutGoroutines: n idle
// clients of a listener over one data path, ok judging the goroutines added.
func testParked(t *testing.T, n int, p *pki, listener, dataPath string, ok func(added int) bool, dialConn func(t *testing.T, addr string) net.Conn) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	held := make(chan net.Conn, n+1)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte{0x20, 2, 0, 0})
			held <- c
		}
	}()
	var brokers []net.Conn
	defer func() {
		for len(held) > 0 {
			(<-held).Close()
		}
		for _, c := range brokers {
			c.Close()
		}
	}()
	g := startGateway(t, fmt.Sprintf(`stream_proxy:
  tcp: [%s]
  data_path: %s
ssls:
  - {id: a, snis: [a.example], cert: %s/a.crt, key: %s/a.key}
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, listener, dataPath, p.dir, p.dir, sink.Addr().String()))
	connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 60, ClientID: "idle"})
	dial := func() net.Conn {
		c := dialConn(t, g.addr)
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(connect); err != nil {
			t.Fatal(err)
		}
		var ack [4]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			t.Fatalf("CONNACK: %v", err)
		}
		return c
	}
	dial() // the loops and the notifier start on first use
	brokers = append(brokers, <-held)
	mqtttest.WaitFor(t, "the warm-up connection to be proxied", func() bool { return g.srv.Stats().Proxied == 1 })
	// As in TestIdleConnsHoldNoGoroutine: no serveConn of the
	// warm-up, no timer function in the base.
	mqtttest.WaitFor(t, "the warm-up's serveConn goroutine to end", func() bool { return !strings.Contains(stacks(), "(*Server).serveConn(") })
	base := lasting()
	clients := make([]net.Conn, n)
	for i := range clients {
		clients[i] = dial()
		brokers = append(brokers, <-held)
	}
	mqtttest.WaitFor(t, fmt.Sprintf("goroutines to settle (base %d)", base), func() bool {
		return ok(lasting() - base)
	})

	// Idle pairs still carry bytes, each way: the sink's
	// connections came in the clients' order.
	for _, b := range brokers {
		_ = b.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(b, make([]byte, len(connect))); err != nil {
			t.Fatalf("broker's CONNECT: %v", err)
		}
	}
	for i, c := range clients[:5] {
		b := brokers[i+1]
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		ping := []byte{0xc0, 0}
		if _, err := c.Write(ping); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 2)
		if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, ping) {
			t.Fatalf("broker read %x, %v; want PINGREQ", got, err)
		}
		if _, err := b.Write([]byte{0xd0, 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil || got[0] != 0xd0 {
			t.Fatalf("client read %x, %v; want PINGRESP", got, err)
		}
	}
	// A burst of 1 MiB each way, in TLS records or WebSocket
	// frames of every size.
	c, b := clients[5], brokers[6]
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	up, down := make([]byte, 1<<20), make([]byte, 1<<20)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	errs := make(chan error, 2)
	go func() {
		for off, k := 0, 1; off < len(up); off, k = off+k, k*2%16381+1 {
			if _, err := c.Write(up[off:min(off+k, len(up))]); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	go func() { _, err := b.Write(down); errs <- err }()
	gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
	if _, err := io.ReadFull(b, gotUp); err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("broker got %d bytes intact: %v, %v", len(gotUp), bytes.Equal(gotUp, up), err)
	}
	if _, err := io.ReadFull(c, gotDown); err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("client got %d bytes intact: %v, %v", len(gotDown), bytes.Equal(gotDown, down), err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
