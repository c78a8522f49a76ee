package mqtttest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// WSConn is the client side of a WebSocket as a net.Conn of MQTT bytes,
// for Paho (paho.golang takes any net.Conn) and for tests that send frames
// of their own making through Raw.
type WSConn struct {
	net.Conn        // the socket: Raw frames go here
	Protocol string // the subprotocol the server chose
	rd       *wsutil.Reader
	inData   bool
}

// WSOptions are what a test WebSocket client offers.
type WSOptions struct {
	Protocols []string    // nil offers "mqtt"
	Header    http.Header // extra request headers (Origin, X-Forwarded-For)
	TLS       *tls.Config // for wss:// URLs
}

// DialWS opens a WebSocket to url ("ws://host:port/mqtt"). A handshake
// the server refuses returns an error holding its status and body.
func DialWS(ctx context.Context, url string, o WSOptions) (*WSConn, error) {
	if o.Protocols == nil {
		o.Protocols = []string{"mqtt"}
	}
	d := ws.Dialer{Protocols: o.Protocols, TLSConfig: o.TLS, Timeout: 10 * time.Second}
	if o.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(o.Header)
	}
	var body []byte
	d.OnStatusError = func(status int, reason []byte, resp io.Reader) {
		if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
			body, _ = io.ReadAll(io.LimitReader(r.Body, 4096))
			r.Body.Close()
		}
	}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		if len(body) > 0 {
			err = errors.Join(err, errors.New(string(body)))
		}
		return nil, err
	}
	var src io.Reader = conn
	if br != nil {
		src = io.MultiReader(br, conn)
	}
	// Buffered: the frame reader reads its source as it is asked, and
	// ReadPacket asks a byte at a time, which was a system call per byte:
	// 100,409 reads for TestWebSocketFraming's 100 kB PUBLISH, 0.55-0.74 s
	// of the test at load 15 (0.04-0.07 s buffered), and past
	// ReadPacket's 10 s under heavier load. Everything reads the server's
	// frames through rd.
	return &WSConn{Conn: conn, Protocol: hs.Protocol, rd: wsutil.NewClientSideReader(bufio.NewReader(src))}, nil
}

// MustDialWS is DialWS failing the test, closing the connection when it ends.
func MustDialWS(t testing.TB, url string, o WSOptions) *WSConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialWS(ctx, url, o)
	if err != nil {
		t.Fatalf("WebSocket to %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Read returns the payloads of the server's binary frames as one stream,
// and io.EOF once the server sent a close frame.
func (c *WSConn) Read(p []byte) (int, error) {
	for {
		if c.inData {
			n, err := c.rd.Read(p)
			if err == io.EOF {
				c.inData = false
				if n > 0 {
					return n, nil
				}
				continue
			}
			if err == nil && n == 0 {
				continue
			}
			return n, err
		}
		hdr, err := c.rd.NextFrame()
		if err != nil {
			return 0, err
		}
		switch hdr.OpCode {
		case ws.OpClose:
			_ = c.rd.Discard()
			return 0, io.EOF
		case ws.OpPing, ws.OpPong:
			_ = c.rd.Discard()
		default:
			c.inData = true
		}
	}
}

// Write sends p as one masked binary frame.
func (c *WSConn) Write(p []byte) (int, error) {
	if err := wsutil.WriteClientBinary(c.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteFrame sends one masked frame as given, for tests of framing.
func (c *WSConn) WriteFrame(op ws.OpCode, fin bool, p []byte) error {
	return ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewFrame(op, fin, p)))
}

// ReadFrame reads the server's next frame, whatever its opcode, and its
// payload, through the same buffer as Read. It fails the test after 10 s.
func (c *WSConn) ReadFrame(t testing.TB) (ws.Header, []byte) {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr, err := c.rd.NextFrame()
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	p := make([]byte, hdr.Length)
	if _, err := io.ReadFull(c.rd, p); err != nil {
		t.Fatalf("frame payload: %v", err)
	}
	return hdr, p
}

// ReadCloseFrame reads frames until a close frame and returns its code and
// reason, then answers it and closes, as browsers do; data frames before
// it are dropped. It fails the test after 10 s.
func (c *WSConn) ReadCloseFrame(t testing.TB) (ws.StatusCode, string) {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		hdr, err := c.rd.NextFrame()
		if err != nil {
			t.Fatalf("waiting for a close frame: %v", err)
		}
		if hdr.OpCode != ws.OpClose {
			_ = c.rd.Discard()
			continue
		}
		p := make([]byte, hdr.Length)
		if _, err := io.ReadFull(c.rd, p); err != nil {
			t.Fatalf("close frame payload: %v", err)
		}
		_ = c.WriteFrame(ws.OpClose, true, nil)
		c.Close()
		return ws.ParseCloseFrameData(p)
	}
}
