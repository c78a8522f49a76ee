package epoll

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mqgate/mqgate/pipe"
)

// TestAddAffinity: with ByBroker two pairs to one broker share a loop of
// two; with ByConnection they take the loops in turn, and pipe as any.
func TestAddAffinity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		aff     Affinity
		oneLoop bool
	}{{"broker", ByBroker, true}, {"connection", ByConnection, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 2)
			h.back2 = nil // one broker
			var pairs []*testPair
			for range 2 {
				tp, proxyClient, proxyBroker := h.sockets()
				res := make(chan pipe.Result, 1)
				c, err := h.g.AddBy(tc.aff, proxyClient, proxyBroker, pipe.Options{Idle: time.Minute}, func(r pipe.Result) { res <- r })
				if err != nil {
					t.Fatal(err)
				}
				tp.conn, tp.result = c, res
				pairs = append(pairs, tp)
			}
			if same := pairs[0].conn.loop.Load() == pairs[1].conn.loop.Load(); same != tc.oneLoop {
				t.Errorf("two pairs to one broker in one loop: %v, want %v", same, tc.oneLoop)
			}
			for _, tp := range pairs {
				write(t, tp.client, []byte("up"))
				if got := string(readN(t, tp.broker, 2)); got != "up" {
					t.Fatalf("broker read %q", got)
				}
			}
		})
	}
}

// TestListenConnectionAffinity: with ByConnection a pair stays on the loop
// that accepted it, whichever loop serves its broker by ByBroker's rule, so
// one broker's pairs are piped by both loops (the loops accept in bursts of
// concurrent connects until each has taken one; TestListenBrokerLoops
// shows ByBroker's move).
func TestListenConnectionAffinity(t *testing.T) {
	t.Parallel()
	a := &testAcceptor{
		brokers: map[string]netip.AddrPort{"b0": echoBroker(t)},
		events:  make(chan string, 256), ended: make(chan pipe.Result, 256), conns: make(chan *Conn, 256),
		answer: 2 * time.Second, first: 5 * time.Second,
		affinity: ByConnection, accepted: make(chan acceptedOn, 256),
	}
	addr := listenLoops(t, a)
	piped := map[*loop]bool{}
	for burst := 0; burst < 20 && len(piped) < 2; burst++ {
		const n = 8
		clients := make(chan net.Conn, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				c, err := net.Dial("tcp", addr.String())
				if err == nil {
					_, err = c.Write([]byte{0x10, 2, 'b', '0'})
				}
				if err == nil {
					ack := make([]byte, 4)
					_, err = io.ReadFull(c, ack)
				}
				if c != nil {
					clients <- c
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			c := <-clients
			defer c.Close()
		}
		for range n {
			on := <-a.accepted
			if l := on.c.loop.Load(); l != on.l {
				t.Fatalf("pair accepted on loop %p piped by %p", on.l, l)
			}
			piped[on.l] = true
		}
	}
	if len(piped) < 2 {
		t.Skip("all connections were accepted by one loop; nothing to show")
	}
}
