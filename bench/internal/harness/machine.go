package harness

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/mqgate/mqgate/bench/internal/results"
)

func describeMachine(nofile uint64) results.Machine {
	m := results.Machine{
		CPUs:         runtime.NumCPU(),
		NoFileLimit:  nofile,
		LoadAvgStart: loadAvg(),
		GoVersion:    runtime.Version(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		Kernel:       readTrimmed("/proc/sys/kernel/osrelease"),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				m.MemGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.Distribution = strings.Trim(rest, `"`)
			}
		}
	}
	return m
}

func loadAvg() string {
	f := strings.Fields(readTrimmed("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// versions asks each program for its version; repo locates mqgate's source.
func versions(repo string) []results.Version {
	firstLine := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput() // mosquitto -h exits 3
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if line == "" {
			return "not found"
		}
		return line
	}
	pkg := func(name string) string {
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", name).Output()
		if err != nil {
			return "not installed"
		}
		return strings.TrimSpace(string(out))
	}
	rev := "unknown"
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
		// A previous run's own results (bench/results) do not change the build.
		if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--", ".", ":(exclude)bench/results").Output(); err == nil && len(st) > 0 {
			rev += " (modified)"
		}
	} else {
		rev = "no commit yet"
	}
	return []results.Version{
		{Name: "mqgate", Version: rev},
		{Name: "HAProxy", Version: versionWord(firstLine("haproxy", "-v"), "version")},
		{Name: "NGINX", Version: versionAfterSlash(firstLine("nginx", "-v"))},
		{Name: "njs (libnginx-mod-stream-js)", Version: pkg("libnginx-mod-stream-js")},
		{Name: "Mosquitto", Version: versionWord(firstLine("mosquitto", "-h"), "version")},
		{Name: "Go", Version: runtime.Version()},
	}
}

// versionWord returns the word after key in line ("HAProxy version 2.6.12 ...").
func versionWord(line, key string) string {
	f := strings.Fields(line)
	for i, w := range f {
		if w == key && i+1 < len(f) {
			return f[i+1]
		}
	}
	return line
}

// versionAfterSlash handles "nginx version: nginx/1.22.1".
func versionAfterSlash(line string) string {
	if i := strings.LastIndex(line, "/"); i >= 0 {
		return line[i+1:]
	}
	return line
}
