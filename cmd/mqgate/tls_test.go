package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/certtest"
)

// TestCheckTLSSeed: the seed's "TLS all the way" files pass `mqgate check`
// with an ssls file beside them; a certificate whose key does not match is
// reported with its file and line.
func TestCheckTLSSeed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "CA")
	ca.Server(t, certtest.ECDSA, "mqtt.navendu.me").WriteFiles(t, dir, "good")
	ca.Server(t, certtest.ECDSA, "mqtt.navendu.me").WriteFiles(t, dir, "other")
	seed := []string{"-c", "testdata/seed000-tls/config.yaml", "-c", "testdata/seed000-tls/apisix.yaml"}
	ssls := func(key string) string {
		path := filepath.Join(dir, key+".yaml")
		certtest.WriteFile(t, path, []byte("ssls:\n  - id: 1\n    snis: [mqtt.navendu.me]\n    cert: good.crt\n    key: "+key+".key\n"))
		return path
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"check"}, append(seed, "-c", ssls("good"))...), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "configuration OK:") {
		t.Errorf("stdout %q", stdout.String())
	}

	stdout.Reset()
	stderr.Reset()
	bad := ssls("other")
	if code := run(context.Background(), append([]string{"check"}, append(seed, "-c", bad)...), &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d with a mismatched key; stderr:\n%s", code, stderr.String())
	}
	want := bad + ":4: ssls[0].cert: cert " + filepath.Join(dir, "good.crt") + ", key " + filepath.Join(dir, "other.key") + ": tls: private key does not match public key"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
	}
}
