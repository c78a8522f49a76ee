package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/bench/internal/broker"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestLatencyPacesEveryClient: the latency phase connects LatencyClients
// clients and every message each of them sends comes back (none lost), so
// the phase's samples come from all of them. It asserts counts only: how
// many messages fall in the window depends on the machine.
func TestLatencyPacesEveryClient(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	b, err := broker.Start(addr, fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	const clients = 4
	cfg := Config{
		Phase:          "latency",
		Addrs:          []string{addr},
		IDPrefix:       "lat",
		Duration:       200 * time.Millisecond,
		MaxOps:         clients * 20,
		Payload:        64,
		Rate:           200,
		LatencyClients: clients,
		Timeout:        10 * time.Second,
	}
	var out bytes.Buffer
	if err := Run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	var res Result
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if err := json.Unmarshal([]byte(strings.TrimPrefix(last, "RESULT ")), &res); err != nil {
		t.Fatalf("last line %q: %v", last, err)
	}
	if res.Connected != clients {
		t.Errorf("connected %d clients, want %d", res.Connected, clients)
	}
	if res.Lost != 0 || res.Errors != nil {
		t.Errorf("lost %d of %d messages, errors %v %v", res.Lost, res.Sent, res.Errors, res.Sample)
	}
	if res.Ops > res.Sent {
		t.Errorf("%d messages measured, more than the %d sent", res.Ops, res.Sent)
	}
}
