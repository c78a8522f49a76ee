// Package results holds what one benchmark run measured and renders it: the
// raw JSON, a markdown summary (metrics × targets, with ratios to HAProxy
// measured in the same run) and a PNG bar chart of those ratios.
package results

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mqgate/mqgate/bench/internal/loadgen"
)

// Phase names, as keys of Round.Phases.
const (
	PhaseConnect      = "connect"
	PhaseThroughput64 = "throughput-64B"
	PhaseThroughput1K = "throughput-1KB"
	PhaseLatency      = "latency"
	// Over TLS 1.3 (X25519, ECDSA P-256), to each proxy's TLS listener.
	PhaseTLSConnect      = "tls-connect" // full handshakes
	PhaseTLSResume       = "tls-resume"  // resumed handshakes (session tickets)
	PhaseTLSThroughput64 = "tls-throughput-64B"
	// MQTT over WebSocket (ws://, and wss:// over TLS 1.3) to the path
	// /mqtt, against NGINX proxying the same WebSocket (seed 004).
	PhaseWSConnect       = "ws-connect"
	PhaseWSThroughput64  = "ws-throughput-64B"
	PhaseWSSConnect      = "wss-connect"
	PhaseWSSThroughput64 = "wss-throughput-64B"
)

// Run is one complete benchmark run.
type Run struct {
	Date        string    `json:"date"`
	Command     string    `json:"command"`
	Quick       bool      `json:"quick"`
	WallSeconds float64   `json:"wall_seconds"`
	Machine     Machine   `json:"machine"`
	Versions    []Version `json:"versions"`
	Plan        Plan      `json:"plan"`
	Targets     []*Target `json:"targets"`
	// Problems are failures the reader must see: a hashing check that
	// failed, a phase that errored. A run with problems exits non-zero.
	Problems []string `json:"problems,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs         int     `json:"cpus"`
	CPUModel     string  `json:"cpu_model"`
	Kernel       string  `json:"kernel"`
	MemGiB       float64 `json:"mem_gib"`
	NoFileLimit  uint64  `json:"nofile_limit"`
	LoadAvgStart string  `json:"loadavg_start"`
	LoadAvgEnd   string  `json:"loadavg_end"`
	GoVersion    string  `json:"go_version"`
	GOMAXPROCS   int     `json:"gomaxprocs"`
	Distribution string  `json:"distribution"`
}

// Version is the version of one piece of software in the run.
type Version struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Plan is how large each phase was.
type Plan struct {
	Rounds            int     `json:"rounds"`
	WarmupSeconds     float64 `json:"warmup_seconds"`
	WindowSeconds     float64 `json:"window_seconds"`
	ConnectWorkers    int     `json:"connect_workers"`
	ThroughputClients int     `json:"throughput_clients"`
	ThroughputWindow  int     `json:"throughput_window"`
	LatencyRate       int     `json:"latency_rate"` // each latency client's
	// LatencyClients pace their messages together (0 in runs from before
	// it: one client).
	LatencyClients    int     `json:"latency_clients,omitempty"`
	LatencySeconds    float64 `json:"latency_seconds"`
	IdleClients       int     `json:"idle_clients"`
	IdleProcs         int     `json:"idle_procs"`
	IdleSettleSeconds float64 `json:"idle_settle_seconds"`
	IdleHoldSeconds   float64 `json:"idle_hold_seconds"`
	IdlePingSeconds   float64 `json:"idle_ping_seconds"`
	VerifyIDs         int     `json:"verify_ids"`
	OrderRounds       int     `json:"order_rounds"`
	TLSIdleClients    int     `json:"tls_idle_clients"`
	WSWindowSeconds   float64 `json:"ws_window_seconds,omitempty"`
	WSIdleClients     int     `json:"ws_idle_clients,omitempty"`
}

// Target is everything measured for one target.
type Target struct {
	Name    string  `json:"name"`
	Skipped string  `json:"skipped,omitempty"`
	Verify  *Verify `json:"verify,omitempty"`
	Rounds  []Round `json:"rounds,omitempty"`
	Idle    *Idle   `json:"idle,omitempty"`
	TLSIdle *Idle   `json:"tls_idle,omitempty"`
	WSIdle  *Idle   `json:"ws_idle,omitempty"`
	WSSIdle *Idle   `json:"wss_idle,omitempty"`
	Order   *Order  `json:"order,omitempty"`
}

// Order is the cross-connection ordering probe (loadgen.OrderProbe).
type Order struct {
	loadgen.OrderResult
	Error string `json:"error,omitempty"`
}

// Verify is the hashing check, from the brokers' own connection logs.
type Verify struct {
	OK bool `json:"ok"`
	// IDs client ids each connected twice, the second pass in another order.
	IDs int `json:"ids"`
	// PerBroker counts the ids each broker saw.
	PerBroker []int    `json:"per_broker"`
	Problems  []string `json:"problems,omitempty"`
}

// Round is one pass over the short phases.
type Round struct {
	Index  int               `json:"index"`
	Phases map[string]*Phase `json:"phases"`
}

// Phase is one load generator run and the resources used during its window.
type Phase struct {
	Load loadgen.Result `json:"load"`
	// CPU seconds used during the measured window.
	ProxyCPU   float64 `json:"proxy_cpu_s"`
	BrokerCPU  float64 `json:"broker_cpu_s"`
	LoadgenCPU float64 `json:"loadgen_cpu_s"`
	// ProxySysCPU is the part of ProxyCPU spent in the kernel (stime),
	// the system calls' TCP work, which no proxy's own code can shed.
	// Absent (0) in runs from before 2026-12-02.
	ProxySysCPU float64 `json:"proxy_sys_cpu_s,omitempty"`
	// OtherCPU is machine-wide busy time not used by this run's processes:
	// the other tenants of a shared machine.
	OtherCPU      float64 `json:"other_cpu_s"`
	WindowSeconds float64 `json:"window_s"`
	ProxyRSSKB    int64   `json:"proxy_rss_kb"`
	Error         string  `json:"error,omitempty"`
}

// Idle is the idle-connections phase.
type Idle struct {
	Wanted       int     `json:"wanted"`
	Connected    int     `json:"connected"`
	RampSeconds  float64 `json:"ramp_seconds"`
	RSSBeforeKB  int64   `json:"proxy_rss_before_kb"`
	RSSAfterKB   int64   `json:"proxy_rss_after_kb"`
	RSSPerConnKB float64 `json:"proxy_rss_per_conn_kb"`
	// BrokerRSSPerConnKB is the brokers' growth; Mosquitto keeps freed
	// memory, so it is only meaningful for the first target measured.
	BrokerRSSPerConnKB float64           `json:"broker_rss_per_conn_kb"`
	ProxyCPUCores      float64           `json:"proxy_cpu_cores_while_holding"`
	LoadgenCPU         float64           `json:"loadgen_cpu_s_while_holding"`
	PingsOK            uint64            `json:"pings_ok"`
	PingsFailed        uint64            `json:"pings_failed"`
	Errors             map[string]uint64 `json:"errors,omitempty"`
	ErrorSamples       map[string]string `json:"error_samples,omitempty"`
	Error              string            `json:"error,omitempty"`
	// Restarted: the phase ran on a freshly started proxy (the WebSocket
	// idle phases), not on one that held the phases before.
	Restarted bool `json:"restarted,omitempty"`
}

// Target returns the target named name, or nil.
func (r *Run) Target(name string) *Target {
	for _, t := range r.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// WriteFiles writes latest.json, latest.md and latest.png into dir.
func (r *Run) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing latest.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("writing latest.md: %w", err)
	}
	png, err := r.Chart()
	if err != nil {
		return fmt.Errorf("drawing chart: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.png"), png, 0o644); err != nil {
		return fmt.Errorf("writing latest.png: %w", err)
	}
	return nil
}

// WriteHistory keeps the run's JSON as dir/<end time>.json (UTC,
// 2006-01-02T15-04-05Z.json: names sort by time), next to latest.json which
// the next run overwrites, for mqbench spread. It returns the file's path.
func (r *Run) WriteHistory(dir string, end time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encoding results: %w", err)
	}
	path := filepath.Join(dir, end.UTC().Format("2006-01-02T15-04-05Z")+".json")
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("keeping the run: %w", err)
	}
	return path, nil
}

// ReadFile reads a Run from a latest.json.
func ReadFile(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	return &r, nil
}
