package mqtt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// MQTT 5.0 property identifiers (5.0 section 2.2.2.2, Table 2-4).
const (
	propPayloadFormatIndicator          = 0x01
	propMessageExpiryInterval           = 0x02
	propContentType                     = 0x03
	propResponseTopic                   = 0x08
	propCorrelationData                 = 0x09
	propSubscriptionIdentifier          = 0x0B
	propSessionExpiryInterval           = 0x11
	propAssignedClientIdentifier        = 0x12
	propServerKeepAlive                 = 0x13
	propAuthenticationMethod            = 0x15
	propAuthenticationData              = 0x16
	propRequestProblemInformation       = 0x17
	propWillDelayInterval               = 0x18
	propRequestResponseInformation      = 0x19
	propResponseInformation             = 0x1A
	propServerReference                 = 0x1C
	propReasonString                    = 0x1F
	propReceiveMaximum                  = 0x21
	propTopicAliasMaximum               = 0x22
	propTopicAlias                      = 0x23
	propMaximumQoS                      = 0x24
	propRetainAvailable                 = 0x25
	propUserProperty                    = 0x26
	propMaximumPacketSize               = 0x27
	propWildcardSubscriptionAvailable   = 0x28
	propSubscriptionIdentifierAvailable = 0x29
	propSharedSubscriptionAvailable     = 0x2A
)

// propertyType is the data type of a property value (5.0 section 1.5).
type propertyType uint8

const (
	typeByte propertyType = iota + 1
	typeTwoByteInteger
	typeFourByteInteger
	typeVarint
	typeString
	typeBinary
	typeStringPair
)

type propertyInfo struct {
	name string
	typ  propertyType
}

// propertyInfos describes every property MQTT 5.0 defines, by identifier.
var propertyInfos = [...]propertyInfo{
	propPayloadFormatIndicator:          {"Payload Format Indicator", typeByte},
	propMessageExpiryInterval:           {"Message Expiry Interval", typeFourByteInteger},
	propContentType:                     {"Content Type", typeString},
	propResponseTopic:                   {"Response Topic", typeString},
	propCorrelationData:                 {"Correlation Data", typeBinary},
	propSubscriptionIdentifier:          {"Subscription Identifier", typeVarint},
	propSessionExpiryInterval:           {"Session Expiry Interval", typeFourByteInteger},
	propAssignedClientIdentifier:        {"Assigned Client Identifier", typeString},
	propServerKeepAlive:                 {"Server Keep Alive", typeTwoByteInteger},
	propAuthenticationMethod:            {"Authentication Method", typeString},
	propAuthenticationData:              {"Authentication Data", typeBinary},
	propRequestProblemInformation:       {"Request Problem Information", typeByte},
	propWillDelayInterval:               {"Will Delay Interval", typeFourByteInteger},
	propRequestResponseInformation:      {"Request Response Information", typeByte},
	propResponseInformation:             {"Response Information", typeString},
	propServerReference:                 {"Server Reference", typeString},
	propReasonString:                    {"Reason String", typeString},
	propReceiveMaximum:                  {"Receive Maximum", typeTwoByteInteger},
	propTopicAliasMaximum:               {"Topic Alias Maximum", typeTwoByteInteger},
	propTopicAlias:                      {"Topic Alias", typeTwoByteInteger},
	propMaximumQoS:                      {"Maximum QoS", typeByte},
	propRetainAvailable:                 {"Retain Available", typeByte},
	propUserProperty:                    {"User Property", typeStringPair},
	propMaximumPacketSize:               {"Maximum Packet Size", typeFourByteInteger},
	propWildcardSubscriptionAvailable:   {"Wildcard Subscription Available", typeByte},
	propSubscriptionIdentifierAvailable: {"Subscription Identifier Available", typeByte},
	propSharedSubscriptionAvailable:     {"Shared Subscription Available", typeByte},
}

// propertySet is a set of property identifiers, one bit each. Every
// identifier MQTT 5.0 defines is below 64.
type propertySet uint64

func (s propertySet) has(id byte) bool { return id < 64 && s&(1<<id) != 0 }

// The properties each packet may carry.
const (
	// 5.0 section 3.1.2.11.
	connectProperties propertySet = 1<<propSessionExpiryInterval |
		1<<propReceiveMaximum |
		1<<propMaximumPacketSize |
		1<<propTopicAliasMaximum |
		1<<propRequestResponseInformation |
		1<<propRequestProblemInformation |
		1<<propUserProperty |
		1<<propAuthenticationMethod |
		1<<propAuthenticationData

	// 5.0 section 3.1.3.2.
	willProperties propertySet = 1<<propWillDelayInterval |
		1<<propPayloadFormatIndicator |
		1<<propMessageExpiryInterval |
		1<<propContentType |
		1<<propResponseTopic |
		1<<propCorrelationData |
		1<<propUserProperty

	// 5.0 section 3.2.2.3.
	connackProperties propertySet = 1<<propSessionExpiryInterval |
		1<<propReceiveMaximum |
		1<<propMaximumQoS |
		1<<propRetainAvailable |
		1<<propMaximumPacketSize |
		1<<propAssignedClientIdentifier |
		1<<propTopicAliasMaximum |
		1<<propReasonString |
		1<<propUserProperty |
		1<<propWildcardSubscriptionAvailable |
		1<<propSubscriptionIdentifierAvailable |
		1<<propSharedSubscriptionAvailable |
		1<<propServerKeepAlive |
		1<<propResponseInformation |
		1<<propServerReference |
		1<<propAuthenticationMethod |
		1<<propAuthenticationData

	// Properties whose value is a Byte that must be 0 or 1; "It is a
	// Protocol Error to ... have a value other than 0 or 1."
	booleanProperties propertySet = 1<<propRequestProblemInformation |
		1<<propRequestResponseInformation |
		1<<propMaximumQoS |
		1<<propRetainAvailable |
		1<<propWildcardSubscriptionAvailable |
		1<<propSubscriptionIdentifierAvailable |
		1<<propSharedSubscriptionAvailable
)

// readProperties reads a Property Length and the properties after it from
// the start of b, checks them against allowed, and returns the raw
// properties (nil when there are none) and the number of bytes read. where
// names the property list in errors ("CONNECT", "Will", "CONNACK").
func readProperties(b []byte, allowed propertySet, where string) (props []byte, n int, err error) {
	length, size, err := decodeVarint(b)
	if err == ErrIncomplete {
		return nil, 0, malformed(Level5, "", where+" property length runs past the end of the packet")
	}
	if err != nil {
		return nil, 0, malformed(Level5, "", where+" property length longer than 4 bytes")
	}
	if size != varintLen(length) {
		// "The encoded value MUST use the minimum number of bytes necessary
		// to represent the value" [MQTT-1.5.5-1].
		return nil, 0, malformed(Level5, "MQTT-1.5.5-1", where+" property length not minimally encoded")
	}
	if length > len(b)-size {
		return nil, 0, malformed(Level5, "", where+" properties run past the end of the packet")
	}
	end := size + length
	if length == 0 {
		return nil, end, nil
	}
	props = b[size:end:end]
	if err := checkProperties(props, allowed, where); err != nil {
		return nil, 0, err
	}
	return props, end, nil
}

// checkProperties walks a property list, checking every identifier is one
// allowed, every value is well formed and in range, and only User Property
// appears more than once.
func checkProperties(props []byte, allowed propertySet, where string) error {
	var seen propertySet
	for off := 0; off < len(props); {
		id := props[off]
		off++
		// All property identifiers are one byte in MQTT 5.0; a byte with the
		// continuation bit set cannot start a valid one.
		if !allowed.has(id) {
			// "A Control Packet which contains an Identifier which is not
			// valid for its packet type ... is a Malformed Packet" (5.0
			// section 2.2.2.2, no statement id).
			return malformed(Level5, "", fmt.Sprintf("property 0x%02X not valid in %s", id, where))
		}
		info := propertyInfos[id]
		if seen.has(id) && id != propUserProperty {
			// Every CONNECT, Will and CONNACK property but User Property
			// carries "It is a Protocol Error to include the ... more than
			// once" (no statement id).
			return violation(Level5, "", ProtocolErrorCode, where+" property "+info.name+" included more than once")
		}
		seen |= 1 << id
		n, err := checkPropertyValue(props[off:], id, info, where)
		if err != nil {
			return err
		}
		off += n
	}
	if seen.has(propAuthenticationData) && !seen.has(propAuthenticationMethod) {
		// "It is a Protocol Error to include Authentication Data if there is
		// no Authentication Method" (5.0 section 3.1.2.11.10).
		return violation(Level5, "", ProtocolErrorCode, where+" has Authentication Data without Authentication Method")
	}
	return nil
}

// checkPropertyValue checks the value of property id at the start of b and
// returns its size.
func checkPropertyValue(b []byte, id byte, info propertyInfo, where string) (int, error) {
	truncated := func() error {
		return malformed(Level5, "", where+" property "+info.name+" runs past the end of the properties")
	}
	switch info.typ {
	case typeByte:
		if len(b) < 1 {
			return 0, truncated()
		}
		if booleanProperties.has(id) && b[0] > 1 {
			return 0, violation(Level5, "", ProtocolErrorCode, where+" property "+info.name+" is neither 0 nor 1")
		}
		return 1, nil
	case typeTwoByteInteger:
		if len(b) < 2 {
			return 0, truncated()
		}
		if id == propReceiveMaximum && binary.BigEndian.Uint16(b) == 0 {
			// "It is a Protocol Error to include the Receive Maximum value
			// more than once or for it to have the value 0."
			return 0, violation(Level5, "", ProtocolErrorCode, where+" property Receive Maximum is 0")
		}
		return 2, nil
	case typeFourByteInteger:
		if len(b) < 4 {
			return 0, truncated()
		}
		if id == propMaximumPacketSize && binary.BigEndian.Uint32(b) == 0 {
			// "It is a Protocol Error to include the Maximum Packet Size more
			// than once, or for the value to be set to zero."
			return 0, violation(Level5, "", ProtocolErrorCode, where+" property Maximum Packet Size is 0")
		}
		return 4, nil
	case typeVarint:
		v, size, err := decodeVarint(b)
		if err == ErrIncomplete {
			return 0, truncated()
		}
		if err != nil {
			return 0, malformed(Level5, "", where+" property "+info.name+" longer than 4 bytes")
		}
		if size != varintLen(v) {
			return 0, malformed(Level5, "MQTT-1.5.5-1", where+" property "+info.name+" not minimally encoded")
		}
		return size, nil
	case typeString:
		s, n, ok := readField(b)
		if !ok {
			return 0, truncated()
		}
		if err := checkUTF8(Level5, s, where+" property "+info.name); err != nil {
			return 0, err
		}
		return n, nil
	case typeBinary:
		_, n, ok := readField(b)
		if !ok {
			return 0, truncated()
		}
		return n, nil
	case typeStringPair:
		name, n, ok := readField(b)
		if !ok {
			return 0, truncated()
		}
		value, m, ok := readField(b[n:])
		if !ok {
			return 0, truncated()
		}
		// "Both strings MUST comply with the requirements for UTF-8 Encoded
		// Strings" [MQTT-1.5.7-1].
		for _, s := range [...][]byte{name, value} {
			if bytes.IndexByte(s, 0) >= 0 || !utf8.Valid(s) {
				return 0, malformed(Level5, "MQTT-1.5.7-1", where+" property "+info.name+" is not a pair of valid UTF-8 strings")
			}
		}
		return n + m, nil
	}
	panic("mqtt: unreachable: property without a type in an allowed set")
}

// readField reads a Two Byte Integer length and that many bytes from the
// start of b: a UTF-8 Encoded String or Binary Data. It returns the field
// (capped, so appending to it cannot overwrite the bytes after it), the
// number of bytes read, and false when b is too short.
func readField(b []byte) (field []byte, n int, ok bool) {
	if len(b) < 2 {
		return nil, 0, false
	}
	end := 2 + int(binary.BigEndian.Uint16(b))
	if end > len(b) {
		return nil, 0, false
	}
	return b[2:end:end], end, true
}

// checkUTF8 checks the rules every UTF-8 Encoded String follows: well-formed
// UTF-8, which excludes the surrogates U+D800 to U+DFFF ([MQTT-1.5.3-1] in
// 3.1.1, [MQTT-1.5.4-1] in 5.0), and no U+0000 ([MQTT-1.5.3-2],
// [MQTT-1.5.4-2]). what names the field in the error.
func checkUTF8(level byte, s []byte, what string) error {
	// In well-formed UTF-8 a zero byte can only be U+0000.
	if bytes.IndexByte(s, 0) >= 0 {
		return malformed(level, ruleFor(level, "MQTT-1.5.3-2", "MQTT-1.5.4-2"), what+" contains U+0000")
	}
	if !utf8.Valid(s) {
		return malformed(level, ruleFor(level, "MQTT-1.5.3-1", "MQTT-1.5.4-1"), what+" is not well-formed UTF-8")
	}
	return nil
}
