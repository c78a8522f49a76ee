package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reports whether the server closed c within 10 s.
func waitClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !strings.Contains(err.Error(), "timeout")
}

// TestAdmissionShedsOldestUnfinished: silent connections from one address
// over max_unfinished_per_address shed that address's oldest, those over
// max_unfinished_connections the oldest of all, and a client from another
// address still gets its CONNACK. Sheds are counted and recorded.
func TestAdmissionShedsOldestUnfinished(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [LISTEN]
  connect_timeout: 30s
  max_unfinished_connections: 6
  max_unfinished_per_address: 4
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, broker.Addr()))
	// admitted counts the gate's admissions of silent connections: each
	// holds a place or was shed (the real client's CONNECT gave its place
	// back before its CONNACK came). Stats().Accepted would not do: it is
	// counted before the connection's goroutine reaches the gate, and
	// goroutines started in one order may reach it in another, which made
	// the gate's "oldest" differ from the order of the dials.
	admitted := func() uint64 {
		st := gw.srv.Stats()
		n := uint64(st.Unfinished)
		for _, v := range st.Shed {
			n += v
		}
		return n
	}
	// Each silent connection writes one byte so that TCP_DEFER_ACCEPT hands
	// it over at once; it is admitted before the next one is opened.
	silent := func(src string) net.Conn {
		before := admitted()
		c := dialFrom(t, src, gw.addr)
		if _, err := c.Write([]byte{0x10}); err != nil {
			t.Fatal(err)
		}
		mqtttest.WaitFor(t, "the connection to be admitted", func() bool { return admitted() > before })
		return c
	}
	var a []net.Conn
	for range 6 {
		a = append(a, silent("127.0.0.2"))
	}
	// a[0], a[1] shed for the per-address cap.
	for i, c := range a[:2] {
		if !waitClosed(c) {
			t.Fatalf("a[%d] (oldest) not shed", i)
		}
	}
	b := []net.Conn{silent("127.0.0.3"), silent("127.0.0.3")}
	// 6 unfinished (a[2..5], b[0..1]): full. Two more shed a[2], a[3].
	mqtttest.ConnectOK(t, gw.addr, "real-client", mqtt.Level311) // from 127.0.0.1, completes at once
	c := silent("127.0.0.4")
	d := silent("127.0.0.4")
	for i, x := range a[2:4] {
		if !waitClosed(x) {
			t.Fatalf("a[%d] not shed by the total cap", i+2)
		}
	}
	mqtttest.WaitFor(t, "2 sheds for the per-address cap and 2 for the total", func() bool {
		st := gw.srv.Stats()
		return st.Shed["per_address"] == 2 && st.Shed["total"] == 2 && st.Unfinished == 6
	})
	// The youngest are still open.
	for _, x := range []net.Conn{a[4], a[5], b[0], b[1], c, d} {
		_ = x.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := x.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("a younger connection was closed: %v", err)
		}
	}
	mqtttest.WaitFor(t, "shed access records", func() bool {
		return strings.Count(gw.access.String(), `"end":"shed"`) == 4
	})
}
