package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

type message struct {
	topic   string
	payload []byte
	retain  bool
}

// client is what the pub/sub tests need of a real MQTT client library.
type client interface {
	subscribe(t *testing.T, topic string, qos byte)
	publish(t *testing.T, topic string, qos byte, retain bool, payload []byte)
	close()
}

// pahoV3 is the Eclipse Paho Go client for MQTT 3.1 and 3.1.1.
type pahoV3 struct{ c pahov3.Client }

func dialV3(t *testing.T, addr, id string, level uint, msgs chan<- message) *pahoV3 {
	t.Helper()
	return dialV3URL(t, "tcp://"+addr, id, level, msgs)
}

// dialV3URL is dialV3 to a broker URL of any scheme Paho knows: tcp://,
// ws://host:port/path.
func dialV3URL(t *testing.T, url, id string, level uint, msgs chan<- message) *pahoV3 {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).
		SetProtocolVersion(level).SetCleanSession(true).SetAutoReconnect(false).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(10 * time.Second)
	if msgs != nil {
		opts.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			msgs <- message{m.Topic(), m.Payload(), m.Retained()}
		})
	}
	c := pahov3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("paho v3 (level %d) connect through mqgate: %v", level, tok.Error())
	}
	p := &pahoV3{c}
	t.Cleanup(p.close)
	return p
}

func (p *pahoV3) subscribe(t *testing.T, topic string, qos byte) {
	t.Helper()
	if tok := p.c.Subscribe(topic, qos, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
}

func (p *pahoV3) publish(t *testing.T, topic string, qos byte, retain bool, payload []byte) {
	t.Helper()
	if tok := p.c.Publish(topic, qos, retain, payload); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s qos %d: %v", topic, qos, tok.Error())
	}
}

func (p *pahoV3) close() {
	if p.c.IsConnected() {
		p.c.Disconnect(250)
	}
}

// pahoV5 is the Eclipse Paho Go client for MQTT 5.0.
type pahoV5 struct{ c *paho.Client }

func dialV5(t *testing.T, addr, id string, msgs chan<- message) *pahoV5 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return dialV5Conn(t, conn, id, msgs)
}

// dialV5Conn is dialV5 over a connection of any kind (a WebSocket).
func dialV5Conn(t *testing.T, conn net.Conn, id string, msgs chan<- message) *pahoV5 {
	t.Helper()
	cfg := paho.ClientConfig{ClientID: id, Conn: conn}
	if msgs != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			msgs <- message{r.Packet.Topic, r.Packet.Payload, r.Packet.Retain}
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("paho v5 connect through mqgate: %v (connack %+v)", err, ack)
	}
	p := &pahoV5{c}
	t.Cleanup(p.close)
	return p
}

func (p *pahoV5) subscribe(t *testing.T, topic string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}}); err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
}

func (p *pahoV5) publish(t *testing.T, topic string, qos byte, retain bool, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: payload}); err != nil {
		t.Fatalf("publish %s qos %d: %v", topic, qos, err)
	}
}

func (p *pahoV5) close() { _ = p.c.Disconnect(&paho.Disconnect{}) }

func receive(t *testing.T, msgs <-chan message, topic string, want []byte) message {
	t.Helper()
	m, err := nextMessage(msgs, topic, want)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// nextMessage waits up to 20 s for the next message on topic among msgs,
// skipping other topics, and reports an error unless its payload is want;
// receive for a goroutine, which cannot fail the test itself.
func nextMessage(msgs <-chan message, topic string, want []byte) (message, error) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m.topic != topic {
				continue
			}
			if !bytes.Equal(m.payload, want) {
				return m, fmt.Errorf("%s: got %d bytes, want %d (payloads differ)", topic, len(m.payload), len(want))
			}
			return m, nil
		case <-timeout:
			return message{}, fmt.Errorf("no message on %s", topic)
		}
	}
}

// TestPubSubThroughProxy: real clients of every MQTT version publish and
// subscribe through mqgate to Mosquitto: QoS 0, 1 and 2, retained messages,
// wills and a 1 MB payload.
func TestPubSubThroughProxy(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMosquitto(t, "")
	gw := startGateway(t, fmt.Sprintf("stream_proxy:\n  tcp: [LISTEN]\nupstreams:\n  - id: 1\n    nodes: {%q: 1}\nstream_routes:\n  - upstream_id: 1\n", broker.Addr()))

	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)

	versions := []struct {
		name  string
		level byte
		dial  func(t *testing.T, id string, msgs chan<- message) client
	}{
		{"3.1", mqtt.Level31, func(t *testing.T, id string, msgs chan<- message) client { return dialV3(t, gw.addr, id, 3, msgs) }},
		{"3.1.1", mqtt.Level311, func(t *testing.T, id string, msgs chan<- message) client { return dialV3(t, gw.addr, id, 4, msgs) }},
		{"5.0", mqtt.Level5, func(t *testing.T, id string, msgs chan<- message) client { return dialV5(t, gw.addr, id, msgs) }},
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			prefix := "v" + strings.ReplaceAll(v.name, ".", "")
			msgs := make(chan message, 64)
			sub := v.dial(t, prefix+"-sub", msgs)
			sub.subscribe(t, prefix+"/#", 2)
			pub := v.dial(t, prefix+"-pub", nil)

			for qos := byte(0); qos <= 2; qos++ {
				topic := fmt.Sprintf("%s/qos%d", prefix, qos)
				payload := []byte(fmt.Sprintf("hello at qos %d", qos))
				pub.publish(t, topic, qos, false, payload)
				receive(t, msgs, topic, payload)
			}

			pub.publish(t, prefix+"/big", 1, false, big)
			receive(t, msgs, prefix+"/big", big)

			// Retained: a subscriber that arrives later gets it.
			pub.publish(t, prefix+"/status", 1, true, []byte("online"))
			late := make(chan message, 4)
			v.dial(t, prefix+"-late", late).subscribe(t, prefix+"/status", 1)
			if m := receive(t, late, prefix+"/status", []byte("online")); !m.retain {
				t.Error("retained message delivered without the retain flag")
			}

			// Will: a client that vanishes without DISCONNECT has its will
			// published by the broker.
			name := "MQTT"
			if v.level == mqtt.Level31 {
				name = "MQIsdp"
			}
			conn, ack := mqtttest.Connect(t, gw.addr, &mqtt.Connect{
				ProtocolName: name, Level: v.level, CleanStart: true, KeepAlive: 30, ClientID: prefix + "-will",
				Will: &mqtt.Will{QoS: 1, Topic: prefix + "/will", Payload: []byte("gone")},
			})
			if ack == nil {
				t.Fatal("no CONNACK for the client with a will")
			}
			conn.Close()
			receive(t, msgs, prefix+"/will", []byte("gone"))
		})
	}
}

// TestMosquittoClients: mosquitto_pub and mosquitto_sub through mqgate, with
// MQTT 3.1.1 and 5.0.
func TestMosquittoClients(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install mosquitto-clients): %v", tool, err)
		}
	}
	broker := mqtttest.StartMosquitto(t, "")
	gw := startGateway(t, fmt.Sprintf("stream_proxy:\n  tcp: [LISTEN]\nupstreams:\n  - id: 1\n    nodes: {%q: 1}\nstream_routes:\n  - upstream_id: 1\n", broker.Addr()))
	host, port, _ := net.SplitHostPort(gw.addr)
	for _, version := range []string{"mqttv311", "mqttv5"} {
		topic := "cli/" + version
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pub := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-V", version, "-i", "pub-"+version,
			"-t", topic, "-m", "hello "+version, "-q", "1", "-r")
		if out, err := pub.CombinedOutput(); err != nil {
			cancel()
			t.Fatalf("mosquitto_pub %s: %v: %s", version, err, out)
		}
		sub := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-V", version, "-i", "sub-"+version,
			"-t", topic, "-C", "1", "-W", "15")
		out, err := sub.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("mosquitto_sub %s: %v: %s", version, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "hello "+version {
			t.Errorf("mosquitto_sub %s printed %q", version, got)
		}
	}
	mqtttest.WaitFor(t, "mosquitto to log the clients", func() bool { return len(broker.Seen()) >= 4 })
}
