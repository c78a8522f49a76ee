package config

import (
	"strings"
	"testing"
)

// TestSSLKeysWithoutCerts: found by FuzzAdminBody, `keys` without `certs`
// made the decoder panic (the error pointed at the missing certs node).
func TestSSLKeysWithoutCerts(t *testing.T) {
	t.Parallel()
	_, err := parseOne(t, "stream_proxy: {tcp: [9000]}\nssls: [{id: 1, snis: [a.example], keys: [\"\"]}]\n")
	if err == nil || !strings.Contains(err.Error(), "h.yaml:2: ssls[0].keys: certs has 0 item(s) but keys has 1") {
		t.Fatalf("errors: %v", err)
	}
}
