package loadgen

import (
	"flag"
	"strconv"
	"strings"
	"time"
)

// RegisterFlags defines one flag per Config field on fs, writing into cfg.
func RegisterFlags(fs *flag.FlagSet, cfg *Config) {
	fs.StringVar(&cfg.Phase, "phase", "connect", "connect, throughput, latency or idle")
	fs.Func("addrs", "comma-separated addresses to connect to", func(s string) error {
		cfg.Addrs = ParseAddrs(s)
		return nil
	})
	fs.StringVar(&cfg.IDPrefix, "id-prefix", "mqbench", "client id prefix")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "time before the measured window")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured window")
	fs.Int64Var(&cfg.MaxOps, "max-ops", 10_000_000, "bound on connects or messages")
	fs.IntVar(&cfg.Workers, "workers", 16, "connect: looping workers; idle: concurrent dials")
	fs.IntVar(&cfg.Clients, "clients", 48, "throughput and idle: clients")
	fs.IntVar(&cfg.Payload, "payload", 64, "PUBLISH payload bytes (at least 8)")
	fs.IntVar(&cfg.Window, "window", 16, "throughput: messages per burst")
	fs.IntVar(&cfg.Rate, "rate", 200, "latency: messages per second, each client")
	fs.IntVar(&cfg.LatencyClients, "latency-clients", 1, "latency: clients, each at -rate")
	fs.DurationVar(&cfg.Hold, "hold", 30*time.Second, "idle: longest hold")
	fs.DurationVar(&cfg.PingEvery, "ping-every", 5*time.Second, "idle: PINGREQ interval")
	fs.DurationVar(&cfg.RampTimeout, "ramp-timeout", 30*time.Second, "idle: longest ramp")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "per network operation")
	fs.BoolVar(&cfg.TLS, "tls", false, "connect with TLS 1.3 (X25519)")
	fs.StringVar(&cfg.CAFile, "ca", "", "with -tls: PEM file of the CA to trust")
	fs.StringVar(&cfg.ServerName, "server-name", "mqtt.bench", "with -tls: the name the certificate is checked for (SNI)")
	fs.BoolVar(&cfg.TLSResume, "tls-resume", false, "with -tls, connect: resume each worker's session")
	fs.StringVar(&cfg.WSPath, "ws-path", "", "speak MQTT over WebSocket to this path (wss:// with -tls)")
}

// Args returns the command-line flags that RegisterFlags parses back into cfg.
func (cfg Config) Args() []string {
	d := func(v time.Duration) string { return v.String() }
	i := func(v int) string { return strconv.Itoa(v) }
	return []string{
		"-phase", cfg.Phase,
		"-addrs", strings.Join(cfg.Addrs, ","),
		"-id-prefix", cfg.IDPrefix,
		"-warmup", d(cfg.Warmup),
		"-duration", d(cfg.Duration),
		"-max-ops", strconv.FormatInt(cfg.MaxOps, 10),
		"-workers", i(cfg.Workers),
		"-clients", i(cfg.Clients),
		"-payload", i(cfg.Payload),
		"-window", i(cfg.Window),
		"-rate", i(cfg.Rate),
		"-latency-clients", i(cfg.LatencyClients),
		"-hold", d(cfg.Hold),
		"-ping-every", d(cfg.PingEvery),
		"-ramp-timeout", d(cfg.RampTimeout),
		"-timeout", d(cfg.Timeout),
		"-tls=" + strconv.FormatBool(cfg.TLS),
		"-ca", cfg.CAFile,
		"-server-name", cfg.ServerName,
		"-tls-resume=" + strconv.FormatBool(cfg.TLSResume),
		"-ws-path=" + cfg.WSPath,
	}
}
