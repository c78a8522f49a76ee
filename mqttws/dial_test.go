package mqttws

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// echoServer is a WebSocket server of this package's own (Upgrader, the
// server side, which refuses unmasked frames [RFC 6455 5.1]) that echoes
// what it reads and records the request it was asked.
func echoServer(t *testing.T) (addr string, requests chan *http.Request) {
	t.Helper()
	requests = make(chan *http.Request, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- r
		if r.URL.Path != "/mqtt" {
			http.NotFound(w, r)
			return
		}
		c, err := Upgrader{}.Upgrade(w, r)
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), requests
}

func dialTCP(t *testing.T, addr string) (net.Conn, context.Context) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c, ctx
}

// TestDial: the client side asks for the path and subprotocol given,
// masks every frame (the server side reads them), and reads unmasked
// frames back; payloads larger than one write buffer pass intact.
func TestDial(t *testing.T) {
	t.Parallel()
	addr, requests := echoServer(t)
	tcp, ctx := dialTCP(t, addr)
	c, err := Dial(ctx, tcp, "broker.example:8083", "/mqtt?token=x", ProtocolMQTT)
	if err != nil {
		t.Fatal(err)
	}
	r := <-requests
	if r.URL.Path != "/mqtt" || r.URL.RawQuery != "token=x" || r.Host != "broker.example:8083" {
		t.Errorf("asked for %s%s?%s, want broker.example:8083/mqtt?token=x", r.Host, r.URL.Path, r.URL.RawQuery)
	}
	if got := r.Header.Get("Sec-WebSocket-Protocol"); got != ProtocolMQTT {
		t.Errorf("offered subprotocol %q, want %q [MQTT-6.0.0-3]", got, ProtocolMQTT)
	}
	if c.Protocol != ProtocolMQTT {
		t.Errorf("agreed subprotocol %q, want %q", c.Protocol, ProtocolMQTT)
	}
	for _, size := range []int{1, 125, 70 << 10} { // 70 KiB: several chunks of the pooled buffer
		msg := bytes.Repeat([]byte{0x30, 0xAB, 0x00}, size/3+1)[:size]
		sent := bytes.Clone(msg)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg, sent) {
			t.Fatalf("Write changed the caller's bytes while masking")
		}
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading the echo of %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs", size)
		}
	}
	// A close from the client side is a masked close frame: the server
	// side answers it and ends.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after the close handshake Read gave %v, want EOF", err)
	}
}

// TestDialRefused: a wrong path is the broker's 404, a server that echoes
// another subprotocol than offered is refused, and a server that never
// answers ends at the context's deadline.
func TestDialRefused(t *testing.T) {
	t.Parallel()
	addr, _ := echoServer(t)
	tcp, ctx := dialTCP(t, addr)
	_, err := Dial(ctx, tcp, addr, "/other", ProtocolMQTT)
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusNotFound {
		t.Errorf("wrong path: %v, want a DialError with status 404", err)
	}

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hu := ws.HTTPUpgrader{Protocol: func(string) bool { return true }, Header: http.Header{}}
		// Offered "mqtt", this server answers as if it had been offered
		// "wamp" too and picked that.
		r.Header.Set("Sec-WebSocket-Protocol", "wamp")
		c, _, _, err := hu.Upgrade(r, w)
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(other.Close)
	tcp2, ctx2 := dialTCP(t, strings.TrimPrefix(other.URL, "http://"))
	if _, err := Dial(ctx2, tcp2, "x", "/mqtt", ProtocolMQTT); !errors.Is(err, ws.ErrHandshakeBadSubProtocol) {
		t.Errorf("another subprotocol echoed: %v, want ErrHandshakeBadSubProtocol", err)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	tcp3, _ := dialTCP(t, silent.Addr().String())
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(short, tcp3, "x", "/mqtt", ProtocolMQTT); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("silent server: %v, want the deadline", err)
	}
	(<-accepted).Close()
}
