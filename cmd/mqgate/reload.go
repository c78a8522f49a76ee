package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/config"
)

// reloadCmd makes a running mqgate re-read its files, as `nginx -s reload`:
// first it checks the files as `mqgate check` does and, when they are
// invalid, prints every error and signals nothing (the running mqgate
// would refuse them too, and keep its configuration). Then it asks the
// running instance: with --pid-file by SIGHUP (the outcome is in that
// instance's log), else through the Admin API of the files' admin block
// (POST /reload with its first admin key), which answers with the outcome.
func reloadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reload", stderr)
	var files fileList
	fs.Var(&files, "c", "configuration `file` of the running mqgate (repeatable), checked first")
	pidFile := fs.String("pid-file", "", "signal the mqgate whose pid this `file` holds (mqgate run --pid-file) instead of calling its Admin API")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "mqgate reload: at least one -c FILE is required")
		return errUsage
	}
	if err := checkCmd(files.args(), io.Discard, stderr); err != nil {
		return fmt.Errorf("not reloaded, the running configuration stays: %w", err)
	}
	if *pidFile != "" {
		pid, err := readPid(*pidFile)
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("signal mqgate (pid %d from %s): %w", pid, *pidFile, err)
		}
		fmt.Fprintf(stdout, "signalled mqgate (pid %d) to reload; it logs the outcome\n", pid)
		return nil
	}
	cfg, err := config.Load(files...)
	if err != nil {
		return err
	}
	if cfg.Admin == nil {
		return errors.New("the configuration has no admin block to ask: run mqgate with --pid-file and give it here, or send it SIGHUP")
	}
	return reloadByAdmin(ctx, cfg.Admin, stdout)
}

func (f fileList) args() []string {
	var out []string
	for _, file := range f {
		out = append(out, "-c", file)
	}
	return out
}

// readPid reads the pid `mqgate run --pid-file` wrote.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: not a pid: %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// reloadByAdmin POSTs /reload to the Admin API at a.Listen (a wildcard
// address is reached on loopback) with the first key of role admin.
func reloadByAdmin(ctx context.Context, a *config.Admin, stdout io.Writer) error {
	key := ""
	for _, k := range a.Keys {
		if k.Role != config.RoleViewer {
			key = k.Key
			break
		}
	}
	if key == "" {
		return errors.New("admin.keys has no key of role admin to reload with")
	}
	host, port, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %q: %w", a.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if a.TLS != nil {
		scheme = "https"
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + "/reload"
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-KEY", key)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ask mqgate to reload: %w (is it running with this configuration?)", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var answer struct {
		Config string   `json:"config"`
		Msg    string   `json:"error_msg"`
		Errors []string `json:"errors"`
	}
	_ = json.Unmarshal(body, &answer)
	switch {
	case resp.StatusCode == http.StatusOK:
		fmt.Fprintln(stdout, "reloaded:", answer.Config)
		return nil
	case len(answer.Errors) > 0:
		return fmt.Errorf("%s:\n%s", answer.Msg, strings.Join(answer.Errors, "\n"))
	default:
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
}
