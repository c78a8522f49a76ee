package epoll

import (
	"io"
	"testing"
	"time"

	"github.com/mqgate/mqgate/pipe"
)

// BenchmarkRoundTrip sends a 64-byte message through a pair to an echoing
// broker and reads it back, on a loop and, for comparison, on pipe.Run's
// goroutines. Client and broker run in this process, so ns/op includes
// their side; allocs/op is the pair's alone (none on either path).
//
//	go test -run '^$' -bench RoundTrip -count 10 ./pipe/epoll/ | benchstat -
func BenchmarkRoundTrip(b *testing.B) {
	opts := pipe.Options{Idle: time.Minute, WriteTimeout: time.Minute, HalfCloseTimeout: time.Minute}
	for _, path := range []string{"epoll", "goroutines"} {
		b.Run(path, func(b *testing.B) {
			h := newHarness(b, 1)
			tp, pc, pb := h.sockets()
			if path == "epoll" {
				if _, err := h.g.Add(pc, pb, opts, nil); err != nil {
					b.Fatal(err)
				}
			} else {
				go pipe.Run(pc, pb, opts)
			}
			go io.Copy(tp.broker, tp.broker) // the echoing broker
			msg, in := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := tp.client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(tp.client, in); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			tp.client.Close()
			tp.broker.Close()
		})
	}
}
