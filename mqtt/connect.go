package mqtt

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
)

// Connect is a CONNECT packet, the first packet a client sends.
type Connect struct {
	ProtocolName string // "MQTT", or "MQIsdp" for MQTT 3.1
	Level        byte   // Level31, Level311 or Level5
	// Bridge is set when a 3.x Protocol Level carries the high bit
	// (0x83, 0x84): Mosquitto's bridges send it (try_private) so that the
	// remote Mosquitto knows the client is a bridge. Level holds the
	// level without the bit; AppendConnect sets it again.
	Bridge     bool
	CleanStart bool   // CleanSession in 3.x
	KeepAlive  uint16 // seconds
	// Properties are the MQTT 5.0 CONNECT properties, raw (and, from
	// ParseConnect, validated), without their length prefix.
	Properties  []byte
	ClientID    string
	Will        *Will // nil when the Will Flag is 0
	Username    string
	HasUsername bool
	Password    []byte // binary, not UTF-8
	HasPassword bool
}

// Will is the Will Message of a CONNECT.
type Will struct {
	QoS    byte
	Retain bool
	// Properties are the MQTT 5.0 Will properties, raw (and, from
	// ParseConnect, validated), without their length prefix.
	Properties []byte
	Topic      string
	Payload    []byte
}

// Connect Flags bits (3.1.1 and 5.0 section 3.1.2.3).
const (
	flagReserved   = 0x01
	flagCleanStart = 0x02
	flagWill       = 0x04
	flagWillQoS    = 0x18
	flagWillRetain = 0x20
	flagPassword   = 0x40
	flagUsername   = 0x80
	willQoSShift   = 3
)

const (
	connectHeader   = byte(TypeConnect) << 4 // flags 0000
	bridgeBit       = 0x80                   // Mosquitto's bridge marker in the 3.x Protocol Level
	keepAliveLength = 2
)

// ParseConnect decodes one whole CONNECT packet: pkt holds the fixed header
// and exactly the Remaining Length bytes after it (see [FrameLen]).
//
// Every error is a [*ProtocolError]. Its Kind says how to treat the client
// and its Code, when non-zero, is the CONNACK reason code the specification
// lets a server send before closing.
//
// ParseConnect allocates the Connect (with its Will) and one string that
// ClientID, Will.Topic and Username share. Properties, Will.Properties,
// Will.Payload and Password alias pkt: keep pkt unchanged while they are in
// use.
func ParseConnect(pkt []byte) (*Connect, error) {
	if len(pkt) == 0 {
		return nil, malformed(0, "", "empty packet")
	}
	if PacketType(pkt[0]>>4) != TypeConnect {
		// "the first packet sent from the Client to the Server MUST be a
		// CONNECT packet" [MQTT-3.1.0-1] (both versions).
		return nil, &ProtocolError{Kind: KindNotMQTT, Rule: "MQTT-3.1.0-1", Reason: "first packet is " + PacketType(pkt[0]>>4).String() + ", not CONNECT"}
	}
	if pkt[0]&0x0f != 0 {
		// The flags of CONNECT are reserved as 0000 ([MQTT-2.2.2-1],
		// [MQTT-2.2.2-2] in 3.1.1, [MQTT-2.1.3-1] in 5.0). The level is
		// not known yet, so cite 3.1.1.
		return nil, &ProtocolError{Kind: KindNotMQTT, Rule: "MQTT-2.2.2-1", Reason: "CONNECT fixed header flags are not 0000"}
	}
	remaining, size, err := decodeVarint(pkt[1:])
	if err == ErrIncomplete {
		return nil, malformed(0, "", "remaining length runs past the end of the packet")
	}
	if err != nil {
		return nil, err
	}
	if 1+size+remaining != len(pkt) {
		return nil, malformed(0, "", "remaining length "+strconv.Itoa(remaining)+" does not match the "+strconv.Itoa(len(pkt)-1-size)+" bytes after the fixed header")
	}
	b := pkt[1+size:]

	// Variable header: Protocol Name, Protocol Level, Connect Flags, Keep
	// Alive and, in 5.0, Properties.
	name, off, ok := readField(b)
	if !ok {
		return nil, malformed(0, "", "protocol name runs past the end of the packet")
	}
	var protocolName string
	switch string(name) {
	case protocolNameMQTT:
		protocolName = protocolNameMQTT
	case protocolNameMQIsdp:
		protocolName = protocolNameMQIsdp
	default:
		// A server MAY close on an unknown name and MUST NOT go on
		// treating the packet as MQTT [MQTT-3.1.2-1] (both versions).
		return nil, &ProtocolError{Kind: KindNotMQTT, Rule: "MQTT-3.1.2-1", Reason: "unknown protocol name"}
	}
	if off == len(b) {
		return nil, malformed(0, "", "protocol level missing")
	}
	level := b[off]
	off++
	bridge := level&bridgeBit != 0 && (level&^bridgeBit == Level31 || level&^bridgeBit == Level311)
	if bridge {
		level &^= bridgeBit
	}
	if !(protocolName == protocolNameMQTT && (level == Level311 || level == Level5) ||
		protocolName == protocolNameMQIsdp && level == Level31) {
		// 3.1.1: the Server MUST respond with CONNACK return code 0x01 if
		// the level is not supported; 5.0: it MAY send reason code 0x84
		// [MQTT-3.1.2-2] (both versions).
		return nil, &ProtocolError{
			Kind:   KindUnsupportedVersion,
			Rule:   "MQTT-3.1.2-2",
			Reason: "protocol level " + strconv.Itoa(int(level)) + " not supported with protocol name " + protocolName,
			Level:  level,
			Code:   UnsupportedProtocolVersion,
		}
	}
	if level == Level5 && size != varintLen(remaining) {
		// "The encoded value MUST use the minimum number of bytes necessary
		// to represent the value" [MQTT-1.5.5-1], new in 5.0.
		return nil, malformed(level, "MQTT-1.5.5-1", "remaining length not minimally encoded")
	}
	if len(b)-off < 1+keepAliveLength {
		return nil, malformed(level, "", "connect flags and keep alive run past the end of the packet")
	}
	flags := b[off]
	keepAlive := binary.BigEndian.Uint16(b[off+1:])
	off += 1 + keepAliveLength

	if flags&flagReserved != 0 {
		// "The Server MUST validate that the reserved flag in the CONNECT
		// packet is set to 0" [MQTT-3.1.2-3] (both versions); 5.0 calls
		// it a Malformed Packet.
		return nil, violation(level, "MQTT-3.1.2-3", MalformedPacket, "reserved connect flag is set")
	}
	willQoS := flags & flagWillQoS >> willQoSShift
	if flags&flagWill == 0 {
		if willQoS != 0 {
			// "If the Will Flag is set to 0, then the Will QoS MUST be set
			// to 0" [MQTT-3.1.2-13] in 3.1.1 (also [MQTT-3.1.2-11]),
			// [MQTT-3.1.2-11] in 5.0.
			return nil, violation(level, ruleFor(level, "MQTT-3.1.2-13", "MQTT-3.1.2-11"), ProtocolErrorCode, "Will QoS set without the Will Flag")
		}
		if flags&flagWillRetain != 0 {
			// "If the Will Flag is set to 0, then the Will Retain Flag
			// MUST be set to 0" [MQTT-3.1.2-15] in 3.1.1 (also
			// [MQTT-3.1.2-11]), [MQTT-3.1.2-13] in 5.0.
			return nil, violation(level, ruleFor(level, "MQTT-3.1.2-15", "MQTT-3.1.2-13"), ProtocolErrorCode, "Will Retain set without the Will Flag")
		}
	} else if willQoS == 3 {
		// Will QoS "MUST NOT be 3" [MQTT-3.1.2-14] in 3.1.1; "can be 0, 1,
		// or 2" [MQTT-3.1.2-12] in 5.0, where 3 is a Malformed Packet.
		return nil, violation(level, ruleFor(level, "MQTT-3.1.2-14", "MQTT-3.1.2-12"), MalformedPacket, "Will QoS is 3")
	}
	if level != Level5 && flags&flagPassword != 0 && flags&flagUsername == 0 {
		// "If the User Name Flag is set to 0, the Password Flag MUST be set
		// to 0" [MQTT-3.1.2-22]. 5.0 dropped the rule.
		return nil, violation(level, "MQTT-3.1.2-22", ProtocolErrorCode, "Password Flag set without the User Name Flag")
	}

	var props []byte
	if level == Level5 {
		if off == len(b) {
			// "If there are no properties, this MUST be indicated by
			// including a Property Length of zero" [MQTT-2.2.2-1] (5.0).
			return nil, malformed(level, "MQTT-2.2.2-1", "CONNECT property length missing")
		}
		var n int
		props, n, err = readProperties(b[off:], connectProperties, "CONNECT")
		if err != nil {
			return nil, err
		}
		off += n
	}

	// Payload. The fields MUST appear in the order Client Identifier, Will
	// Properties (5.0), Will Topic, Will Payload, User Name, Password
	// [MQTT-3.1.3-1] (both versions).
	clientID, n, ok := readField(b[off:])
	if !ok {
		// "The ClientID MUST be present and is the first field in the
		// CONNECT packet Payload" [MQTT-3.1.3-3] (both versions).
		return nil, malformed(level, "MQTT-3.1.3-3", "client identifier missing or runs past the end of the packet")
	}
	off += n
	// The ClientID MUST be a UTF-8 Encoded String [MQTT-3.1.3-4].
	if err := checkUTF8(level, clientID, "client identifier"); err != nil {
		return nil, err
	}

	var willProps, willTopic, willPayload []byte
	if flags&flagWill != 0 {
		// "If the Will Flag is set to 1, the Will Properties [5.0], Will
		// Topic, and Will Payload fields MUST be present in the Payload"
		// [MQTT-3.1.2-9] (both versions).
		if level == Level5 {
			if off == len(b) {
				return nil, malformed(level, "MQTT-3.1.2-9", "Will properties missing")
			}
			willProps, n, err = readProperties(b[off:], willProperties, "Will")
			if err != nil {
				return nil, err
			}
			off += n
		}
		if willTopic, n, ok = readField(b[off:]); !ok {
			return nil, malformed(level, "MQTT-3.1.2-9", "Will Topic missing or runs past the end of the packet")
		}
		off += n
		// The Will Topic MUST be a UTF-8 Encoded String, [MQTT-3.1.3-10] in
		// 3.1.1, [MQTT-3.1.3-11] in 5.0.
		if err := checkUTF8(level, willTopic, "Will Topic"); err != nil {
			return nil, err
		}
		if willPayload, n, ok = readField(b[off:]); !ok {
			return nil, malformed(level, "MQTT-3.1.2-9", "Will Payload missing or runs past the end of the packet")
		}
		off += n
	}

	var username, password []byte
	if flags&flagUsername != 0 {
		if username, n, ok = readField(b[off:]); !ok {
			// "If the User Name Flag is set to 1, a user name MUST be
			// present in the payload", [MQTT-3.1.2-19] in 3.1.1,
			// [MQTT-3.1.2-17] in 5.0.
			return nil, malformed(level, ruleFor(level, "MQTT-3.1.2-19", "MQTT-3.1.2-17"), "User Name missing or runs past the end of the packet")
		}
		off += n
		// The User Name MUST be a UTF-8 Encoded String, [MQTT-3.1.3-11] in
		// 3.1.1, [MQTT-3.1.3-12] in 5.0.
		if err := checkUTF8(level, username, "User Name"); err != nil {
			return nil, err
		}
	}
	if flags&flagPassword != 0 {
		if password, n, ok = readField(b[off:]); !ok {
			// "If the Password Flag is set to 1, a password MUST be
			// present in the payload", [MQTT-3.1.2-21] in 3.1.1,
			// [MQTT-3.1.2-19] in 5.0.
			return nil, malformed(level, ruleFor(level, "MQTT-3.1.2-21", "MQTT-3.1.2-19"), "Password missing or runs past the end of the packet")
		}
		off += n
	}
	if off != len(b) {
		// Nothing may follow the last field the flags announce; a field
		// whose flag is 0 MUST NOT be present ([MQTT-3.1.2-18],
		// [MQTT-3.1.2-20] in 3.1.1) but the bytes need not be one.
		return nil, malformed(level, "", strconv.Itoa(len(b)-off)+" bytes after the last payload field")
	}

	// The packet is well formed; now the rules a server applies to the
	// client identifier it carries.
	if len(clientID) == 0 {
		switch {
		case level == Level31:
			// MQTT 3.1 (section 3.1, no statement ids) requires a client
			// identifier of 1 to 23 characters and answers return code
			// 0x02 otherwise. The upper bound is not enforced: brokers
			// commonly accept longer identifiers.
			return nil, &ProtocolError{Kind: KindClientIDRejected, Reason: "empty client identifier (MQTT 3.1 requires one)", Level: level, Code: ClientIdentifierNotValid}
		case level == Level311 && flags&flagCleanStart == 0:
			// "If the Client supplies a zero-byte ClientId with
			// CleanSession set to 0, the Server MUST respond to the CONNECT
			// Packet with a CONNACK return code 0x02 (Identifier rejected)"
			// [MQTT-3.1.3-8]. 5.0 lets the server assign one regardless.
			return nil, &ProtocolError{Kind: KindClientIDRejected, Rule: "MQTT-3.1.3-8", Reason: "empty client identifier with CleanSession 0", Level: level, Code: ClientIdentifierNotValid}
		}
	}

	// One allocation for the Connect and its Will.
	alloc := new(struct {
		connect Connect
		will    Will
	})
	c := &alloc.connect
	c.ProtocolName = protocolName
	c.Level = level
	c.Bridge = bridge
	c.CleanStart = flags&flagCleanStart != 0
	c.KeepAlive = keepAlive
	c.Properties = props
	clientIDString, willTopicString, usernameString := copyStrings(clientID, willTopic, username)
	c.ClientID = clientIDString
	c.Username = usernameString
	c.HasUsername = flags&flagUsername != 0
	c.Password = password
	c.HasPassword = flags&flagPassword != 0
	if flags&flagWill != 0 {
		alloc.will = Will{
			QoS:        willQoS,
			Retain:     flags&flagWillRetain != 0,
			Properties: willProps,
			Topic:      willTopicString,
			Payload:    willPayload,
		}
		c.Will = &alloc.will
	}
	return c, nil
}

// copyStrings copies three fields into strings that share one allocation.
func copyStrings(a, b, c []byte) (string, string, string) {
	n := len(a) + len(b) + len(c)
	if n == 0 {
		return "", "", ""
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.Write(a)
	sb.Write(b)
	sb.Write(c)
	s := sb.String()
	return s[:len(a)], s[len(a) : len(a)+len(b)], s[len(a)+len(b):]
}

// AppendConnect appends the encoding of c to dst and returns the extended
// buffer. It computes every length, so c can be changed freely after
// ParseConnect: a proxy rewrites ClientID, Username or Password this way,
// and a health probe builds its CONNECT from a literal.
//
// For any packet p that ParseConnect accepts and whose Remaining Length is
// minimally encoded, AppendConnect(nil, c) reproduces p byte for byte.
//
// AppendConnect does not validate c. An empty ProtocolName is written as
// the one Level implies ("MQIsdp" for Level31, "MQTT" otherwise).
// Properties are written only for Level5. Username and Password are written
// only when HasUsername and HasPassword are set. A field longer than 65535
// bytes, the most its length prefix can say, is cut to 65535 bytes.
func AppendConnect(dst []byte, c *Connect) []byte {
	name := c.ProtocolName
	if name == "" {
		name = protocolNameMQTT
		if c.Level == Level31 {
			name = protocolNameMQIsdp
		}
	}
	v5 := c.Level == Level5

	remaining := fieldLen(len(name)) + 1 + 1 + keepAliveLength
	if v5 {
		remaining += varintLen(len(c.Properties)) + len(c.Properties)
	}
	remaining += fieldLen(len(c.ClientID))
	if w := c.Will; w != nil {
		if v5 {
			remaining += varintLen(len(w.Properties)) + len(w.Properties)
		}
		remaining += fieldLen(len(w.Topic)) + fieldLen(len(w.Payload))
	}
	if c.HasUsername {
		remaining += fieldLen(len(c.Username))
	}
	if c.HasPassword {
		remaining += fieldLen(len(c.Password))
	}

	var flags byte
	if c.CleanStart {
		flags |= flagCleanStart
	}
	if w := c.Will; w != nil {
		flags |= flagWill | w.QoS<<willQoSShift&flagWillQoS
		if w.Retain {
			flags |= flagWillRetain
		}
	}
	if c.HasUsername {
		flags |= flagUsername
	}
	if c.HasPassword {
		flags |= flagPassword
	}

	dst = slices.Grow(dst, 1+varintLen(remaining)+remaining)
	dst = append(dst, connectHeader)
	dst = appendVarint(dst, remaining)
	dst = appendField(dst, name)
	level := c.Level
	if c.Bridge {
		level |= bridgeBit
	}
	dst = append(dst, level, flags, byte(c.KeepAlive>>8), byte(c.KeepAlive))
	if v5 {
		dst = appendVarint(dst, len(c.Properties))
		dst = append(dst, c.Properties...)
	}
	dst = appendField(dst, c.ClientID)
	if w := c.Will; w != nil {
		if v5 {
			dst = appendVarint(dst, len(w.Properties))
			dst = append(dst, w.Properties...)
		}
		dst = appendField(dst, w.Topic)
		dst = appendField(dst, w.Payload)
	}
	if c.HasUsername {
		dst = appendField(dst, c.Username)
	}
	if c.HasPassword {
		dst = appendField(dst, c.Password)
	}
	return dst
}
