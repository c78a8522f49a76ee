package broker

import (
	"fmt"
	"io"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// TestOneBrokerTwoListeners: a message published over the WebSocket
// listener reaches a subscriber on the TCP listener, so the two proxies of
// the WebSocket phases reach the same sessions.
func TestOneBrokerTwoListeners(t *testing.T) {
	t.Parallel()
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	wsAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	b, err := Start(tcpAddr, wsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	got := make(chan string, 1)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tcpAddr).SetClientID("sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("TCP subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("bench/ws", 0, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	c := mqtttest.MustDialWS(t, "ws://"+wsAddr+"/mqtt", mqtttest.WSOptions{})
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "pub"})); err != nil {
		t.Fatal(err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK over WebSocket: % x, %v", ack, err)
	}
	topic, payload := "bench/ws", "hello"
	pub := append([]byte{0x30, byte(2 + len(topic) + len(payload)), 0, byte(len(topic))}, topic+payload...)
	if _, err := c.Write(pub); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != payload {
			t.Errorf("subscriber got %q, want %q", m, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the TCP subscriber did not get the message published over WebSocket")
	}
}
