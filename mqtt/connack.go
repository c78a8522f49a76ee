package mqtt

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	connackHeader    = byte(TypeConnack) << 4
	disconnectHeader = byte(TypeDisconnect) << 4

	// flagSessionPresent is bit 0 of the Connect Acknowledge Flags.
	flagSessionPresent = 0x01

	// maxReasonString caps the Reason String AppendConnack and
	// AppendDisconnect write, so the whole packet stays under 128 bytes
	// with every length in one byte. The receiver's Maximum Packet Size
	// bounds what a server may send [MQTT-3.2.2-19] [MQTT-3.14.2-3], and
	// these functions do not know it; 128 bytes is below any value a
	// client plausibly sets.
	maxReasonString = 100
)

// AppendConnack appends a CONNACK for a client of the given protocol level
// and returns the extended buffer.
//
// For MQTT 5.0 (level 5) it carries code and, when reason is not empty, a
// Reason String property holding reason, cut to 100 bytes at a character
// boundary, without ill-formed UTF-8 or U+0000.
//
// For any other level, including an unknown one from a CONNECT refused with
// [UnsupportedProtocolVersion], it is the 3.1.1 form 20 02 00 rc, with rc =
// [ReturnCode311](code) and reason dropped: 3.1.1 tells a server to answer
// an unsupported level with return code 0x01 [MQTT-3.1.2-2], and every
// client understands that form.
//
// Session Present is 0: a refusal must clear it ([MQTT-3.2.2-4] in 3.1.1,
// [MQTT-3.2.2-6] in 5.0), and the proxy has no session to report.
func AppendConnack(dst []byte, level byte, code ReasonCode, reason string) []byte {
	if level != Level5 {
		return append(dst, connackHeader, 2, 0, ReturnCode311(code))
	}
	reason = cleanReasonString(reason)
	if reason == "" {
		// Flags, reason code and a Property Length of 0 [MQTT-2.2.2-1].
		return append(dst, connackHeader, 3, 0, byte(code), 0)
	}
	return appendWithProperty(dst, connackHeader, propReasonString, reason, 0, byte(code))
}

// appendWithProperty appends a packet of fixed header byte header whose
// variable header is fixed then a property list of one string property,
// id with value; value is short enough (maxReasonString) for one-byte
// lengths, but the lengths are written as the general varints anyway.
func appendWithProperty(dst []byte, header, id byte, value string, fixed ...byte) []byte {
	props := 1 + fieldLen(len(value))
	dst = append(dst, header)
	dst = appendVarint(dst, len(fixed)+varintLen(props)+props)
	dst = append(dst, fixed...)
	dst = appendVarint(dst, props)
	dst = append(dst, id)
	return appendField(dst, value)
}

// AppendDisconnect appends a DISCONNECT and returns the extended buffer.
//
// For MQTT 3.1 and 3.1.1 it is e0 00: they have no reason codes, and only
// clients send DISCONNECT, so a server closes a 3.x connection without one;
// whether to send it is the caller's choice (a health probe sends it to say
// goodbye). For MQTT 5.0 it carries code and, when reason is not empty, a
// Reason String property, cut as in [AppendConnack]. It uses the shortest
// form the specification allows: e0 00 for a normal disconnection without a
// reason, e0 01 rc for a code without one.
func AppendDisconnect(dst []byte, level byte, code ReasonCode, reason string) []byte {
	if level != Level5 {
		return append(dst, disconnectHeader, 0)
	}
	reason = cleanReasonString(reason)
	switch {
	case reason == "" && code == NormalDisconnection:
		return append(dst, disconnectHeader, 0)
	case reason == "":
		// "If the Remaining Length is less than 2, a value of 0 is used"
		// for the Property Length (5.0 section 3.14.2.2.1).
		return append(dst, disconnectHeader, 1, byte(code))
	}
	return appendWithProperty(dst, disconnectHeader, propReasonString, reason, byte(code))
}

// AppendServerDisconnect appends the MQTT 5.0 DISCONNECT a server sends to
// end a connection, with code and, when serverReference is not empty, a
// Server Reference property naming where the client is to connect instead
// (5.0 section 4.11: with 0x9C Use another server or 0x9D Server moved).
// The reference is cut like a Reason String in [AppendConnack].
func AppendServerDisconnect(dst []byte, code ReasonCode, serverReference string) []byte {
	serverReference = cleanReasonString(serverReference)
	if serverReference == "" {
		return AppendDisconnect(dst, Level5, code, "")
	}
	return appendWithProperty(dst, disconnectHeader, propServerReference, serverReference, byte(code))
}

// cleanReasonString makes s a valid UTF-8 Encoded String ([MQTT-1.5.4-1],
// [MQTT-1.5.4-2]) of at most maxReasonString bytes, dropping ill-formed
// bytes and U+0000 and cutting at a character boundary.
func cleanReasonString(s string) string {
	if len(s) <= maxReasonString && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == 0 || r == utf8.RuneError && size == 1 {
			continue
		}
		if b.Len()+size > maxReasonString {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ParseConnack decodes one whole CONNACK packet, as a client of the given
// protocol level receives it (a health probe, say). It returns Session
// Present and the code: for MQTT 5.0 the reason code, for MQTT 3.1 and
// 3.1.1 the return code (0x00 to 0x05) as it is, in a ReasonCode.
//
// A server that speaks only 3.1.1 may refuse a 5.0 CONNECT in its own form
// (20 02 00 01, mosquitto does); ParseConnack accepts a 5.0 CONNACK without
// properties for that reason and returns ReasonCode(0x01). Treat any code
// other than [Success] as a refusal.
//
// Every error is a [*ProtocolError].
func ParseConnack(pkt []byte, level byte) (sessionPresent bool, code ReasonCode, err error) {
	if len(pkt) == 0 {
		return false, 0, malformed(level, "", "empty packet")
	}
	if PacketType(pkt[0]>>4) != TypeConnack {
		// "The first packet sent from the Server to the Client MUST be a
		// CONNACK Packet" [MQTT-3.2.0-1] (3.1.1; 5.0 lets AUTH come first
		// under the same id, which a probe does not ask for).
		return false, 0, &ProtocolError{Kind: KindNotMQTT, Rule: "MQTT-3.2.0-1", Reason: "first packet is " + PacketType(pkt[0]>>4).String() + ", not CONNACK", Level: level}
	}
	if pkt[0]&0x0f != 0 {
		// Reserved flags 0000: [MQTT-2.2.2-1] in 3.1.1, [MQTT-2.1.3-1] in 5.0.
		return false, 0, malformed(level, ruleFor(level, "MQTT-2.2.2-1", "MQTT-2.1.3-1"), "CONNACK fixed header flags are not 0000")
	}
	remaining, size, err := decodeVarint(pkt[1:])
	if err == ErrIncomplete {
		return false, 0, malformed(level, "", "remaining length runs past the end of the packet")
	}
	if err != nil {
		return false, 0, malformed(level, "", "remaining length longer than 4 bytes")
	}
	if 1+size+remaining != len(pkt) {
		return false, 0, malformed(level, "", "remaining length "+strconv.Itoa(remaining)+" does not match the "+strconv.Itoa(len(pkt)-1-size)+" bytes after the fixed header")
	}
	b := pkt[1+size:]
	if level != Level5 && len(b) != 2 || len(b) < 2 {
		return false, 0, malformed(level, "", "CONNACK remaining length "+strconv.Itoa(len(b))+" is too short or, before 5.0, not 2")
	}
	flags, rc := b[0], b[1]
	// In MQTT 3.1 the byte is unused; later versions define bit 0.
	if level != Level31 {
		if flags&^flagSessionPresent != 0 {
			// Bits 7-1 "are reserved and MUST be set to 0" (3.1.1 section
			// 3.2.2.1, no id; [MQTT-3.2.2-1] in 5.0).
			return false, 0, malformed(level, ruleFor(level, "", "MQTT-3.2.2-1"), "reserved CONNACK flags are set")
		}
		sessionPresent = flags&flagSessionPresent != 0
	}
	if sessionPresent && rc != 0 {
		// "If a server sends a CONNACK packet containing a non-zero return
		// code it MUST set Session Present to 0", [MQTT-3.2.2-4] in 3.1.1,
		// [MQTT-3.2.2-6] in 5.0.
		return false, 0, violation(level, ruleFor(level, "MQTT-3.2.2-4", "MQTT-3.2.2-6"), ProtocolErrorCode, "Session Present set with a non-zero code")
	}
	if level == Level5 && len(b) > 2 {
		_, n, err := readProperties(b[2:], connackProperties, "CONNACK")
		if err != nil {
			return false, 0, err
		}
		if 2+n != len(b) {
			return false, 0, malformed(level, "", strconv.Itoa(len(b)-2-n)+" bytes after the CONNACK properties")
		}
	}
	return sessionPresent, ReasonCode(rc), nil
}

// ConnackServerReference returns the Server Reference property of a 5.0
// CONNACK that [ParseConnack] accepted, or "" when it has none: a broker
// that answers 0x9C Use another server or 0x9D Server moved may name where
// to go (5.0 section 4.11).
func ConnackServerReference(pkt []byte) string {
	_, size, err := decodeVarint(pkt[min(1, len(pkt)):])
	if err != nil || len(pkt) < 1+size+3 {
		return ""
	}
	props, _, err := readProperties(pkt[1+size+2:], connackProperties, "CONNACK")
	if err != nil {
		return ""
	}
	for off := 0; off < len(props); {
		id := props[off]
		off++
		n, err := checkPropertyValue(props[off:], id, propertyInfos[id], "CONNACK")
		if err != nil {
			return ""
		}
		if id == propServerReference {
			if field, _, ok := readField(props[off:]); ok {
				return string(field)
			}
			return ""
		}
		off += n
	}
	return ""
}
