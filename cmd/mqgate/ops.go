package main

import (
	"context"
	"log/slog"

	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/proxy"
)

// startOps starts what operators use beside the proxy: the file watch, and
// the Admin API with status and metrics when the configuration has an admin
// block. stop closes the Admin API listener at once, so that a new process
// can take it over while this one drains.
func startOps(ctx context.Context, mgr *admin.Manager, srv *proxy.Server, log *slog.Logger) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	go mgr.Watch(ctx)
	if mgr.Config().Admin == nil {
		log.Info("Admin API off: the configuration has no admin block")
		return cancel, nil
	}
	var api *admin.Server
	m := metrics.New(metrics.Sources{
		Proxy:        srv.Stats,
		Reloads:      mgr.ReloadStats,
		AuthFailures: func() map[string]uint64 { return api.AuthFailures() },
	})
	api = admin.New(admin.Options{Manager: mgr, Proxy: srv, Metrics: m.Handler(), Log: log})
	if err := api.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	return func() {
		_ = api.Close()
		cancel()
	}, nil
}
