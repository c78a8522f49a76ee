package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/proxy"
)

// pki is a test PKI written to files: a CA with server certificates for
// a.example (ECDSA, also valid for 127.0.0.1) and b.example (RSA), a client
// certificate, and a second CA with a client certificate of its own.
type pki struct {
	dir                string
	ca, other          *certtest.CA
	a, b, client, evil *certtest.Pair
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: certtest.NewCA(t, "Device CA"), other: certtest.NewCA(t, "Other CA")}
	p.a = p.ca.Server(t, certtest.ECDSA, "a.example", "127.0.0.1")
	p.b = p.ca.Server(t, certtest.RSA, "b.example")
	p.client = p.ca.Client(t, "meter-7")
	p.evil = p.other.Client(t, "meter-7")
	p.a.WriteFiles(t, p.dir, "a")
	p.b.WriteFiles(t, p.dir, "b")
	p.client.WriteFiles(t, p.dir, "client")
	certtest.WriteFile(t, p.path("ca.pem"), p.ca.CertPEM)
	return p
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// clientTLS is what a device uses: the CA to verify mqgate, the SNI, and
// optionally a client certificate.
func (p *pki) clientTLS(sni string, cert *certtest.Pair) *tls.Config {
	c := &tls.Config{ServerName: sni, RootCAs: p.ca.Pool()}
	if cert != nil {
		pair := cert.TLS
		// Send it whatever CAs the server asks for, as a misconfigured or
		// hostile device would.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return c
}

// tlsGateway is an mqgate server with its process and access logs kept.
type tlsGateway struct {
	srv         *proxy.Server
	addr        string
	log, access *mqtttest.LogBuffer
}

// startTLSGateway is startGateway with the process log kept and
// certificate files checked every 20 ms.
func startTLSGateway(t *testing.T, yml string) *tlsGateway {
	t.Helper()
	yml = strings.ReplaceAll(yml, "LISTEN", `"127.0.0.1:0"`)
	cfg, err := config.Parse(config.Document{Name: "test.yaml", Data: []byte(yml)})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	g := &tlsGateway{log: &mqtttest.LogBuffer{}, access: &mqtttest.LogBuffer{}}
	g.srv = mqtttest.StartProxy(t, cfg, proxy.Options{
		Log:               slog.New(slog.NewTextHandler(g.log, nil)),
		AccessLog:         accesslog.New(g.access, nil),
		CertCheckInterval: 20 * time.Millisecond,
	})
	for _, a := range g.srv.ListenerAddrs() {
		g.addr = a.String()
	}
	return g
}

// records returns the access-log records so far.
func (g *tlsGateway) records(t *testing.T) []map[string]any { return accessRecords(t, g.access) }

// waitRecord waits for an access-log record for which match holds.
func (g *tlsGateway) waitRecord(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return waitAccessRecord(t, g.access, what, match)
}

// waitRecord waits for an access-log record for which match holds.
func (g *gateway) waitRecord(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return waitAccessRecord(t, g.access, what, match)
}

// accessRecords parses the JSON access-log records in log so far.
func accessRecords(t *testing.T, log *mqtttest.LogBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range log.Lines() {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// waitAccessRecord waits for a record in log for which match holds.
func waitAccessRecord(t *testing.T, log *mqtttest.LogBuffer, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	mqtttest.WaitFor(t, what, func() bool {
		recs := accessRecords(t, log)
		i := slices.IndexFunc(recs, match)
		if i >= 0 {
			found = recs[i]
		}
		return i >= 0
	})
	return found
}

func connectV3TLS(addr, id string, cfg *tls.Config) (pahov3.Client, error) {
	opts := pahov3.NewClientOptions().AddBroker("tls://" + addr).SetClientID(id).SetTLSConfig(cfg).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(10 * time.Second)
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

// servedCert returns the certificate mqgate presents for cfg's SNI.
func servedCert(t *testing.T, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to mqgate with SNI %q: %v", cfg.ServerName, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestTLSListener: SNI picks the certificate; the mTLS object refuses a
// client without a certificate or with one from another CA; Paho and
// mosquitto_pub with a good certificate get through; routes match sni.
func TestTLSListener(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	devices, others := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
ssls:
  - {id: devices, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key, client: {ca: %[1]s/ca.pem}}
  - {id: others, snis: ["*.example"], cert: %[1]s/b.crt, key: %[1]s/b.key}
stream_routes:
  - {id: plain, upstream: {nodes: {%[3]q: 1}}}
  - {id: devices, sni: a.example, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, devices.Addr(), others.Addr()))

	// The certificate by SNI: a.example exactly, b.example by the wildcard.
	if cn := servedCert(t, g.addr, p.clientTLS("a.example", p.client)).Subject.CommonName; cn != "a.example" {
		t.Errorf("SNI a.example served %q", cn)
	}
	if cert := servedCert(t, g.addr, p.clientTLS("b.example", nil)); cert.Subject.CommonName != "b.example" || cert.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("SNI b.example served %q (%v)", cert.Subject.CommonName, cert.PublicKeyAlgorithm)
	}

	// mTLS on a.example: a good certificate connects; the route with the
	// sni wins although listed second.
	c, err := connectV3TLS(g.addr, "dev-ok", p.clientTLS("a.example", p.client))
	if err != nil {
		t.Fatalf("client with a good certificate: %v", err)
	}
	c.Disconnect(100)
	mqtttest.WaitFor(t, "the devices broker to see dev-ok", func() bool { return slices.Contains(devices.Seen(), "dev-ok") })
	rec := g.waitRecord(t, "dev-ok's record", func(r map[string]any) bool { return r["client_id"] == "dev-ok" })
	if rec["route"] != "devices" || rec["ssl_server_name"] != "a.example" || rec["tls_version"] != "TLSv1.3" ||
		rec["ssl_client_s_dn"] != "CN=meter-7,O=Devices" || rec["ssl_client_serial"] != fmt.Sprintf("%X", p.client.Cert.SerialNumber.Bytes()) {
		t.Errorf("access record %v", rec)
	}

	// No certificate, or one from another CA: refused in the handshake.
	for name, cert := range map[string]*certtest.Pair{"no certificate": nil, "another CA": p.evil} {
		if c, err := connectV3TLS(g.addr, "dev-bad", p.clientTLS("a.example", cert)); err == nil {
			c.Disconnect(0)
			t.Errorf("%s: connected", name)
		}
	}
	g.waitRecord(t, "a refused handshake", func(r map[string]any) bool {
		return r["end"] == "tls_handshake" && strings.Contains(fmt.Sprint(r["detail"]), "certificate")
	})
	if slices.Contains(devices.Seen(), "dev-bad") || slices.Contains(others.Seen(), "dev-bad") {
		t.Error("a refused client reached a broker")
	}
	mqtttest.WaitFor(t, "two handshake failures counted", func() bool { return g.srv.Stats().TLSHandshakeFailures == 2 })

	// b.example needs no client certificate; its route is the plain one.
	c, err = connectV3TLS(g.addr, "other-1", p.clientTLS("b.example", nil))
	if err != nil {
		t.Fatalf("b.example: %v", err)
	}
	c.Disconnect(100)
	mqtttest.WaitFor(t, "the other broker to see other-1", func() bool { return slices.Contains(others.Seen(), "other-1") })

	// mosquitto_pub connects by IP: it gets the first ssls object (a
	// certificate valid for 127.0.0.1), which wants a client certificate.
	host, port, _ := net.SplitHostPort(g.addr)
	out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-i", "mosq-pub", "-t", "t/1", "-m", "hi",
		"--cafile", p.path("ca.pem"), "--cert", p.path("client.crt"), "--key", p.path("client.key")).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub with a certificate: %v\n%s", err, out)
	}
	mqtttest.WaitFor(t, "a broker to see mosq-pub", func() bool {
		return slices.Contains(devices.Seen(), "mosq-pub") || slices.Contains(others.Seen(), "mosq-pub")
	})
	if out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-i", "mosq-nocert", "-t", "t/1", "-m", "hi",
		"--cafile", p.path("ca.pem")).CombinedOutput(); err == nil {
		t.Errorf("mosquitto_pub without a certificate succeeded: %s", out)
	}
}

// startMosquittoTLS starts Mosquitto with a TLS listener that requires a
// client certificate from p's CA, and returns its TLS address.
func startMosquittoTLS(t *testing.T, p *pki) (*mqtttest.Mosquitto, string) {
	t.Helper()
	broker := p.ca.Server(t, certtest.ECDSA, "broker.example")
	broker.WriteFiles(t, p.dir, "broker")
	port := mqtttest.FreePort(t)
	m := mqtttest.StartMosquitto(t, fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		port, p.path("ca.pem"), p.path("broker.crt"), p.path("broker.key")))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	mqtttest.WaitFor(t, "mosquitto's TLS listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return m, addr
}

// TestRewriteFromCertificate is seed 004's mqtt_set_connect clientid
// $ssl_client_serial the mqgate way, to Mosquitto over mTLS: the broker sees
// the certificate's serial, whatever id the device sent, at every MQTT
// version; the chash balancer hashes the rewritten id; a client without a
// certificate, where the template comes out empty, is refused with a CONNACK.
func TestRewriteFromCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	mosq, mosqTLS := startMosquittoTLS(t, p)
	b1, b2 := mqtttest.StartMochi(t), mqtttest.StartMochi(t)
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
ssls:
  - {id: devices, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key, client: {ca: %[1]s/ca.pem}}
  - {id: open, snis: [b.example], cert: %[1]s/b.crt, key: %[1]s/b.key}
stream_routes:
  - id: to-mosquitto
    sni: a.example
    mqtt_client_id: {prefix: "m-"}
    plugins:
      mqtt-rewrite: {client_id: "$ssl_client_serial"}
    upstream:
      scheme: tls
      nodes: {%[2]q: 1}
      tls: {ca: %[1]s/ca.pem, client_cert: %[1]s/client.crt, client_key: %[1]s/client.key, server_name: broker.example}
  - id: hashed
    sni: a.example
    plugins:
      mqtt-rewrite: {client_id: "$ssl_client_s_dn_cn"}
    upstream: {type: chash, key: mqtt_client_id, nodes: {%[3]q: 1, %[4]q: 1}}
  - id: no-cert
    sni: b.example
    plugins:
      mqtt-rewrite: {client_id: "$ssl_client_serial"}
    upstream: {nodes: {%[3]q: 1}}
`, p.dir, mosqTLS, b1.Addr(), b2.Addr()))
	serial := fmt.Sprintf("%X", p.client.Cert.SerialNumber.Bytes())
	cfg := p.clientTLS("a.example", p.client)

	// 3.1.1 with Paho v3, 5.0 with Paho v5, 3.1 by hand.
	c, err := connectV3TLS(g.addr, "m-v311-secret", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Disconnect(100)
	conn, err := tls.Dial("tcp", g.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	v5 := paho.NewClient(paho.ClientConfig{ClientID: "m-v5-secret", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v5.Connect(ctx, &paho.Connect{ClientID: "m-v5-secret", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("paho v5: %v", err)
	}
	_ = v5.Disconnect(&paho.Disconnect{})
	raw, err := tls.Dial("tcp", g.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQIsdp", Level: mqtt.Level31, CleanStart: true, KeepAlive: 30, ClientID: "m-v31"})); err != nil {
		t.Fatal(err)
	}
	if ack := mqtttest.ReadPacket(t, raw); ack == nil || ack[3] != 0 {
		t.Fatalf("3.1 CONNACK % x", ack)
	}
	mqtttest.WaitFor(t, "mosquitto to see the serial three times", func() bool {
		n := 0
		for _, id := range mosq.Seen() {
			if id == serial {
				n++
			}
		}
		return n == 3
	})
	for _, id := range mosq.Seen() {
		if strings.HasPrefix(id, "m-") {
			t.Errorf("mosquitto saw the device's own id %q", id)
		}
	}
	rec := g.waitRecord(t, "the v5 record", func(r map[string]any) bool { return r["client_id"] == "m-v5-secret" })
	if rec["upstream_client_id"] != serial {
		t.Errorf("record %v lacks upstream_client_id %s", rec, serial)
	}

	// Eight device ids, one certificate: chash sees only the CN, so one
	// broker gets them all.
	for i := range 8 {
		c, err := connectV3TLS(g.addr, fmt.Sprintf("h-%d", i), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Disconnect(50)
	}
	mqtttest.WaitFor(t, "eight connections to the brokers", func() bool { return len(b1.Seen())+len(b2.Seen()) == 8 })
	for _, seen := range [][]string{b1.Seen(), b2.Seen()} {
		if len(seen) != 0 && len(seen) != 8 {
			t.Errorf("rewritten ids spread over brokers: %v", seen)
		}
		for _, id := range seen {
			if id != "meter-7" {
				t.Errorf("broker saw %q, want the CN meter-7", id)
			}
		}
	}

	// No certificate, so $ssl_client_serial is empty: refused with the
	// client's version of "client identifier not valid", nothing forwarded.
	for _, level := range []byte{mqtt.Level311, mqtt.Level5} {
		conn, err := tls.Dial("tcp", g.addr, p.clientTLS("b.example", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: level, CleanStart: true, ClientID: "nocert"})); err != nil {
			t.Fatal(err)
		}
		ack := mqtttest.ReadPacket(t, conn)
		_, code, err := mqtt.ParseConnack(ack, level)
		want := mqtt.ClientIdentifierNotValid
		if level == mqtt.Level311 {
			want = 0x02 // identifier rejected
		}
		if err != nil || code != want {
			t.Errorf("level %d: CONNACK % x code %v err %v, want %v", level, ack, code, err, want)
		}
	}
	g.waitRecord(t, "the refusal's record", func(r map[string]any) bool {
		return r["client_id"] == "nocert" && r["end"] == "refused" && strings.Contains(fmt.Sprint(r["detail"]), "yields an empty value")
	})
	if len(b1.Seen())+len(b2.Seen()) != 8 {
		t.Error("a refused CONNECT reached a broker")
	}
}

// TestUpstreamTLSVerifies: a broker whose certificate does not chain to
// the upstream's CA is not used.
func TestUpstreamTLSVerifies(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	_, mosqTLS := startMosquittoTLS(t, p)
	certtest.WriteFile(t, p.path("other.pem"), p.other.CertPEM)
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
stream_routes:
  - upstream:
      scheme: tls
      nodes: {%[2]q: 1}
      tls: {ca: %[1]s/other.pem, client_cert: %[1]s/client.crt, client_key: %[1]s/client.key, server_name: broker.example}
`, p.dir, mosqTLS))
	_, ack := mqtttest.Connect(t, g.addr, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level5, CleanStart: true, ClientID: "v"})
	if _, code, err := mqtt.ParseConnack(ack, mqtt.Level5); err != nil || code != mqtt.ServerUnavailable {
		t.Fatalf("CONNACK % x: %v %v, want server unavailable", ack, code, err)
	}
	mqtttest.WaitFor(t, "the dial failure's log line", func() bool {
		return slices.ContainsFunc(g.log.Lines(), func(l string) bool {
			return strings.Contains(l, "dial failed") && strings.Contains(l, "certificate signed by unknown authority")
		})
	})
}

// proxyFront is a broker front that reads the PROXY header with
// go-proxyproto's own listener, remembers it, and passes the connection on
// to a broker.
type proxyFront struct {
	addr    string
	mu      sync.Mutex
	headers []*proxyproto.Header
}

func startProxyFront(t *testing.T, broker string) *proxyFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln}
	t.Cleanup(func() { pl.Close() })
	f := &proxyFront{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Reading makes go-proxyproto parse the header first.
				buf := make([]byte, 4096)
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				f.mu.Lock()
				f.headers = append(f.headers, c.(*proxyproto.Conn).ProxyHeader())
				f.mu.Unlock()
				b, err := net.Dial("tcp", broker)
				if err != nil {
					return
				}
				defer b.Close()
				if _, err := b.Write(buf[:n]); err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, b); c.Close() }()
				_, _ = io.Copy(b, c)
			}()
		}
	}()
	return f
}

func (f *proxyFront) seen() []*proxyproto.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.headers)
}

// TestProxyProtocolOut: a PROXY v2 header reaches the broker's front with
// the client's address and port, the SNI and the client certificate's CN.
func TestProxyProtocolOut(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	front := startProxyFront(t, broker.Addr())
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
ssls:
  - {id: 1, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key, client: {ca: %[1]s/ca.pem}}
stream_routes:
  - {mqtt_client_id: {prefix: v1-}, upstream: {proxy_protocol: v1, nodes: {%[2]q: 1}}}
  - upstream: {proxy_protocol: v2, nodes: {%[2]q: 1}}
`, p.dir, front.addr))
	conn, err := tls.Dial("tcp", g.addr, p.clientTLS("a.example", p.client))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "pp-1"})); err != nil {
		t.Fatal(err)
	}
	if ack := mqtttest.ReadPacket(t, conn); ack == nil || ack[3] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	mqtttest.WaitFor(t, "the broker to see pp-1", func() bool { return slices.Contains(broker.Seen(), "pp-1") })
	headers := front.seen()
	if len(headers) != 1 {
		t.Fatalf("front saw %d headers", len(headers))
	}
	h := headers[0]
	src, dst, _ := h.TCPAddrs()
	if h.Version != 2 || src.String() != conn.LocalAddr().String() || dst.String() != g.addr {
		t.Errorf("header v%d %v -> %v, want %v -> %v", h.Version, src, dst, conn.LocalAddr(), g.addr)
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	var authority, cn, version string
	for _, tlv := range tlvs {
		switch {
		case tlv.Type == proxyproto.PP2_TYPE_AUTHORITY:
			authority = string(tlv.Value)
		case tlvparse.IsSSL(tlv):
			ssl, err := tlvparse.SSL(tlv)
			if err != nil {
				t.Fatal(err)
			}
			cn, _ = ssl.ClientCN()
			version, _ = ssl.SSLVersion()
			if !ssl.ClientCertConn() || !ssl.Verified() {
				t.Errorf("SSL TLV %+v: want a verified certificate on this connection", ssl)
			}
		}
	}
	if authority != "a.example" || cn != "meter-7" || version != "TLSv1.3" {
		t.Errorf("TLVs: authority %q, CN %q, version %q", authority, cn, version)
	}

	// v1: the addresses only.
	v1, err := connectV3TLS(g.addr, "v1-1", p.clientTLS("a.example", p.client))
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Disconnect(50)
	mqtttest.WaitFor(t, "the broker to see v1-1", func() bool { return slices.Contains(broker.Seen(), "v1-1") })
	if headers := front.seen(); len(headers) != 2 || headers[1].Version != 1 {
		t.Fatalf("front saw %d headers, the second %+v", len(headers), headers[len(headers)-1])
	}
	if src, _, _ := front.seen()[1].TCPAddrs(); !src.IP.IsLoopback() || src.Port == 0 || src.Port == conn.LocalAddr().(*net.TCPAddr).Port {
		t.Errorf("v1 source %v", src)
	}
}

// TestProxyProtocolIn: behind a load balancer, the address in the PROXY
// header is what routes, ip-restriction and logs see (the balancer's own
// loopback address is blacklisted), also in front of TLS; a sender not in
// real_ip_from and a malformed header are refused with a log line.
func TestProxyProtocolIn(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	yml := fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true, proxy_protocol: true, real_ip_from: [REAL_IP_FROM]}]
ssls:
  - {id: 1, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - remote_addr: 203.0.113.0/24
    plugins: {ip-restriction: {blacklist: [127.0.0.0/8]}}
    upstream: {nodes: {%[2]q: 1}}
`, p.dir, broker.Addr())
	g := startTLSGateway(t, strings.Replace(yml, "REAL_IP_FROM", "127.0.0.0/8", 1))

	dialBehindLB := func(t *testing.T, addr string, header []byte) (net.Conn, error) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		if _, err := raw.Write(header); err != nil {
			return nil, err
		}
		c := tls.Client(raw, p.clientTLS("a.example", nil))
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, c.Handshake()
	}
	lb := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40001}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 8883})
	header, err := lb.Format()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dialBehindLB(t, g.addr, header)
	if err != nil {
		t.Fatalf("TLS behind the PROXY header: %v", err)
	}
	if _, err := conn.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, ClientID: "behind-lb"})); err != nil {
		t.Fatal(err)
	}
	if ack := mqtttest.ReadPacket(t, conn); ack == nil || ack[3] != 0 {
		t.Fatalf("CONNACK % x (the route wants 203.0.113.0/24)", ack)
	}
	conn.Close()
	rec := g.waitRecord(t, "behind-lb's record", func(r map[string]any) bool { return r["client_id"] == "behind-lb" })
	if rec["client"] != "203.0.113.7:40001" || !strings.HasPrefix(fmt.Sprint(rec["proxy_protocol_peer"]), "127.0.0.1:") {
		t.Errorf("record %v: want client 203.0.113.7:40001 via a 127.0.0.1 peer", rec)
	}

	// A malformed header from an allowed sender.
	if _, err := dialBehindLB(t, g.addr, []byte("PROXY TCP4 203.0.113.300 1.2.3.4 1 2\r\n")); err == nil {
		t.Error("handshake after a malformed PROXY header succeeded")
	}
	mqtttest.WaitFor(t, "the malformed header's log line", func() bool {
		return slices.ContainsFunc(g.log.Lines(), func(l string) bool {
			return strings.Contains(l, "PROXY protocol: connection closed") && strings.Contains(l, "malformed PROXY header")
		})
	})

	// A sender outside real_ip_from.
	strict := startTLSGateway(t, strings.Replace(yml, "REAL_IP_FROM", "10.0.0.0/8", 1))
	if _, err := dialBehindLB(t, strict.addr, header); err == nil {
		t.Error("a PROXY header from a disallowed sender was accepted")
	}
	mqtttest.WaitFor(t, "the disallowed sender's log line", func() bool {
		return slices.ContainsFunc(strict.log.Lines(), func(l string) bool {
			return strings.Contains(l, "PROXY protocol: connection closed") && strings.Contains(l, "sender not in real_ip_from")
		})
	})
	strict.waitRecord(t, "the refused record", func(r map[string]any) bool { return r["end"] == "proxy_protocol" })
	if n := strict.srv.Stats().ProxyProtocolRefused; n != 1 {
		t.Errorf("ProxyProtocolRefused = %d, want 1", n)
	}
	if slices.Contains(broker.Seen(), "") || len(broker.Seen()) != 1 {
		t.Errorf("broker saw %v, want only behind-lb", broker.Seen())
	}
}

// TestCertificateRotation: new certificate files are served to new
// handshakes within the check interval while a connection made with the
// old certificate goes on; an invalid new certificate is refused and the
// current one kept; a configuration reload switches certificates too.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	broker := mqtttest.StartMochi(t)
	yml := fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: "127.0.0.1:0", tls: true}]
ssls:
  - {id: 1, snis: [a.example], cert: %[1]s/CERT.crt, key: %[1]s/CERT.key}
stream_routes:
  - upstream: {nodes: {%[2]q: 1}}
`, p.dir, broker.Addr())
	g := startTLSGateway(t, strings.ReplaceAll(yml, "CERT", "a"))
	cfg := p.clientTLS("a.example", nil)
	serial := func() string { return servedCert(t, g.addr, cfg).SerialNumber.String() }
	if serial() != p.a.Cert.SerialNumber.String() {
		t.Fatal("not serving the first certificate")
	}

	// A live connection, subscribed, made with the first certificate.
	msgs := make(chan []byte, 4)
	opts := pahov3.NewClientOptions().AddBroker("tls://" + g.addr).SetClientID("live").SetTLSConfig(cfg).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m.Payload() })
	live := pahov3.NewClient(opts)
	if tok := live.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer live.Disconnect(100)
	if tok := live.Subscribe("rot/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	next := p.ca.Server(t, certtest.ECDSA, "a.example")
	next.WriteFiles(t, p.dir, "a")
	mqtttest.WaitFor(t, "new handshakes to get the new certificate", func() bool { return serial() == next.Cert.SerialNumber.String() })

	// Half a rotation: a certificate whose key is not there yet.
	bad := p.ca.Server(t, certtest.ECDSA, "a.example")
	certtest.WriteFile(t, p.path("a.crt"), bad.CertPEM)
	mqtttest.WaitFor(t, "the refusal's log line", func() bool {
		return slices.ContainsFunc(g.log.Lines(), func(l string) bool { return strings.Contains(l, "certificate reload refused") })
	})
	if serial() != next.Cert.SerialNumber.String() {
		t.Error("an invalid certificate replaced the one in use")
	}

	// The connection from before the rotation still works both ways.
	if tok := live.Publish("rot/1", 1, false, []byte("still here")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-msgs:
		if !bytes.Equal(m, []byte("still here")) {
			t.Errorf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the live connection lost its message after the rotation")
	}

	// A configuration reload to other files.
	third := p.ca.Server(t, certtest.ECDSA, "a.example")
	third.WriteFiles(t, p.dir, "third")
	newCfg, err := config.Parse(config.Document{Name: "reload.yaml", Data: []byte(strings.ReplaceAll(yml, "CERT", "third"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Apply(newCfg); err != nil {
		t.Fatal(err)
	}
	if serial() != third.Cert.SerialNumber.String() {
		t.Error("a configuration reload did not switch certificates")
	}
	if !live.IsConnectionOpen() {
		t.Error("the live connection was dropped by the reload")
	}
}

// TestHealthProbesLikeClients: active MQTT probes go through a PROXY
// header and TLS as client connections do: a TLS broker verified with the
// right CA is probed healthy, one with the wrong CA unhealthy with the
// reason; a PROXY front reads the probes' headers.
func TestHealthProbesLikeClients(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	_, mosqTLS := startMosquittoTLS(t, p)
	certtest.WriteFile(t, p.path("other.pem"), p.other.CertPEM)
	broker := mqtttest.StartMochi(t)
	front := startProxyFront(t, broker.Addr())
	// A probe may take 10 s: the live brokers' probes must never fail, and
	// the failing one fails on its certificate at once.
	checks := `{active: {type: mqtt, timeout: 10, healthy: {interval: 0.05, successes: 1}, unhealthy: {interval: 0.05, tcp_failures: 1, timeouts: 1}}}`
	g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy: {tcp: [LISTEN]}
upstreams:
  - id: good
    scheme: tls
    nodes: {%[2]q: 1}
    tls: {ca: %[1]s/ca.pem, client_cert: %[1]s/client.crt, client_key: %[1]s/client.key, server_name: broker.example}
    checks: %[4]s
  - id: wrong-ca
    scheme: tls
    nodes: {%[2]q: 1}
    tls: {ca: %[1]s/other.pem, client_cert: %[1]s/client.crt, client_key: %[1]s/client.key, server_name: broker.example}
    checks: %[4]s
  - id: proxied
    proxy_protocol: v2
    nodes: {%[3]q: 1}
    checks: %[4]s
stream_routes:
  - {upstream_id: good, mqtt_client_id: good}
  - {upstream_id: wrong-ca, mqtt_client_id: wrong}
  - {upstream_id: proxied}
`, p.dir, mosqTLS, front.addr, checks))
	status := func(upstream string) health.Status {
		for _, st := range g.srv.Health() {
			if st.Upstream == upstream {
				return st
			}
		}
		t.Fatalf("no health status for %s", upstream)
		return health.Status{}
	}
	mqtttest.WaitFor(t, "probes of every upstream", func() bool {
		return status("good").Probes >= 2 && status("wrong-ca").Probes >= 2 && status("proxied").Probes >= 2
	})
	if st := status("good"); !st.Healthy || st.ProbeFailures != 0 {
		t.Errorf("TLS broker with the right CA: %+v", st)
	}
	if st := status("wrong-ca"); st.Healthy || !strings.Contains(st.LastProbeError, "certificate signed by unknown authority") {
		t.Errorf("TLS broker with the wrong CA: %+v", st)
	}
	if st := status("proxied"); !st.Healthy || st.ProbeFailures != 0 {
		t.Errorf("broker behind a PROXY front: %+v", st)
	}
	// The probes' headers carry the probe's own addresses, as HAProxy's
	// check-send-proxy does.
	h := front.seen()
	if len(h) == 0 || h[0].Command != proxyproto.PROXY {
		t.Fatalf("front saw %v, want PROXY headers", h)
	}
	if src, dst, _ := h[0].TCPAddrs(); !src.IP.IsLoopback() || dst.String() != front.addr {
		t.Errorf("probe header %v -> %v, want mqgate's address -> %s", src, dst, front.addr)
	}
}

// TestTLSHandshakeTimeout: a TLS client that stops in its handshake (after
// the TCP connect, or within its ClientHello) is closed when
// connect_timeout passes, recorded as tls_handshake and counted; a client
// whose handshake was done before keeps its session past that time, both
// ways, on either data path.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, dataPath := range []string{config.DataPathEpoll, config.DataPathGoroutines} {
		t.Run(dataPath, func(t *testing.T) {
			t.Parallel()
			broker := mqtttest.StartMochi(t)
			g := startTLSGateway(t, fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
  connect_timeout: 2s # as startGateway's: a loaded machine still connects in time
  data_path: %s
ssls:
  - {id: a, snis: [a.example], cert: %s/a.crt, key: %s/a.key}
stream_routes:
  - {id: 1, upstream: {nodes: {%q: 1}}}
`, dataPath, p.dir, p.dir, broker.Addr()))

			// The session whose handshake deadline passes while it is live.
			// A loaded machine may stall an attempt past connect_timeout
			// itself: such an attempt fails as the stuck clients below do,
			// so the next one is made (5 at most) and the checks below
			// count only the stuck clients.
			connect := mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, KeepAlive: 60, CleanStart: true, ClientID: "stays"})
			var good net.Conn
			for try := 1; good == nil; try++ {
				c, err := tls.Dial("tcp", g.addr, p.clientTLS("a.example", nil))
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					var ack [4]byte
					if _, err = c.Write(connect); err == nil {
						_, err = io.ReadFull(c, ack[:])
					}
					if err == nil && ack[0] != 0x20 {
						err = fmt.Errorf("CONNACK %x", ack)
					}
					if err == nil {
						good = c
						break
					}
					c.Close()
				}
				if try == 5 {
					t.Fatalf("TLS session, try %d: %v", try, err)
				}
			}
			defer good.Close()
			failedBefore := g.srv.Stats().TLSHandshakeFailures

			// Two clients that stop: one sends nothing, one the first
			// bytes of a ClientHello record (its header says 200 bytes).
			stuck := map[string][]byte{"silent": nil, "part of a ClientHello": {0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3}}
			conns := make(map[string]net.Conn)
			for name, first := range stuck {
				c, err := net.Dial("tcp", g.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(first); err != nil {
					t.Fatal(err)
				}
				conns[name] = c
			}
			for name, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
					t.Errorf("%s client: read %d bytes, %v; want EOF (closed by mqgate)", name, n, err)
				}
				addr := c.LocalAddr().String()
				g.waitRecord(t, name+" client's tls_handshake record", func(r map[string]any) bool {
					return r["client"] == addr && r["end"] == "tls_handshake"
				})
			}
			if n := g.srv.Stats().TLSHandshakeFailures - failedBefore; n != 2 {
				t.Errorf("%d handshake failures counted for the two stuck clients, want 2", n)
			}

			// The clients were closed after connect_timeout, which passed
			// for the good session's handshake too: it still carries
			// bytes both ways (PINGREQ to the broker, its PINGRESP back).
			if _, err := good.Write([]byte{0xc0, 0}); err != nil {
				t.Fatal(err)
			}
			var resp [2]byte
			if _, err := io.ReadFull(good, resp[:]); err != nil || resp[0] != 0xd0 {
				t.Fatalf("PINGRESP %x: %v", resp, err)
			}
		})
	}
}
