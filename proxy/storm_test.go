package proxy_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestReconnectStorm: thousands of CONNECTs in about a second through a
// limit-req rate limit. The limit admits what its bucket holds and refuses
// the rest with 0x9F Connection rate exceeded; meanwhile a client connected
// before the storm keeps getting its PING answered through mqgate.
//
// It logs CONNECTs accepted and refused and the slowest PING round trip:
// run with -v to read them.
func TestReconnectStorm(t *testing.T) {
	t.Parallel()
	const (
		workers = 64
		rate    = 200
		burst   = 100
	)
	storm := 3000
	if raceEnabled {
		storm = 1000
	}
	broker := mqtttest.StartMochi(t)
	gw := startGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes:
  - id: r
    upstream_id: 1
    plugins:
      limit-req: {rate: %d, burst: %d, key: remote_addr}
`, broker.Addr(), rate, burst))

	// A live client, connected before the storm, pings through it.
	live := holdConn(t, gw.addr, "live", "")
	stopPing := make(chan struct{})
	var pings atomic.Int64
	var slowest atomic.Int64
	pingErr := make(chan error, 1)
	go func() {
		defer close(pingErr)
		for {
			select {
			case <-stopPing:
				return
			default:
			}
			start := time.Now()
			_ = live.SetDeadline(start.Add(10 * time.Second))
			if _, err := live.Write([]byte{0xC0, 0}); err != nil {
				pingErr <- err
				return
			}
			resp := make([]byte, 2)
			if _, err := io.ReadFull(live, resp); err != nil || resp[0] != 0xD0 {
				pingErr <- fmt.Errorf("PINGRESP % x: %v", resp, err)
				return
			}
			rtt := time.Since(start)
			for old := slowest.Load(); int64(rtt) > old && !slowest.CompareAndSwap(old, int64(rtt)); old = slowest.Load() {
			}
			pings.Add(1)
		}
	}()
	mqtttest.WaitFor(t, "a first PING answered", func() bool { return pings.Load() > 0 })

	var accepted, refused, failed atomic.Int64
	var firstFailure atomic.Value
	next := make(chan int, storm)
	for i := range storm {
		next <- i
	}
	close(next)
	start := time.Now()
	pingsBefore := pings.Load()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				code, err := stormConnect(gw.addr, fmt.Sprintf("storm-%d", i))
				switch {
				case err != nil:
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				case code == mqtt.Success:
					accepted.Add(1)
				case code == mqtt.ConnectionRateExceeded:
					refused.Add(1)
				default:
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("code %#x", byte(code)))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	pingsDuring := pings.Load() - pingsBefore
	close(stopPing)
	if err := <-pingErr; err != nil {
		t.Fatalf("the live client's PING failed during the storm: %v", err)
	}

	t.Logf("storm of %d CONNECTs in %v: %d accepted, %d refused with 0x9F, %d failed; live client: %d PINGs answered during it, slowest %v",
		storm, elapsed.Round(time.Millisecond), accepted.Load(), refused.Load(), failed.Load(), pingsDuring, time.Duration(slowest.Load()).Round(time.Microsecond))
	if failed.Load() != 0 {
		t.Errorf("%d CONNECTs neither accepted nor refused; first: %v", failed.Load(), firstFailure.Load())
	}
	// The bucket holds 1+burst and gains rate per second: it cannot have
	// admitted more than that over the storm (+1 for the live client).
	if max := int64(1+burst+1) + int64(elapsed.Seconds()*rate) + 1; accepted.Load() > max {
		t.Errorf("%d accepted, more than the limit allows in %v (%d)", accepted.Load(), elapsed, max)
	}
	if accepted.Load() < burst {
		t.Errorf("only %d accepted, want at least the burst %d", accepted.Load(), burst)
	}
	if got := gw.srv.Stats().Refused["limit_req"]; got != uint64(refused.Load()) {
		t.Errorf("stats count %d refusals, clients saw %d", got, refused.Load())
	}
	if pingsDuring == 0 {
		t.Error("no PING answered during the storm")
	}
}

// stormConnect connects once with MQTT 5.0 and returns the CONNACK's code.
func stormConnect(addr, id string) (mqtt.ReasonCode, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: id}
	if _, err := conn.Write(mqtt.AppendConnect(nil, c)); err != nil {
		return 0, err
	}
	buf := make([]byte, 0, 256)
	one := make([]byte, 256)
	for {
		if n, ferr := mqtt.FrameLen(buf); ferr == nil && len(buf) >= n {
			_, code, err := mqtt.ParseConnack(buf[:n], mqtt.Level5)
			if err == nil && code == mqtt.Success {
				_, _ = conn.Write(mqtt.AppendDisconnect(nil, mqtt.Level5, 0, ""))
			}
			// Let the other side close first (it does at once, after a
			// refusal or a DISCONNECT), so that the storm's thousands of
			// sockets do not hold local ports in TIME_WAIT on this side.
			_, _ = io.Copy(io.Discard, conn)
			return code, err
		}
		m, err := conn.Read(one)
		buf = append(buf, one[:m]...)
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", len(buf), err)
		}
	}
}
