package admin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 and its
// key to dir and returns the paths and a pool that trusts it.
func writeCert(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mqgate admin test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestAdminTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath, pool := writeCert(t, dir)
	file := filepath.Join(dir, "mqgate.yaml")
	yml := configYAML(0, fmt.Sprintf("  tls: {cert: %s, key: %s}\n", certPath, keyPath))
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	g := openGate(t, dir, file)
	addr := g.api.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://"+addr+"/status", nil)
	req.Header.Set("X-API-KEY", viewerKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("https /status: %s", resp.Status)
	}
	if resp, err := http.Get("http://" + addr + "/status"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP served on a TLS admin listener")
	}
}

func TestAllowList(t *testing.T) {
	t.Parallel()
	g := startGate(t, configYAML(0, "  allow: [10.0.0.0/8]\n  public_status: true\n"))
	if code, _ := g.do(t, "GET", "/status.json", "", ""); code != 403 {
		t.Errorf("from 127.0.0.1 outside the allow-list: %d, want 403", code)
	}
	if fails := g.api.AuthFailures(); fails["address_not_allowed"] != 1 {
		t.Errorf("failures: %v", fails)
	}
	g2 := startGate(t, configYAML(0, "  allow: [127.0.0.0/8]\n  public_status: true\n"))
	if code, _ := g2.do(t, "GET", "/status.json", "", ""); code != 200 {
		t.Errorf("public status from an allowed address: %d", code)
	}
	if code, _ := g2.do(t, "GET", "/apisix/admin/upstreams", "", ""); code != 401 {
		t.Errorf("admin paths stay behind the key: %d", code)
	}
}
