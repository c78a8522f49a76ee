package harness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a child process the harness started and must stop.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// startProcess starts argv with stdout and stderr going to logPath. The
// child gets SIGKILL if the harness dies first.
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// pid returns the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to five seconds, then sends SIGKILL.
func (p *process) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// logTail returns the last lines of the process's output, for error messages.
func (p *process) logTail() string {
	return tailFile(p.logPath, 12)
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return tailLines(string(b), lines)
}

// tailLines returns the last n lines of s.
func tailLines(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// treePids returns pid and the ids of all its descendants (NGINX workers).
func treePids(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields, err := statFields(b)
		if err != nil {
			continue
		}
		parent, _ := strconv.Atoi(fields[1])
		children[parent] = append(children[parent], child)
	}
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children[pids[i]]...)
	}
	return pids
}

// statFields returns the fields of /proc/PID/stat after the command name,
// so that fields[0] is the state (field 3 in proc(5)).
func statFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat line")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 22 {
		return nil, errors.New("short /proc stat line")
	}
	return fields, nil
}

// usage is CPU time and resident memory summed over processes.
type usage struct {
	CPU   time.Duration
	Sys   time.Duration // the part of CPU spent in the kernel (stime)
	RSSKB int64
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// readUsage sums utime+stime (/proc/PID/stat), stime alone, and VmRSS
// (/proc/PID/status) over pids. Processes that have gone are skipped.
func readUsage(pids []int) usage {
	var u usage
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		fields, err := statFields(b)
		if err != nil {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		u.CPU += time.Duration(utime+stime) * time.Second / clockTicks
		u.Sys += time.Duration(stime) * time.Second / clockTicks
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				u.RSSKB += kb
			}
		}
	}
	return u
}

// machineCPU is the machine-wide CPU time from /proc/stat.
type machineCPU struct {
	busy, total time.Duration
}

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	var m machineCPU
	// cpu user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already counted in user.
	for i, f := range fields[1:] {
		if i >= 8 {
			break
		}
		n, _ := strconv.ParseInt(f, 10, 64)
		d := time.Duration(n) * time.Second / clockTicks
		m.total += d
		if i != 3 && i != 4 {
			m.busy += d
		}
	}
	return m
}

// waitListening dials addr until it accepts or timeout passes; it gives up
// early if p exits.
func waitListening(addr string, timeout time.Duration, p *process) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if p != nil && !p.running() {
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.name, addr, p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts returns n distinct ports below 32768 (outside Linux's ephemeral
// range, so connection-heavy phases cannot take them) that are free now.
func freePorts(n int, seed int64) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for candidate := 20000 + int(uint64(seed)%6000); len(ports) < n && candidate < 32768; candidate += 7 {
		if seen[candidate] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(candidate)))
		if err != nil {
			continue
		}
		ln.Close()
		seen[candidate] = true
		ports = append(ports, candidate)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found only %d free ports below 32768", len(ports))
	}
	return ports, nil
}
