package proxy_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"net"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestBadClientBytes: garbage, a truncated CONNECT, a slow client, an
// oversized CONNECT and an early close each end that one connection within
// the deadline, without a reply, are logged with why, and leave no goroutine
// or file descriptor behind. Not parallel: it counts the process's
// goroutines and descriptors.
func TestBadClientBytes(t *testing.T) {
	broker := mqtttest.StartMochi(t)
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [LISTEN]
  connect_timeout: 1s
  max_connect_size: 256
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, broker.Addr()))
	valid := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 30, ClientID: "slowpoke"})
	huge := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, ClientID: strings.Repeat("x", 1000)})

	tests := []struct {
		name     string
		send     func(c net.Conn)
		wantEnd  string
		wantKind string
	}{
		{"http request", func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }, "bad_connect", "not_mqtt"},
		{"tls client hello", func(c net.Conn) { c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01}) }, "bad_connect", "not_mqtt"},
		{"truncated connect", func(c net.Conn) { c.Write(valid[:len(valid)/2]) }, "connect_timeout", "timeout"},
		{"slow client", func(c net.Conn) {
			// One byte every 400 ms: the whole CONNECT would take ~10 s, the
			// deadline is 1 s after accept.
			tick := time.NewTicker(400 * time.Millisecond)
			defer tick.Stop()
			for _, b := range valid {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				<-tick.C
			}
		}, "connect_timeout", "timeout"},
		{"oversized connect", func(c net.Conn) { c.Write(huge) }, "bad_connect", "too_large"},
		{"bad remaining length", func(c net.Conn) { c.Write([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}) }, "bad_connect", "malformed"},
		{"malformed connect", func(c net.Conn) {
			bad := append([]byte(nil), valid...)
			bad[9] |= 0x01 // reserved flag [MQTT-3.1.2-3]
			c.Write(bad)
		}, "bad_connect", "protocol_violation"},
	}

	// Warm up the pools and runtime before the baseline.
	mqtttest.ConnectOK(t, gw.addr, "warmup", mqtt.Level311)
	mqtttest.WaitFor(t, "warm-up connection to end", func() bool { return gw.srv.Stats().Active == 0 })
	baseGoroutines, baseFDs := runtime.NumGoroutine(), openFDs(t)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", gw.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			go tt.send(c)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if n > 0 {
				t.Errorf("got a reply % x, want the connection closed without one", buf[:n])
			}
			if err == nil {
				t.Fatal("connection still open")
			}
			if os.IsTimeout(err) {
				t.Fatalf("not closed after %v", time.Since(start))
			}
			mqtttest.WaitFor(t, "the access record", func() bool {
				for _, l := range gw.access.Lines() {
					if strings.Contains(l, `"end":"`+tt.wantEnd+`"`) && strings.Contains(l, `"error_kind":"`+tt.wantKind+`"`) {
						return true
					}
				}
				return false
			})
		})
	}
	if seen := broker.Seen(); len(seen) != 1 {
		t.Errorf("broker saw %v, want only the warm-up client", seen)
	}
	mqtttest.WaitFor(t, "goroutines and descriptors to return to the baseline", func() bool {
		return gw.srv.Stats().Active == 0 && runtime.NumGoroutine() <= baseGoroutines && openFDs(t) <= baseFDs
	})
	st := gw.srv.Stats()
	for _, kind := range []string{"not_mqtt", "timeout", "too_large", "malformed", "protocol_violation"} {
		if st.ParseErrors[kind] == 0 {
			t.Errorf("parse errors of kind %s not counted: %v", kind, st.ParseErrors)
		}
	}
}
