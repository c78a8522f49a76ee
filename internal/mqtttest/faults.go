package mqtttest

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// StartMochiAt starts a mochi-mqtt broker on addr, such as the address of
// a Mochi that was closed: a mochi Server cannot be restarted, so a test
// that brings a broker back starts a new one where the old one was.
func StartMochiAt(t testing.TB, addr string) *Mochi {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	seen := &seenHook{}
	for _, h := range []mochi.Hook{new(auth.AllowHook), seen} {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatalf("mochi hook: %v", err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatalf("mochi listener on %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("mochi serve: %v", err)
	}
	m := &Mochi{Server: srv, addr: tcp.Address(), seen: seen}
	t.Cleanup(m.Close)
	return m
}

// Kill stops the broker as a crash does: the port refuses connections
// first, then every client connection drops. (Close is mochi's graceful
// stop, which drops the clients while the port still accepts: a client
// that reconnects in between is accepted and never answered.)
func (m *Mochi) Kill() {
	m.close.Do(func() {
		if l, ok := m.Server.Listeners.Get("t"); ok {
			l.Close(func(string) {}) // the clients are dropped below
		}
		for _, cl := range m.Server.Clients.GetAll() {
			cl.Stop(errKilled)
		}
		m.Server.Close()
	})
}

var errKilled = errors.New("broker killed")

// SilentPort listens on a loopback port, accepts connections and never
// answers: a hung broker, or a port that is open without a broker behind
// it. It counts the connections it accepted; all close when the test ends.
func SilentPort(t testing.TB) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}
