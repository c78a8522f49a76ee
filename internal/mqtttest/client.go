package mqtttest

import (
	"errors"
	"fmt"
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

// DialConnect dials addr, writes the CONNECT c followed by more (a
// SUBSCRIBE, say) in one write, and reads the server's first packet, all
// within timeout. It returns the connection, its deadline still set for
// the caller's own reads (clear it when done), and that packet; on an
// error it closes the connection. It takes no testing.TB: the goroutines
// of load tests call it.
func DialConnect(addr string, timeout time.Duration, c *mqtt.Connect, more ...[]byte) (net.Conn, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	pkt := mqtt.AppendConnect(nil, c)
	for _, m := range more {
		pkt = append(pkt, m...)
	}
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: sending the CONNECT: %w", c.ClientID, err)
	}
	ack, err := ReadFrame(conn)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: waiting for the CONNACK: %w", c.ClientID, err)
	}
	return conn, ack, nil
}

// ReadFrame reads one whole MQTT packet from conn and nothing after it
// (a byte at a time: what follows stays in the socket for the caller).
func ReadFrame(conn net.Conn) ([]byte, error) {
	var buf []byte
	one := make([]byte, 1)
	for {
		if n, err := mqtt.FrameLen(buf); err == nil && len(buf) == n {
			return buf, nil
		} else if err != nil && !errors.Is(err, mqtt.ErrIncomplete) {
			return buf, err
		}
		if _, err := conn.Read(one); err != nil {
			return buf, fmt.Errorf("after %d bytes: %w", len(buf), err)
		}
		buf = append(buf, one[0])
	}
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
	p, err := ReadFrame(conn)
	switch {
	case err == nil:
		return p
	case len(p) == 0:
		return nil
	}
	t.Fatalf("read: %v", err)
	return nil
}
