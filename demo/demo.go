// Package demo is mqgate's quick start with no external services: three
// in-process MQTT brokers (mochi-mqtt) on loopback and mqgate in front of
// them, hashing client ids over the three, taking MQTT and MQTT over
// WebSocket (ws://…/mqtt) on one port.
//
//	d, err := demo.Start(demo.Options{Listen: "127.0.0.1:1883", AdminListen: "127.0.0.1:9180"})
//	if err != nil { ... }
//	defer d.Close(ctx)
//	fmt.Println(d.Config)       // the mqgate configuration it runs
//	fmt.Println(d.DashboardURL) // the live dashboard, signed in with the generated key
//	fmt.Println(d.Counts())     // connected clients per broker
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/metrics"
	"github.com/mqgate/mqgate/proxy"
)

// Options say where the demo listens.
type Options struct {
	Listen      string            // mqgate's MQTT listener, "127.0.0.1:1883"
	AdminListen string            // the Admin API and dashboard; "" leaves them off
	Dir         string            // where the configuration and the Admin API state are written; "" for a new temporary directory
	Log         *slog.Logger      // process log; nil discards it
	Access      *accesslog.Writer // access log; nil discards it
}

// Demo is a running demo.
type Demo struct {
	Addr         string   // where mqgate listens
	WebSocket    string   // the ws:// URL of the same listener, for browsers and WebSocket clients
	BrokerAddrs  []string // the brokers behind it
	Config       string   // the mqgate YAML it runs, as a user would write it
	Proxy        *proxy.Server
	AdminURL     string // http://host:port of the Admin API, "" when off
	AdminKey     string // the generated admin key
	DashboardURL string // the dashboard, signing in with AdminKey

	brokers []*mochi.Server
	api     *admin.Server
	cancel  context.CancelFunc
	tmp     string // removed by Close
}

// Start starts three brokers on 127.0.0.1 ports the kernel picks and mqgate
// in front of them, with the Admin API and a generated key when asked.
func Start(opts Options) (*Demo, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	d := &Demo{}
	quiet := slog.New(slog.DiscardHandler)
	for i := range 3 {
		b := mochi.New(&mochi.Options{InlineClient: false, Logger: quiet})
		if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
			d.closeBrokers()
			return nil, fmt.Errorf("broker %d: %w", i+1, err)
		}
		tcp := listeners.NewTCP(listeners.Config{ID: fmt.Sprintf("broker%d", i+1), Address: "127.0.0.1:0"})
		if err := b.AddListener(tcp); err != nil {
			d.closeBrokers()
			return nil, fmt.Errorf("broker %d: %w", i+1, err)
		}
		if err := b.Serve(); err != nil {
			d.closeBrokers()
			return nil, fmt.Errorf("broker %d: %w", i+1, err)
		}
		d.brokers = append(d.brokers, b)
		d.BrokerAddrs = append(d.BrokerAddrs, tcp.Address())
	}
	if err := d.start(opts); err != nil {
		d.closeBrokers()
		d.removeTemp()
		return nil, err
	}
	return d, nil
}

// start runs mqgate as `mqgate run` would from the demo's file: the Admin
// API state file goes next to it.
func (d *Demo) start(opts Options) error {
	if opts.AdminListen != "" {
		var k [16]byte
		_, _ = rand.Read(k[:])
		d.AdminKey = hex.EncodeToString(k[:])
	}
	d.Config = configFor(opts.Listen, opts.AdminListen, d.AdminKey, d.BrokerAddrs)
	dir := opts.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mqgate-demo-")
		if err != nil {
			return err
		}
		dir, d.tmp = tmp, tmp
	}
	file := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(file, []byte(d.Config), 0o600); err != nil {
		return err
	}
	mgr, err := admin.Open([]string{file}, opts.Log)
	if err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	srv, err := proxy.New(mgr.Config(), proxy.Options{Log: opts.Log, AccessLog: opts.Access})
	if err != nil {
		return err
	}
	mgr.Attach(srv, nil)
	if err := srv.Listen(); err != nil {
		return err
	}
	d.Proxy = srv
	for _, a := range srv.ListenerAddrs() {
		d.Addr = a.String()
	}
	d.WebSocket = "ws://" + d.Addr + config.DefaultWebSocketPath
	if opts.AdminListen == "" {
		return nil
	}
	m := metrics.New(metrics.Sources{Proxy: srv.Stats, Reloads: mgr.ReloadStats,
		AuthFailures: func() map[string]uint64 { return d.api.AuthFailures() }})
	d.api = admin.New(admin.Options{Manager: mgr, Proxy: srv, Metrics: m.Handler(), Log: opts.Log})
	var ctx context.Context
	ctx, d.cancel = context.WithCancel(context.Background())
	if err := d.api.Start(ctx); err != nil {
		d.cancel()
		_ = srv.Shutdown(context.Background())
		return err
	}
	<-d.api.Bound()
	d.AdminURL = "http://" + d.api.Addr().String()
	d.DashboardURL = d.AdminURL + "/dashboard?key=" + d.AdminKey
	return nil
}

func configFor(listen, adminListen, key string, brokers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream_proxy:\n  tcp:\n    - {addr: %q, websocket: true}\n", listen)
	b.WriteString("upstreams:\n  - id: brokers\n    type: chash\n    key: mqtt_client_id\n    nodes:\n")
	for _, a := range brokers {
		fmt.Fprintf(&b, "      %q: 1\n", a)
	}
	b.WriteString("    checks:\n      active: {type: mqtt, healthy: {interval: 2}, unhealthy: {interval: 1}}\n")
	b.WriteString("stream_routes:\n  - id: mqtt\n    upstream_id: brokers\n")
	if adminListen != "" {
		fmt.Fprintf(&b, "admin:\n  listen: %q\n  keys:\n    - {name: demo, key: %q}\nreload: {watch: false}\n", adminListen, key)
	}
	return b.String()
}

// Counts returns how many clients are connected to each broker now, from
// the brokers' own view.
func (d *Demo) Counts() []int {
	out := make([]int, len(d.brokers))
	for i, b := range d.brokers {
		for _, cl := range b.Clients.GetAll() {
			if !cl.Closed() {
				out[i]++
			}
		}
	}
	return out
}

// ClientIDs returns the ids of the clients connected to each broker now.
func (d *Demo) ClientIDs() [][]string {
	out := make([][]string, len(d.brokers))
	for i, b := range d.brokers {
		for id, cl := range b.Clients.GetAll() {
			if !cl.Closed() {
				out[i] = append(out[i], id)
			}
		}
	}
	return out
}

// Close drains mqgate until ctx is done, then stops the brokers.
func (d *Demo) Close(ctx context.Context) error {
	if d.api != nil {
		_ = d.api.Close()
		d.cancel()
	}
	err := d.Proxy.Shutdown(ctx)
	d.closeBrokers()
	d.removeTemp()
	return err
}

func (d *Demo) removeTemp() {
	if d.tmp != "" {
		_ = os.RemoveAll(d.tmp)
	}
}

func (d *Demo) closeBrokers() {
	for _, b := range d.brokers {
		b.Close()
	}
}
