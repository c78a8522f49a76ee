package mqttws

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// TestParseUpgrade walks the opening handshake's server-side checks [RFC
// 6455 4.1, 4.2.1] over request heads as an event loop reads them, with
// HTTP's own rules for the head [RFC 9110], and checks that ParseUpgrade
// and UpgradeConn agree on every one (one implementation: run).
func TestParseUpgrade(t *testing.T) {
	allow := func(o string) bool { return o == "https://app.example" }
	mqtt := "Sec-WebSocket-Protocol: mqtt\r\n"
	for _, tc := range []struct {
		name  string
		req   string
		proto string // "" when not upgraded
		fwd   Forwarded
	}{
		{name: "[RFC 6455 4.1] a browser's upgrade", req: upgradeRequest(mqtt), proto: ProtocolMQTT},
		{name: "[RFC 6455 4.2.1] mqttv3.1", req: upgradeRequest("Sec-WebSocket-Protocol: mqttv3.1\r\n"), proto: ProtocolMQTT31},
		{name: "[RFC 9110 5.1] field names are case-insensitive",
			req: strings.NewReplacer("Upgrade:", "upgrade:", "Sec-WebSocket-Key", "sec-websocket-key").Replace(upgradeRequest(mqtt)), proto: ProtocolMQTT},
		{name: "[RFC 9110 7.6.1] Connection is a list of options",
			req: strings.Replace(upgradeRequest(mqtt), "Connection: Upgrade", "Connection: keep-alive, Upgrade", 1), proto: ProtocolMQTT},
		{name: "[RFC 9110 5.5] whitespace around a field value", req: strings.Replace(upgradeRequest(mqtt), "Upgrade: websocket", "Upgrade:   websocket  ", 1), proto: ProtocolMQTT},
		{name: "[RFC 6455 4.2.1] forwarding headers", req: upgradeRequest(mqtt, "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n"),
			proto: ProtocolMQTT, fwd: Forwarded{ForwardedFor: netip.MustParseAddr("198.51.100.7")}},
		{name: "[RFC 6455 4.2.1] an allowed Origin (item 7)", req: upgradeRequest("Origin: https://app.example\r\n", mqtt), proto: ProtocolMQTT},

		{name: "[RFC 6455 4.2.1] item 1: a method other than GET", req: strings.Replace(upgradeRequest(mqtt), "GET", "POST", 1)},
		{name: "[RFC 6455 4.2.1] item 1: HTTP/1.0", req: strings.Replace(upgradeRequest(mqtt), "HTTP/1.1", "HTTP/1.0", 1)},
		{name: "[RFC 6455 4.2.1] item 2: no Host", req: strings.Replace(upgradeRequest(mqtt), "Host: gw.example\r\n", "", 1)},
		{name: "[RFC 6455 4.2.1] item 3: no Upgrade: websocket", req: strings.Replace(upgradeRequest(mqtt), "Upgrade: websocket\r\n", "", 1)},
		{name: "[RFC 6455 4.2.1] item 4: no Connection: Upgrade", req: strings.Replace(upgradeRequest(mqtt), "Connection: Upgrade\r\n", "", 1)},
		{name: "[RFC 6455 4.2.1] item 5: no Sec-WebSocket-Key", req: strings.Replace(upgradeRequest(mqtt), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1)},
		{name: "[RFC 6455 4.2.1] item 5: a key not 16 bytes", req: strings.Replace(upgradeRequest(mqtt), "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1)},
		{name: "[RFC 6455 4.2.1] item 6: version 8", req: strings.Replace(upgradeRequest(mqtt), "Version: 13", "Version: 8", 1)},
		{name: "[RFC 6455 4.2.1] item 7: an Origin not allowed", req: upgradeRequest("Origin: https://evil.example\r\n", mqtt)},
		{name: "[MQTT-6.0.0-3] no mqtt subprotocol", req: upgradeRequest()},
		{name: "another path", req: strings.Replace(upgradeRequest(mqtt), "/mqtt", "/dashboard", 1)},
		{name: "[RFC 9110 5.1] a field line without a colon", req: strings.Replace(upgradeRequest(mqtt), "Host: gw.example", "Host gw.example", 1)},
		{name: "the head cut short", req: upgradeRequest(mqtt)[:40]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, ok := ParseUpgrade([]byte(tc.req), "/mqtt", allow)
			m := &memConn{in: bytes.NewReader([]byte(tc.req[1:]))}
			c, fwd, _, _ := Upgrader{AllowOrigin: allow}.UpgradeConn(m, []byte(tc.req[:1]), "/mqtt")
			if ok != (c != nil) {
				t.Fatalf("ParseUpgrade ok %v, UpgradeConn upgraded %v", ok, c != nil)
			}
			if !ok {
				if tc.proto != "" {
					t.Fatalf("not upgraded, want %q", tc.proto)
				}
				return
			}
			if tc.proto == "" {
				t.Fatalf("upgraded as %q, want an HTTP server's answer", u.Protocol)
			}
			if u.Protocol != tc.proto || u.Fwd != tc.fwd || fwd != u.Fwd {
				t.Errorf("protocol %q fwd %+v (UpgradeConn %+v), want %q %+v", u.Protocol, u.Fwd, fwd, tc.proto, tc.fwd)
			}
			if !bytes.Equal(u.Answer, m.out.Bytes()) {
				t.Errorf("answer %q, UpgradeConn's %q", u.Answer, m.out.Bytes())
			}
			if u.Head != len(tc.req) {
				t.Errorf("head %d bytes, want %d", u.Head, len(tc.req))
			}
		})
	}
}

// TestHeadSize: the head ends at its empty line [RFC 9110 2.1], CRLF or a
// bare LF as the Upgrader reads lines; cut anywhere before it, it is 0.
func TestHeadSize(t *testing.T) {
	req := upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n")
	for i := range len(req) {
		if n := HeadSize([]byte(req[:i])); n != 0 {
			t.Fatalf("HeadSize of %d bytes = %d, want 0", i, n)
		}
	}
	if n := HeadSize([]byte(req + "\x82\x80abcd")); n != len(req) {
		t.Errorf("HeadSize = %d, want %d", n, len(req))
	}
	lf := strings.ReplaceAll(req, "\r\n", "\n")
	if n := HeadSize([]byte(lf)); n != len(lf) {
		t.Errorf("LF head: HeadSize = %d, want %d", n, len(lf))
	}
}

// FuzzParseUpgrade: ParseUpgrade and UpgradeConn agree on any head, an
// accepted one is answered with a 101 and ends where HeadSize says.
func FuzzParseUpgrade(f *testing.F) {
	f.Add([]byte(upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n")))
	f.Add([]byte(upgradeRequest("Origin: https://evil.example\r\n", "Sec-WebSocket-Protocol: mqtt\r\n")))
	f.Add([]byte("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > MaxHead {
			return
		}
		u, ok := ParseUpgrade(in, "/mqtt", func(o string) bool { return o == "" })
		if ok {
			if !bytes.HasPrefix(u.Answer, []byte("HTTP/1.1 101 ")) || u.Head != HeadSize(in) || u.Head == 0 {
				t.Fatalf("upgraded: answer %q head %d (HeadSize %d)", u.Answer, u.Head, HeadSize(in))
			}
		}
		if HeadSize(in) != len(in) {
			return // UpgradeConn would wait for more
		}
		m := &memConn{in: bytes.NewReader(in[1:])}
		c, _, _, _ := Upgrader{AllowOrigin: func(o string) bool { return o == "" }}.UpgradeConn(m, in[:1], "/mqtt")
		if ok != (c != nil) {
			out, _ := io.ReadAll(&m.out)
			t.Fatalf("ParseUpgrade %v, UpgradeConn %v (%q)", ok, c != nil, out)
		}
	})
}
