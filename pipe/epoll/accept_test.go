package epoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// testAcceptor serves every connection with a testSession dialling broker.
type testAcceptor struct {
	broker netip.AddrPort
	events chan string
	ended  chan pipe.Result
	answer time.Duration
	first  time.Duration
	// brokers, when set, are dialled by the first packet's payload
	// instead of broker; conns then gets each Conn once it is dialled.
	brokers map[string]netip.AddrPort
	conns   chan *Conn
	// affinity is the Dial's; accepted, when set, gets each dialled Conn
	// with the loop its first packet was read on.
	affinity Affinity
	accepted chan acceptedOn
	// framed, when set, gets the length of the bytes each time a loop asks
	// whether the first packet is whole: a signal that a read happened.
	framed chan int
}

type acceptedOn struct {
	c *Conn
	l *loop
}

func (a *testAcceptor) Accept(c *Conn, remote, local netip.AddrPort) (Session, []byte, First) {
	f := frame
	if a.framed != nil {
		f = func(b []byte) (int, error) {
			select {
			case a.framed <- len(b):
			default: // the test no longer listens
			}
			return frame(b)
		}
	}
	return &testSession{a: a}, make([]byte, 0, 16), First{Frame: f, Timeout: a.first}
}

func (a *testAcceptor) AcceptFailed(err error) time.Duration { return time.Millisecond }

func frame(b []byte) (int, error) {
	n, err := mqtt.FrameLen(b)
	if errors.Is(err, mqtt.ErrIncomplete) {
		return 0, nil
	}
	return n, err
}

type testSession struct {
	a  *testAcceptor
	on *loop // the loop that read the first packet
}

func (s *testSession) FirstPacket(c *Conn, b []byte, size int) {
	s.a.events <- "first " + string(b[2:size])
	if string(b[2:size]) == "refuse" {
		c.Refuse([]byte{0x20, 2, 0, 5}, 2*time.Second)
		return
	}
	s.on = c.loop.Load()
	addr := s.a.broker
	if b, ok := s.a.brokers[string(b[2:size])]; ok {
		addr = b
	}
	c.Dial(Dial{Addr: addr, Send: b[:size], Timeout: 2 * time.Second, AnswerTimeout: s.a.answer, Frame: frame, AnswerLimit: 1 << 10, Affinity: s.a.affinity})
	_ = b[size:] // the test's clients send nothing after their first packet before the answer
}

func (s *testSession) FirstFailed(c *Conn, b []byte, err error) {
	s.a.events <- "failed " + err.Error()
	c.End(pipe.ClientError, err)
}

func (s *testSession) Dialled(c *Conn, ack []byte, _ time.Duration, err error) {
	if err != nil {
		s.a.events <- "dial " + err.Error()
		c.End(pipe.BrokerError, err)
		return
	}
	s.a.events <- "dialled"
	if s.a.conns != nil {
		s.a.conns <- c
	}
	if s.a.accepted != nil {
		s.a.accepted <- acceptedOn{c, s.on}
	}
	c.Pipe(ack, nil, pipe.Options{Idle: time.Minute}, func(res pipe.Result) { s.a.ended <- res })
}

func (s *testSession) Ended(res pipe.Result) { s.a.ended <- res }

// echoBroker answers a packet with a 4-byte CONNACK-like packet, then
// echoes.
func echoBroker(t *testing.T) netip.AddrPort {
	t.Helper()
	return answeringBroker(t, []byte{0x20, 2, 0, 0}, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// answeringBroker reads one packet (of under 128 bytes), writes answer,
// then runs after on the connection, or closes it at once when after is
// nil.
func answeringBroker(t *testing.T, answer []byte, after func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				hdr := make([]byte, 2)
				if _, err := io.ReadFull(c, hdr); err != nil {
					return
				}
				if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
					return
				}
				if _, err := c.Write(answer); err != nil || after == nil {
					return
				}
				after(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func listenLoops(t *testing.T, a Acceptor) net.Addr {
	t.Helper()
	g, err := NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(pipe.End("test")) })
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr()
	l, err := g.Listen(ln, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return addr
}

func want(t *testing.T, ch chan string, w string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != w {
			t.Fatalf("event %q, want %q", got, w)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no event, want %q", w)
	}
}

func TestListenDialPipe(t *testing.T) {
	t.Parallel()
	a := &testAcceptor{broker: echoBroker(t), events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: 2 * time.Second, first: 5 * time.Second,
		framed: make(chan int, 8)}
	addr := listenLoops(t, a)
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first packet in two pieces, larger than the 16-byte buffer: the
	// second is sent once the loop has read the first (and found it short),
	// so the packet is always read in two parts.
	pkt := append([]byte{0x10, 20}, bytes.Repeat([]byte("x"), 20)...)
	if _, err := c.Write(pkt[:5]); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 5; {
		select {
		case n = <-a.framed:
		case <-time.After(10 * time.Second):
			t.Fatal("the loop did not read the first piece within 10 s")
		}
	}
	if _, err := c.Write(pkt[5:]); err != nil {
		t.Fatal(err)
	}
	want(t, a.events, "first "+string(pkt[2:]))
	want(t, a.events, "dialled")
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("ack %x, %v", ack, err)
	}
	if _, err := c.Write([]byte{0xc0, 0}); err != nil { // PINGREQ, echoed
		t.Fatal(err)
	}
	echo := make([]byte, 2)
	if _, err := io.ReadFull(c, echo); err != nil || echo[0] != 0xc0 {
		t.Fatalf("echo %x, %v", echo, err)
	}
	c.Close()
	res := <-a.ended
	if res.End != pipe.ClientClosed || res.Up != 2 || res.Down != 2 {
		t.Fatalf("result %+v, want client_closed with 2 bytes each way", res)
	}
}

func TestListenRefuseAndFailures(t *testing.T) {
	t.Parallel()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().(*net.TCPAddr).AddrPort()
	dead.Close()
	a := &testAcceptor{broker: deadAddr, events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: time.Second, first: 200 * time.Millisecond}
	addr := listenLoops(t, a)

	// Refused: the CONNACK, then FIN.
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append([]byte{0x10, 6}, "refuse"...))
	want(t, a.events, "first refuse")
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, []byte{0x20, 2, 0, 5}) {
		t.Fatalf("refusal %x, %v", got, err)
	}
	c.Close()
	<-a.ended

	// A broker not listening: the dial fails as Go's would.
	c, err = net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(append([]byte{0x10, 2}, "hi"...))
	want(t, a.events, "first hi")
	want(t, a.events, "dial dial: dial tcp "+deadAddr.String()+": connect: connection refused")
	<-a.ended

	// Nothing sent: the first packet's timeout.
	c2, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte{0x10})
	want(t, a.events, "failed "+os.ErrDeadlineExceeded.Error())
	if res := <-a.ended; res.End != pipe.ClientError {
		t.Fatalf("result %+v", res)
	}
}

// TestListenBrokerLoops: the pairs to one broker share a loop whichever
// loop accepted them (a Conn accepted on the other moves before its dial),
// and moved pairs pipe and close from outside as any.
func TestListenBrokerLoops(t *testing.T) {
	t.Parallel()
	a := &testAcceptor{
		brokers: map[string]netip.AddrPort{"b0": echoBroker(t), "b1": echoBroker(t)},
		events:  make(chan string, 32), ended: make(chan pipe.Result, 32), conns: make(chan *Conn, 32),
		answer: 2 * time.Second, first: 5 * time.Second,
	}
	addr := listenLoops(t, a)
	loops := map[string]*loop{}
	var clients []net.Conn
	var conns []*Conn
	for i := range 8 {
		name := []string{"b0", "b1"}[i%2]
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(append([]byte{0x10, 2}, name...)); err != nil {
			t.Fatal(err)
		}
		want(t, a.events, "first "+name)
		want(t, a.events, "dialled")
		conn := <-a.conns
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
			t.Fatalf("ack %x, %v", ack, err)
		}
		l := conn.loop.Load()
		if loops[name] == nil {
			loops[name] = l
		} else if loops[name] != l {
			t.Errorf("pair %d to %s in loop %p, earlier ones in %p", i, name, l, loops[name])
		}
		clients, conns = append(clients, c), append(conns, conn)
	}
	if loops["b0"] == loops["b1"] {
		t.Errorf("both brokers' pairs in one loop of two")
	}
	for i, c := range clients {
		if _, err := c.Write([]byte{0xc0, 0}); err != nil { // PINGREQ, echoed
			t.Fatal(err)
		}
		echo := make([]byte, 2)
		if _, err := io.ReadFull(c, echo); err != nil || echo[0] != 0xc0 {
			t.Fatalf("pair %d: echo %x, %v", i, echo, err)
		}
	}
	for _, conn := range conns {
		conn.Close("operator")
	}
	for range conns {
		if res := <-a.ended; res.End != "operator" || res.Up != 2 || res.Down != 2 {
			t.Errorf("result %+v, want operator with 2 bytes each way", res)
		}
	}
}

// IPv6 both ways: the raw accept4, getsockname and connect read and write
// AF_INET6 addresses as the kernel does.
func TestListenDialIPv6(t *testing.T) {
	t.Parallel()
	bl, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer bl.Close()
	go func() {
		c, err := bl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(c, hdr); err == nil {
			c.Write([]byte{0x20, 2, 0, 0})
			io.Copy(io.Discard, c)
		}
	}()
	locals := make(chan netip.AddrPort, 1)
	a := &addrAcceptor{testAcceptor: testAcceptor{broker: bl.Addr().(*net.TCPAddr).AddrPort(), events: make(chan string, 8), ended: make(chan pipe.Result, 8), answer: 2 * time.Second, first: 5 * time.Second}, locals: locals}
	g, err := NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(pipe.End("test"))
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	l, err := g.Listen(ln, a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x10, 2, 'h', 'i'})
	if got := <-locals; got != addr {
		t.Errorf("local address %v, want %v", got, addr)
	}
	want(t, a.events, "first hi")
	want(t, a.events, "dialled")
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("ack %x, %v", ack, err)
	}
}

// addrAcceptor is testAcceptor, reporting the addresses of each connection.
type addrAcceptor struct {
	testAcceptor
	locals chan netip.AddrPort
}

func (a *addrAcceptor) Accept(c *Conn, remote, local netip.AddrPort) (Session, []byte, First) {
	if !remote.Addr().IsLoopback() || remote.Port() == 0 {
		local = netip.AddrPort{} // fails the test's comparison
	}
	a.locals <- local
	return a.testAcceptor.Accept(c, remote, local)
}
