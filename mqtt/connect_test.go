package mqtt

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/packettest"
)

// CONNECT packets captured from real clients sending to a listener that
// printed them.
var (
	// mosquitto_pub 2.0.11 -V mqttv311 -i mosq-pub-311 -t t -m hi -q 1
	mosquitto311 = unhex("101800044d5154540402003c000c6d6f73712d7075622d333131")
	// mosquitto_pub 2.0.11 -V mqttv31 -i mosq-pub-31 -t t -m hi
	mosquitto31 = unhex("101900064d51497364700302003c000b6d6f73712d7075622d3331")
	// mosquitto_pub 2.0.11 -V mqttv5 -i mosq-pub-5 -t t -m hi
	mosquitto5 = unhex("101a00044d5154540502003c03210014000a6d6f73712d7075622d35")
	// mosquitto_pub 2.0.11 -V mqttv311 -u alice -P s3cret -k 30
	// --will-topic clients/dead --will-payload bye --will-qos 1 --will-retain
	// (no -i: an empty client identifier)
	mosquitto311Will = unhex("102e00044d51545404ee001e0000000c636c69656e74732f6465616400036279650005616c6963650006733363726574")
	// mosquitto_pub 2.0.11 -V mqttv5 -i sensor-42 -u bob -P pw
	// --will-topic w/t --will-payload gone --will-qos 2
	// -D connect session-expiry-interval 3600 -D connect user-property region eu
	// -D will will-delay-interval 10 -D will content-type text/plain
	// -D connect receive-maximum 20 -D connect maximum-packet-size 65536
	mosquitto5Will = unhex("105700044d51545405d6003c1a1100000e10260006726567696f6e000265752100142700010000000973656e736f722d343212180000000a03000a746578742f706c61696e0003772f740004676f6e650003626f6200027077")
	// mosquitto_pub 2.0.11 -V mqttv5 -c -i persist5 -x 120
	mosquitto5Persist = unhex("101d00044d5154540500003c08110000007821001400087065727369737435")
	// Eclipse Paho Go 1.5.1, protocol version 4, client id paho-go-311,
	// user1/pass1, keep alive 45, will status/paho-go-311 "offline" QoS 1 retained.
	paho311 = unhex("104200044d51545404ee002d000b7061686f2d676f2d33313100127374617475732f7061686f2d676f2d33313100076f66666c696e650005757365723100057061737331")
	// The same client after falling back to protocol version 3.
	paho31Will = unhex("104400064d514973647003ee002d000b7061686f2d676f2d33313100127374617475732f7061686f2d676f2d33313100076f66666c696e650005757365723100057061737331")
	// Eclipse Paho Go 1.5.1, SetProtocolVersion(3), client id paho-go-31.
	paho31 = unhex("101800064d51497364700302001e000a7061686f2d676f2d3331")
	// Eclipse paho.golang 0.23.0: client id paho-golang-5, carol/tok,
	// session expiry 300, user property app=demo, will will/5 "bye" QoS 1.
	pahoGolang5 = unhex("104700044d51545405ce003c131700110000012c260003617070000464656d6f000d7061686f2d676f6c616e672d3500000677696c6c2f35000362796500056361726f6c0003746f6b")
)

type connectTest struct {
	name string
	// rule is the conformance statement the row exercises, as numbered by
	// the specification of the packet's level; "" when it has no id.
	rule string
	pkt  []byte
	want *Connect       // the decoded packet, for valid rows
	err  *ProtocolError // Kind, Code and Level expected (Rule is rule), for invalid rows
}

// validConnectTests are packets ParseConnect accepts.
var validConnectTests = []connectTest{
	// Mosquitto bridges (try_private true, the default) mark the level.
	{
		name: "3.1.1 from a mosquitto bridge (level 0x84)",
		pkt:  frame(0x10, "0004 4d515454 84 02 003c", str("bridge-1")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, Bridge: true, CleanStart: true, KeepAlive: 60, ClientID: "bridge-1"},
	},
	{
		name: "3.1 from a mosquitto bridge (level 0x83)",
		pkt:  frame(0x10, "0006 4d5149736470 83 02 003c", str("bridge-2")),
		want: &Connect{ProtocolName: "MQIsdp", Level: 3, Bridge: true, CleanStart: true, KeepAlive: 60, ClientID: "bridge-2"},
	},
	// MQTT 3.1.1.
	{
		name: "3.1.1 minimal",
		pkt:  frame(0x10, v311, "02 003c", str("a")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "a"},
	},
	{
		name: "3.1.1 empty client identifier with CleanSession 1",
		rule: "MQTT-3.1.3-6",
		pkt:  frame(0x10, v311, "02 0000", str("")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true},
	},
	{
		name: "3.1.1 CleanSession 0 and the largest keep alive",
		rule: "MQTT-3.1.2-4",
		pkt:  frame(0x10, v311, "00 ffff", str("dev-1")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, KeepAlive: 65535, ClientID: "dev-1"},
	},
	{
		name: "3.1.1 will QoS 2 not retained, user name without password",
		rule: "MQTT-3.1.2-9",
		pkt:  frame(0x10, v311, "96 000a", str("c"), str("w/t"), str(""), str("u")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 10, ClientID: "c",
			Will: &Will{QoS: 2, Topic: "w/t", Payload: []byte{}}, Username: "u", HasUsername: true},
	},
	{
		name: "3.1.1 empty password and binary password bytes",
		rule: "MQTT-3.1.2-21",
		pkt:  frame(0x10, v311, "c2 003c", str("c"), str("u"), "0003 00ff80"),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Username: "u", HasUsername: true, Password: []byte{0x00, 0xff, 0x80}, HasPassword: true},
	},
	{
		name: "3.1.1 empty user name and password",
		rule: "MQTT-3.1.2-19",
		pkt:  frame(0x10, v311, "c2 003c", str("c"), str(""), str("")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "c",
			HasUsername: true, Password: []byte{}, HasPassword: true},
	},
	{
		name: "3.1.1 multi-byte UTF-8 and U+FEFF kept as is",
		rule: "MQTT-1.5.3-3",
		pkt:  frame(0x10, v311, "82 003c", str("\ufeffgerät-😀"), str("José")),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "\ufeffgerät-😀",
			Username: "José", HasUsername: true},
	},
	{
		// 3.1.1 does not require the minimal encoding; 5.0 does
		// [MQTT-1.5.5-1].
		name: "3.1.1 remaining length not minimally encoded",
		pkt:  unhex("10 8d00 0004 4d515454 04 02 003c 0001 61"),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "a"},
	},
	{
		name: "3.1.1 remaining length of two bytes",
		pkt:  frame(0x10, v311, "02 003c", str(strings.Repeat("x", 200))),
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: strings.Repeat("x", 200)},
	},
	{
		name: "mosquitto_pub 3.1.1",
		pkt:  mosquitto311,
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 60, ClientID: "mosq-pub-311"},
	},
	{
		name: "mosquitto_pub 3.1.1 with will, user name and password, empty client identifier",
		rule: "MQTT-3.1.3-6",
		pkt:  mosquitto311Will,
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 30,
			Will:     &Will{QoS: 1, Retain: true, Topic: "clients/dead", Payload: []byte("bye")},
			Username: "alice", HasUsername: true, Password: []byte("s3cret"), HasPassword: true},
	},
	{
		name: "Paho Go 3.1.1",
		pkt:  paho311,
		want: &Connect{ProtocolName: "MQTT", Level: 4, CleanStart: true, KeepAlive: 45, ClientID: "paho-go-311",
			Will:     &Will{QoS: 1, Retain: true, Topic: "status/paho-go-311", Payload: []byte("offline")},
			Username: "user1", HasUsername: true, Password: []byte("pass1"), HasPassword: true},
	},

	// MQTT 3.1.
	{
		name: "3.1 minimal",
		pkt:  frame(0x10, v31, "02 003c", str("c31")),
		want: &Connect{ProtocolName: "MQIsdp", Level: 3, CleanStart: true, KeepAlive: 60, ClientID: "c31"},
	},
	{
		name: "mosquitto_pub 3.1",
		pkt:  mosquitto31,
		want: &Connect{ProtocolName: "MQIsdp", Level: 3, CleanStart: true, KeepAlive: 60, ClientID: "mosq-pub-31"},
	},
	{
		name: "Paho Go 3.1",
		pkt:  paho31,
		want: &Connect{ProtocolName: "MQIsdp", Level: 3, CleanStart: true, KeepAlive: 30, ClientID: "paho-go-31"},
	},
	{
		name: "Paho Go 3.1 with will, user name and password",
		pkt:  paho31Will,
		want: &Connect{ProtocolName: "MQIsdp", Level: 3, CleanStart: true, KeepAlive: 45, ClientID: "paho-go-311",
			Will:     &Will{QoS: 1, Retain: true, Topic: "status/paho-go-311", Payload: []byte("offline")},
			Username: "user1", HasUsername: true, Password: []byte("pass1"), HasPassword: true},
	},

	// MQTT 5.0.
	{
		name: "5.0 minimal",
		rule: "MQTT-2.2.2-1",
		pkt:  frame(0x10, v5, "02 003c", "00", str("a")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "a"},
	},
	{
		name: "5.0 empty client identifier with Clean Start 0",
		rule: "MQTT-3.1.3-6",
		pkt:  frame(0x10, v5, "00 003c", "00", str("")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, KeepAlive: 60},
	},
	{
		// 3.1.1's [MQTT-3.1.2-22] is gone from 5.0.
		name: "5.0 password without user name",
		rule: "MQTT-3.1.2-19",
		pkt:  frame(0x10, v5, "42 003c", "00", str("c"), str("token")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Password: []byte("token"), HasPassword: true},
	},
	{
		name: "5.0 every CONNECT property, User Property twice",
		pkt: frame(0x10, v5, "02 003c",
			props("11 00000e10", "21 0014", "27 00010000", "22 000a", "19 01", "17 00",
				"26", str("k"), str("v1"), "26", str("k"), str("v2"),
				"15", str("SCRAM-SHA-1"), "16 0003 010203"),
			str("c")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Properties: unhex("11 00000e10 21 0014 27 00010000 22 000a 19 01 17 00" +
				"26 0001 6b 0002 7631 26 0001 6b 0002 7632" +
				"15 000b 534352414d2d5348412d31 16 0003 010203")},
	},
	{
		name: "5.0 every Will property",
		rule: "MQTT-3.1.2-9",
		pkt: frame(0x10, v5, "2e 003c", "00", str("c"),
			props("18 0000000a", "01 01", "02 00000e10", "03", str("text/plain"), "08", str("resp/t"),
				"09 0002 abcd", "26", str("a"), str("b")),
			str("w/t"), str("gone")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Will: &Will{QoS: 1, Retain: true, Topic: "w/t", Payload: []byte("gone"),
				Properties: unhex("18 0000000a 01 01 02 00000e10 03 000a 746578742f706c61696e 08 0006 726573702f74" +
					"09 0002 abcd 26 0001 61 0001 62")}},
	},
	{
		name: "5.0 property length of two bytes",
		rule: "MQTT-1.5.5-1",
		pkt:  frame(0x10, v5, "02 003c", props("26", str("k"), str(strings.Repeat("v", 200))), str("c")),
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "c",
			Properties: unhex("26 0001 6b 00c8" + strings.Repeat("76", 200))},
	},
	{
		name: "mosquitto_pub 5.0",
		pkt:  mosquitto5,
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "mosq-pub-5",
			Properties: unhex("21 0014")},
	},
	{
		name: "mosquitto_pub 5.0 with Clean Start 0 and session expiry",
		pkt:  mosquitto5Persist,
		want: &Connect{ProtocolName: "MQTT", Level: 5, KeepAlive: 60, ClientID: "persist5",
			Properties: unhex("11 00000078 21 0014")},
	},
	{
		name: "mosquitto_pub 5.0 with properties, will properties, user name and password",
		pkt:  mosquitto5Will,
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "sensor-42",
			Properties: unhex("11 00000e10 26 0006 726567696f6e 0002 6575 21 0014 27 00010000"),
			Will: &Will{QoS: 2, Topic: "w/t", Payload: []byte("gone"),
				Properties: unhex("18 0000000a 03 000a 746578742f706c61696e")},
			Username: "bob", HasUsername: true, Password: []byte("pw"), HasPassword: true},
	},
	{
		name: "paho.golang 5.0",
		pkt:  pahoGolang5,
		want: &Connect{ProtocolName: "MQTT", Level: 5, CleanStart: true, KeepAlive: 60, ClientID: "paho-golang-5",
			Properties: unhex("17 00 11 0000012c 26 0003 617070 0004 64656d6f"),
			Will:       &Will{QoS: 1, Topic: "will/5", Payload: []byte("bye")},
			Username:   "carol", HasUsername: true, Password: []byte("tok"), HasPassword: true},
	},
}

// invalidConnectTests are packets ParseConnect rejects, walking the
// specifications in order.
var invalidConnectTests = []connectTest{
	// Fixed header.
	{
		name: "empty",
		pkt:  []byte{},
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "first packet PUBLISH",
		rule: "MQTT-3.1.0-1",
		pkt:  frame(0x30, str("t"), "6869"),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "first packet HTTP",
		rule: "MQTT-3.1.0-1",
		pkt:  []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "first packet a TLS ClientHello",
		rule: "MQTT-2.2.2-1",
		pkt:  unhex("16 0301 0005 0100000100"),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "CONNECT with reserved fixed header flags set",
		rule: "MQTT-2.2.2-1",
		pkt:  frame(0x12, v311, "02 003c", str("a")),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "remaining length runs past the end of the packet",
		pkt:  unhex("10 80"),
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "remaining length of five bytes",
		pkt:  unhex("10 ffffffff01"),
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "remaining length larger than the packet",
		pkt:  unhex("10 0e 0004 4d515454 04 02 003c 0001 61"),
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "remaining length smaller than the packet",
		pkt:  unhex("10 0c 0004 4d515454 04 02 003c 0001 61"),
		err:  &ProtocolError{Kind: KindMalformed},
	},

	// Protocol name and level.
	{
		name: "protocol name runs past the end of the packet",
		pkt:  frame(0x10, "0004 4d51"),
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "unknown protocol name",
		rule: "MQTT-3.1.2-1",
		pkt:  frame(0x10, "0004 4d515458 04 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "protocol name in lower case",
		rule: "MQTT-3.1.2-1",
		pkt:  frame(0x10, "0004 6d717474 04 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindNotMQTT},
	},
	{
		name: "protocol level missing",
		pkt:  frame(0x10, "0004 4d515454"),
		err:  &ProtocolError{Kind: KindMalformed},
	},
	{
		name: "MQTT with level 3",
		rule: "MQTT-3.1.2-2",
		pkt:  frame(0x10, "0004 4d515454 03 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindUnsupportedVersion, Level: 3, Code: UnsupportedProtocolVersion},
	},
	{
		name: "MQTT with level 6",
		rule: "MQTT-3.1.2-2",
		pkt:  frame(0x10, "0004 4d515454 06 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindUnsupportedVersion, Level: 6, Code: UnsupportedProtocolVersion},
	},
	{
		name: "MQTT 5 with the bridge bit (0x85): mosquitto bridges set it only for 3.x",
		rule: "MQTT-3.1.2-2",
		pkt:  frame(0x10, "0004 4d515454 85 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindUnsupportedVersion, Level: 0x85, Code: UnsupportedProtocolVersion},
	},
	{
		name: "MQIsdp with level 4",
		rule: "MQTT-3.1.2-2",
		pkt:  frame(0x10, "0006 4d5149736470 04 02 003c", str("a")),
		err:  &ProtocolError{Kind: KindUnsupportedVersion, Level: 4, Code: UnsupportedProtocolVersion},
	},
	{
		name: "3.1.1 connect flags and keep alive run past the end of the packet",
		pkt:  frame(0x10, v311, "02 00"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},

	// Connect flags.
	{
		name: "3.1.1 reserved connect flag set",
		rule: "MQTT-3.1.2-3",
		pkt:  frame(0x10, v311, "03 003c", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 4},
	},
	{
		name: "3.1 reserved connect flag set",
		rule: "MQTT-3.1.2-3",
		pkt:  frame(0x10, v31, "03 003c", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 3},
	},
	{
		name: "5.0 reserved connect flag set",
		rule: "MQTT-3.1.2-3",
		pkt:  frame(0x10, v5, "03 003c", "00", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 Will QoS without the Will Flag",
		rule: "MQTT-3.1.2-13",
		pkt:  frame(0x10, v311, "0a 003c", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 4},
	},
	{
		name: "5.0 Will QoS without the Will Flag",
		rule: "MQTT-3.1.2-11",
		pkt:  frame(0x10, v5, "12 003c", "00", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "3.1.1 Will Retain without the Will Flag",
		rule: "MQTT-3.1.2-15",
		pkt:  frame(0x10, v311, "22 003c", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 4},
	},
	{
		name: "5.0 Will Retain without the Will Flag",
		rule: "MQTT-3.1.2-13",
		pkt:  frame(0x10, v5, "22 003c", "00", str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "3.1.1 Will QoS 3",
		rule: "MQTT-3.1.2-14",
		pkt:  frame(0x10, v311, "1e 003c", str("a"), str("w"), str("m")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 4},
	},
	{
		name: "5.0 Will QoS 3",
		rule: "MQTT-3.1.2-12",
		pkt:  frame(0x10, v5, "1e 003c", "00", str("a"), "00", str("w"), str("m")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 Password Flag without the User Name Flag",
		rule: "MQTT-3.1.2-22",
		pkt:  frame(0x10, v311, "42 003c", str("a"), str("pw")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 4},
	},
	{
		name: "3.1 Password Flag without the User Name Flag",
		rule: "MQTT-3.1.2-22",
		pkt:  frame(0x10, v31, "42 003c", str("a"), str("pw")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 3},
	},

	// Payload.
	{
		name: "3.1.1 client identifier missing",
		rule: "MQTT-3.1.3-3",
		pkt:  frame(0x10, v311, "02 003c"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 client identifier runs past the end of the packet",
		rule: "MQTT-3.1.3-3",
		pkt:  frame(0x10, v5, "02 003c", "00", "0005 6162"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 client identifier not UTF-8",
		rule: "MQTT-1.5.3-1",
		pkt:  frame(0x10, v311, "02 003c", "0002 61ff"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1.1 client identifier with a surrogate code point",
		rule: "MQTT-1.5.3-1",
		pkt:  frame(0x10, v311, "02 003c", "0003 eda080"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1.1 client identifier with an overlong U+0000",
		rule: "MQTT-1.5.3-1",
		pkt:  frame(0x10, v311, "02 003c", "0002 c080"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1.1 client identifier with U+0000",
		rule: "MQTT-1.5.3-2",
		pkt:  frame(0x10, v311, "02 003c", "0002 6100"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1 client identifier not UTF-8",
		rule: "MQTT-1.5.3-1",
		pkt:  frame(0x10, v31, "02 003c", "0001 80"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 3},
	},
	{
		name: "5.0 client identifier not UTF-8",
		rule: "MQTT-1.5.4-1",
		pkt:  frame(0x10, v5, "02 003c", "00", "0002 61ff"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 client identifier with U+0000",
		rule: "MQTT-1.5.4-2",
		pkt:  frame(0x10, v5, "02 003c", "00", "0001 00"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 Will Topic missing",
		rule: "MQTT-3.1.2-9",
		pkt:  frame(0x10, v311, "06 003c", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1.1 Will Payload missing",
		rule: "MQTT-3.1.2-9",
		pkt:  frame(0x10, v311, "06 003c", str("a"), str("w")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1.1 Will Topic with U+0000",
		rule: "MQTT-1.5.3-2",
		pkt:  frame(0x10, v311, "06 003c", str("a"), "0003 770074", str("m")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 Will properties missing",
		rule: "MQTT-3.1.2-9",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Will Topic not UTF-8",
		rule: "MQTT-1.5.4-1",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a"), "00", "0001 fe", str("m")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 User Name missing",
		rule: "MQTT-3.1.2-19",
		pkt:  frame(0x10, v311, "82 003c", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 User Name missing",
		rule: "MQTT-3.1.2-17",
		pkt:  frame(0x10, v5, "82 003c", "00", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 User Name not UTF-8",
		rule: "MQTT-1.5.3-1",
		pkt:  frame(0x10, v311, "82 003c", str("a"), "0002 c328"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 User Name with U+0000",
		rule: "MQTT-1.5.4-2",
		pkt:  frame(0x10, v5, "82 003c", "00", str("a"), "0002 0061"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "3.1.1 Password missing",
		rule: "MQTT-3.1.2-21",
		pkt:  frame(0x10, v311, "c2 003c", str("a"), str("u")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 Password runs past the end of the packet",
		rule: "MQTT-3.1.2-19",
		pkt:  frame(0x10, v5, "42 003c", "00", str("a"), "0004 7077"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		// A field whose flag is 0 MUST NOT be present [MQTT-3.1.2-18],
		// but trailing bytes need not be one.
		name: "3.1.1 bytes after the last field (a user name without its flag)",
		pkt:  frame(0x10, v311, "02 003c", str("a"), str("u")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "5.0 bytes after the last field",
		pkt:  frame(0x10, v5, "02 003c", "00", str("a"), "00"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},

	// Client identifier policy.
	{
		name: "3.1.1 empty client identifier with CleanSession 0",
		rule: "MQTT-3.1.3-8",
		pkt:  frame(0x10, v311, "00 003c", str("")),
		err:  &ProtocolError{Kind: KindClientIDRejected, Level: 4, Code: ClientIdentifierNotValid},
	},
	{
		// A malformed packet is closed without a CONNACK [MQTT-3.1.4-1],
		// so the malformation wins over the identifier.
		name: "3.1.1 empty client identifier with CleanSession 0 in a malformed packet",
		pkt:  frame(0x10, v311, "00 003c", str(""), "00"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 4},
	},
	{
		name: "3.1 empty client identifier",
		pkt:  frame(0x10, v31, "02 003c", str("")),
		err:  &ProtocolError{Kind: KindClientIDRejected, Level: 3, Code: ClientIdentifierNotValid},
	},

	// MQTT 5.0 properties.
	{
		name: "5.0 property length missing",
		rule: "MQTT-2.2.2-1",
		pkt:  frame(0x10, v5, "02 003c"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 remaining length not minimally encoded",
		rule: "MQTT-1.5.5-1",
		pkt:  unhex("10 8e00 0004 4d515454 05 02 003c 00 0001 61"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 property length not minimally encoded",
		rule: "MQTT-1.5.5-1",
		pkt:  frame(0x10, v5, "02 003c", "8000", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 property length of five bytes",
		pkt:  frame(0x10, v5, "02 003c", "ffffffff7f", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 property length runs past the end of the packet",
		pkt:  frame(0x10, v5, "02 003c", "80"),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 properties run past the end of the packet",
		pkt:  frame(0x10, v5, "02 003c", "09 11 00000e10", str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Will property in CONNECT properties",
		pkt:  frame(0x10, v5, "02 003c", props("01 01"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 CONNACK property in CONNECT properties",
		pkt:  frame(0x10, v5, "02 003c", props("1f", str("why")), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 property identifier 0",
		pkt:  frame(0x10, v5, "02 003c", props("00 00"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 property identifier of two bytes",
		pkt:  frame(0x10, v5, "02 003c", props("9100 00000e10"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Session Expiry Interval twice",
		pkt:  frame(0x10, v5, "02 003c", props("11 0000000a", "11 0000000b"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Authentication Method twice",
		pkt:  frame(0x10, v5, "02 003c", props("15", str("a"), "15", str("b")), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Receive Maximum 0",
		pkt:  frame(0x10, v5, "02 003c", props("21 0000"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Maximum Packet Size 0",
		pkt:  frame(0x10, v5, "02 003c", props("27 00000000"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Request Response Information 2",
		pkt:  frame(0x10, v5, "02 003c", props("19 02"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Request Problem Information 2",
		pkt:  frame(0x10, v5, "02 003c", props("17 02"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Authentication Data without Authentication Method",
		pkt:  frame(0x10, v5, "02 003c", props("16 0001 ff"), str("a")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Session Expiry Interval cut short",
		pkt:  frame(0x10, v5, "02 003c", props("11 0000"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Authentication Method cut short",
		pkt:  frame(0x10, v5, "02 003c", props("15 0005 6162"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Authentication Method with U+0000",
		rule: "MQTT-1.5.4-2",
		pkt:  frame(0x10, v5, "02 003c", props("15 0002 6100"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 User Property name not UTF-8",
		rule: "MQTT-1.5.7-1",
		pkt:  frame(0x10, v5, "02 003c", props("26 0001 ff", str("v")), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 User Property value with U+0000",
		rule: "MQTT-1.5.7-1",
		pkt:  frame(0x10, v5, "02 003c", props("26", str("k"), "0001 00"), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 User Property value missing",
		pkt:  frame(0x10, v5, "02 003c", props("26", str("k")), str("a")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 CONNECT property in Will properties",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a"), props("11 0000000a"), str("w"), str("m")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Will Delay Interval twice",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a"), props("18 0000000a", "18 0000000a"), str("w"), str("m")),
		err:  &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode},
	},
	{
		name: "5.0 Will Content Type not UTF-8",
		rule: "MQTT-1.5.4-1",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a"), props("03 0001 c0"), str("w"), str("m")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
	{
		name: "5.0 Will property length not minimally encoded",
		rule: "MQTT-1.5.5-1",
		pkt:  frame(0x10, v5, "06 003c", "00", str("a"), "8000", str("w"), str("m")),
		err:  &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket},
	},
}

func TestParseConnect(t *testing.T) {
	t.Parallel()
	for _, tt := range validConnectTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseConnect(tt.pkt)
			if err != nil {
				t.Fatalf("ParseConnect(%x) error: %v", tt.pkt, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseConnect(%x)\n got %+v (Will %+v)\nwant %+v (Will %+v)", tt.pkt, got, got.Will, tt.want, tt.want.Will)
			}
		})
	}
}

func TestParseConnectErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range invalidConnectTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseConnect(tt.pkt)
			if err == nil {
				t.Fatalf("ParseConnect(%x) = %+v, want error", tt.pkt, c)
			}
			if c != nil {
				t.Errorf("ParseConnect(%x) returned %+v with its error", tt.pkt, c)
			}
			want := *tt.err
			want.Rule = tt.rule
			checkProtocolError(t, err, &want)
		})
	}
}

// TestParseConnectTruncated cuts every valid packet short at every length:
// each prefix is an error, never a panic or a half-parsed Connect.
func TestParseConnectTruncated(t *testing.T) {
	t.Parallel()
	for _, tt := range validConnectTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for n := range len(tt.pkt) {
				if c, err := ParseConnect(tt.pkt[:n]); err == nil {
					t.Fatalf("ParseConnect(%x) = %+v, want error", tt.pkt[:n], c)
				}
			}
		})
	}
}

// TestParseConnectAliasing checks that the []byte fields alias the packet
// but cannot be appended to over the bytes that follow them.
func TestParseConnectAliasing(t *testing.T) {
	t.Parallel()
	pkt := bytes.Clone(mosquitto5Will)
	c, err := ParseConnect(pkt)
	if err != nil {
		t.Fatal(err)
	}
	for name, field := range map[string][]byte{
		"Properties":      c.Properties,
		"Will.Properties": c.Will.Properties,
		"Will.Payload":    c.Will.Payload,
		"Password":        c.Password,
	} {
		if cap(field) != len(field) {
			t.Errorf("%s: cap %d > len %d: an append would overwrite the packet", name, cap(field), len(field))
		}
	}
	clientID := c.ClientID
	clear(pkt)
	if c.ClientID != clientID || c.ClientID != "sensor-42" {
		t.Errorf("ClientID changed with the packet bytes: %q", c.ClientID)
	}
}

func TestParseConnectAllocs(t *testing.T) {
	// Not parallel: AllocsPerRun counts allocations of the whole process.
	for _, tt := range []struct {
		name string
		pkt  []byte
		max  float64
	}{
		{"3.1.1 without strings", frame(0x10, v311, "02 003c", str("")), 1},
		{"3.1.1", mosquitto311, 2},
		{"3.1.1 with will and user name", paho311, 2},
		{"5.0 with properties, will and user name", mosquitto5Will, 2},
	} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := ParseConnect(tt.pkt); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > tt.max {
			t.Errorf("%s: ParseConnect allocates %v times, want at most %v (the Connect and one string)", tt.name, allocs, tt.max)
		}
	}
}

// minimalRemainingLength reports whether pkt's Remaining Length uses the
// fewest bytes, the only encoding AppendConnect writes.
func minimalRemainingLength(pkt []byte) bool {
	n, size, err := decodeVarint(pkt[1:])
	return err == nil && size == len(packettest.AppendLength(nil, n))
}

func TestAppendConnectRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tt := range validConnectTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseConnect(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			got := AppendConnect(nil, c)
			if minimalRemainingLength(tt.pkt) && !bytes.Equal(got, tt.pkt) {
				t.Errorf("AppendConnect(ParseConnect(p))\n got %x\nwant %x", got, tt.pkt)
			}
			again, err := ParseConnect(got)
			if err != nil {
				t.Fatalf("ParseConnect(AppendConnect(c)) error: %v", err)
			}
			if !reflect.DeepEqual(again, c) {
				t.Errorf("ParseConnect(AppendConnect(c)) = %+v, want %+v", again, c)
			}
			prefix := []byte("kept")
			appended := AppendConnect(prefix, c)
			if !bytes.HasPrefix(appended, prefix) || !bytes.Equal(appended[len(prefix):], got) {
				t.Errorf("AppendConnect(%q, c) = %x, want the prefix then %x", prefix, appended, got)
			}
		})
	}
}

func TestAppendConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    *Connect
		want []byte
	}{
		{
			name: "3.1.1 health probe, protocol name from the level",
			c:    &Connect{Level: Level311, CleanStart: true, KeepAlive: 30, ClientID: "probe"},
			want: unhex("10 11 0004 4d515454 04 02 001e 0005 70726f6265"),
		},
		{
			name: "3.1 health probe, protocol name from the level",
			c:    &Connect{Level: Level31, CleanStart: true, KeepAlive: 30, ClientID: "probe"},
			want: unhex("10 13 0006 4d5149736470 03 02 001e 0005 70726f6265"),
		},
		{
			name: "5.0 health probe, empty properties",
			c:    &Connect{Level: Level5, CleanStart: true, KeepAlive: 30, ClientID: "probe"},
			want: unhex("10 12 0004 4d515454 05 02 001e 00 0005 70726f6265"),
		},
		{
			name: "3.1.1 properties ignored, user name and password by their flags",
			c: &Connect{Level: Level311, ClientID: "c", Properties: []byte{0x11, 0, 0, 0, 1},
				Username: "ignored", Password: []byte("ignored")},
			want: unhex("10 0d 0004 4d515454 04 00 0000 0001 63"),
		},
		{
			name: "5.0 will with properties",
			c: &Connect{Level: Level5, ClientID: "c",
				Will: &Will{QoS: 2, Retain: true, Properties: []byte{0x01, 0x01}, Topic: "t", Payload: []byte{0xff}}},
			want: unhex("10 17 0004 4d515454 05 34 0000 00 0001 63 02 0101 0001 74 0001 ff"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := AppendConnect(nil, tt.c)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("AppendConnect\n got %x\nwant %x", got, tt.want)
			}
			if _, err := ParseConnect(got); err != nil {
				t.Errorf("ParseConnect(AppendConnect(c)): %v", err)
			}
		})
	}
}

// TestAppendConnectRewrite changes the fields a proxy rewrites and checks
// nothing else moves.
func TestAppendConnectRewrite(t *testing.T) {
	t.Parallel()
	for _, pkt := range [][]byte{mosquitto311Will, mosquitto5Will, paho31Will} {
		c, err := ParseConnect(pkt)
		if err != nil {
			t.Fatal(err)
		}
		want := *c
		want.ClientID = "CN=device-7"
		want.Username = "device-7"
		want.HasPassword = false
		want.Password = nil

		rewritten := *c
		rewritten.ClientID, rewritten.Username = want.ClientID, want.Username
		rewritten.HasPassword, rewritten.Password = false, nil
		got, err := ParseConnect(AppendConnect(nil, &rewritten))
		if err != nil {
			t.Fatalf("level %d: ParseConnect(AppendConnect(rewritten)): %v", c.Level, err)
		}
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("level %d: rewritten CONNECT decodes to %+v, want %+v", c.Level, got, &want)
		}
	}
}

// TestAppendConnectLongFields checks that a field longer than a length
// prefix can say is cut, leaving a well-framed packet.
func TestAppendConnectLongFields(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 70000)
	c := &Connect{Level: Level311, CleanStart: true, ClientID: long, Username: long, HasUsername: true}
	got, err := ParseConnect(AppendConnect(nil, c))
	if err != nil {
		t.Fatalf("ParseConnect(AppendConnect(c)): %v", err)
	}
	if len(got.ClientID) != 65535 || len(got.Username) != 65535 {
		t.Errorf("decoded field lengths %d and %d, want 65535", len(got.ClientID), len(got.Username))
	}
}

func BenchmarkParseConnect(b *testing.B) {
	for _, bm := range []struct {
		name string
		pkt  []byte
	}{
		{"3.1.1", paho311},
		{"5.0", mosquitto5Will},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.pkt)))
			for b.Loop() {
				if _, err := ParseConnect(bm.pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendConnect(b *testing.B) {
	for _, bm := range []struct {
		name string
		pkt  []byte
	}{
		{"3.1.1", paho311},
		{"5.0", mosquitto5Will},
	} {
		c, err := ParseConnect(bm.pkt)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.pkt)))
			buf := make([]byte, 0, len(bm.pkt))
			for b.Loop() {
				buf = AppendConnect(buf[:0], c)
			}
		})
	}
}
