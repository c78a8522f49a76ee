// Package deploy_test checks what installs mqgate where these tests cannot
// run it: the Dockerfile (its build step, scripts/build-static.sh, is run
// with the same flags), compose.yaml against the configuration it mounts,
// and the systemd unit with systemd-analyze verify.
package deploy_test

import (
	"bufio"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/config"
)

// root is the repository, where the Dockerfile and compose.yaml are.
const root = ".."

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	buildDir  string
)

const testCommit = "0123456789abcdef0123456789abcdef01234567"

// staticBinary runs the Dockerfile's build step once for every test.
func staticBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "mqgate-static-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "mqgate")
		cmd := exec.Command("bash", filepath.Join(root, "scripts/build-static.sh"), buildBin)
		cmd.Env = append(os.Environ(), "VERSION=v0.0.0-test", "COMMIT="+testCommit)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("scripts/build-static.sh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// dockerfile is the Dockerfile's instructions, in order, continuation
// lines joined.
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cur += line
		if strings.HasSuffix(cur, "\\") {
			cur = strings.TrimSuffix(cur, "\\") + " "
			continue
		}
		instr, args, _ := strings.Cut(cur, " ")
		out = append(out, [2]string{strings.ToUpper(instr), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// TestDockerfile: the image is built by scripts/build-static.sh on the
// Go version go.mod names, runs on distroless static as a non-root user,
// and the script (run here with the same flags) makes a static binary
// whose `mqgate version` prints the commit it was given.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	instrs := dockerfile(t)
	var froms, runs, users, cmds, exposes []string
	for _, in := range instrs {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "RUN":
			runs = append(runs, in[1])
		case "USER":
			users = append(users, in[1])
		case "CMD":
			cmds = append(cmds, in[1])
		case "EXPOSE":
			exposes = append(exposes, strings.Fields(in[1])...)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if len(froms) != 2 || goVersion == nil || !strings.HasPrefix(froms[0], "golang:"+string(goVersion[1])+"-") || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("stages %q: want golang:%s-... AS build, then the runtime", froms, goVersion[1])
	}
	if len(froms) == 2 && !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Errorf("runtime base %q, want distroless static", froms[1])
	}
	if !slices.ContainsFunc(runs, func(r string) bool { return strings.Contains(r, "scripts/build-static.sh /out/mqgate") }) {
		t.Errorf("no RUN of scripts/build-static.sh: %q", runs)
	}
	if len(users) == 0 || users[len(users)-1] == "root" || strings.HasPrefix(users[len(users)-1], "0") {
		t.Errorf("USER %q: want a non-root user", users)
	}
	if len(cmds) != 1 || !strings.Contains(cmds[0], "/etc/mqgate/mqgate.yaml") {
		t.Errorf("CMD %q", cmds)
	}
	for _, p := range []string{"1883", "8883", "8083", "9180"} {
		if !slices.Contains(exposes, p) {
			t.Errorf("EXPOSE %v lacks %s", exposes, p)
		}
	}

	bin := staticBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if want := "mqgate v0.0.0-test (go"; err != nil || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "commit "+testCommit+")") {
		t.Errorf("mqgate version: %q (%v), want %s..., commit %s", out, err, want, testCommit)
	}
	fi, _ := os.Stat(bin)
	t.Logf("static binary: %.1f MB; %s", float64(fi.Size())/1e6, strings.TrimSpace(string(out)))
}

// compose is the part of compose.yaml the quick start relies on.
type compose struct {
	Services map[string]struct {
		Build       any               `yaml:"build"`
		Image       string            `yaml:"image"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   []string          `yaml:"depends_on"`
		Ulimits     map[string]struct {
			Soft int `yaml:"soft"`
			Hard int `yaml:"hard"`
		} `yaml:"ulimits"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// TestCompose: compose.yaml runs mqgate in front of three Mosquitto
// brokers like seed 004's quick start; every port it publishes is a
// listener (or the Admin API) of the configuration it mounts and every
// listener is published; the upstream's nodes are the broker services on
// the port their mosquitto.conf listens on; and the mounted configuration,
// with the certificates make-certs.sh writes, passes `mqgate check` with
// the static binary.
func TestCompose(t *testing.T) {
	// Not parallel: the configuration's key_env reads the environment.
	raw, err := os.ReadFile(filepath.Join(root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	mq, ok := c.Services["mqgate"]
	if !ok || mq.Build != "." {
		t.Fatalf("no mqgate service built from the Dockerfile: %+v", c.Services)
	}
	var brokers []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "eclipse-mosquitto:") {
			brokers = append(brokers, name)
		}
	}
	slices.Sort(brokers)
	if len(brokers) != 3 {
		t.Fatalf("brokers %v, want three", brokers)
	}
	if fmt.Sprint(slices.Sorted(slices.Values(mq.DependsOn))) != fmt.Sprint(brokers) {
		t.Errorf("mqgate depends on %v, want %v", mq.DependsOn, brokers)
	}
	if n := mq.Ulimits["nofile"]; n.Soft < 100000 || n.Hard < n.Soft {
		t.Errorf("nofile ulimit %+v", n)
	}

	// The bind mounts: host path by container path.
	mounts := map[string]string{}
	for _, v := range mq.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && strings.HasPrefix(parts[0], "./") {
			mounts[parts[1]] = filepath.Join(root, parts[0])
		} else if len(parts) >= 2 && c.Volumes != nil {
			if _, named := c.Volumes[parts[0]]; !named {
				t.Errorf("volume %q is neither a bind mount nor a declared volume", v)
			}
		}
	}
	confHost, ok := mounts["/etc/mqgate/mqgate.yaml"]
	if !ok {
		t.Fatalf("compose.yaml mounts no /etc/mqgate/mqgate.yaml (the image's CMD): %v", mq.Volumes)
	}
	certsHost, ok := mounts["/etc/mqgate/certs"]
	if !ok {
		t.Fatalf("no certificates mounted at /etc/mqgate/certs: %v", mq.Volumes)
	}

	// The configuration as the container sees it: certificates from
	// make-certs.sh, paths mapped to where the mounts come from, the key
	// from the environment compose passes.
	dir := t.TempDir()
	if out, err := exec.Command("bash", filepath.Join(root, "deploy/compose/make-certs.sh"), filepath.Join(dir, "certs")).CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Dir(certsHost)); err != nil || !fi.IsDir() {
		t.Errorf("the certificates' mount %s has no directory to be made in: %v", certsHost, err)
	}
	yml, err := os.ReadFile(confHost)
	if err != nil {
		t.Fatal(err)
	}
	mapped := strings.ReplaceAll(string(yml), "/etc/mqgate/certs", filepath.Join(dir, "certs"))
	mapped = strings.ReplaceAll(mapped, "/var/lib/mqgate", dir)
	local := filepath.Join(dir, "mqgate.yaml")
	if err := os.WriteFile(local, []byte(mapped), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := mq.Environment["MQGATE_ADMIN_KEY"]; !ok {
		t.Fatal("compose passes no MQGATE_ADMIN_KEY, which the configuration's key_env reads")
	}
	t.Setenv("MQGATE_ADMIN_KEY", "0123456789abcdef0123456789abcdef")
	cfg, err := config.Load(local)
	if err != nil {
		t.Fatalf("the mounted configuration:\n%v", err)
	}
	check := exec.Command(staticBinary(t), "check", "-c", local)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("mqgate check (the static binary): %v\n%s", err, out)
	}

	// Published ports against listeners.
	if !slices.ContainsFunc(cfg.StreamProxy.TCP, func(l config.Listener) bool { return l.WebSocket != nil }) {
		t.Error("no WebSocket listener")
	}
	listening := map[int]string{}
	for _, l := range cfg.StreamProxy.TCP {
		_, p, _ := net.SplitHostPort(l.Addr)
		if p == "" {
			p = l.Addr
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(p, ":"))
		listening[n] = "listener " + l.Addr
	}
	if cfg.Admin == nil {
		t.Fatal("the quick start has no admin block: no dashboard")
	}
	host, ap, _ := net.SplitHostPort(cfg.Admin.Listen)
	if host != "0.0.0.0" && host != "" {
		t.Errorf("admin.listen %s: a published port needs 0.0.0.0 inside the container", cfg.Admin.Listen)
	}
	n, _ := strconv.Atoi(ap)
	listening[n] = "admin"
	published := map[int]bool{}
	for _, p := range mq.Ports {
		_, inner, _ := strings.Cut(p, ":")
		n, err := strconv.Atoi(inner)
		if err != nil {
			t.Errorf("port %q: want HOST:CONTAINER", p)
			continue
		}
		published[n] = true
		if listening[n] == "" {
			t.Errorf("compose publishes %d, where mqgate does not listen", n)
		}
	}
	for port, what := range listening {
		if !published[port] {
			t.Errorf("%s (port %d) is not published", what, port)
		}
	}
	for _, want := range []int{1883, 8883, 8083, 9180} {
		if !published[want] {
			t.Errorf("port %d (MQTT, TLS, WebSocket, dashboard) not published", want)
		}
	}

	// Nodes against the broker services and their mosquitto.conf.
	if len(cfg.Upstreams) != 1 {
		t.Fatalf("upstreams: %d, want one", len(cfg.Upstreams))
	}
	var hosts []string
	for _, node := range cfg.Upstreams[0].Nodes {
		hosts = append(hosts, node.Host)
		s := c.Services[node.Host]
		var conf string
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == "/mosquitto/config/mosquitto.conf" {
				conf = filepath.Join(root, parts[0])
			}
		}
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Errorf("node %s: its mosquitto.conf: %v", node.Addr(), err)
			continue
		}
		if !regexp.MustCompile(`(?m)^listener `+strconv.Itoa(node.Port)+`\s*$`).Match(b) || !strings.Contains(string(b), "allow_anonymous true") {
			t.Errorf("node %s: %s does not listen on %d for anonymous clients:\n%s", node.Addr(), conf, node.Port, b)
		}
	}
	slices.Sort(hosts)
	if fmt.Sprint(hosts) != fmt.Sprint(brokers) {
		t.Errorf("nodes %v, want the broker services %v", hosts, brokers)
	}
}

// TestSystemdUnit: deploy/systemd/mqgate.service passes systemd-analyze
// verify (with ExecStart pointed at the static binary, since it checks the
// command exists) without a warning, reloads with SIGHUP, restarts on
// failure, raises LimitNOFILE and grants no capability.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze missing (Debian package systemd): the unit is not verified")
	}
	unit, err := os.ReadFile(filepath.Join(root, "deploy/systemd/mqgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			directives[k] = v
		}
	}
	for k, want := range map[string]string{"ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure", "LimitNOFILE": "1048576", "CapabilityBoundingSet": ""} {
		if got, ok := directives[k]; !ok || got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if _, ok := directives["AmbientCapabilities"]; ok {
		t.Error("AmbientCapabilities set: mqgate's default ports need none")
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "mqgate.service")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mqgate", staticBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", local).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
