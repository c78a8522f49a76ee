package pipe_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/mqgate/mqgate/pipe"
)

// TestSettlerHandover: a pair parked by a Settler is offered to its move
// only once it is older than the delay and both directions are parked;
// Take refuses a pair inside a packet, a move that gives the pair back
// (false after Take) leaves the pipe working, and one that keeps it ends
// the pipe without its done, the sockets the caller's. A pair that ends
// within the delay is never offered.
func TestSettlerHandover(t *testing.T) {
	t.Parallel()
	const after = 500 * time.Millisecond
	s := pipe.NewSettler(after)
	t.Cleanup(s.Close)
	ready := notifier(t)
	opts := pipe.Options{Idle: time.Minute}
	park := func(move func(*pipe.Handover) bool) (client, broker, pc, pb *net.TCPConn, res chan pipe.Result) {
		t.Helper()
		client, pc = tcpPair(t)
		pb, broker = tcpPair(t)
		res = make(chan pipe.Result, 1)
		cpc, bpc := pipe.NewParkConn(pc), pipe.NewParkConn(pb)
		if err := s.Park(cpc, cpc, bpc, bpc, ready, opts, func(r pipe.Result) { res <- r }, move); err != nil {
			t.Fatal(err)
		}
		return client, broker, pc, pb, res
	}
	pass := func(from, to *net.TCPConn, b []byte) {
		t.Helper()
		if _, err := from.Write(b); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(b))
		_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(to, got); err != nil || string(got) != string(b) {
			t.Fatalf("read % x, %v; want % x", got, err, b)
		}
	}
	ping, pong := []byte{0xc0, 0x00}, []byte{0xd0, 0x00}

	// Short: it ends within the delay.
	shortMoves := make(chan struct{}, 1)
	client, broker, _, _, res := park(func(*pipe.Handover) bool { shortMoves <- struct{}{}; return false })
	pass(client, broker, ping)
	pass(broker, client, pong)
	client.Close()
	broker.Close()
	waitResult(t, res)

	// Long: started after the short one ended, so that by its first offer
	// the short one's has passed too.
	// The move takes the pair only when the test lets it (allow): an
	// offer at any other moment (the pair parks between the test's ping
	// and pong) would stop the pipe under the test's feet.
	allow := make(chan struct{})
	takes := make(chan bool)
	keep := make(chan bool)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	client, broker, pc, pb, res := park(func(h *pipe.Handover) bool {
		select {
		case <-allow:
		case <-ended:
			return false
		}
		takes <- h.Take()
		return <-keep
	})
	offered := func() bool {
		t.Helper()
		select {
		case allow <- struct{}{}:
		case <-time.After(20 * time.Second):
			t.Fatal("the staying pair was never offered")
		}
		return <-takes
	}
	// offeredTaken waits for an offer that Take accepts: one may come
	// while a direction is still finishing its last bytes (refused, and
	// offered again when that direction parks).
	offeredTaken := func() bool {
		t.Helper()
		for range 20 {
			if offered() {
				return true
			}
			keep <- false
		}
		return false
	}
	// A PUBLISH cut short: offered, but not taken.
	pass(client, broker, []byte{0x30, 0x04, 't'})
	if offered() {
		t.Fatal("Take took a pair inside a packet")
	}
	keep <- false
	select {
	case <-shortMoves:
		t.Fatal("a pair that ended within the delay was offered")
	default:
	}
	// The rest of it: offered again once both directions park, taken,
	// and given back.
	pass(client, broker, []byte{'/', 'x', 'y'})
	if !offeredTaken() {
		t.Fatal("Take refused a pair between packets, both directions parked")
	}
	keep <- false
	pass(client, broker, ping) // the pipe goes on
	pass(broker, client, pong)
	// Taken and kept: the proxy's sockets are the caller's.
	if !offeredTaken() {
		t.Fatal("Take refused a pair given back and parked again")
	}
	keep <- true
	pass(client, pc, ping)
	pass(broker, pb, pong)
	select {
	case r := <-res:
		t.Fatalf("the pipe of a pair handed over ended (%v): want no done", r)
	default:
	}
}
