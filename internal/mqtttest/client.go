package mqtttest

import (
	"net"
	"testing"
	"time"

	"github.com/mqgate/mqgate/mqtt"
)

// Connect dials addr, sends the CONNECT c and returns the connection (closed
// when the test ends) and the first packet the server answers with, or nil
// when it closed without one.
func Connect(t testing.TB, addr string, c *mqtt.Connect) (net.Conn, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(mqtt.AppendConnect(nil, c)); err != nil {
		t.Fatal(err)
	}
	return conn, ReadPacket(t, conn)
}

// ConnectOK connects id at level through addr, fails the test unless the
// CONNACK accepts it, and disconnects cleanly.
func ConnectOK(t testing.TB, addr, id string, level byte) {
	t.Helper()
	name := "MQTT"
	if level == mqtt.Level31 {
		name = "MQIsdp"
	}
	conn, ack := Connect(t, addr, &mqtt.Connect{ProtocolName: name, Level: level, CleanStart: true, KeepAlive: 30, ClientID: id})
	if ack == nil {
		t.Fatalf("%s: connection closed without CONNACK", id)
	}
	if _, code, err := mqtt.ParseConnack(ack, level); err != nil || code != 0 {
		t.Fatalf("%s: CONNACK % x: code %v, err %v", id, ack, code, err)
	}
	_, _ = conn.Write(mqtt.AppendDisconnect(nil, level, 0, ""))
	conn.Close()
}

// ReadPacket reads one whole MQTT packet, or returns nil at EOF before its
// first byte. It fails the test after 10 s.
func ReadPacket(t testing.TB, conn net.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	var buf []byte
	one := make([]byte, 1)
	for {
		if n, err := mqtt.FrameLen(buf); err == nil && len(buf) == n {
			return buf
		}
		if _, err := conn.Read(one); err != nil {
			if len(buf) == 0 {
				return nil
			}
			t.Fatalf("read after %d bytes: %v", len(buf), err)
		}
		buf = append(buf, one[0])
	}
}
