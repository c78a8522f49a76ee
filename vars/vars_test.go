package vars

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"testing"
)

func TestSetTLS(t *testing.T) {
	cert := &x509.Certificate{
		Raw:          []byte("der bytes"),
		SerialNumber: big.NewInt(0x0a1b2c),
		Subject:      pkix.Name{CommonName: "meter-7", Organization: []string{"Acme, Inc."}},
	}
	var s Set
	s.SetTLS(tls.ConnectionState{ServerName: "mqtt.example.com", PeerCertificates: []*x509.Certificate{cert}})
	sum := sha256.Sum256(cert.Raw)
	want := map[string]string{
		SSLServerName:        "mqtt.example.com",
		SSLClientSerial:      "0A1B2C", // OpenSSL's form, as NGINX prints it
		SSLClientSDN:         `CN=meter-7,O=Acme\, Inc.`,
		SSLClientSDNCN:       "meter-7",
		SSLClientFingerprint: hex.EncodeToString(sum[:]),
		MQTTClientID:         "",
	}
	for name, w := range want {
		if got, ok := s.Get(name); !ok || got != w {
			t.Errorf("%s = %q, %v; want %q", name, got, ok, w)
		}
	}
	if _, ok := s.Get("ssl_client_cn"); ok || Known("ssl_client_cn") {
		t.Error("an unknown name is known")
	}
	for _, name := range Names {
		if _, ok := s.Get(name); !ok {
			t.Errorf("Names has %s, Get does not know it", name)
		}
	}

	// A session without a client certificate clears what a previous one set.
	s.SetTLS(tls.ConnectionState{ServerName: "b.example"})
	if s.SSLClientSerial != "" || s.SSLClientSDNCN != "" || s.SSLServerName != "b.example" {
		t.Errorf("after a session without a certificate: %+v", s)
	}
	s.SetTLS(tls.ConnectionState{PeerCertificates: []*x509.Certificate{{SerialNumber: big.NewInt(0)}}})
	if s.SSLClientSerial != "00" {
		t.Errorf("serial 0 = %q, want 00", s.SSLClientSerial)
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"mqtt_client_id", "mqtt_client_id", true},
		{"$mqtt_client_id", "mqtt_client_id", true},
		{"$remote_addr", "remote_addr", true},
		{"mqtt_preread_clientid", "mqtt_client_id", true}, // NGINX Plus
		{"$mqtt_preread_clientid", "mqtt_client_id", true},
		{"$mqtt_preread_username", "mqtt_username", true},
		{"$$remote_addr", "$remote_addr", false},
		{"$mqtt_preread_password", "mqtt_preread_password", false},
		{"", "", false},
	} {
		if got, ok := Canonical(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("Canonical(%q) = %q, %t; want %q, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	parts, err := SplitTemplate("id=$mqtt_preread_clientid user=${mqtt_preread_username}", Names)
	if err != nil || len(parts) != 4 || parts[1].Name != MQTTClientID || parts[3].Name != MQTTUsername {
		t.Errorf("SplitTemplate with NGINX Plus's names: %+v, %v", parts, err)
	}
}
