package harness

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mqgate/mqgate/internal/certtest"
)

// tlsServerName is the name on the benchmark's certificate, which the
// load generator asks for (SNI).
const tlsServerName = "mqtt.bench"

// tlsFiles are the certificate files of one run: an ECDSA P-256 server
// certificate for tlsServerName, signed by a CA made for the run.
type tlsFiles struct {
	CA, Cert, Key string
	PEM           string // certificate then key, in the one file HAProxy's crt takes
}

// makeCerts writes a new CA and server certificate into dir.
func makeCerts(dir string) (files tlsFiles, err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(certFailure); ok {
				err = fmt.Errorf("making the TLS certificates: %v", f.args...)
				return
			}
			panic(r)
		}
	}()
	ca := certtest.NewCA(certFailure{}, "mqbench CA")
	pair := ca.Server(certFailure{}, certtest.ECDSA, tlsServerName)
	files.Cert, files.Key = pair.WriteFiles(certFailure{}, dir, "server")
	files.CA = filepath.Join(dir, "ca.crt")
	files.PEM = filepath.Join(dir, "server.pem")
	if err := os.WriteFile(files.CA, ca.CertPEM, 0o644); err != nil {
		return files, err
	}
	if err := os.WriteFile(files.PEM, append(append([]byte{}, pair.CertPEM...), pair.KeyPEM...), 0o600); err != nil {
		return files, err
	}
	return files, nil
}

// certFailure adapts certtest's test-shaped error reporting: Fatal panics,
// and makeCerts turns the panic into its error.
type certFailure struct{ args []any }

func (certFailure) Helper()           {}
func (certFailure) Fatal(args ...any) { panic(certFailure{args}) }
