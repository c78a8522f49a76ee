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
// the CONNACK 1003 [MQTT-6.0.0-1], an unmasked one 1002 [RFC 6455 5.1],
// a header cut into single bytes still parses [RFC 6455 5.2], and a 5.0
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

	t.Run("text", func(t *testing.T) {
		c := connectWS(t, g, "wsl-text", mqtt.Level311, looped)
		if err := c.WriteFrame(ws.OpText, true, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if code, reason := c.ReadCloseFrame(t); code != ws.StatusUnsupportedData || !strings.Contains(reason, "MQTT-6.0.0-1") {
			t.Errorf("text frame: close %d %q, want 1003 citing MQTT-6.0.0-1", code, reason)
		}
		g.waitRecord(t, "wsl-text's record", func(r map[string]any) bool {
			return r["client_id"] == "wsl-text" && r["end"] == "websocket_text_frame"
		})
	})

	t.Run("unmasked", func(t *testing.T) {
		c := connectWS(t, g, "wsl-unmasked", mqtt.Level311, looped)
		if err := ws.WriteFrame(c.Conn, ws.NewBinaryFrame([]byte{0xc0, 0})); err != nil {
			t.Fatal(err)
		}
		if code, reason := c.ReadCloseFrame(t); code != ws.StatusProtocolError || !strings.Contains(reason, "masked") {
			t.Errorf("unmasked frame: close %d %q, want 1002", code, reason)
		}
		g.waitRecord(t, "wsl-unmasked's record", func(r map[string]any) bool {
			return r["client_id"] == "wsl-unmasked" && r["end"] == "websocket_frame"
		})
	})

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
		if st := g.srv.Stats(); st.WebSocketParked != 0 || st.WebSocketLooped != 6 {
			t.Errorf("ws pairs looped %d, parked %d; want all 6 looped", st.WebSocketLooped, st.WebSocketParked)
		}
	}
}
