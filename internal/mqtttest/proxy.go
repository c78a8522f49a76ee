package mqtttest

import (
	"context"
	"testing"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/proxy"
)

// StartProxy runs mqgate's proxy for cfg until the test ends, when it must
// shut down cleanly within 5 s.
func StartProxy(t testing.TB, cfg *config.Config, opts proxy.Options) *proxy.Server {
	t.Helper()
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
	})
	return srv
}
