package proxy_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/certtest"
	"github.com/mqgate/mqgate/internal/meter"
)

// BenchmarkLoopConnect is one CONNECT→CONNACK→DISCONNECT cycle through the
// event loops' connect path (accept, the stages, the dial, the pipe, its
// end and the default JSON access record), one at a time, against the
// meter's sink; "direct" is the same cycle to the sink without mqgate, so
// that the difference in allocs/op is mqgate's own allocations per
// connect. Its ns/op is no figure of mqgate's: client, sink and gateway
// share one process, and the later sub-benchmark of a run has been seen to
// take 40-60 ms per op on main since the loops keep their Ps while they
// wait (bench/ and dataplane-meter measure with separate processes).
//
//	go test -run '^$' -bench LoopConnect -benchmem ./proxy/
func BenchmarkLoopConnect(b *testing.B) {
	sink, err := meter.StartSink()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sink.Close)
	g := startGateway(b, fmt.Sprintf(`stream_proxy: {tcp: [LISTEN], data_path: epoll}
upstreams: [{id: 1, type: chash, key: mqtt_client_id, nodes: {%q: 1}}]
stream_routes: [{id: 1, upstream_id: 1}]
`, sink.Addr()))
	cycle := func(b *testing.B, addr string) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c, err := meter.Connect(addr, b.Name()+strconv.Itoa(b.N)+"-"+strconv.Itoa(i%1000))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write([]byte{0xe0, 0}); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		if err := sink.WaitActive(0, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("direct0", func(b *testing.B) { cycle(b, sink.Addr()) })
	b.Run("mqgate", func(b *testing.B) { cycle(b, g.addr) })
	b.Run("direct", func(b *testing.B) { cycle(b, sink.Addr()) })
}

// BenchmarkTLSConnect is one TLS 1.3 handshake (X25519, ECDSA P-256, as
// bench/'s TLS phases) and CONNECT→CONNACK→DISCONNECT through mqgate's TLS
// listener on the epoll data path, against the meter's sink: "full" makes
// a new session each time, "resumed" resumes one ticket. Client and
// gateway share the process, so allocs/op counts both; the client's part
// does not change with mqgate, so a change of allocs/op between two
// commits is mqgate's. Its ns/op is no figure of mqgate's (bench/ and
// tlsbench measure with separate processes).
//
//	go test -run '^$' -bench TLSConnect -benchmem ./proxy/
func BenchmarkTLSConnect(b *testing.B) {
	sink, err := meter.StartSink()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sink.Close)
	dir := b.TempDir()
	ca := certtest.NewCA(b, "bench CA")
	ca.Server(b, certtest.ECDSA, "mqtt.bench").WriteFiles(b, dir, "srv")
	g := startGateway(b, fmt.Sprintf(`stream_proxy: {tcp: [{addr: LISTEN, tls: true}], data_path: epoll}
ssls: [{id: bench, snis: [mqtt.bench], cert: %s/srv.crt, key: %s/srv.key}]
upstreams: [{id: 1, type: chash, key: mqtt_client_id, nodes: {%q: 1}}]
stream_routes: [{id: 1, upstream_id: 1}]
`, dir, dir, sink.Addr()))
	cycle := func(b *testing.B, cache tls.ClientSessionCache) {
		cfg := &tls.Config{ServerName: "mqtt.bench", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13,
			CurvePreferences: []tls.CurveID{tls.X25519}, ClientSessionCache: cache}
		dial := func() (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
			return d.Dial("tcp", g.addr)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c, err := meter.ConnectWith(dial, b.Name()+strconv.Itoa(b.N)+"-"+strconv.Itoa(i%1000))
			if err != nil {
				b.Fatal(err)
			}
			if cache != nil && !c.(*tls.Conn).ConnectionState().DidResume && i > 0 {
				b.Fatal("the session was not resumed")
			}
			if _, err := c.Write([]byte{0xe0, 0}); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		if err := sink.WaitActive(0, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("full", func(b *testing.B) { cycle(b, nil) })
	b.Run("resumed", func(b *testing.B) { cycle(b, tls.NewLRUClientSessionCache(1)) })
}
