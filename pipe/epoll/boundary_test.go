package epoll

import (
	"bytes"
	"testing"
	"time"

	"github.com/mqgate/mqgate/internal/packettest"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// publish is a QoS 0 PUBLISH to topic "t" with n bytes of payload.
func publish(n int) []byte { return packettest.Publish("t", bytes.Repeat([]byte{'x'}, n)) }

// TestCloseAtBoundaryMidPacket: a close asked for while a large PUBLISH
// from the broker is half through waits for the packet's last byte, then
// sends the final bytes; the broker's next packet never reaches the client.
func TestCloseAtBoundaryMidPacket(t *testing.T) {
	for _, level := range []byte{mqtt.Level311, mqtt.Level5} {
		h := newHarness(t, 1)
		tp := h.pair(pipe.Options{Idle: time.Minute, Level: level})
		pkt := publish(200 << 10)
		half := len(pkt) / 2
		write(t, tp.broker, pkt[:half])
		got := readN(t, tp.client, 1000) // the packet is under way
		final := pipe.Goodbye(level, mqtt.ServerShuttingDown)
		tp.conn.CloseAtBoundary("test_close", final)
		for rest := pkt[half:]; len(rest) > 0; rest = rest[min(len(rest), 7000):] {
			write(t, tp.broker, rest[:min(len(rest), 7000)])
		}
		write(t, tp.broker, []byte{0xd0, 0}) // PINGRESP: after the boundary
		got = append(got, packettest.ReadToEOF(t, tp.client)...)
		want := append(append([]byte{}, pkt...), final...)
		if !bytes.Equal(got, want) {
			t.Fatalf("level %d: client got %d bytes ending %x, want the whole PUBLISH (%d bytes) and then %x", level, len(got), got[max(0, len(got)-8):], len(pkt), final)
		}
		if r := tp.wait(t); r.End != "test_close" {
			t.Errorf("level %d: End = %q, want test_close", level, r.End)
		}
	}
}

// TestCloseAtBoundaryBacklog: a close while bytes to a client that does
// not read wait in the pair's backlog goes after them.
func TestCloseAtBoundaryBacklog(t *testing.T) {
	h := newHarness(t, 1)
	// Small socket buffers toward the client: with the kernel's autotuning
	// (tcp_rmem up to 32 MB here) a quiet machine's loopback could hold the
	// whole packet, and no backlog would form.
	tp, proxyClient, proxyBroker := h.sockets()
	tp.client.SetReadBuffer(16 << 10)
	proxyClient.SetWriteBuffer(16 << 10)
	res := make(chan pipe.Result, 1)
	c, err := h.g.Add(proxyClient, proxyBroker, pipe.Options{Idle: time.Minute, Level: mqtt.Level5}, func(r pipe.Result) { res <- r })
	if err != nil {
		t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	pkt := publish(1 << 20) // more than the sockets toward the client hold: a backlog forms
	go func() {
		tp.broker.SetWriteDeadline(time.Now().Add(time.Minute))
		tp.broker.Write(pkt)
	}()
	waitFor(t, "a blocked write", func() bool { return h.g.loops[0].backlogs.Load() > 0 })
	final := pipe.Goodbye(mqtt.Level5, mqtt.AdministrativeAction)
	tp.conn.CloseAtBoundary("kick", final)
	got := packettest.ReadToEOF(t, tp.client)
	if want := append(append([]byte{}, pkt...), final...); !bytes.Equal(got, want) {
		t.Fatalf("client got %d bytes ending %x, want the PUBLISH (%d bytes) and then %x", len(got), got[max(0, len(got)-8):], len(pkt), final)
	}
	if r := tp.wait(t); r.End != "kick" {
		t.Errorf("End = %q, want kick", r.End)
	}
}

// TestIdleDisconnect: the idle limit tells a 5.0 client 0x8D Keep Alive
// timeout [MQTT-3.1.2-22] and a 3.1.1 client nothing.
func TestIdleDisconnect(t *testing.T) {
	for _, level := range []byte{mqtt.Level311, mqtt.Level5} {
		h := newHarness(t, 1)
		tp := h.pair(pipe.Options{Idle: 100 * time.Millisecond, Level: level})
		want := pipe.Goodbye(level, mqtt.KeepAliveTimeout)
		if got := packettest.ReadToEOF(t, tp.client); !bytes.Equal(got, want) {
			t.Fatalf("level %d: client got %x, want %x", level, got, want)
		}
		if r := tp.wait(t); r.End != pipe.IdleTimeout {
			t.Errorf("level %d: End = %q, want %q", level, r.End, pipe.IdleTimeout)
		}
	}
}

// TestMaxPacketSize: the first packet from the client larger than the
// limit is not passed on, not even its Fixed Header; the client is told
// 0x95 Packet too large.
func TestMaxPacketSize(t *testing.T) {
	h := newHarness(t, 1)
	tp := h.pair(pipe.Options{Idle: time.Minute, Level: mqtt.Level5, MaxPacketSize: 100})
	small, big := publish(50), publish(200)
	write(t, tp.client, append(append([]byte{}, small...), big...))
	want := pipe.Goodbye(mqtt.Level5, mqtt.PacketTooLarge)
	if got := packettest.ReadToEOF(t, tp.client); !bytes.Equal(got, want) {
		t.Fatalf("client got %x, want %x", got, want)
	}
	if r := tp.wait(t); r.End != pipe.PacketTooLarge {
		t.Errorf("End = %q, want %q", r.End, pipe.PacketTooLarge)
	}
	if got := packettest.ReadToEOF(t, tp.broker); !bytes.Equal(got, small) {
		t.Errorf("broker got %d bytes, want the small packet (%d bytes) only", len(got), len(small))
	}
}
