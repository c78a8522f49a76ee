// Package certtest makes certificate authorities, server and client
// certificates for tests, fresh on every run, so no test depends on files
// that expire.
//
//	ca := certtest.NewCA(t, "Test CA")
//	srv := ca.Server(t, certtest.ECDSA, "mqtt.example.com", "127.0.0.1")
//	cli := ca.Client(t, "meter-7")
//	certPath, keyPath := srv.WriteFiles(t, dir, "server")
//	cfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli.TLS}}
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// T is the part of testing.TB certtest uses, so that benchmarks and tools
// outside tests can make certificates too.
type T interface {
	Helper()
	Fatal(args ...any)
}

// KeyType is the public-key algorithm of a certificate.
type KeyType int

const (
	ECDSA KeyType = iota // P-256
	RSA                  // 2048 bits
)

// CA is a certificate authority that signs certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	chain   []byte // PEM of the CAs above this one, for intermediates
}

// Pair is a certificate with its key, in PEM and ready for crypto/tls.
type Pair struct {
	Cert    *x509.Certificate
	CertPEM []byte // the certificate followed by any intermediate CA
	KeyPEM  []byte
	TLS     tls.Certificate
}

// NewCA makes a self-signed root CA.
func NewCA(t T, cn string) *CA {
	t.Helper()
	key := newKey(t, ECDSA)
	tmpl := caTemplate(t, cn)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}
}

// caTemplate is the certificate of a test CA named cn, valid for a day.
func caTemplate(t T, cn string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"mqgate tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// Intermediate makes a CA signed by ca.
func (ca *CA) Intermediate(t T, cn string) *CA {
	t.Helper()
	key := newKey(t, ECDSA)
	tmpl := caTemplate(t, cn)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), chain: append(pemBlock("CERTIFICATE", der), ca.chain...)}
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server makes a server certificate for names: DNS names, or IP
// addresses, which go in the IP SANs.
func (ca *CA) Server(t T, kt KeyType, names ...string) *Pair {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.sign(t, tmpl, kt)
}

// Client makes a client certificate whose subject is CN=cn, O=Devices.
func (ca *CA) Client(t T, cn string) *Pair {
	t.Helper()
	return ca.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"Devices"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ECDSA)
}

func (ca *CA) sign(t T, tmpl *x509.Certificate, kt KeyType) *Pair {
	t.Helper()
	key := newKey(t, kt)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if kt == RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pair{CertPEM: append(pemBlock("CERTIFICATE", der), ca.chain...), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}
	p.Cert, _ = x509.ParseCertificate(der)
	if p.TLS, err = tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteFiles writes name.crt and name.key into dir and returns their paths.
// It writes each file whole (temporary file, then rename), as a
// certificate manager should, so a watcher never sees half a file.
func (p *Pair) WriteFiles(t T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	WriteFile(t, certPath, p.CertPEM)
	WriteFile(t, keyPath, p.KeyPEM)
	return certPath, keyPath
}

// WriteFile replaces path with data atomically.
func WriteFile(t T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newKey(t T, kt KeyType) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	if kt == RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
