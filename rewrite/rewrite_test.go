package rewrite

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/vars"
)

func TestParseTemplate(t *testing.T) {
	v := &vars.Set{SSLClientSerial: "0A1B", SSLClientSDNCN: "meter-7", RemoteAddr: "192.0.2.7", MQTTClientID: "dev"}
	tests := []struct {
		src, want, err string
	}{
		{"$ssl_client_serial", "0A1B", ""},
		{"${ssl_client_s_dn_cn}", "meter-7", ""},
		{"site1-$ssl_client_s_dn_cn", "site1-meter-7", ""},
		{"${ssl_client_s_dn_cn}-x", "meter-7-x", ""},
		{"$ssl_client_s_dn_cn.$remote_addr", "meter-7.192.0.2.7", ""},
		{"$mqtt_client_id@$ssl_client_serial", "dev@0A1B", ""},
		{"price $$5", "price $5", ""},
		{"plain", "plain", ""},
		{"$ssl_server_name", "", ""}, // known, empty on this connection
		{"$ssl_client_cn", "", "unknown variable $ssl_client_cn"},
		{"${ssl_client_serial", "", `has no closing "}"`},
		{"a$", "", `starts no variable name`},
		{"${}", "", `starts no variable name`},
		{"$-x", "", `starts no variable name`},
	}
	for _, tt := range tests {
		tpl, err := ParseTemplate(tt.src)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTemplate(%q) error %v, want %q", tt.src, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.src, err)
			continue
		}
		if got := tpl.Expand(v); got != tt.want {
			t.Errorf("%q expands to %q, want %q", tt.src, got, tt.want)
		}
		if tpl.String() != tt.src {
			t.Errorf("String() = %q, want %q", tpl.String(), tt.src)
		}
	}
}

// unhex decodes hex with spaces.
func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// field is a length-prefixed string in hex [MQTT-1.5.3] (3.1.1 1.5.3, 5.0 1.5.4).
func field(s string) string {
	return hex.EncodeToString([]byte{byte(len(s) >> 8), byte(len(s))}) + hex.EncodeToString([]byte(s))
}

// packet frames a CONNECT body with a one-byte Remaining Length (bodies
// here are under 128 bytes).
func packet(body ...string) []byte {
	b := unhex(strings.Join(body, ""))
	if len(b) > 127 {
		panic("test body too long")
	}
	return append([]byte{0x10, byte(len(b))}, b...)
}

// TestApplyKeepsEveryOtherField rewrites the client id, user name and
// password of CONNECTs of each version that carry a Will (with 5.0 Will
// properties), CONNECT properties, keepalive and flags, and compares the
// result with the packet written by hand: only the three fields and the
// lengths change.
func TestApplyKeepsEveryOtherField(t *testing.T) {
	v := &vars.Set{SSLClientSDNCN: "meter-7", SSLClientSerial: "0A1B"}
	rule, err := NewRule("$ssl_client_s_dn_cn", "dev-$ssl_client_serial", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	// Connect flags [MQTT-3.1.2-3]: 0xEE = user name, password, will
	// retain, will QoS 1, will flag, clean start; 0x2E = the same without
	// user name and password.
	tests := []struct {
		name    string
		in, out []byte
	}{
		{
			"3.1 MQIsdp level 3",
			packet(field("MQIsdp"), "03 2e 003c", field("orig"), field("w/t"), field("bye")),
			packet(field("MQIsdp"), "03 ee 003c", field("meter-7"), field("w/t"), field("bye"), field("dev-0A1B"), field("s3cret")),
		},
		{
			"3.1.1 level 4 with user name and password",
			packet(field("MQTT"), "04 ee 0078", field("orig"), field("w/t"), field("bye"), field("u"), field("p")),
			packet(field("MQTT"), "04 ee 0078", field("meter-7"), field("w/t"), field("bye"), field("dev-0A1B"), field("s3cret")),
		},
		{
			// 5.0 [MQTT-3.1.2.11]: Session Expiry Interval 0x11, Receive
			// Maximum 0x21, User Property 0x26; Will properties [3.1.3.2]:
			// Will Delay Interval 0x18, Content Type 0x03.
			"5.0 level 5 with properties and Will properties",
			packet(field("MQTT"), "05 2e 001e", "0f 11 00000e10 21 0014 26", field("k"), field("v"),
				field("orig"), "0b 18 0000000a 03", field("t/p"), field("w/t"), field("bye")),
			packet(field("MQTT"), "05 ee 001e", "0f 11 00000e10 21 0014 26", field("k"), field("v"),
				field("meter-7"), "0b 18 0000000a 03", field("t/p"), field("w/t"), field("bye"), field("dev-0A1B"), field("s3cret")),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := mqtt.ParseConnect(tt.in)
			if err != nil {
				t.Fatalf("input does not parse: %v", err)
			}
			before := mqtt.AppendConnect(nil, c)
			out, err := rule.Apply(c, v)
			if err != nil {
				t.Fatal(err)
			}
			got := mqtt.AppendConnect(nil, out)
			if !bytes.Equal(got, tt.out) {
				t.Errorf("rewritten\n got % x\nwant % x", got, tt.out)
			}
			if !bytes.Equal(mqtt.AppendConnect(nil, c), before) {
				t.Error("Apply changed its input")
			}
			if _, err := mqtt.ParseConnect(got); err != nil {
				t.Errorf("rewritten packet does not parse: %v", err)
			}
		})
	}
}

func TestApplyRefuses(t *testing.T) {
	noCert := &vars.Set{RemoteAddr: "192.0.2.7"}
	v311 := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, ClientID: "orig"}
	v5 := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: "orig"}
	tests := []struct {
		name                     string
		clientID, user, password string
		vars                     *vars.Set
		connect                  *mqtt.Connect
		field                    string
		code                     mqtt.ReasonCode
	}{
		{"client id from a missing certificate", "$ssl_client_serial", "", "", noCert, v311, "client_id", mqtt.ClientIdentifierNotValid},
		{"user name from a missing certificate", "", "$ssl_client_s_dn_cn", "", noCert, v5, "username", mqtt.BadUsernameOrPassword},
		{"empty password", "", "", "$ssl_client_fingerprint", noCert, v5, "password", mqtt.BadUsernameOrPassword},
		// [MQTT-3.1.2-22] 3.1.1 has no password without a user name.
		{"3.1.1 password without user name", "", "", "x", noCert, v311, "password", mqtt.BadUsernameOrPassword},
		// [MQTT-1.5.3-2] no U+0000 in a UTF-8 string.
		{"client id with U+0000", "$ssl_client_s_dn_cn", "", "", &vars.Set{SSLClientSDNCN: "a\x00b"}, v5, "client_id", mqtt.ClientIdentifierNotValid},
		// [MQTT-1.5.3-1] well-formed UTF-8 only.
		{"user name with invalid UTF-8", "", "$ssl_client_s_dn", "", &vars.Set{SSLClientSDN: "\xff"}, v5, "username", mqtt.BadUsernameOrPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, err := NewRule(tt.clientID, tt.user, tt.password)
			if err != nil {
				t.Fatal(err)
			}
			out, err := rule.Apply(tt.connect, tt.vars)
			var ref *Refusal
			if !errors.As(err, &ref) || out != nil {
				t.Fatalf("Apply = %v, %v; want a refusal", out, err)
			}
			if ref.Field != tt.field || ref.Code != tt.code {
				t.Errorf("refusal %+v, want field %s code %v", ref, tt.field, tt.code)
			}
		})
	}
	// 5.0 allows a password alone.
	rule, _ := NewRule("", "", "x")
	if _, err := rule.Apply(v5, noCert); err != nil {
		t.Errorf("5.0 password without user name: %v", err)
	}
}

// FuzzParseTemplate: any template either fails to parse or expands without
// panicking, and a parsed template keeps its source.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"$ssl_client_serial", "${ssl_client_s_dn_cn}-x", "$$", "a$", "${", "${}", "$mqtt_client_id@$remote_addr", "$unknown"} {
		f.Add(s)
	}
	v := &vars.Set{SSLClientSerial: "01", SSLClientSDNCN: "cn", MQTTClientID: "id", RemoteAddr: "::1"}
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := ParseTemplate(s)
		if err != nil {
			return
		}
		if tpl.String() != s {
			t.Fatalf("String() = %q, want %q", tpl.String(), s)
		}
		if !strings.Contains(s, "$") && tpl.Expand(v) != s {
			t.Fatalf("a template without $ expands to %q, want itself", tpl.Expand(v))
		}
	})
}
