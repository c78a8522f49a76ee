package admin_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestReconnectStorm: thousands of CONNECTs in about a second through a
// limit-req rate limit, to mqgate set up as `mqgate run` sets it up. The
// limit admits what its bucket holds and refuses the rest with 0x9F
// Connection rate exceeded; meanwhile the status page keeps answering and a
// client connected before the storm keeps getting its PINGs answered.
//
// It logs CONNECTs accepted and refused and the slowest PING and status
// round trips: run with -v to read them.
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
	g := startGate(t, configYAML(0, fmt.Sprintf(`upstreams: [{id: 1, nodes: {%q: 1}}]
stream_routes:
  - id: r
    upstream_id: 1
    plugins:
      limit-req: {rate: %d, burst: %d, key: remote_addr}
`, broker.Addr(), rate, burst)))

	// A live client, connected before the storm, pings through mqgate, and
	// an operator reads the status page, both as fast as they can.
	live, ack := mqtttest.Connect(t, g.mqttAddr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 60, ClientID: "live"})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level311); err != nil || code != 0 {
		t.Fatalf("live client: CONNACK % x: %v %v", ack, code, err)
	}
	ping := func() error {
		_ = live.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := live.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
			return err
		}
		resp := make([]byte, 2)
		if _, err := io.ReadFull(live, resp); err != nil || resp[0] != 0xD0 {
			return fmt.Errorf("PINGRESP % x: %v", resp, err)
		}
		return nil
	}
	client := &http.Client{Timeout: 10 * time.Second}
	status := func() error {
		req, err := http.NewRequest("GET", g.url+"/status.json", nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-API-KEY", viewerKey)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	stop := make(chan struct{})
	pings := &prober{do: ping}
	reads := &prober{do: status}
	var probers sync.WaitGroup
	probers.Go(func() { pings.run(stop) })
	probers.Go(func() { reads.run(stop) })
	mqtttest.WaitFor(t, "a first PING and status read", func() bool { return pings.n.Load() > 0 && reads.n.Load() > 0 })

	var accepted, refused, failed atomic.Int64
	var firstFailure atomic.Value
	next := make(chan int, storm)
	for i := range storm {
		next <- i
	}
	close(next)
	pingsBefore, readsBefore := pings.n.Load(), reads.n.Load()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				code, err := stormConnect(g.mqttAddr, fmt.Sprintf("storm-%d", i))
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
	pingsDuring, readsDuring := pings.n.Load()-pingsBefore, reads.n.Load()-readsBefore
	close(stop)
	probers.Wait()
	if pings.err != nil {
		t.Errorf("the live client's PING failed during the storm: %v", pings.err)
	}
	if reads.err != nil {
		t.Errorf("the status page failed during the storm: %v", reads.err)
	}

	t.Logf("storm of %d CONNECTs in %v: %d accepted, %d refused with 0x9F, %d failed; during it: %d PINGs answered (slowest %v), %d status pages served (slowest %v)",
		storm, elapsed.Round(time.Millisecond), accepted.Load(), refused.Load(), failed.Load(),
		pingsDuring, time.Duration(pings.slowest.Load()).Round(time.Microsecond),
		readsDuring, time.Duration(reads.slowest.Load()).Round(time.Microsecond))
	if failed.Load() != 0 {
		t.Errorf("%d CONNECTs neither accepted nor refused; first: %v", failed.Load(), firstFailure.Load())
		// Why mqgate ended them (a shed, a timeout, a read error): seen
		// once under the whole suite at load 12, with no CONNACK at all.
		for _, l := range strings.Split(g.log.String(), "\n") {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "before CONNECT was read") {
				t.Log(l)
			}
		}
	}
	// The bucket holds 1+burst and gains rate per second: it cannot have
	// admitted more than that over the storm (+1 for the live client).
	if max := int64(1+burst+1) + int64(elapsed.Seconds()*rate) + 1; accepted.Load() > max {
		t.Errorf("%d accepted, more than the limit allows in %v (%d)", accepted.Load(), elapsed, max)
	}
	if accepted.Load() < burst {
		t.Errorf("only %d accepted, want at least the burst %d", accepted.Load(), burst)
	}
	if got := g.srv.Stats().Refused["limit_req"]; got != uint64(refused.Load()) {
		t.Errorf("stats count %d refusals, clients saw %d", got, refused.Load())
	}
	if pingsDuring == 0 || readsDuring == 0 {
		t.Errorf("during the storm: %d PINGs answered, %d status pages served; want some of each", pingsDuring, readsDuring)
	}
}

// prober repeats do until stop, counting round trips and keeping the
// slowest and the first error (after which it stops).
type prober struct {
	do      func() error
	n       atomic.Int64
	slowest atomic.Int64
	err     error // read after run returns
}

func (p *prober) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		if err := p.do(); err != nil {
			p.err = err
			return
		}
		rtt := int64(time.Since(start))
		for old := p.slowest.Load(); rtt > old && !p.slowest.CompareAndSwap(old, rtt); old = p.slowest.Load() {
		}
		p.n.Add(1)
	}
}

// stormConnect connects once with MQTT 5.0 and returns the CONNACK's code.
func stormConnect(addr, id string) (mqtt.ReasonCode, error) {
	conn, ack, err := mqtttest.DialConnect(addr, 10*time.Second, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: id})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_, code, err := mqtt.ParseConnack(ack, mqtt.Level5)
	if err == nil && code == mqtt.Success {
		_, _ = conn.Write(mqtt.AppendDisconnect(nil, mqtt.Level5, 0, ""))
	}
	// Let the other side close first (it does at once, after a refusal
	// or a DISCONNECT), so that the storm's thousands of sockets do not
	// hold local ports in TIME_WAIT on this side.
	_, _ = io.Copy(io.Discard, conn)
	return code, err
}
