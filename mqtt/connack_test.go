package mqtt

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendConnack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		rule   string
		level  byte
		code   ReasonCode
		reason string
		want   []byte
	}{
		{name: "3.1.1 accepted", level: Level311, code: Success, want: unhex("20 02 00 00")},
		{name: "3.1.1 unsupported level", rule: "MQTT-3.1.2-2", level: Level311, code: UnsupportedProtocolVersion, want: unhex("20 02 00 01")},
		{name: "3.1.1 identifier rejected", rule: "MQTT-3.1.3-8", level: Level311, code: ClientIdentifierNotValid, want: unhex("20 02 00 02")},
		{name: "3.1.1 server busy, reason dropped", rule: "MQTT-3.2.2-4", level: Level311, code: ServerBusy, reason: "busy", want: unhex("20 02 00 03")},
		{name: "3.1.1 bad user name or password", level: Level311, code: BadUsernameOrPassword, want: unhex("20 02 00 04")},
		{name: "3.1 not authorized", level: Level31, code: NotAuthorized, want: unhex("20 02 00 05")},
		// What mosquitto 2.0.11 answers to a CONNECT of level 6.
		{name: "unknown level answered in the 3.1.1 form", rule: "MQTT-3.1.2-2", level: 6, code: UnsupportedProtocolVersion, want: unhex("20 02 00 01")},
		{name: "5.0 success", rule: "MQTT-2.2.2-1", level: Level5, code: Success, want: unhex("20 03 00 00 00")},
		{name: "5.0 server busy", rule: "MQTT-3.2.2-6", level: Level5, code: ServerBusy, want: unhex("20 03 00 89 00")},
		{name: "5.0 banned with a reason", level: Level5, code: Banned, reason: "banned",
			want: unhex("20 0c 00 8a 09 1f 0006 62616e6e6564")},
		{name: "5.0 reason of only U+0000 dropped", rule: "MQTT-1.5.4-2", level: Level5, code: QuotaExceeded, reason: "\x00",
			want: unhex("20 03 00 97 00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := AppendConnack([]byte("kept"), tt.level, tt.code, tt.reason)
			if !bytes.Equal(got, append([]byte("kept"), tt.want...)) {
				t.Errorf("AppendConnack(%q, %d, %v, %q) = %x, want the prefix then %x", "kept", tt.level, tt.code, tt.reason, got, tt.want)
			}
		})
	}
}

func TestCleanReasonString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		reason string
		want   string
	}{
		{"kept", "no healthy broker", "no healthy broker"},
		{"U+0000 dropped", "a\x00b", "ab"},
		{"ill-formed bytes dropped", "a\xffb\xc0", "ab"},
		{"U+FFFD kept", "a\uFFFDb", "a\uFFFDb"},
		{"cut at the limit", strings.Repeat("x", 200), strings.Repeat("x", maxReasonString)},
		{"cut at a character boundary", "x" + strings.Repeat("é", 100), "x" + strings.Repeat("é", (maxReasonString-1)/2)},
	}
	for _, tt := range tests {
		got := cleanReasonString(tt.reason)
		if got != tt.want {
			t.Errorf("%s: cleanReasonString(%q) = %q, want %q", tt.name, tt.reason, got, tt.want)
		}
		if len(got) > maxReasonString || !utf8.ValidString(got) || strings.IndexByte(got, 0) >= 0 {
			t.Errorf("%s: cleanReasonString(%q) = %q, not a valid short UTF-8 string", tt.name, tt.reason, got)
		}
	}
}

// TestAppendLongReason checks that a long reason keeps CONNACK and
// DISCONNECT under 128 bytes and well formed.
func TestAppendLongReason(t *testing.T) {
	t.Parallel()
	reason := strings.Repeat("€", 1000)
	connack := AppendConnack(nil, Level5, ServerBusy, reason)
	if len(connack) >= 128 {
		t.Errorf("CONNACK with a long reason is %d bytes, want < 128", len(connack))
	}
	if _, code, err := ParseConnack(connack, Level5); err != nil || code != ServerBusy {
		t.Errorf("ParseConnack(%x) = %v, %v; want ServerBusy, nil", connack, code, err)
	}
	disconnect := AppendDisconnect(nil, Level5, ServerShuttingDown, reason)
	if len(disconnect) >= 128 {
		t.Errorf("DISCONNECT with a long reason is %d bytes, want < 128", len(disconnect))
	}
	if n, err := FrameLen(disconnect); err != nil || n != len(disconnect) {
		t.Errorf("FrameLen(%x) = %d, %v; want %d", disconnect, n, err, len(disconnect))
	}
	if err := checkProperties(disconnect[4:], 1<<propReasonString, "DISCONNECT"); err != nil {
		t.Errorf("DISCONNECT properties %x: %v", disconnect[4:], err)
	}
}

func TestParseConnack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		rule           string
		level          byte
		pkt            []byte
		sessionPresent bool
		code           ReasonCode
	}{
		// Captured from mosquitto 2.0.11.
		{name: "mosquitto 3.1.1 accepted", level: Level311, pkt: unhex("20020000")},
		{name: "mosquitto 3.1 accepted", level: Level31, pkt: unhex("20020000")},
		{name: "mosquitto 3.1.1 identifier rejected", rule: "MQTT-3.1.3-8", level: Level311, pkt: unhex("20020002"), code: 0x02},
		{name: "mosquitto 5.0 accepted", level: Level5, pkt: unhex("200900000622000a210014")},
		{name: "mosquitto 5.0 accepted, session present", rule: "MQTT-3.2.2-3", level: Level5, pkt: unhex("200901000622000a210014"), sessionPresent: true},
		{name: "mosquitto 5.0 assigned client identifier", rule: "MQTT-3.1.3-7", level: Level5,
			pkt: unhex("203500003222000a1200296175746f2d33314636373435342d453134442d303530302d314644322d344136434341383938414135210014")},

		{name: "3.1.1 session present", rule: "MQTT-3.2.2-2", level: Level311, pkt: unhex("20020100"), sessionPresent: true},
		{name: "3.1.1 not authorized", level: Level311, pkt: unhex("20020005"), code: 0x05},
		{name: "3.1 byte 1 unused", level: Level31, pkt: unhex("20020100")},
		{name: "5.0 not authorized", level: Level5, pkt: unhex("2003008700"), code: NotAuthorized},
		{name: "5.0 client refused by a 3.1.1-only server", level: Level5, pkt: unhex("20020001"), code: 0x01},
		{name: "5.0 reason string", level: Level5, pkt: AppendConnack(nil, Level5, ServerMoved, "moved"), code: ServerMoved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, code, err := ParseConnack(tt.pkt, tt.level)
			if err != nil || sp != tt.sessionPresent || code != tt.code {
				t.Errorf("ParseConnack(%x, %d) = %v, %v, %v; want %v, %v, nil", tt.pkt, tt.level, sp, code, err, tt.sessionPresent, tt.code)
			}
		})
	}
}

func TestParseConnackErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rule  string
		level byte
		pkt   []byte
		err   *ProtocolError // Kind, Code and Level expected (Rule is rule)
	}{
		{name: "empty", level: Level311, pkt: nil,
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "PINGRESP", rule: "MQTT-3.2.0-1", level: Level311, pkt: unhex("d000"),
			err: &ProtocolError{Kind: KindNotMQTT, Level: 4}},
		{name: "3.1.1 fixed header flags", rule: "MQTT-2.2.2-1", level: Level311, pkt: unhex("21020000"),
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "5.0 fixed header flags", rule: "MQTT-2.1.3-1", level: Level5, pkt: unhex("2103000000"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "remaining length of five bytes", level: Level311, pkt: unhex("20ffffffff01"),
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "remaining length larger than the packet", level: Level311, pkt: unhex("200300"),
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "3.1.1 remaining length 3", level: Level311, pkt: unhex("2003000000"),
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "5.0 remaining length 1", level: Level5, pkt: unhex("200100"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "3.1.1 reserved flags", level: Level311, pkt: unhex("20020200"),
			err: &ProtocolError{Kind: KindMalformed, Level: 4}},
		{name: "5.0 reserved flags", rule: "MQTT-3.2.2-1", level: Level5, pkt: unhex("2003020000"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "3.1.1 session present with a refusal", rule: "MQTT-3.2.2-4", level: Level311, pkt: unhex("20020105"),
			err: &ProtocolError{Kind: KindProtocol, Level: 4}},
		{name: "5.0 session present with a refusal", rule: "MQTT-3.2.2-6", level: Level5, pkt: unhex("2003018700"),
			err: &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode}},
		{name: "5.0 CONNECT property in CONNACK", level: Level5, pkt: unhex("2005 0000 02 1700"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "5.0 Maximum QoS twice", level: Level5, pkt: unhex("2007 0000 04 2401 2401"),
			err: &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode}},
		{name: "5.0 Maximum QoS 2", level: Level5, pkt: unhex("2005 0000 02 2402"),
			err: &ProtocolError{Kind: KindProtocol, Level: 5, Code: ProtocolErrorCode}},
		{name: "5.0 Reason String not UTF-8", rule: "MQTT-1.5.4-1", level: Level5, pkt: unhex("2007 0080 04 1f 0001 ff"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "5.0 properties run past the end", level: Level5, pkt: unhex("2004 0000 05 24"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
		{name: "5.0 bytes after the properties", level: Level5, pkt: unhex("2004 0000 00 00"),
			err: &ProtocolError{Kind: KindMalformed, Level: 5, Code: MalformedPacket}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, code, err := ParseConnack(tt.pkt, tt.level)
			if err == nil {
				t.Fatalf("ParseConnack(%x, %d) = %v, %v; want error", tt.pkt, tt.level, sp, code)
			}
			want := *tt.err
			want.Rule = tt.rule
			checkProtocolError(t, err, &want)
		})
	}
}

func TestAppendDisconnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		level  byte
		code   ReasonCode
		reason string
		want   []byte
	}{
		{name: "3.1.1", level: Level311, code: ServerShuttingDown, reason: "bye", want: unhex("e0 00")},
		{name: "3.1", level: Level31, want: unhex("e0 00")},
		{name: "5.0 normal disconnection, short form", level: Level5, code: NormalDisconnection, want: unhex("e0 00")},
		{name: "5.0 code without properties", level: Level5, code: ServerShuttingDown, want: unhex("e0 01 8b")},
		{name: "5.0 code and reason", level: Level5, code: AdministrativeAction, reason: "maintenance",
			want: unhex("e0 10 98 0e 1f 000b 6d61696e74656e616e6365")},
		{name: "5.0 normal disconnection with a reason", level: Level5, code: NormalDisconnection, reason: "bye",
			want: unhex("e0 08 00 06 1f 0003 627965")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := AppendDisconnect([]byte("kept"), tt.level, tt.code, tt.reason)
			if !bytes.Equal(got, append([]byte("kept"), tt.want...)) {
				t.Errorf("AppendDisconnect(%q, %d, %v, %q) = %x, want the prefix then %x", "kept", tt.level, tt.code, tt.reason, got, tt.want)
			}
		})
	}
}

// TestAppendServerDisconnect: a Server Reference (0x1C, 5.0 section
// 3.14.2.2.5) rides with 0x9C and 0x9D; without one the short form stays.
func TestAppendServerDisconnect(t *testing.T) {
	t.Parallel()
	if got, want := AppendServerDisconnect(nil, UseAnotherServer, ""), unhex("e0 01 9c"); !bytes.Equal(got, want) {
		t.Errorf("without reference: %x, want %x", got, want)
	}
	if got, want := AppendServerDisconnect(nil, ServerMoved, "b:1883"), unhex("e0 0b 9d 09 1c 0006 623a31383833"); !bytes.Equal(got, want) {
		t.Errorf("with reference: %x, want %x", got, want)
	}
}

// TestConnackServerReference: the Server Reference (0x1C) of a 5.0 CONNACK
// refusing with 0x9C (5.0 section 4.11), among other properties.
func TestConnackServerReference(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		pkt  []byte
		want string
	}{
		{"reference", unhex("20 0c 00 9c 09 1c 0006 623a31383833"), "b:1883"},
		{"after a Reason String", unhex("20 0f 00 9d 0c 1f 0002 6869 1c 0004 623a3138"), "b:18"},
		{"none", unhex("20 03 00 9c 00"), ""},
		{"3.1.1 form", unhex("20 02 00 03"), ""},
	} {
		if _, _, err := ParseConnack(tt.pkt, Level5); err != nil && tt.name != "3.1.1 form" {
			t.Fatalf("%s: ParseConnack: %v", tt.name, err)
		}
		if got := ConnackServerReference(tt.pkt); got != tt.want {
			t.Errorf("%s: ConnackServerReference = %q, want %q", tt.name, got, tt.want)
		}
	}
}
