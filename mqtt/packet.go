package mqtt

import (
	"errors"
	"strconv"
)

// Protocol levels, the byte after the protocol name in CONNECT.
const (
	Level31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	Level311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	Level5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// Protocol names, as they appear in CONNECT.
const (
	protocolNameMQTT   = "MQTT"
	protocolNameMQIsdp = "MQIsdp"
)

// PacketType is the MQTT control packet type, the high nibble of the first
// byte of every packet.
type PacketType byte

// Control packet types. The names carry a Type prefix because Connect is
// the decoded CONNECT packet.
const (
	TypeConnect     PacketType = 1
	TypeConnack     PacketType = 2
	TypePublish     PacketType = 3
	TypePuback      PacketType = 4
	TypePubrec      PacketType = 5
	TypePubrel      PacketType = 6
	TypePubcomp     PacketType = 7
	TypeSubscribe   PacketType = 8
	TypeSuback      PacketType = 9
	TypeUnsubscribe PacketType = 10
	TypeUnsuback    PacketType = 11
	TypePingreq     PacketType = 12
	TypePingresp    PacketType = 13
	TypeDisconnect  PacketType = 14
	TypeAuth        PacketType = 15 // MQTT 5.0 only
)

// String returns the name the specifications use, such as "CONNECT".
func (t PacketType) String() string {
	switch t {
	case TypeConnect:
		return "CONNECT"
	case TypeConnack:
		return "CONNACK"
	case TypePublish:
		return "PUBLISH"
	case TypePuback:
		return "PUBACK"
	case TypePubrec:
		return "PUBREC"
	case TypePubrel:
		return "PUBREL"
	case TypePubcomp:
		return "PUBCOMP"
	case TypeSubscribe:
		return "SUBSCRIBE"
	case TypeSuback:
		return "SUBACK"
	case TypeUnsubscribe:
		return "UNSUBSCRIBE"
	case TypeUnsuback:
		return "UNSUBACK"
	case TypePingreq:
		return "PINGREQ"
	case TypePingresp:
		return "PINGRESP"
	case TypeDisconnect:
		return "DISCONNECT"
	case TypeAuth:
		return "AUTH"
	}
	return "PacketType(" + strconv.Itoa(int(t)) + ")"
}

// ErrIncomplete reports that a buffer does not hold enough bytes yet. The
// caller reads more and tries again.
var ErrIncomplete = errors.New("mqtt: incomplete packet")

// MaxRemainingLength is the largest Remaining Length a fixed header can
// encode: four bytes of seven bits.
const MaxRemainingLength = 1<<28 - 1

// FrameLen returns the total length n, fixed header included, of the packet
// that starts at b[0]. It looks only at the fixed header, so it is the first
// step of reading any packet: once len(b) >= n, b[:n] is one whole packet.
//
// FrameLen returns [ErrIncomplete] when b is too short to hold the Remaining
// Length, and a [*ProtocolError] of kind [KindMalformed] when the Remaining
// Length takes more than four bytes. It accepts encodings longer than needed
// (such as 0x80 0x00 for zero): MQTT 3.1.1 does not forbid them, and
// [ParseConnect] rejects them for MQTT 5.0 [MQTT-1.5.5-1], where it knows
// the level.
func FrameLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, ErrIncomplete
	}
	remaining, size, err := decodeVarint(b[1:])
	if err != nil {
		return 0, err
	}
	return 1 + size + remaining, nil
}

// decodeVarint decodes a Variable Byte Integer (the Remaining Length
// encoding) from the start of b, returning the value and the number of bytes
// it took.
func decodeVarint(b []byte) (value, size int, err error) {
	for i := range 4 {
		if i == len(b) {
			return 0, 0, ErrIncomplete
		}
		value |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return value, i + 1, nil
		}
	}
	// Both specifications limit the encoding to four bytes (3.1.1 section
	// 2.2.3, 5.0 section 1.5.5); neither gives the limit a statement id.
	return 0, 0, &ProtocolError{Kind: KindMalformed, Reason: "variable byte integer longer than 4 bytes"}
}

// varintLen returns the number of bytes the minimal encoding of v takes.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

// appendVarint appends the minimal Variable Byte Integer encoding of v,
// which must be in [0, MaxRemainingLength].
func appendVarint(dst []byte, v int) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// maxFieldLen is the most a Two Byte Integer length prefix can say.
const maxFieldLen = 1<<16 - 1

// appendField appends a length-prefixed string or binary field, cut to
// maxFieldLen so the packet stays well framed.
func appendField[T string | []byte](dst []byte, s T) []byte {
	n := min(len(s), maxFieldLen)
	dst = append(dst, byte(n>>8), byte(n))
	return append(dst, s[:n]...)
}

// fieldLen is the encoded size of a field written by appendField.
func fieldLen(n int) int {
	return 2 + min(n, maxFieldLen)
}
