package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/demo"
)

func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:1883", "`address` mqgate listens on")
	adminListen := fs.String("admin", "127.0.0.1:9180", "`address` of the Admin API and the dashboard (\"off\": none)")
	every := fs.Duration("every", 5*time.Second, "how often to print the connections per broker")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	access := accesslog.New(stdout, accesslog.JSON)
	defer access.Close()
	if *adminListen == "off" {
		*adminListen = ""
	}
	d, err := demo.Start(demo.Options{Listen: *listen, AdminListen: *adminListen, Log: log, Access: access})
	if err != nil {
		return err
	}
	dashboard := "Admin API off (--admin off)."
	if d.DashboardURL != "" {
		dashboard = fmt.Sprintf("Dashboard (signs in with the generated admin key):\n  %s\nAdmin API key: %s\n  curl -s %s/status -H \"X-API-KEY: %s\"", d.DashboardURL, d.AdminKey, d.AdminURL, d.AdminKey)
	}
	h, p, _ := net.SplitHostPort(d.Addr)
	fmt.Fprintf(stdout, `mqgate demo: mqgate on %s (MQTT) and %s (MQTT over WebSocket) in front of three in-process brokers:
  broker1 %s
  broker2 %s
  broker3 %s

The configuration it runs (save it as mqgate.yaml and "mqgate run -c mqgate.yaml" does the same):
%s
Try it (mosquitto-clients):
  mosquitto_sub -h %s -p %s -i watcher -t 'demo/#' -v &
  mosquitto_pub -h %s -p %s -i meter-1 -t demo/meter-1 -m 42
  for i in $(seq 1 20); do mosquitto_pub -h %s -p %s -i "sensor-$i" -t demo/x -m hi; done
Over WebSocket (MQTT.js, MQTTX, a browser): connect to %s
The same client id always lands on the same broker (watch the "node" field of the access log below).

%s

Every %s this prints the clients connected to each broker. Ctrl-C stops it all.

`, d.Addr, d.WebSocket, d.BrokerAddrs[0], d.BrokerAddrs[1], d.BrokerAddrs[2], d.Config,
		h, p, h, p, h, p, d.WebSocket, dashboard, *every)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			c := d.Counts()
			fmt.Fprintf(stdout, "%s clients per broker: broker1=%d broker2=%d broker3=%d\n",
				time.Now().Format(time.TimeOnly), c[0], c[1], c[2])
		case <-sigs:
			fmt.Fprintln(stdout, "stopping")
			return closeDemo(d)
		case <-ctx.Done():
			return closeDemo(d)
		}
	}
}

func closeDemo(d *demo.Demo) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.Close(ctx)
	return nil
}
