package mqtt

import "testing"

func TestReturnCode311(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code ReasonCode
		want byte
	}{
		{Success, 0x00},
		{UnsupportedProtocolVersion, 0x01},
		{ClientIdentifierNotValid, 0x02},
		{BadUsernameOrPassword, 0x04},
		{NotAuthorized, 0x05},
		{Banned, 0x05},
		{BadAuthenticationMethod, 0x05},
		{ServerUnavailable, 0x03},
		{ServerBusy, 0x03},
		{ServerShuttingDown, 0x03},
		{QuotaExceeded, 0x03},
		{ConnectionRateExceeded, 0x03},
		{UseAnotherServer, 0x03},
		{ServerMoved, 0x03},
		{UnspecifiedError, 0x03},
		{MalformedPacket, 0x03},
		{ProtocolErrorCode, 0x03},
		{ImplementationSpecificError, 0x03},
		{PacketTooLarge, 0x03},
		{DisconnectWithWillMessage, 0x03},
	}
	for _, tt := range tests {
		if got := ReturnCode311(tt.code); got != tt.want {
			t.Errorf("ReturnCode311(%v) = 0x%02X, want 0x%02X", tt.code, got, tt.want)
		}
	}
}

func TestReasonCodeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code ReasonCode
		want string
	}{
		{Success, "Success"},
		{NormalDisconnection, "Success"},
		{DisconnectWithWillMessage, "Disconnect with Will Message"},
		{UnspecifiedError, "Unspecified error"},
		{MalformedPacket, "Malformed Packet"},
		{ProtocolErrorCode, "Protocol Error"},
		{ImplementationSpecificError, "Implementation specific error"},
		{UnsupportedProtocolVersion, "Unsupported Protocol Version"},
		{ClientIdentifierNotValid, "Client Identifier not valid"},
		{BadUsernameOrPassword, "Bad User Name or Password"},
		{NotAuthorized, "Not authorized"},
		{ServerUnavailable, "Server unavailable"},
		{ServerBusy, "Server busy"},
		{Banned, "Banned"},
		{ServerShuttingDown, "Server shutting down"},
		{BadAuthenticationMethod, "Bad authentication method"},
		{KeepAliveTimeout, "Keep Alive timeout"},
		{SessionTakenOver, "Session taken over"},
		{TopicFilterInvalid, "Topic Filter invalid"},
		{TopicNameInvalid, "Topic Name invalid"},
		{ReceiveMaximumExceeded, "Receive Maximum exceeded"},
		{TopicAliasInvalid, "Topic Alias invalid"},
		{PacketTooLarge, "Packet too large"},
		{MessageRateTooHigh, "Message rate too high"},
		{QuotaExceeded, "Quota exceeded"},
		{AdministrativeAction, "Administrative action"},
		{PayloadFormatInvalid, "Payload format invalid"},
		{RetainNotSupported, "Retain not supported"},
		{QoSNotSupported, "QoS not supported"},
		{UseAnotherServer, "Use another server"},
		{ServerMoved, "Server moved"},
		{SharedSubscriptionsNotSupported, "Shared Subscriptions not supported"},
		{ConnectionRateExceeded, "Connection rate exceeded"},
		{MaximumConnectTime, "Maximum connect time"},
		{SubscriptionIdentifiersNotSupported, "Subscription Identifiers not supported"},
		{WildcardSubscriptionsNotSupported, "Wildcard Subscriptions not supported"},
		{0x01, "ReasonCode(0x01)"},
		{0x91, "ReasonCode(0x91)"},
	}
	for _, tt := range tests {
		if got := tt.code.String(); got != tt.want {
			t.Errorf("ReasonCode(0x%02X).String() = %q, want %q", byte(tt.code), got, tt.want)
		}
	}
}
