package mqttws

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// upgradeRequest is a browser's upgrade request for /mqtt, with extra
// header lines before the blank one.
func upgradeRequest(extra ...string) string {
	return "GET /mqtt HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

func TestUpgradeConn(t *testing.T) {
	allow := func(o string) bool { return o == "https://app.example" }
	for _, tc := range []struct {
		name    string
		req     string
		proto   string // the subprotocol answered; "" when not upgraded
		fwd     Forwarded
		pending string // bytes after the request, the client's first frames
	}{
		{name: "[MQTT-6.0.0-3] mqtt offered", req: upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n"), proto: ProtocolMQTT},
		{name: "[MQTT-6.0.0-4] mqtt chosen over mqttv3.1 across lines",
			req: upgradeRequest("Sec-WebSocket-Protocol: mqttv3.1\r\n", "Sec-WebSocket-Protocol: graphql-ws, MQTT\r\n"), proto: ProtocolMQTT},
		{name: "mqttv3.1 for an MQTT 3.1 client", req: upgradeRequest("Sec-WebSocket-Protocol: mqttv3.1\r\n"), proto: ProtocolMQTT31},
		{name: "a query string is not part of the path", req: strings.Replace(upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n"), "/mqtt", "/mqtt?x=1", 1), proto: ProtocolMQTT},
		{name: "an allowed origin", req: upgradeRequest("Origin: https://app.example\r\n", "Sec-WebSocket-Protocol: mqtt\r\n"), proto: ProtocolMQTT},
		{name: "forwarding headers read in place",
			req:   upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n", "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n", "X-Real-IP: 198.51.100.8\r\n"),
			proto: ProtocolMQTT, fwd: Forwarded{RealIP: netip.MustParseAddr("198.51.100.8"), ForwardedFor: netip.MustParseAddr("198.51.100.7")}},
		{name: "LF line ends", req: strings.ReplaceAll(upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n"), "\r\n", "\n"), proto: ProtocolMQTT},
		{name: "frames sent before the 101 are kept", req: upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n"), proto: ProtocolMQTT,
			pending: "\x82\x80abcd"},

		// Not upgraded here: the whole request goes to the HTTP server,
		// which answers it (with a reason) or routes it.
		{name: "[MQTT-6.0.0-3] no subprotocol", req: upgradeRequest()},
		{name: "another subprotocol", req: upgradeRequest("Sec-WebSocket-Protocol: graphql-ws\r\n")},
		{name: "an origin not allowed", req: upgradeRequest("Origin: https://evil.example\r\n", "Sec-WebSocket-Protocol: mqtt\r\n")},
		{name: "another path", req: strings.Replace(upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n"), "/mqtt", "/api/v1", 1)},
		{name: "a plain GET", req: "GET /mqtt HTTP/1.1\r\nHost: gw.example\r\n\r\n"},
		{name: "a POST with a body", req: "POST /mqtt HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "a malformed header", req: "GET /mqtt HTTP/1.1\r\nHost gw.example\r\n\r\n"},
		{name: "a request longer than the fast path reads",
			req: upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n", "Cookie: "+strings.Repeat("c", maxRequest)+"\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.req + tc.pending
			m := &memConn{in: bytes.NewReader([]byte(in[1:]))} // the first byte was sniffed
			u := Upgrader{AllowOrigin: allow}
			c, fwd, replay, err := u.UpgradeConn(m, []byte(in[:1]), "/mqtt")
			if err != nil {
				t.Fatalf("err %v", err)
			}
			if tc.proto == "" {
				if c != nil {
					t.Fatalf("upgraded as %q", c.Protocol)
				}
				if m.out.Len() > 0 {
					t.Errorf("answered %q; the HTTP server answers", m.out.String())
				}
				// Every byte read is there to be read again.
				rest, _ := io.ReadAll(m.in)
				if got := string(replay) + string(rest); got != in {
					t.Errorf("replay+rest is %d bytes, want the %d of the request", len(got), len(in))
				}
				return
			}
			if c == nil {
				t.Fatalf("not upgraded (replay %q)", replay)
			}
			resp, err := http.ReadResponse(bufio.NewReader(&m.out), nil)
			if err != nil {
				t.Fatalf("answer: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Errorf("answer %s %v", resp.Status, resp.Header)
			}
			if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != tc.proto || c.Protocol != tc.proto {
				t.Errorf("subprotocol answered %q, conn %q, want %q", got, c.Protocol, tc.proto)
			}
			if fwd != tc.fwd {
				t.Errorf("forwarded %+v, want %+v", fwd, tc.fwd)
			}
			if a, ok := fwd.Addr(); ok != tc.fwd.RealIP.IsValid() || ok && a != tc.fwd.RealIP {
				t.Errorf("Addr() = %v, %v: X-Real-IP comes first", a, ok)
			}
			if tc.pending != "" {
				if got := string(c.src.pending); got != tc.pending {
					t.Errorf("pending %q, want %q", got, tc.pending)
				}
			}
		})
	}
}

// TestUpgradeConnCutShort: a request the client stops sending is an error
// (the connection is gone), with nothing answered and nothing to replay.
func TestUpgradeConnCutShort(t *testing.T) {
	req := upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n")
	m := &memConn{in: bytes.NewReader([]byte(req[1 : len(req)-10]))}
	c, _, replay, err := Upgrader{}.UpgradeConn(m, []byte(req[:1]), "/mqtt")
	if err == nil || c != nil || replay != nil || m.out.Len() > 0 {
		t.Errorf("cut short: conn %v, replay %q, err %v, answered %q", c, replay, err, m.out.String())
	}
}

// FuzzUpgradeConn: any request bytes either upgrade, or come back whole
// for the HTTP server with nothing written, or fail on the connection's
// end; never a panic.
func FuzzUpgradeConn(f *testing.F) {
	f.Add([]byte(upgradeRequest("Sec-WebSocket-Protocol: mqtt\r\n")))
	f.Add([]byte(upgradeRequest("Origin: https://evil.example\r\n", "Sec-WebSocket-Protocol: mqtt\r\n")))
	f.Add([]byte("POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		m := &memConn{in: bytes.NewReader(in[1:])}
		c, _, replay, err := Upgrader{AllowOrigin: func(string) bool { return false }}.UpgradeConn(m, in[:1], "/mqtt")
		switch {
		case c != nil:
			if !bytes.HasPrefix(m.out.Bytes(), []byte("HTTP/1.1 101 ")) {
				t.Fatalf("upgraded with answer %q", m.out.Bytes())
			}
		case err == nil:
			rest, _ := io.ReadAll(m.in)
			if m.out.Len() > 0 || !bytes.Equal(append(replay, rest...), in) {
				t.Fatalf("not upgraded: answered %q, replay+rest %q", m.out.Bytes(), append(replay, rest...))
			}
		}
	})
}

// BenchmarkUpgradeConn is one browser upgrade answered on the connection,
// the request sniffed whole.
func BenchmarkUpgradeConn(b *testing.B) {
	req := []byte(upgradeRequest("Origin: https://app.example\r\n", "Sec-WebSocket-Protocol: mqtt\r\n"))
	u := Upgrader{AllowOrigin: func(o string) bool { return o == "https://app.example" }}
	b.ReportAllocs()
	for b.Loop() {
		m := &discardConn{memConn{in: bytes.NewReader(nil)}}
		if c, _, _, err := u.UpgradeConn(m, req, "/mqtt"); c == nil || err != nil {
			b.Fatalf("not upgraded: %v", err)
		}
	}
}
