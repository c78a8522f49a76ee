package mqtt

// ErrorKind classifies protocol errors for metrics and logs. It takes only
// the values below.
type ErrorKind string

// Kinds of protocol errors.
const (
	// KindNotMQTT: the first packet is not a CONNECT, or the protocol name is
	// unknown. The connection is closed without a reply.
	KindNotMQTT ErrorKind = "not_mqtt"
	// KindMalformed: lengths or encodings are broken.
	KindMalformed ErrorKind = "malformed"
	// KindProtocol: well-formed bytes that break a MUST of the specification.
	KindProtocol ErrorKind = "protocol_violation"
	// KindUnsupportedVersion: a known protocol name with an unknown level.
	KindUnsupportedVersion ErrorKind = "unsupported_version"
	// KindClientIDRejected: a client identifier the specification tells the
	// server to reject, such as an empty one with CleanSession 0 in 3.1.1.
	KindClientIDRejected ErrorKind = "client_id_rejected"
)

// ProtocolError is a packet that breaks the specification.
type ProtocolError struct {
	Kind ErrorKind
	// Rule is the conformance statement the packet breaks, without brackets,
	// as numbered by the specification of Level ("MQTT-3.1.2-3"); "" when
	// the rule has no statement id.
	Rule string
	// Reason says what is wrong. It quotes no packet contents beyond short
	// field values, so it is safe to log.
	Reason string
	// Level is the protocol level read from the packet, 0 when the packet
	// broke before it.
	Level byte
	// Code, when non-zero, is the reason code of the CONNACK a server sends
	// before it closes the connection (see AppendConnack). It is zero when
	// the specification says to close without a reply, as MQTT 3.1.1 does
	// for malformed packets [MQTT-3.1.4-1].
	Code ReasonCode
}

func (e *ProtocolError) Error() string {
	if e.Rule == "" {
		return "mqtt: " + e.Reason
	}
	return "mqtt: " + e.Reason + " [" + e.Rule + "]"
}

// ruleFor picks the statement id that fits level: the MQTT 3.1.1 one for
// levels 3 and 4, the MQTT 5.0 one otherwise.
func ruleFor(level byte, rule311, rule5 string) string {
	if level == Level5 {
		return rule5
	}
	return rule311
}

// malformed returns a KindMalformed error. An MQTT 5.0 server may answer a
// malformed CONNECT with reason code 0x81 (5.0 section 4.13); an MQTT 3.x
// server closes without a CONNACK [MQTT-3.1.4-1].
func malformed(level byte, rule, reason string) *ProtocolError {
	e := &ProtocolError{Kind: KindMalformed, Rule: rule, Reason: reason, Level: level}
	if level == Level5 {
		e.Code = MalformedPacket
	}
	return e
}

// violation returns a KindProtocol error. code5 is the reason code an MQTT
// 5.0 server may send; an MQTT 3.x server closes without a CONNACK
// [MQTT-3.1.4-1].
func violation(level byte, rule string, code5 ReasonCode, reason string) *ProtocolError {
	e := &ProtocolError{Kind: KindProtocol, Rule: rule, Reason: reason, Level: level}
	if level == Level5 {
		e.Code = code5
	}
	return e
}
