// Package packettest builds the raw MQTT packets tests write to a socket
// themselves (where a client library would hide the bytes under test) and
// reads a connection to its end. It imports nothing of mqgate, so that the
// tests of any package, the event loops' own included, can use it.
//
//	conn.Write(packettest.Publish("t", payload)) // QoS 0, 3.1.1 form
//	got := packettest.ReadToEOF(t, conn)
package packettest

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// AppendLength appends n as a Variable Byte Integer, the encoding of the
// Remaining Length (3.1.1 section 2.2.3, 5.0 section 1.5.5).
func AppendLength(dst []byte, n int) []byte {
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

// Publish is a QoS 0 PUBLISH of payload to topic, in the 3.1.1 form (no
// properties).
func Publish(topic string, payload []byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
	body = append(append(body, topic...), payload...)
	return append(AppendLength([]byte{0x30}, len(body)), body...)
}

// ReadToEOF reads c until the other side closes it, failing after 10 s,
// then closes c, as a client does after a DISCONNECT.
func ReadToEOF(t testing.TB, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading to EOF: %v (after %d bytes)", err, len(b))
	}
	c.Close()
	return b
}
