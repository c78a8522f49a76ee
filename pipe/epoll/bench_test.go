package epoll

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
			defer reportCPU(b)()
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

// BenchmarkCrossLoopOrder writes one byte into pair B and right after it one
// byte into pair A, the pairs in different loops, and reads when the
// kernel received each at the broker's end (SO_TIMESTAMPNS, so the
// benchmark's own scheduling does not count). It reports the share of
// rounds in which A's byte reached its broker first (inverted/op, as a
// fraction) and by how much B's byte trailed A's on average (lag-ns/op, negative
// when B came first as it was sent): a proxy that forwards each as soon as
// it arrives keeps the order. Measured this way, the order of events on two
// connections a few microseconds apart (B's SUBSCRIBE, then A's PUBLISH) is
// what decides whether B gets A's message. In two-brokers the pairs go to
// two brokers and so to two loops, which race; in one-broker they share a
// loop (Group.loopFor), which forwards them in turn.
//
//	go test -run '^$' -bench CrossLoopOrder -cpu 2 -count 5 ./pipe/epoll/
func BenchmarkCrossLoopOrder(b *testing.B) {
	b.Run("two-brokers", func(b *testing.B) { benchCrossLoopOrder(b, false) })
	b.Run("one-broker", func(b *testing.B) { benchCrossLoopOrder(b, true) })
}

func benchCrossLoopOrder(b *testing.B, oneBroker bool) {
	opts := pipe.Options{Idle: time.Minute, WriteTimeout: time.Minute, HalfCloseTimeout: time.Minute}
	h := newHarness(b, 2)
	if oneBroker {
		h.back2 = nil
	}
	var pairs [2]*testPair
	for i := range pairs {
		tp, pc, pb := h.sockets()
		if _, err := h.g.Add(pc, pb, opts, nil); err != nil {
			b.Fatal(err)
		}
		timestamps(b, tp.broker)
		pairs[i] = tp
	}
	pa, pb := pairs[0], pairs[1]
	if la, lb := h.g.loopFor(addrPort(pa.broker)), h.g.loopFor(addrPort(pb.broker)); (la == lb) != oneBroker {
		b.Fatalf("pairs in one loop: %v, want %v", la == lb, oneBroker)
	}
	one := []byte{1}
	round := func() (tb, ta int64) {
		if _, err := pb.client.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := pa.client.Write(one); err != nil {
			b.Fatal(err)
		}
		return received(b, pb.broker), received(b, pa.broker)
	}
	// The kernel turns timestamps on asynchronously: wait until they come.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if tb, ta := round(); tb != 0 && ta != 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no byte came with a receive timestamp")
		}
	}
	var inverted, lag, timed int64
	b.ResetTimer()
	defer reportCPU(b)()
	for b.Loop() {
		tb, ta := round()
		if ta == 0 || tb == 0 {
			continue
		}
		timed++
		if ta < tb {
			inverted++
		}
		lag += tb - ta
	}
	if timed == 0 {
		return
	}
	b.ReportMetric(float64(inverted)/float64(timed), "inverted/op")
	b.ReportMetric(float64(lag)/float64(timed), "lag-ns/op")
}

func timestamps(b *testing.B, c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		b.Fatal(err, serr)
	}
}

// received reads one byte from c and returns when the kernel received it,
// in nanoseconds of the real-time clock, or 0 when it came without a
// timestamp.
func received(b *testing.B, c *net.TCPConn) int64 {
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var buf [1]byte
	oob := make([]byte, 64)
	var ts int64
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err := unix.Recvmsg(int(fd), buf[:], oob, 0)
		if err == unix.EAGAIN {
			return false
		}
		if err != nil || n != 1 {
			rerr = fmt.Errorf("recvmsg: %d bytes, %v", n, err)
			return true
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			rerr = fmt.Errorf("control message: %w", err)
			return true
		}
		if len(msgs) == 0 {
			return true
		}
		t := (*unix.Timespec)(unsafe.Pointer(&msgs[0].Data[0]))
		ts = t.Nano()
		return true
	})
	if err != nil || rerr != nil {
		b.Fatal(err, rerr)
	}
	return ts
}

// reportCPU starts counting the process's CPU time (user and system, every
// thread: the loops' and the benchmark's own clients') and returns the func
// that reports it per op as cpu-ns/op: on a shared machine it is steadier
// than ns/op, which counts waiting for a core too.
func reportCPU(b *testing.B) func() {
	cpu := func() int64 {
		var ru unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	start := cpu()
	return func() { b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op") }
}

// addrPort is the local address of the broker's end c: the broker address
// its pair dialled.
func addrPort(c *net.TCPConn) netip.AddrPort { return c.LocalAddr().(*net.TCPAddr).AddrPort() }
