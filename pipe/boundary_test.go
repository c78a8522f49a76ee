package pipe_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/packettest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// publish is a QoS 0 PUBLISH to topic "t" with n bytes of payload.
func publish(n int) []byte { return packettest.Publish("t", bytes.Repeat([]byte{'x'}, n)) }

// endPipe closes the proxy's ends once the pipe has returned, as the
// caller of Run does.
func endPipe(t *testing.T, res <-chan pipe.Result, pc, pb net.Conn) pipe.Result {
	t.Helper()
	r := waitResult(t, res)
	pc.Close()
	pb.Close()
	return r
}

// TestCloseAtBoundaryMidPacket: a close asked for while a large PUBLISH
// from the broker is half through waits for the packet's last byte, then
// sends the DISCONNECT; the broker's next packet never reaches the client.
func TestCloseAtBoundaryMidPacket(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		for _, level := range []byte{mqtt.Level311, mqtt.Level5} {
			ctl := new(pipe.Control)
			client, broker, pc, pb, res := setup(t, path, pipe.Options{Idle: time.Minute, Level: level, Control: ctl})
			pkt := publish(200 << 10)
			half := len(pkt) / 2
			if _, err := broker.Write(pkt[:half]); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 1000)
			if _, err := io.ReadFull(client, got); err != nil { // the packet is under way
				t.Fatal(err)
			}
			final := pipe.Goodbye(level, mqtt.ServerShuttingDown)
			ctl.CloseAtBoundary("test_close", final)
			// The rest arrives in many reads, with the next packet behind it.
			for rest := pkt[half:]; len(rest) > 0; rest = rest[min(len(rest), 7000):] {
				if _, err := broker.Write(rest[:min(len(rest), 7000)]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := broker.Write([]byte{0xd0, 0}); err != nil {
				t.Fatal(err)
			}
			got = append(got, packettest.ReadToEOF(t, client)...)
			want := append(append([]byte{}, pkt...), final...)
			if !bytes.Equal(got, want) {
				t.Fatalf("level %d: client got %d bytes ending %x, want the whole PUBLISH (%d bytes) and then %x", level, len(got), got[max(0, len(got)-8):], len(pkt), final)
			}
			if r := endPipe(t, res, pc, pb); r.End != "test_close" {
				t.Errorf("level %d: End = %q, want test_close", level, r.End)
			}
		}
	})
}

// TestCloseAtBoundaryIdlePipe: at a boundary already, the DISCONNECT goes
// at once, even before Run started.
func TestCloseAtBoundaryIdlePipe(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		ctl := new(pipe.Control)
		final := pipe.Goodbye(mqtt.Level5, mqtt.AdministrativeAction)
		ctl.CloseAtBoundary("kick", final)
		client, _, pc, pb, res := setup(t, path, pipe.Options{Level: mqtt.Level5, Control: ctl})
		if got := packettest.ReadToEOF(t, client); !bytes.Equal(got, final) {
			t.Fatalf("client got %x, want %x", got, final)
		}
		if r := endPipe(t, res, pc, pb); r.End != "kick" {
			t.Errorf("End = %q, want kick", r.End)
		}
	})
}

// TestIdleDisconnect: the idle limit tells a 5.0 client 0x8D Keep Alive
// timeout [MQTT-3.1.2-22] and a 3.1.1 client nothing.
func TestIdleDisconnect(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		for _, level := range []byte{mqtt.Level311, mqtt.Level5} {
			client, _, pc, pb, res := setup(t, path, pipe.Options{Idle: 100 * time.Millisecond, Level: level})
			want := pipe.Goodbye(level, mqtt.KeepAliveTimeout)
			if got := packettest.ReadToEOF(t, client); !bytes.Equal(got, want) {
				t.Fatalf("level %d: client got %x, want %x", level, got, want)
			}
			if r := endPipe(t, res, pc, pb); r.End != pipe.IdleTimeout {
				t.Errorf("level %d: End = %q, want %q", level, r.End, pipe.IdleTimeout)
			}
		}
	})
}

// TestMaxPacketSize: the first packet from the client larger than the
// limit is not passed on, not even its Fixed Header; the client is told
// 0x95 Packet too large.
func TestMaxPacketSize(t *testing.T) {
	forEachPath(t, func(t *testing.T, path string) {
		client, broker, pc, pb, res := setup(t, path, pipe.Options{Idle: time.Minute, Level: mqtt.Level5, MaxPacketSize: 100})
		small, big := publish(50), publish(200)
		if _, err := client.Write(append(append([]byte{}, small...), big...)); err != nil {
			t.Fatal(err)
		}
		want := pipe.Goodbye(mqtt.Level5, mqtt.PacketTooLarge)
		if got := packettest.ReadToEOF(t, client); !bytes.Equal(got, want) {
			t.Fatalf("client got %x, want %x", got, want)
		}
		r := endPipe(t, res, pc, pb)
		if r.End != pipe.PacketTooLarge {
			t.Errorf("End = %q, want %q", r.End, pipe.PacketTooLarge)
		}
		if got := packettest.ReadToEOF(t, broker); !bytes.Equal(got, small) {
			t.Errorf("broker got %d bytes, want the small packet (%d bytes) only", len(got), len(small))
		}
	})
}
