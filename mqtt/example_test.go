package mqtt_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"testing/iotest"

	"github.com/mqgate/mqgate/mqtt"
)

// readFirstPacket reads from r until it holds one whole packet of at most
// maxSize bytes, and returns that packet and any bytes read after it, which
// belong to the packets that follow.
func readFirstPacket(r io.Reader, maxSize int) (pkt, rest []byte, err error) {
	var buf []byte
	for {
		n, err := mqtt.FrameLen(buf)
		switch {
		case err == nil && n > maxSize:
			return nil, nil, fmt.Errorf("first packet of %d bytes exceeds %d", n, maxSize)
		case err == nil && len(buf) >= n:
			return buf[:n], buf[n:], nil
		case err != nil && !errors.Is(err, mqtt.ErrIncomplete):
			return nil, nil, err
		}
		buf = slices.Grow(buf, 512)
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && m == 0 {
			return nil, nil, fmt.Errorf("reading the first packet: %w", err)
		}
	}
}

func Example() {
	// A client sends CONNECT and, without waiting, PINGREQ; the network
	// delivers one byte at a time.
	conn := iotest.OneByteReader(bytes.NewReader([]byte(
		"\x10\x18\x00\x04MQTT\x04\x02\x00\x3c\x00\x0cmosq-pub-311" + "\xc0\x00")))

	pkt, _, err := readFirstPacket(conn, 4096)
	if err != nil {
		log.Fatal(err)
	}
	c, err := mqtt.ParseConnect(pkt)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s level %d, client %q, keep alive %ds\n", c.ProtocolName, c.Level, c.ClientID, c.KeepAlive)

	// No broker can take it: refuse in the client's own version.
	fmt.Printf("% x\n", mqtt.AppendConnack(nil, c.Level, mqtt.ServerUnavailable, "no healthy broker"))
	// Output:
	// MQTT level 4, client "mosq-pub-311", keep alive 60s
	// 20 02 00 03
}

func ExampleParseConnect_refused() {
	// An MQTT 3.1.1 client with an empty client identifier and CleanSession 0.
	pkt := []byte("\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00")

	_, err := mqtt.ParseConnect(pkt)
	var perr *mqtt.ProtocolError
	if errors.As(err, &perr) && perr.Code != 0 {
		// The specification tells the server to answer before closing.
		fmt.Println(err)
		fmt.Println(perr.Kind, perr.Code)
		fmt.Printf("% x\n", mqtt.AppendConnack(nil, perr.Level, perr.Code, ""))
	}
	// Output:
	// mqtt: empty client identifier with CleanSession 0 [MQTT-3.1.3-8]
	// client_id_rejected Client Identifier not valid
	// 20 02 00 02
}

func ExampleAppendConnect() {
	// The CONNECT of a health probe.
	probe := &mqtt.Connect{Level: mqtt.Level5, CleanStart: true, KeepAlive: 10, ClientID: "mqgate-probe"}
	fmt.Printf("% x\n", mqtt.AppendConnect(nil, probe))
	// Output:
	// 10 19 00 04 4d 51 54 54 05 02 00 0a 00 00 0c 6d 71 67 61 74 65 2d 70 72 6f 62 65
}

func ExampleAppendConnect_rewrite() {
	pkt := []byte("\x10\x18\x00\x04MQTT\x04\x02\x00\x3c\x00\x0cmosq-pub-311")
	c, err := mqtt.ParseConnect(pkt)
	if err != nil {
		log.Fatal(err)
	}
	// Take the client identifier from the client certificate, say.
	c.ClientID = "device-7"
	fmt.Printf("%q\n", mqtt.AppendConnect(nil, c))
	// Output:
	// "\x10\x14\x00\x04MQTT\x04\x02\x00<\x00\bdevice-7"
}

func ExampleAppendConnack() {
	fmt.Printf("% x\n", mqtt.AppendConnack(nil, mqtt.Level311, mqtt.Banned, "banned"))
	fmt.Printf("% x\n", mqtt.AppendConnack(nil, mqtt.Level5, mqtt.Banned, "banned"))
	// Output:
	// 20 02 00 05
	// 20 0c 00 8a 09 1f 00 06 62 61 6e 6e 65 64
}

func ExampleParseConnack() {
	// What mosquitto 2.0.11 answers an MQTT 5.0 CONNECT.
	connack := []byte("\x20\x09\x00\x00\x06\x22\x00\x0a\x21\x00\x14")
	sessionPresent, code, err := mqtt.ParseConnack(connack, mqtt.Level5)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sessionPresent, code)
	// Output:
	// false Success
}

func ExampleFrameLen() {
	n, err := mqtt.FrameLen([]byte{0x10, 0x80})
	fmt.Println(n, err)
	n, err = mqtt.FrameLen([]byte{0x10, 0x80, 0x01})
	fmt.Println(n, err)
	// Output:
	// 0 mqtt: incomplete packet
	// 131 <nil>
}
