package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestConnackStormBytes is a storm of short connections through the loop
// path's every pre-pipe step at once: refusals by limit-req (Refuse), pairs
// dialled on the loop that accepted them and pairs moved to another
// broker's loop (moveDial), a CONNECT with a PUBLISH in the same write
// (the rest handed to the broker) and without. Each client must read a
// well-formed CONNACK as the first bytes on its connection, accepted or
// refused with 0x9F, and then exactly the PUBLISH it sent, echoed by its
// own subscription. The second upstream's broker names the client in its
// 5.0 CONNACK's Reason String, so that a CONNACK or bytes handed to the
// wrong client show too. admin's TestReconnectStorm once read `00 00`
// where its CONNACK should be.
func TestConnackStormBytes(t *testing.T) {
	t.Parallel()
	clients := 1500
	if raceEnabled {
		clients = 400
	}
	const workers = 48
	b1, b2 := mqtttest.StartMochi(t), startNamingBroker(t)
	gw := startGateway(t, fmt.Sprintf(`stream_proxy:
  tcp: [LISTEN]
  data_path: epoll
upstreams:
  - id: 1
    nodes: {%q: 1}
  - id: 2
    nodes: {%q: 1}
stream_routes:
  - id: a
    upstream_id: 1
    mqtt_client_id: {prefix: a-}
    plugins:
      limit-req: {rate: 300, burst: 50, key: route_id}
  - id: b
    upstream_id: 2
`, b1.Addr(), b2.Addr()))
	next := make(chan int, clients)
	for i := range clients {
		next <- i
	}
	close(next)
	var accepted, refused atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("a-%d", i)
				if i%2 == 1 {
					id = fmt.Sprintf("b-%d", i)
				}
				level := mqtt.Level5
				if i%3 == 0 {
					level = mqtt.Level311
				}
				code, err := stormClient(gw.addr, id, level, i%4 < 2)
				switch {
				case err != nil:
					fail("%s: %v", id, err)
				case code == mqtt.Success:
					accepted.Add(1)
				case code == mqtt.ConnectionRateExceeded || (level == mqtt.Level311 && code == 0x03):
					refused.Add(1)
				default:
					fail("%s: CONNACK code %#x", id, byte(code))
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d clients: %d accepted, %d refused", clients, accepted.Load(), refused.Load())
	for _, f := range failures {
		t.Error(f)
	}
	if accepted.Load() == 0 {
		t.Error("no client accepted")
	}
}

// stormClient connects as id; an accepted client with withPublish sent a
// SUBSCRIBE and a PUBLISH to its own topic right behind its CONNECT (in
// one write) and must read back its SUBACK and PUBLISH, byte for byte.
func stormClient(addr, id string, level byte, withPublish bool) (mqtt.ReasonCode, error) {
	topic := "storm/" + id
	var more [][]byte
	var pub []byte
	if withPublish {
		pub = publish0(level, topic, []byte(id))
		more = [][]byte{subscribe0(level, topic), pub}
	}
	conn, ack, err := mqtttest.DialConnect(addr, 20*time.Second, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, ClientID: id}, more...)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if len(ack) < 4 || ack[0] != 0x20 {
		return 0, fmt.Errorf("first packet % x, not a CONNACK", ack)
	}
	_, code, err := mqtt.ParseConnack(ack, level)
	if err != nil {
		return 0, fmt.Errorf("CONNACK % x: %w", ack, err)
	}
	if code == mqtt.Success && level == mqtt.Level5 && strings.HasPrefix(id, "b-") && !bytes.HasSuffix(ack, []byte(id)) {
		return code, fmt.Errorf("CONNACK % x does not name %s", ack, id)
	}
	if code == mqtt.Success && withPublish {
		suback, err := mqtttest.ReadFrame(conn)
		if err != nil || len(suback) == 0 || suback[0] != 0x90 {
			return code, fmt.Errorf("SUBACK % x: %v", suback, err)
		}
		got, err := mqtttest.ReadFrame(conn)
		if err != nil {
			return code, fmt.Errorf("own PUBLISH: %w", err)
		}
		if want := pub; level == mqtt.Level311 && !bytes.Equal(got, want) {
			return code, fmt.Errorf("own PUBLISH back as % x, sent % x", got, want)
		} else if level == mqtt.Level5 && (len(got) == 0 || got[0]&0xF0 != 0x30 || !bytes.HasSuffix(got, []byte(id))) {
			return code, fmt.Errorf("own PUBLISH back as % x, sent % x", got, want)
		}
	}
	if code == mqtt.Success {
		_, _ = conn.Write(mqtt.AppendDisconnect(nil, level, 0, ""))
	}
	// The other side closes first (after a refusal or a DISCONNECT):
	// nothing more may come before it does.
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	rest, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return code, fmt.Errorf("after the CONNACK: %w", err)
	}
	if len(rest) > 0 {
		return code, fmt.Errorf("after the CONNACK and what it asked for: % x", rest)
	}
	return code, nil
}

// startNamingBroker is a broker stand-in that accepts every CONNECT with
// a CONNACK naming its client id (5.0: as the Reason String), then sends
// back what it is sent up to a DISCONNECT, answering a SUBSCRIBE with a
// SUBACK; then it closes.
func startNamingBroker(t *testing.T) mqtttest.Broker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveNamed(c)
		}
	}()
	return namingBroker{ln.Addr().String()}
}

type namingBroker struct{ addr string }

func (b namingBroker) Addr() string   { return b.addr }
func (b namingBroker) Seen() []string { return nil }

func serveNamed(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	pkt, err := mqtttest.ReadFrame(c)
	if err != nil {
		return
	}
	connect, err := mqtt.ParseConnect(pkt)
	if err != nil {
		return
	}
	if _, err := c.Write(mqtt.AppendConnack(nil, connect.Level, mqtt.Success, connect.ClientID)); err != nil {
		return
	}
	for {
		pkt, err := mqtttest.ReadFrame(c)
		if err != nil || len(pkt) == 0 {
			return
		}
		switch pkt[0] & 0xF0 {
		case 0xE0: // DISCONNECT
			return
		case 0x80: // SUBSCRIBE: SUBACK, its packet id, QoS 0
			ack := []byte{0x90, 3, pkt[2], pkt[3], 0}
			if connect.Level == mqtt.Level5 {
				ack = []byte{0x90, 4, pkt[2], pkt[3], 0, 0}
			}
			_, err = c.Write(ack)
		default:
			_, err = c.Write(pkt)
		}
		if err != nil {
			return
		}
	}
}

// publish0 is a QoS 0 PUBLISH of payload to topic (5.0's with no
// properties).
func publish0(level byte, topic string, payload []byte) []byte {
	body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
	if level == mqtt.Level5 {
		body = append(body, 0) // no properties
	}
	body = append(body, payload...)
	return append([]byte{0x30, byte(len(body))}, body...)
}

// subscribe0 is a SUBSCRIBE to topic at QoS 0, packet id 1.
func subscribe0(level byte, topic string) []byte {
	body := []byte{0, 1}
	if level == mqtt.Level5 {
		body = append(body, 0) // no properties
	}
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	body = append(body, 0)
	return append([]byte{0x82, byte(len(body))}, body...)
}
