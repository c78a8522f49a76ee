package pipe_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/pipe/epoll"
)

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	other := <-accepted
	if other == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { dialed.Close(); other.Close() })
	return dialed.(*net.TCPConn), other.(*net.TCPConn)
}

// opaque hides a connection's type, so pipe takes its buffered path.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(*net.TCPConn).CloseWrite() }

// The paths a pipe takes: raw for two *net.TCPConn (Run waits without a
// buffer), buffered for other connections (TLS, WebSocket), parked for
// Park (no goroutine while idle).
const (
	raw      = "raw"
	buffered = "buffered"
	parked   = "parked"
	// parkedOver parks a client read through a connection over its
	// ParkConn (as TLS is), which may hold bytes read ahead: its direction
	// drains once before it waits for readiness.
	parkedOver = "parked-over"
	// parkedBusy parks a pair whose client ParkConn asked to start busy
	// (StartBusy, as a WebSocket client's): both directions first wait in
	// Go's poller, and park after a window with nothing read.
	parkedBusy = "parked-busy"
)

// over is a connection over a ParkConn that says nothing of what it holds
// (as a tls.Conn), so Park drains it once before parking it.
type over struct {
	*pipe.ParkConn
}

// setup returns the client's end, the broker's end, and a channel with the
// pipe's result; the pipe runs between the proxy's two ends.
func setup(t *testing.T, path string, opts pipe.Options) (client, broker *net.TCPConn, proxyClient, proxyBroker net.Conn, result <-chan pipe.Result) {
	t.Helper()
	client, pc := tcpPair(t)
	pb, broker := tcpPair(t)
	proxyClient, proxyBroker = pc, pb
	res := make(chan pipe.Result, 1)
	switch path {
	case buffered:
		proxyClient, proxyBroker = opaque{pc}, opaque{pb}
	case parked, parkedBusy:
		cpc, bpc := pipe.NewParkConn(pc), pipe.NewParkConn(pb)
		proxyClient, proxyBroker = cpc, bpc
		if path == parkedBusy {
			cpc.StartBusy()
		}
		if err := pipe.Park(cpc, cpc, bpc, bpc, notifier(t), opts, func(r pipe.Result) { res <- r }); err != nil {
			t.Fatal(err)
		}
		return client, broker, proxyClient, proxyBroker, res
	case parkedOver:
		cpc, bpc := pipe.NewParkConn(pc), pipe.NewParkConn(pb)
		proxyClient, proxyBroker = over{cpc}, bpc
		if err := pipe.Park(proxyClient, cpc, bpc, bpc, notifier(t), opts, func(r pipe.Result) { res <- r }); err != nil {
			t.Fatal(err)
		}
		return client, broker, proxyClient, proxyBroker, res
	}
	go func() { res <- pipe.Run(proxyClient, proxyBroker, opts) }()
	return client, broker, proxyClient, proxyBroker, res
}

// notifier is a readiness source for parked pipes, closed at the end of
// the test.
func notifier(t *testing.T) *epoll.Notifier {
	t.Helper()
	n, err := epoll.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func waitResult(t *testing.T, res <-chan pipe.Result) pipe.Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("pipe did not end")
		return pipe.Result{}
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// forEachPath runs f for each path, in parallel.
func forEachPath(t *testing.T, f func(t *testing.T, path string)) {
	forPaths(t, []string{raw, buffered, parked, parkedOver, parkedBusy}, f)
}

func forPaths(t *testing.T, paths []string, f func(t *testing.T, path string)) {
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			f(t, path)
		})
	}
}

// TestBytesBothWaysThenHalfClose: a megabyte each way arrives intact while
// both directions run at once; a FIN from the client reaches the broker, the
// broker's answer still reaches the client, and the pipe ends when both
// sides have closed.
func TestBytesBothWaysThenHalfClose(t *testing.T) {
	t.Parallel()
	forEachPath(t, func(t *testing.T, path string) {
		var total pipe.Meter
		meter := &pipe.Meter{Totals: [2]*pipe.Meter{&total}}
		client, broker, _, _, res := setup(t, path, pipe.Options{Idle: time.Minute, Meter: meter})
		up, down := random(1<<20), random(1<<20)
		errs := make(chan error, 2)
		go func() { _, err := client.Write(up); errs <- err }()
		go func() { _, err := broker.Write(down); errs <- err }()
		gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
		if _, err := io.ReadFull(broker, gotUp); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, gotDown); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
			t.Fatal("bytes changed on the way")
		}

		client.CloseWrite()
		if n, err := broker.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("broker read after client FIN: %d, %v; want EOF", n, err)
		}
		broker.Write([]byte("last words"))
		last := make([]byte, 10)
		if _, err := io.ReadFull(client, last); err != nil || string(last) != "last words" {
			t.Fatalf("client did not get the broker's answer after its FIN: %q, %v", last, err)
		}
		broker.Close()
		r := waitResult(t, res)
		if r.End != pipe.ClientClosed || r.Up != int64(len(up)) || r.Down != int64(len(down))+10 {
			t.Errorf("result %+v, want client_closed with %d up and %d down", r, len(up), len(down)+10)
		}
		for _, m := range []*pipe.Meter{meter, &total} {
			if m.Up.Load() != r.Up || m.Down.Load() != r.Down {
				t.Errorf("meter %d up %d down, want the result's %d and %d", m.Up.Load(), m.Down.Load(), r.Up, r.Down)
			}
		}
	})
}

// TestDisconnectThenFIN: a client that sent DISCONNECT and then its FIN has
// closed [MQTT-3.14.4-1], so the pipe ends without waiting for the
// broker's FIN (HalfCloseTimeout is a minute, longer than waitResult's
// limit): the broker gets the DISCONNECT and a FIN, and the end is the
// client's. A PINGREQ last keeps the half-close (TestBytesBothWaysThenHalfClose).
func TestDisconnectThenFIN(t *testing.T) {
	t.Parallel()
	const withProps = "\xe0\x08\x00\x06\x1f\x00\x03bye" // 5.0: Normal disconnection, Reason String "bye" (5.0 section 3.14.2.2.3)
	for _, tt := range []struct {
		name string
		// writes go to the pipe one at a time, each read by the broker
		// before the next: the pipe's reads are cut where they are.
		writes []string
	}{
		{"a PUBLISH, then DISCONNECT", []string{"\x30\x04\x00\x01tx\xe0\x00"}},
		{"[MQTT-3.14.4-1] 5.0 with properties", []string{withProps}},
		{"[MQTT-3.14.4-1] at the end of a read that began inside a PUBLISH", []string{"\x30\x04\x00", "\x01tx\xe0\x00"}},
		{"[MQTT-3.14.4-1] a DISCONNECT cut over two reads", []string{withProps[:4], withProps[4:]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			forEachPath(t, func(t *testing.T, path string) {
				client, broker, _, _, res := setup(t, path, pipe.Options{Idle: time.Minute, HalfCloseTimeout: time.Minute})
				up := 0
				for _, w := range tt.writes {
					if _, err := client.Write([]byte(w)); err != nil {
						t.Fatal(err)
					}
					got := make([]byte, len(w))
					if _, err := io.ReadFull(broker, got); err != nil || string(got) != w {
						t.Fatalf("broker got %x, %v; want %x", got, err, w)
					}
					up += len(w)
				}
				client.CloseWrite()
				r := waitResult(t, res) // the broker has not closed
				if n, err := broker.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("broker read after the DISCONNECT: %d, %v; want EOF", n, err)
				}
				if r.End != pipe.ClientClosed || r.Up != int64(up) || r.Err != nil {
					t.Errorf("result %+v, want client_closed with %d up", r, up)
				}
			})
		})
	}
}

func TestBrokerClosesFirst(t *testing.T) {
	t.Parallel()
	forEachPath(t, func(t *testing.T, path string) {
		client, broker, _, _, res := setup(t, path, pipe.Options{})
		broker.Close()
		if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("client read: %d, %v; want EOF", n, err)
		}
		client.Close()
		if r := waitResult(t, res); r.End != pipe.BrokerClosed {
			t.Errorf("End = %s, want %s", r.End, pipe.BrokerClosed)
		}
	})
}

// TestIdleTimeout: no byte either way for Idle ends the pipe, and both
// peers see their connection end.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	forEachPath(t, func(t *testing.T, path string) {
		client, broker, proxyClient, proxyBroker, res := setup(t, path, pipe.Options{Idle: 200 * time.Millisecond})
		client.Write([]byte{0xc0, 0x00}) // one PINGREQ, then silence
		if _, err := io.ReadFull(broker, make([]byte, 2)); err != nil {
			t.Fatal(err)
		}
		r := waitResult(t, res)
		if r.End != pipe.IdleTimeout {
			t.Fatalf("End = %s (%v), want %s", r.End, r.Err, pipe.IdleTimeout)
		}
		// The caller closes the connections; the peers then see EOF.
		proxyClient.Close()
		proxyBroker.Close()
		for name, c := range map[string]net.Conn{"client": client, "broker": broker} {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
				t.Errorf("%s still connected: %v", name, err)
			}
		}
	})
}

// TestOutsideClose: closing the proxy's client side from outside (shutdown,
// an operator) ends the pipe at once.
func TestOutsideClose(t *testing.T) {
	t.Parallel()
	forEachPath(t, func(t *testing.T, path string) {
		_, _, proxyClient, _, res := setup(t, path, pipe.Options{})
		proxyClient.Close()
		r := waitResult(t, res)
		if r.End != pipe.ClientError || !errors.Is(r.Err, net.ErrClosed) {
			t.Errorf("result %+v, want client_error with net.ErrClosed", r)
		}
	})
}

// TestWriteTimeout: a broker that stops reading fills the buffers; the
// blocked write ends the pipe after WriteTimeout.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	forEachPath(t, func(t *testing.T, path string) {
		client, _, _, _, res := setup(t, path, pipe.Options{WriteTimeout: 300 * time.Millisecond})
		go func() {
			chunk := random(64 << 10)
			for range 1024 { // at most 64 MiB, far beyond the socket buffers
				if _, err := client.Write(chunk); err != nil {
					return
				}
			}
		}()
		r := waitResult(t, res)
		if r.End != pipe.BrokerError || !errors.Is(r.Err, os.ErrDeadlineExceeded) {
			t.Errorf("result %+v, want broker_error with a deadline", r)
		}
	})
}

// TestStart: the pipe Start runs on goroutines of its own carries bytes
// both ways and reports its Result once both directions ended.
func TestStart(t *testing.T) {
	t.Parallel()
	forPaths(t, []string{raw, buffered}, func(t *testing.T, path string) {
		client, pc := tcpPair(t)
		pb, broker := tcpPair(t)
		var proxyClient, proxyBroker net.Conn = pc, pb
		if path == buffered {
			proxyClient, proxyBroker = opaque{pc}, opaque{pb}
		}
		res := make(chan pipe.Result, 1)
		pipe.Start(proxyClient, proxyBroker, pipe.Options{}, func(r pipe.Result) { res <- r })
		buf := make([]byte, 4)
		if _, err := client.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(broker, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("broker read %q, %v", buf, err)
		}
		if _, err := broker.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("client read %q, %v", buf, err)
		}
		broker.Close()
		if n, err := client.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("client read: %d, %v; want EOF", n, err)
		}
		client.Close()
		if r := waitResult(t, res); r.End != pipe.BrokerClosed || r.Up != 4 || r.Down != 4 {
			t.Errorf("Result %+v, want broker_closed, 4 bytes each way", r)
		}
	})
}

// watching is a Readiness that passes each Watch to a real notifier and
// tells watched which side it was (by the RawConn's descriptor).
type watching struct {
	n       *epoll.Notifier
	watched chan struct{}
}

func (w *watching) Watch(rc syscall.RawConn, wake func()) (pipe.Watch, error) {
	wt, err := w.n.Watch(rc, wake)
	w.watched <- struct{}{}
	return wt, err
}

// TestStartBusyParksWhenIdle: a pair that starts busy (StartBusy) passes
// its first bytes both ways, and once no byte came for a window, each
// direction is watched, as a parked pair is; what the client and the
// broker send then still arrives, through readiness.
func TestStartBusyParksWhenIdle(t *testing.T) {
	t.Parallel()
	client, pc := tcpPair(t)
	pb, broker := tcpPair(t)
	cpc, bpc := pipe.NewParkConn(pc), pipe.NewParkConn(pb)
	cpc.StartBusy()
	ready := &watching{n: notifier(t), watched: make(chan struct{}, 4)}
	res := make(chan pipe.Result, 1)
	if err := pipe.Park(cpc, cpc, bpc, bpc, ready, pipe.Options{Idle: time.Minute}, func(r pipe.Result) { res <- r }); err != nil {
		t.Fatal(err)
	}
	echo := func(from, to *net.TCPConn, msg string) {
		t.Helper()
		if _, err := from.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(to, got); err != nil || string(got) != msg {
			t.Fatalf("read %q, %v; want %q", got, err, msg)
		}
	}
	echo(client, broker, "first")
	echo(broker, client, "answer")
	for range 2 { // each direction, once its window passed with nothing read
		select {
		case <-ready.watched:
		case <-time.After(20 * time.Second):
			t.Fatal("an idle busy-started direction was never watched")
		}
	}
	echo(client, broker, "after parking")
	echo(broker, client, "parked answer")
	client.Close()
	// The client's FIN reaches the broker, which then closes too.
	_ = broker.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := broker.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("broker read %d, %v after the client closed; want EOF", n, err)
	}
	broker.Close()
	r := waitResult(t, res)
	if r.End != pipe.ClientClosed {
		t.Errorf("end %q, want %q", r.End, pipe.ClientClosed)
	}
	pc.Close()
	pb.Close()
}
