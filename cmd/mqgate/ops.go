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
//
// With an etcd provider (c not nil) it also starts the watch of etcd and
// the fleet registration, which stop is waited for: the instance leaves the
// fleet before the process ends.
func startOps(ctx context.Context, mgr *admin.Manager, srv *proxy.Server, c *cluster, log *slog.Logger) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	go mgr.Watch(ctx)
	runEtcd := func() func() {
		if c == nil {
			return func() {}
		}
		done := make(chan struct{})
		go func() { c.p.Run(ctx); close(done) }()
		return func() { <-done }
	}
	if mgr.Config().Admin == nil {
		log.Info("Admin API off: the configuration has no admin block")
		wait := runEtcd()
		return func() { cancel(); wait() }, nil
	}
	var api *admin.Server
	src := metrics.Sources{
		Proxy:        srv.Stats,
		Reloads:      mgr.ReloadStats,
		AuthFailures: func() map[string]uint64 { return api.AuthFailures() },
	}
	opts := admin.Options{Manager: mgr, Proxy: srv, Log: log}
	if c != nil {
		src.Etcd = c.metrics(mgr)
		opts.Etcd = c.p
	}
	opts.Metrics = metrics.New(src).Handler()
	api = admin.New(opts)
	if err := api.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	if c != nil {
		c.api = api
	}
	wait := runEtcd()
	return func() {
		_ = api.Close()
		cancel()
		wait()
	}, nil
}
