// Package vars holds the variables mqgate knows about one client
// connection, under the names NGINX and APISIX give them, for routing keys,
// hashing, logging and CONNECT rewriting.
//
//	var v vars.Set
//	v.RemoteAddr = "192.0.2.7"
//	v.SetTLS(tlsConn.ConnectionState())
//	v.MQTTClientID = connect.ClientID
//	id, _ := v.Get("ssl_client_s_dn_cn") // "meter-7" from the client certificate
//
// Names lists every variable; Known tells whether a name is one of them, so
// configuration can reject a misspelt one when it loads.
package vars

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// The variable names, as NGINX and APISIX spell them.
const (
	RemoteAddr           = "remote_addr"            // the client's IP (from the PROXY header when one was read)
	SSLServerName        = "ssl_server_name"        // the SNI the client asked for
	SSLClientSerial      = "ssl_client_serial"      // client certificate serial, upper-case hex as NGINX prints it
	SSLClientSDN         = "ssl_client_s_dn"        // client certificate subject, RFC 2253 ("CN=meter-7,O=Acme")
	SSLClientSDNCN       = "ssl_client_s_dn_cn"     // the subject's common name
	SSLClientFingerprint = "ssl_client_fingerprint" // SHA-256 of the client certificate (DER), lower-case hex
	MQTTClientID         = "mqtt_client_id"         // the CONNECT's client id (after any rewrite)
	MQTTUsername         = "mqtt_username"          // the CONNECT's user name (after any rewrite)
)

// Names are all variable names, in a fixed order.
var Names = []string{MQTTClientID, RemoteAddr, MQTTUsername, SSLServerName, SSLClientSerial, SSLClientSDN, SSLClientSDNCN, SSLClientFingerprint}

// Known reports whether name is a variable.
func Known(name string) bool { return slices.Contains(Names, name) }

// Aliases are other products' names of mqgate's variables: NGINX Plus's
// ngx_stream_mqtt_preread_module calls the CONNECT's client id and user
// name $mqtt_preread_clientid and $mqtt_preread_username. (NGINX's are the
// CONNECT as the client sent it; mqgate's are after any mqtt-rewrite, which
// differs only on routes that rewrite them.)
var Aliases = map[string]string{
	"mqtt_preread_clientid": MQTTClientID,
	"mqtt_preread_username": MQTTUsername,
}

// Canonical returns the variable name s stands for: s itself, an alias of
// Aliases, either written with NGINX's and APISIX's leading "$"
// ("$remote_addr"). ok is false when s names no variable.
func Canonical(s string) (name string, ok bool) {
	name = strings.TrimPrefix(s, "$")
	if a, alias := Aliases[name]; alias {
		name = a
	}
	return name, Known(name)
}

// Set is the variables of one connection. Fields a connection lacks (no TLS,
// no client certificate) are empty.
type Set struct {
	RemoteAddr           string
	SSLServerName        string
	SSLClientSerial      string
	SSLClientSDN         string
	SSLClientSDNCN       string
	SSLClientFingerprint string
	MQTTClientID         string
	MQTTUsername         string
}

// Get returns the variable called name; ok is false for an unknown name.
func (s *Set) Get(name string) (value string, ok bool) {
	switch name {
	case RemoteAddr:
		return s.RemoteAddr, true
	case SSLServerName:
		return s.SSLServerName, true
	case SSLClientSerial:
		return s.SSLClientSerial, true
	case SSLClientSDN:
		return s.SSLClientSDN, true
	case SSLClientSDNCN:
		return s.SSLClientSDNCN, true
	case SSLClientFingerprint:
		return s.SSLClientFingerprint, true
	case MQTTClientID:
		return s.MQTTClientID, true
	case MQTTUsername:
		return s.MQTTUsername, true
	}
	return "", false
}

// SetTLS fills the ssl_ variables from a completed handshake. The client
// certificate is the first one the client sent; on a resumed session it is
// the one of the original handshake.
func (s *Set) SetTLS(cs tls.ConnectionState) {
	s.SSLServerName = cs.ServerName
	s.SSLClientSerial, s.SSLClientSDN, s.SSLClientSDNCN, s.SSLClientFingerprint = "", "", "", ""
	if len(cs.PeerCertificates) == 0 {
		return
	}
	cert := cs.PeerCertificates[0]
	// NGINX prints the serial as OpenSSL does: the big-endian bytes in
	// upper-case hex, so serial 10 is "0A".
	if b := cert.SerialNumber.Bytes(); len(b) > 0 {
		s.SSLClientSerial = fmt.Sprintf("%X", b)
	} else {
		s.SSLClientSerial = "00"
	}
	s.SSLClientSDN = cert.Subject.String()
	s.SSLClientSDNCN = cert.Subject.CommonName
	sum := sha256.Sum256(cert.Raw)
	s.SSLClientFingerprint = hex.EncodeToString(sum[:])
}
