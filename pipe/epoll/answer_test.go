package epoll

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/pipe"
)

// scriptBroker reads one packet, then writes answer and, with hangUp,
// closes at once: what a broker with queued messages (the CONNACK and its
// PUBLISHes back to back) or one that refuses and goes does.
func scriptBroker(t *testing.T, answer []byte, hangUp bool) netip.AddrPort {
	t.Helper()
	if hangUp {
		return answeringBroker(t, answer, nil)
	}
	return answeringBroker(t, answer, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// TestPipeBrokerBytesAfterAnswer: what the broker sends right behind its
// answer (more than the answer's first read takes) reaches the client, and
// a broker's FIN that came with its answer ends the pair: the broker's
// side keeps its pre-pipe registration when it was read to empty, so these
// must not be lost between the answer's read and the pipe.
func TestPipeBrokerBytesAfterAnswer(t *testing.T) {
	t.Parallel()
	// A CONNACK, then 64 KB of PUBLISH-like bytes in the same write.
	burst := append([]byte{0x20, 2, 0, 0}, bytes.Repeat([]byte("p"), 64<<10)...)
	for _, tc := range []struct {
		name   string
		answer []byte
		hangUp bool
	}{
		{"burst", burst, false},
		{"connack and FIN", []byte{0x20, 2, 0, 0}, true},
		{"burst and FIN", burst, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := &testAcceptor{broker: scriptBroker(t, tc.answer, tc.hangUp), events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: 5 * time.Second, first: 5 * time.Second}
			addr := listenLoops(t, a)
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(append([]byte{0x10, 2}, "hi"...)); err != nil {
				t.Fatal(err)
			}
			want(t, a.events, "first hi")
			want(t, a.events, "dialled")
			// A lost edge shows as a read that waits for ever.
			if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if !tc.hangUp {
				got := make([]byte, len(tc.answer))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, tc.answer) {
					t.Fatalf("client got %d bytes (%v), want the answer and all %d bytes after it", len(got), err, len(tc.answer)-4)
				}
				return
			}
			// The broker's FIN reaches the client after all its bytes.
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, tc.answer) {
				t.Fatalf("client got %d bytes then %v, want %d bytes then EOF", len(got), err, len(tc.answer))
			}
			c.Close()
			<-a.ended
		})
	}
}

// TestAcceptedNoDelay: both sides of a pair the loops accepted and dialled
// have Nagle's algorithm off (the client's inherited from the listener).
func TestAcceptedNoDelay(t *testing.T) {
	t.Parallel()
	a := &testAcceptor{broker: echoBroker(t), events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: 5 * time.Second, first: 5 * time.Second, conns: make(chan *Conn, 1)}
	addr := listenLoops(t, a)
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(append([]byte{0x10, 2}, "hi"...)); err != nil {
		t.Fatal(err)
	}
	want(t, a.events, "first hi")
	want(t, a.events, "dialled")
	p := <-a.conns
	// The pair stays open while c is: its descriptors are p's.
	for s, name := range []string{client: "client", broker: "broker"} {
		v, err := unix.GetsockoptInt(int(p.fd[s]), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		if err != nil || v == 0 {
			t.Errorf("%s side: TCP_NODELAY %d, %v; want on", name, v, err)
		}
	}
}

// answerSession records what Dialled is given.
type answerSession struct {
	testSession
	acks [][]byte
	errs []error
}

func (s *answerSession) Dialled(c *Conn, ack []byte, _ time.Duration, err error) {
	s.acks = append(s.acks, append([]byte(nil), ack...)) // ack is valid during the call only
	s.errs = append(s.errs, err)
}

// TestReadAnswerInParts drives readAnswer by hand on a socket pair: an
// answer that comes in parts is kept across reads (the first part out of
// the loop's buffer, which the next read reuses) and handed over whole,
// with what came after it; one that comes at once is handed over from the
// loop's buffer.
func TestReadAnswerInParts(t *testing.T) {
	t.Parallel()
	l, err := newLoop(&Group{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(l.epfd); unix.Close(l.wake) })
	answer := append([]byte{0x20, 100}, bytes.Repeat([]byte("a"), 100)...)
	for _, cuts := range [][]int{{0, len(answer)}, {0, 1, len(answer)}, {0, 2, 50, len(answer)}} {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := &answerSession{}
		p := &Conn{fd: [2]int32{-1, int32(fds[0])}, slot: -1, idx: -1, first: -1}
		p.loop.Store(l)
		p.pre = &pre{sess: s, phase: phaseAnswer, dial: Dial{Frame: frame, AnswerLimit: 1 << 10}}
		for i := 1; i < len(cuts); i++ {
			part := answer[cuts[i-1]:cuts[i]]
			if i == len(cuts)-1 {
				part = append(part, "next"...) // the broker's next bytes, in the same read
			}
			if _, err := unix.Write(fds[1], part); err != nil {
				t.Fatal(err)
			}
			// Whatever the loop's buffer held before this read.
			for j := range l.buf[:512] {
				l.buf[j] = 'x'
			}
			l.readAnswer(p, unix.EPOLLIN)
			if i < len(cuts)-1 && len(s.acks) != 0 {
				t.Fatalf("cuts %v: handed over after %d of %d bytes", cuts, cuts[i], len(answer))
			}
		}
		want := append(append([]byte(nil), answer...), "next"...)
		if len(s.acks) != 1 || s.errs[0] != nil || !bytes.Equal(s.acks[0], want) {
			t.Fatalf("cuts %v: Dialled got %q, %v; want the %d-byte answer and \"next\"", cuts, s.acks, s.errs, len(answer))
		}
		if !p.pre.drained {
			t.Errorf("cuts %v: a short last read, no hang-up: want the broker's side drained", cuts)
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
	}
}
