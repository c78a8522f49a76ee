package mqtttest

import (
	"log/slog"
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
