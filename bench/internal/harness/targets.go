package harness

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"text/template"
	"time"

	"github.com/mqgate/mqgate/bench/configs"
)

// Target names, in report order.
const (
	NoProxy = "no-proxy"
	HAProxy = "haproxy"
	NGINX   = "nginx"
	Mqgate  = "mqgate"
	// One thread: HAProxy nbthread 1 and mqgate GOMAXPROCS=1, to show how
	// each scales from one core to two.
	HAProxy1 = "haproxy-1"
	Mqgate1  = "mqgate-1"
)

// AllTargets lists every target in report order.
func AllTargets() []string { return []string{NoProxy, HAProxy, NGINX, Mqgate, HAProxy1, Mqgate1} }

// target is one way for clients to reach the brokers.
type target struct {
	name string
	// addrs are where clients connect: the three brokers for no-proxy (a
	// client picks one by a hash of its id), the proxy's listener otherwise.
	addrs []string
	// tlsAddrs are the proxy's TLS listener; nil for no-proxy.
	tlsAddrs []string
	// wsAddrs and wssAddrs are the proxy's MQTT over WebSocket listeners,
	// plain and over TLS (path wsPath); nil for targets not in the
	// WebSocket phases.
	wsAddrs, wssAddrs []string
	// restart stops the proxy and starts it again with the same
	// configuration, listeners up; nil for no-proxy.
	restart func() error
	proc    *process // nil for no-proxy
	// skip, when set, says why the target is not measured.
	skip string
}

// pids returns the processes whose CPU and memory count as the proxy's.
func (t *target) pids() []int {
	if t.proc == nil {
		return nil
	}
	return treePids(t.proc.pid())
}

func (t *target) stop() {
	if t.proc != nil {
		t.proc.stop()
	}
}

// brokerAddr is one broker as the templates see it.
type brokerAddr struct {
	Name string
	Addr string
}

// brokers are the three Mosquitto processes.
type brokers struct {
	ports []int
	procs []*process
	logs  []string // set when started verbose
}

func (b *brokers) addrs() []string {
	var addrs []string
	for _, p := range b.ports {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	return addrs
}

func (b *brokers) templateAddrs() []brokerAddr {
	var out []brokerAddr
	for i, a := range b.addrs() {
		out = append(out, brokerAddr{Name: fmt.Sprintf("broker%d", i+1), Addr: a})
	}
	return out
}

func (b *brokers) pids() []int {
	var pids []int
	for _, p := range b.procs {
		pids = append(pids, p.pid())
	}
	return pids
}

func (b *brokers) stop() {
	for _, p := range b.procs {
		p.stop()
	}
	b.procs = nil
}

// startBrokers starts one Mosquitto per port. Verbose brokers log client
// connections to a file each, for the hashing check; the measured runs use
// quiet ones.
func startBrokers(dir string, ports []int, verbose bool) (*brokers, error) {
	b := &brokers{ports: ports}
	mode := "quiet"
	if verbose {
		mode = "verbose"
	}
	for i, port := range ports {
		data := struct {
			Index   int
			Port    int
			LogFile string
		}{Index: i + 1, Port: port}
		if verbose {
			data.LogFile = filepath.Join(dir, fmt.Sprintf("broker%d-connections.log", i+1))
			b.logs = append(b.logs, data.LogFile)
			_ = os.Remove(data.LogFile)
		}
		conf := filepath.Join(dir, fmt.Sprintf("broker%d-%s.conf", i+1, mode))
		if err := renderTemplate("mosquitto.conf.tmpl", conf, data); err != nil {
			b.stop()
			return nil, err
		}
		p, err := startProcess(fmt.Sprintf("mosquitto %d", i+1), filepath.Join(dir, fmt.Sprintf("broker%d-%s.out", i+1, mode)), nil,
			"mosquitto", "-c", conf)
		if err != nil {
			b.stop()
			return nil, err
		}
		b.procs = append(b.procs, p)
	}
	for i, addr := range b.addrs() {
		if err := waitListening(addr, 10*time.Second, b.procs[i]); err != nil {
			b.stop()
			return nil, fmt.Errorf("broker %d: %w", i+1, err)
		}
	}
	return b, nil
}

// proxySettings are the values the proxy templates share.
type proxySettings struct {
	Dir               string
	Listen            string
	Brokers           []brokerAddr
	MaxConn           int // HAProxy
	NoFile            int // NGINX worker_rlimit_nofile
	WorkerConnections int // NGINX
	Threads           int // HAProxy nbthread, mqgate GOMAXPROCS
	TLSListen         string
	TLS               tlsFiles
	// The WebSocket listeners and the broker behind them; empty for
	// targets not in the WebSocket phases.
	WSListen, WSSListen     string
	WSPort, WSSPort         int
	WSPath                  string
	WSBrokerTCP, WSBrokerWS string // mqgate dials the first, NGINX the second
}

func startHAProxy(dir string, s proxySettings) (*process, error) {
	conf := filepath.Join(dir, configName("haproxy", "cfg", s.Threads))
	if err := renderTemplate("haproxy.cfg.tmpl", conf, s); err != nil {
		return nil, err
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy rejects %s: %v\n%s", conf, err, out)
	}
	return startProcess("haproxy", filepath.Join(dir, configName("haproxy", "out", s.Threads)), nil, "haproxy", "-db", "-f", conf)
}

// configName is the name of a target's configuration or log file in the
// work directory: name.ext, with the thread count when it is not 2.
func configName(name, ext string, threads int) string {
	if threads != 2 {
		return fmt.Sprintf("%s-%d.%s", name, threads, ext)
	}
	return name + "." + ext
}

func startNGINX(dir string, s proxySettings) (*process, error) {
	conf := filepath.Join(dir, "nginx.conf")
	if err := renderTemplate("nginx.conf.tmpl", conf, s); err != nil {
		return nil, err
	}
	js, err := configs.Files.ReadFile("mqtt.js")
	if err != nil {
		return nil, fmt.Errorf("reading embedded mqtt.js: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mqtt.js"), js, 0o644); err != nil {
		return nil, fmt.Errorf("writing mqtt.js: %w", err)
	}
	errLog := filepath.Join(dir, "nginx-error.log")
	args := []string{"nginx", "-p", dir, "-c", conf, "-e", errLog}
	if out, err := exec.Command(args[0], append(args[1:], "-t", "-q")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx rejects %s: %v\n%s", conf, err, out)
	}
	return startProcess("nginx", filepath.Join(dir, "nginx.out"), nil, args...)
}

func startMqgate(dir, bin string, s proxySettings) (*process, error) {
	conf := filepath.Join(dir, configName("mqgate", "yaml", s.Threads))
	if err := renderTemplate("mqgate.yaml.tmpl", conf, s); err != nil {
		return nil, err
	}
	env := []string{fmt.Sprintf("GOMAXPROCS=%d", s.Threads)}
	return startProcess("mqgate", filepath.Join(dir, configName("mqgate", "out", s.Threads)), env, bin, "run", "-c", conf)
}

// buildMqgate builds ./cmd/mqgate of the module at repo into dir.
func buildMqgate(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "mqgate")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/mqgate")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/mqgate: %v\n%s", err, tailLines(string(out), 15))
	}
	return bin, nil
}

func renderTemplate(name, path string, data any) error {
	text, err := fs.ReadFile(configs.Files, name)
	if err != nil {
		return fmt.Errorf("reading template %s: %w", name, err)
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return fmt.Errorf("parsing template %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
