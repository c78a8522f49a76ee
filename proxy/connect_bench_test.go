package proxy_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

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
