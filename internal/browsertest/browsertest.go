// Package browsertest runs Node.js scripts that drive Debian's headless
// Chromium through playwright-core, so tests can check what a browser sees:
// MQTT.js over WebSocket, the dashboard, a kick button.
//
// A test writes its script in its own testdata and reads the JSON the
// script prints as its last line:
//
//	out := browsertest.Run(t, "testdata/ws.js", "URL="+url)
//	var got struct{ Received []string }
//	if err := json.Unmarshal(out, &got); err != nil { ... }
//
// and the script starts with
//
//	const bt = require(process.env.BROWSERTEST_LIB);
//	const browser = await bt.launch();
//	const page = await bt.newPage(browser);
//	await page.addScriptTag({ path: bt.mqttBundle }); // window.mqtt
//	bt.result({ received });
//
// The Node packages live in this directory (package.json); scripts/test.sh
// installs them and Chromium. Without them a test is skipped, except under
// CI=true, where it fails: CI must run what the README says it runs.
package browsertest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Timeout bounds one script: Chromium's start, the page's work and exit.
const Timeout = 90 * time.Second

// Dir is the absolute path of this package's directory, which holds
// lib.js and node_modules.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Require skips (or, under CI, fails) t when Node.js, the Node packages or
// Chromium are missing, and returns the Chromium binary's path.
func Require(t testing.TB) string {
	t.Helper()
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var missing string
	switch {
	case !executable(chromium):
		missing = chromium + " (Debian package chromium)"
	case lookPath("node") == "":
		missing = "node"
	case !exists(filepath.Join(Dir(), "node_modules", "playwright-core")):
		missing = "playwright-core (npm ci --prefix internal/browsertest)"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("browser test needs %s; scripts/test.sh installs it", missing)
		}
		t.Skipf("browser test skipped: %s is missing; bash scripts/test.sh installs it", missing)
	}
	return chromium
}

// Run runs the Node.js script at path (relative to the test's package, or
// absolute) with env added to the environment, and returns the last line
// it printed. A non-zero exit, a timeout or no output fails t, with the
// script's standard error.
func Run(t testing.TB, path string, env ...string) []byte {
	t.Helper()
	chromium := Require(t)
	script, err := filepath.Abs(path)
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(),
		"BROWSERTEST_LIB="+filepath.Join(Dir(), "lib.js"),
		"CHROMIUM="+chromium,
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("browsertest: node %s: %v\nstderr:\n%s\nstdout:\n%s", path, err, stderr.Bytes(), stdout.Bytes())
	}
	if testing.Verbose() && stderr.Len() > 0 {
		t.Logf("node %s stderr:\n%s", path, stderr.Bytes())
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	last := lines[len(lines)-1]
	if len(last) == 0 {
		t.Fatalf("browsertest: node %s printed nothing\nstderr:\n%s", path, stderr.Bytes())
	}
	return last
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}
