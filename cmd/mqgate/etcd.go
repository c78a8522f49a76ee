package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/etcd"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/proxy"
)

// cluster is what runCmd keeps of an etcd provider.
type cluster struct {
	p       *etcd.Provider
	started time.Time
	srv     *proxy.Server // set once the proxy exists
	api     *admin.Server // set once the Admin API exists
}

// openEtcd makes the etcd provider of deployment.etcd and reads etcd once,
// before the proxy starts, so an instance serves etcd's configuration from
// its first connection on. With etcd down it says so and serves the cache
// file's configuration (or the files' alone); Run catches up later.
func openEtcd(ctx context.Context, mgr *admin.Manager, cfg *config.Config, log *slog.Logger) (*cluster, error) {
	dep := cfg.DeploymentSettings()
	c := &cluster{started: time.Now()}
	p, err := etcd.New(etcd.Options{
		Settings: dep.Etcd,
		Kinds:    admin.Kinds,
		Name:     dep.Name(),
		Log:      log,
		Apply:    func(s etcd.Snapshot) { _ = mgr.ApplyRemote(s.Revision, remoteObjects(s.Objects)) },
		Instance: func() etcd.Instance { return c.instance(dep) },
		Kick: func(clientID string) any {
			if c.srv == nil {
				return []proxy.ConnInfo{}
			}
			return c.srv.CloseClient(clientID)
		},
	})
	if err != nil {
		return nil, err
	}
	c.p = p
	mgr.SetRemote(p)
	log.Info("reading the configuration from etcd", "hosts", dep.Etcd.Hosts, "prefix", dep.Etcd.Prefix, "role", dep.Role, "instance", dep.Name())
	snap, err := p.Load(ctx)
	if err == nil {
		if err := mgr.ApplyRemote(snap.Revision, remoteObjects(snap.Objects)); err != nil {
			log.Warn("etcd's configuration is refused: serving the files' (and cache's) configuration", "err", err)
		}
		return c, nil
	}
	if cached, file, rev := mgr.StartedFromCache(); cached {
		log.Warn("etcd unreachable at start: serving the cached configuration until it answers", "cache_file", file, "revision", rev, "err", err)
	} else {
		log.Warn("etcd unreachable at start and no cache file: serving the files' configuration until it answers", "cache_file", dep.Etcd.CacheFile, "err", err)
	}
	return c, nil
}

func remoteObjects(objs []etcd.Object) []admin.RemoteObject {
	out := make([]admin.RemoteObject, len(objs))
	for i, o := range objs {
		out[i] = admin.RemoteObject{Kind: o.Kind, ID: o.ID, Key: o.Key, Value: o.Value, CreateRevision: o.CreateRevision, ModRevision: o.ModRevision}
	}
	return out
}

// instance is this instance's fleet record.
func (c *cluster) instance(dep *config.Deployment) etcd.Instance {
	in := etcd.Instance{Role: dep.Role, Version: version, Started: c.started}
	if c.srv != nil {
		in.Connections = c.srv.Stats().Active
		for _, a := range c.srv.ListenerAddrs() {
			in.Listen = append(in.Listen, a.String())
		}
	}
	if c.api != nil {
		if a := c.api.Addr(); a != nil {
			in.Admin = a.String()
		}
	}
	return in
}

// metrics reads the provider and the Manager for Prometheus.
func (c *cluster) metrics(mgr *admin.Manager) func() metrics.Etcd {
	return func() metrics.Etcd {
		st, fs := c.p.Status(), c.p.FleetStatus()
		rs, _ := mgr.Remote()
		e := metrics.Etcd{Connected: st.Connected, Revision: rs.Revision, Errors: st.Errors, Reads: st.Reads,
			Refused: len(rs.Refused), Instances: len(fs.Instances), InSync: fs.InSync}
		if st.LastErrorAt != nil {
			e.LastErrorAtSec = float64(st.LastErrorAt.UnixNano()) / 1e9
		}
		return e
	}
}
