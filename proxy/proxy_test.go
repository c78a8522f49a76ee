package proxy_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/proxy"
)

// gateway is an mqgate server under test.
type gateway struct {
	srv    *proxy.Server
	addr   string
	access *mqtttest.LogBuffer
}

// startGateway runs mqgate with the YAML yml, in which LISTEN stands for the
// test's listener.
func startGateway(t testing.TB, yml string) *gateway {
	t.Helper()
	return startGatewayLog(t, yml, io.Discard)
}

// startGatewayLog is startGateway with the process log written to log.
func startGatewayLog(t testing.TB, yml string, log io.Writer) *gateway {
	t.Helper()
	yml = strings.ReplaceAll(yml, "LISTEN", `"127.0.0.1:0"`)
	cfg, err := config.Parse(config.Document{Name: "test.yaml", Data: []byte(yml)})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	if dp := os.Getenv(dataPathEnv); dp != "" && !strings.Contains(yml, "data_path:") {
		cfg.StreamProxy.DataPath = dp // the whole suite again on another data path
	}
	access := &mqtttest.LogBuffer{}
	srv := mqtttest.StartProxy(t, cfg, proxy.Options{
		Log:       slog.New(slog.NewTextHandler(log, nil)),
		AccessLog: accesslog.New(access, nil),
	})
	g := &gateway{srv: srv, access: access}
	for _, a := range srv.ListenerAddrs() {
		g.addr = a.String()
	}
	return g
}

// chashConfig is one listener and one chash upstream over brokers.
func chashConfig(brokers ...mqtttest.Broker) string {
	var b strings.Builder
	b.WriteString("stream_proxy:\n  tcp:\n    - LISTEN\n  connect_timeout: 10s\nupstreams:\n  - id: 1\n    type: chash\n    key: mqtt_client_id\n    nodes:\n")
	for _, br := range brokers {
		fmt.Fprintf(&b, "      %q: 1\n", br.Addr())
	}
	b.WriteString("stream_routes:\n  - id: 1\n    upstream_id: 1\n")
	return b.String()
}
