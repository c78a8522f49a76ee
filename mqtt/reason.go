package mqtt

import "fmt"

// ReasonCode is an MQTT 5.0 reason code (5.0 section 2.4). Codes below 0x80
// report success, codes from 0x80 failure.
type ReasonCode byte

// The reason codes MQTT 5.0 allows in CONNACK (Table 3-1) and DISCONNECT
// (Table 3-10).
const (
	Success                             ReasonCode = 0x00
	NormalDisconnection                 ReasonCode = 0x00 // DISCONNECT's name for 0x00
	DisconnectWithWillMessage           ReasonCode = 0x04
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolErrorCode                   ReasonCode = 0x82 // "Protocol Error"; the name ProtocolError is the error type
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUsernameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// String returns the name MQTT 5.0 gives the code, such as "Server busy".
// 0x00 is "Success", CONNACK's name for it.
func (c ReasonCode) String() string {
	switch c {
	case Success:
		return "Success"
	case DisconnectWithWillMessage:
		return "Disconnect with Will Message"
	case UnspecifiedError:
		return "Unspecified error"
	case MalformedPacket:
		return "Malformed Packet"
	case ProtocolErrorCode:
		return "Protocol Error"
	case ImplementationSpecificError:
		return "Implementation specific error"
	case UnsupportedProtocolVersion:
		return "Unsupported Protocol Version"
	case ClientIdentifierNotValid:
		return "Client Identifier not valid"
	case BadUsernameOrPassword:
		return "Bad User Name or Password"
	case NotAuthorized:
		return "Not authorized"
	case ServerUnavailable:
		return "Server unavailable"
	case ServerBusy:
		return "Server busy"
	case Banned:
		return "Banned"
	case ServerShuttingDown:
		return "Server shutting down"
	case BadAuthenticationMethod:
		return "Bad authentication method"
	case KeepAliveTimeout:
		return "Keep Alive timeout"
	case SessionTakenOver:
		return "Session taken over"
	case TopicFilterInvalid:
		return "Topic Filter invalid"
	case TopicNameInvalid:
		return "Topic Name invalid"
	case ReceiveMaximumExceeded:
		return "Receive Maximum exceeded"
	case TopicAliasInvalid:
		return "Topic Alias invalid"
	case PacketTooLarge:
		return "Packet too large"
	case MessageRateTooHigh:
		return "Message rate too high"
	case QuotaExceeded:
		return "Quota exceeded"
	case AdministrativeAction:
		return "Administrative action"
	case PayloadFormatInvalid:
		return "Payload format invalid"
	case RetainNotSupported:
		return "Retain not supported"
	case QoSNotSupported:
		return "QoS not supported"
	case UseAnotherServer:
		return "Use another server"
	case ServerMoved:
		return "Server moved"
	case SharedSubscriptionsNotSupported:
		return "Shared Subscriptions not supported"
	case ConnectionRateExceeded:
		return "Connection rate exceeded"
	case MaximumConnectTime:
		return "Maximum connect time"
	case SubscriptionIdentifiersNotSupported:
		return "Subscription Identifiers not supported"
	case WildcardSubscriptionsNotSupported:
		return "Wildcard Subscriptions not supported"
	}
	return fmt.Sprintf("ReasonCode(0x%02X)", byte(c))
}

// CONNACK return codes of MQTT 3.1 and 3.1.1 (3.1.1 Table 3.1).
const (
	returnAccepted                    = 0x00
	returnUnacceptableProtocolVersion = 0x01
	returnIdentifierRejected          = 0x02
	returnServerUnavailable           = 0x03
	returnBadUsernameOrPassword       = 0x04
	returnNotAuthorized               = 0x05
)

// ReturnCode311 maps an MQTT 5.0 reason code to the CONNACK return code of
// MQTT 3.1 and 3.1.1, which has six values:
//
//	0x00 Success                            -> 0x00 Connection Accepted
//	0x84 Unsupported Protocol Version       -> 0x01 unacceptable protocol version
//	0x85 Client Identifier not valid        -> 0x02 identifier rejected
//	0x86 Bad User Name or Password          -> 0x04 bad user name or password
//	0x87 Not authorized                     -> 0x05 not authorized
//	0x8A Banned                             -> 0x05
//	0x8C Bad authentication method          -> 0x05
//	any other code (0x88 Server unavailable,
//	0x89 Server busy, 0x8B Server shutting down,
//	0x97 Quota exceeded, 0x9C Use another server,
//	0x9D Server moved, 0x9F Connection rate
//	exceeded, 0x80 Unspecified error, ...)  -> 0x03 server unavailable
//
// 3.1.1 has no return code for a malformed CONNECT (0x81) or a protocol
// error (0x82): a 3.x server closes without a CONNACK [MQTT-3.1.4-1]
// [MQTT-3.2.2-6]. ReturnCode311 maps them to 0x03 like every other failure,
// but [ProtocolError.Code] is zero for them at levels 3 and 4, so a caller
// that follows it sends nothing.
func ReturnCode311(c ReasonCode) byte {
	switch c {
	case Success:
		return returnAccepted
	case UnsupportedProtocolVersion:
		return returnUnacceptableProtocolVersion
	case ClientIdentifierNotValid:
		return returnIdentifierRejected
	case BadUsernameOrPassword:
		return returnBadUsernameOrPassword
	case NotAuthorized, Banned, BadAuthenticationMethod:
		return returnNotAuthorized
	}
	return returnServerUnavailable
}
