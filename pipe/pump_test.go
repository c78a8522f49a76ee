package pipe_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// pumpSizes are the payloads of the round trips below: small packets, as
// bursts of MQTT messages are, and packets larger than the pipe's buffer,
// whose reads fill it (a full read is followed by another, a short one by
// a wait).
var pumpSizes = []int{1, 60, 1500, 20 << 10, 70 << 10, 5}

// echo copies what the broker's end receives back to it, in two writes a
// read, until EOF, and then closes it.
func echo(broker *net.TCPConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer broker.Close()
		b := make([]byte, 32<<10)
		for {
			n, err := broker.Read(b)
			if n > 0 {
				h := (n + 1) / 2
				if _, werr := broker.Write(b[:h]); werr != nil {
					done <- werr
					return
				}
				if _, werr := broker.Write(b[h:n]); werr != nil {
					done <- werr
					return
				}
			}
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// TestParkedBurstsRoundTrip: round trips back to back, each woken soon
// after its direction parked (so it drains inside one wait of Go's poller,
// pump), arrive whole and in order whatever their size, and a FIN still
// ends the pipe. A wake lost between a short read and the next bytes would
// leave a round trip unanswered and fail the test at its deadline.
func TestParkedBurstsRoundTrip(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		client, broker, pc, pb, res := setup(t, path, pipe.Options{Idle: time.Minute, Level: mqtt.Level5})
		echoed := echo(broker)
		if err := client.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 80<<10)
		for i := range 600 {
			pkt := publish(pumpSizes[i%len(pumpSizes)])
			pkt[len(pkt)-1] = byte(i)
			if _, err := client.Write(pkt); err != nil {
				t.Fatalf("round trip %d: %v", i, err)
			}
			if _, err := io.ReadFull(client, got[:len(pkt)]); err != nil {
				t.Fatalf("round trip %d (%d bytes): %v", i, len(pkt), err)
			}
			if !bytes.Equal(got[:len(pkt)], pkt) {
				t.Fatalf("round trip %d: the %d bytes back differ from those sent", i, len(pkt))
			}
		}
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest := readAll(t, client); len(rest) != 0 {
			t.Errorf("client got %d bytes after its FIN, want none", len(rest))
		}
		if err := <-echoed; err != nil {
			t.Errorf("broker: %v", err)
		}
		if r := endPipe(t, res, pc, pb); r.End != pipe.ClientClosed {
			t.Errorf("End = %q, want %q", r.End, pipe.ClientClosed)
		}
	})
}

// TestCloseAtBoundaryWhileBusy: a close asked for while round trips flow
// (both directions busy) ends the client's stream after whole packets and
// then the DISCONNECT, and ends the pipe with the close's reason.
func TestCloseAtBoundaryWhileBusy(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		ctl := new(pipe.Control)
		client, broker, pc, pb, res := setup(t, path, pipe.Options{Idle: time.Minute, Level: mqtt.Level5, Control: ctl})
		echo(broker)
		if err := client.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		final := pipe.Goodbye(mqtt.Level5, mqtt.AdministrativeAction)
		var stream, sent []byte
		got := make([]byte, 80<<10)
		for i := 0; ; i++ {
			if i == 200 {
				ctl.CloseAtBoundary("test_close", final)
			}
			if i > 5000 {
				t.Fatal("the close never came")
			}
			pkt := publish(pumpSizes[i%len(pumpSizes)])
			if _, err := client.Write(pkt); err != nil {
				break // the proxy has closed the client's side
			}
			sent = append(sent, pkt...)
			var err error
			for len(stream) < len(sent) && err == nil {
				var n int
				n, err = client.Read(got)
				stream = append(stream, got[:n]...)
			}
			if err != nil {
				break
			}
		}
		stream = append(stream, readAll(t, client)...)
		if !bytes.HasSuffix(stream, final) {
			t.Fatalf("client's stream (%d bytes) ends %x, want the DISCONNECT %x", len(stream), stream[max(0, len(stream)-8):], final)
		}
		body := stream[:len(stream)-len(final)]
		if !bytes.HasPrefix(sent, body) {
			t.Fatalf("before the DISCONNECT the client got %d bytes that are not what it sent", len(body))
		}
		var f mqtt.Framer
		if f.Feed(body, 0); !f.AtBoundary() {
			t.Errorf("the DISCONNECT came inside a packet (after %d bytes)", len(body))
		}
		client.Close() // ends the proxy's linger for the client's last bytes
		if r := endPipe(t, res, pc, pb); r.End != "test_close" {
			t.Errorf("End = %q, want test_close", r.End)
		}
	})
}

// readAll reads c to its end (EOF or a reset after the proxy's close).
func readAll(t *testing.T, c *net.TCPConn) []byte {
	t.Helper()
	var out []byte
	b := make([]byte, 32<<10)
	for {
		n, err := c.Read(b)
		out = append(out, b[:n]...)
		if err != nil {
			var ne net.Error
			if err != io.EOF && !errors.Is(err, net.ErrClosed) && errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("reading to the end: %v", err)
			}
			return out
		}
	}
}
