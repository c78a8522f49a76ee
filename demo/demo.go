// Package demo is mqgate's quick start with no external services: three
// in-process MQTT brokers (mochi-mqtt) on loopback and mqgate in front of
// them, hashing client ids over the three, taking MQTT and MQTT over
// WebSocket (ws://…/mqtt) on one port.
//
//	d, err := demo.Start("127.0.0.1:1883", slog.Default(), nil)
//	if err != nil { ... }
//	defer d.Close(ctx)
//	fmt.Println(d.Config)   // the mqgate configuration it runs
//	fmt.Println(d.Counts()) // connected clients per broker
package demo

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/proxy"
)

// Demo is a running demo.
type Demo struct {
	Addr        string   // where mqgate listens
	WebSocket   string   // the ws:// URL of the same listener, for browsers and WebSocket clients
	BrokerAddrs []string // the brokers behind it
	Config      string   // the mqgate YAML it runs, as a user would write it
	Proxy       *proxy.Server

	brokers []*mochi.Server
}

// Start starts three brokers on 127.0.0.1 ports the kernel picks and mqgate
// on listen. access, when not nil, receives the access log.
func Start(listen string, log *slog.Logger, access *accesslog.Writer) (*Demo, error) {
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

	d.Config = configFor(listen, d.BrokerAddrs)
	cfg, err := config.Parse(config.Document{Name: "demo.yaml", Data: []byte(d.Config)})
	if err != nil {
		d.closeBrokers()
		return nil, fmt.Errorf("demo configuration: %w", err)
	}
	srv, err := proxy.New(cfg, proxy.Options{Log: log, AccessLog: access})
	if err != nil {
		d.closeBrokers()
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		d.closeBrokers()
		return nil, err
	}
	d.Proxy = srv
	for _, a := range srv.ListenerAddrs() {
		d.Addr = a.String()
	}
	d.WebSocket = "ws://" + d.Addr + config.DefaultWebSocketPath
	return d, nil
}

func configFor(listen string, brokers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream_proxy:\n  tcp:\n    - {addr: %q, websocket: true}\n", listen)
	b.WriteString("upstreams:\n  - id: brokers\n    type: chash\n    key: mqtt_client_id\n    nodes:\n")
	for _, a := range brokers {
		fmt.Fprintf(&b, "      %q: 1\n", a)
	}
	b.WriteString("stream_routes:\n  - id: mqtt\n    upstream_id: brokers\n")
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
	err := d.Proxy.Shutdown(ctx)
	d.closeBrokers()
	return err
}

func (d *Demo) closeBrokers() {
	for _, b := range d.brokers {
		b.Close()
	}
}
