package proxy_test

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// connectWS opens a WebSocket to the gateway and has id connected at
// level through it; with looped, it waits until the pair is in an event
// loop (counted after the CONNACK went out), so that what the test sends
// next meets the loop.
func connectWS(t *testing.T, g *gateway, id string, level byte, looped bool) *mqtttest.WSConn {
	t.Helper()
	before := g.srv.Stats().WebSocketLooped
	c := mqtttest.MustDialWS(t, wsURL(g.addr), mqtttest.WSOptions{})
	if _, err := c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, KeepAlive: 30, ClientID: id})); err != nil {
		t.Fatal(err)
	}
	if _, code, err := mqtt.ParseConnack(mqtttest.ReadPacket(t, c), level); err != nil || code != 0 {
		t.Fatalf("%s: CONNACK code %v, err %v", id, code, err)
	}
	if looped {
		mqtttest.WaitFor(t, id+" in an event loop", func() bool { return g.srv.Stats().WebSocketLooped > before })
	}
	return c
}

// TestWebSocketLoop: a plain ws pair on data_path epoll is carried by an
// event loop (the Stats say so), and what the loop decides itself follows
// RFC 6455 as the parked path does: a ping gets its pong [RFC 6455
// 5.5.2, 5.5.3], a close its close [RFC 6455 5.5.1], a text frame after
// the CONNACK 1003 [MQTT-6.0.0-1], an unmasked one 1002 [RFC 6455 5.1]
// and so a 64-bit length with its top bit set [RFC 6455 5.2], a header
// cut into single bytes still parses [RFC 6455 5.2], and a 5.0
// client kicked by a newer one with its client id gets its DISCONNECT
// 0x8E in a binary frame, then a close frame.
func TestWebSocketLoop(t *testing.T) {
	t.Parallel()
	broker := mqtttest.StartMochi(t)
	// on_duplicate_client_id goes at the end of wsConfig's stream_proxy
	// section, which "upstreams:" follows; a replace that found nothing
	// would leave the kick to the broker (mochi's own DISCONNECT).
	yml := strings.Replace(wsConfig("", broker), "\nupstreams:\n", "\n  on_duplicate_client_id: keep_newest\nupstreams:\n", 1)
	if !strings.Contains(yml, "on_duplicate_client_id") {
		t.Fatalf("no stream_proxy section to add on_duplicate_client_id to:\n%s", yml)
	}
	g := startGateway(t, yml)
	looped := os.Getenv(dataPathEnv) == "" || os.Getenv(dataPathEnv) == config.DataPathEpoll

	t.Run("ping", func(t *testing.T) {
		c := connectWS(t, g, "wsl-ping", mqtt.Level311, looped)
		if err := c.WriteFrame(ws.OpPing, true, []byte("are you there")); err != nil {
			t.Fatal(err)
		}
		if h, p := c.ReadFrame(t); h.OpCode != ws.OpPong || string(p) != "are you there" || h.Masked {
			t.Fatalf("answer to a ping: %v %q, want an unmasked pong echoing it", h.OpCode, p)
		}
		// MQTT still flows, a frame header sent a byte at a time.
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewBinaryFrame([]byte{0xc0, 0}))); err != nil {
			t.Fatal(err)
		}
		for _, x := range b.Bytes() {
			if _, err := c.Conn.Write([]byte{x}); err != nil {
				t.Fatal(err)
			}
		}
		if h, p := c.ReadFrame(t); h.OpCode != ws.OpBinary || !bytes.Equal(p, []byte{0xd0, 0}) {
			t.Fatalf("PINGRESP: %v % x", h.OpCode, p)
		}
	})

	t.Run("close", func(t *testing.T) {
		c := connectWS(t, g, "wsl-close", mqtt.Level311, looped)
		if err := c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")); err != nil {
			t.Fatal(err)
		}
		h, p := c.ReadFrame(t)
		if code, _ := ws.ParseCloseFrameData(p); h.OpCode != ws.OpClose || code != ws.StatusGoingAway {
			t.Fatalf("answer to a close: %v %d, want close 1001", h.OpCode, code)
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after the close: read %d, %v; want EOF", n, err)
		}
		rec := g.waitRecord(t, "wsl-close's record", func(r map[string]any) bool { return r["client_id"] == "wsl-close" })
		if rec["end"] != "client_closed" || rec["transport"] != "ws" {
			t.Errorf("record %v", rec)
		}
	})

	// A frame MQTT over WebSocket does not allow fails the connection with
	// a close frame and ends its record as the parked path does.
	for _, tc := range []struct {
		name, reasonHas, end string
		code                 ws.StatusCode
		send                 func(*mqtttest.WSConn) error
	}{
		{"text", "MQTT-6.0.0-1", "websocket_text_frame", ws.StatusUnsupportedData,
			func(c *mqtttest.WSConn) error { return c.WriteFrame(ws.OpText, true, []byte("hello")) }},
		{"unmasked", "masked", "websocket_frame", ws.StatusProtocolError,
			func(c *mqtttest.WSConn) error { return ws.WriteFrame(c.Conn, ws.NewBinaryFrame([]byte{0xc0, 0})) }},
		// RFC 6455 5.2: "the most significant bit MUST be 0".
		{"length-msb", "most significant bit", "websocket_frame", ws.StatusProtocolError,
			func(c *mqtttest.WSConn) error {
				_, err := c.Conn.Write([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 0xc0})
				return err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "wsl-" + tc.name
			c := connectWS(t, g, id, mqtt.Level311, looped)
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			if code, reason := c.ReadCloseFrame(t); code != tc.code || !strings.Contains(reason, tc.reasonHas) {
				t.Errorf("%s frame: close %d %q, want %d citing %q", tc.name, code, reason, tc.code, tc.reasonHas)
			}
			g.waitRecord(t, id+"'s record", func(r map[string]any) bool {
				return r["client_id"] == id && r["end"] == tc.end
			})
		})
	}

	t.Run("kicked", func(t *testing.T) {
		older := connectWS(t, g, "wsl-kick", mqtt.Level5, looped)
		connectWS(t, g, "wsl-kick", mqtt.Level5, looped)
		h, p := older.ReadFrame(t)
		if h.OpCode != ws.OpBinary || !bytes.Equal(p, []byte{0xe0, 1, byte(mqtt.SessionTakenOver)}) {
			t.Fatalf("the older connection read %v % x, want DISCONNECT 0x8E in a binary frame", h.OpCode, p)
		}
		if h, _ := older.ReadFrame(t); h.OpCode != ws.OpClose {
			t.Fatalf("after the DISCONNECT: %v, want a close frame", h.OpCode)
		}
	})

	if looped {
		if st := g.srv.Stats(); st.WebSocketParked != 0 || st.WebSocketUpstreamParked != 0 || st.WebSocketLooped != 7 {
			t.Errorf("ws pairs looped %d, parked %d, %d for their upstream; want all 7 looped", st.WebSocketLooped, st.WebSocketParked, st.WebSocketUpstreamParked)
		}
	}
}
