package loadgen

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

func TestPublishRoundTrip(t *testing.T) {
	for _, size := range []int{8, 64, 200, 1024, 20000} {
		payload := bytes.Repeat([]byte{0xab}, size)
		pkt := appendPublish(nil, "mqbench/c-1", payload)
		got, ok := publishPayload(pkt)
		if !ok || !bytes.Equal(got, payload) {
			t.Fatalf("size %d: publishPayload = %d bytes, %v", size, len(got), ok)
		}
	}
	// QoS 1 carries a packet identifier: not ours to parse.
	pkt := appendPublish(nil, "t", []byte("12345678"))
	pkt[0] |= 0x02
	if _, ok := publishPayload(pkt); ok {
		t.Error("publishPayload accepted a QoS 1 PUBLISH")
	}
}

func TestSubscribeBytes(t *testing.T) {
	got := appendSubscribe(nil, 1, "a/b")
	want := []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 0}
	if !bytes.Equal(got, want) {
		t.Errorf("appendSubscribe = % x, want % x", got, want)
	}
}

// TestFrameReaderSplitsAndJoins feeds packets one byte at a time and in one
// large write, through a buffer smaller than one of them.
func TestFrameReaderSplitsAndJoins(t *testing.T) {
	var stream []byte
	stream = appendPublish(stream, "t", bytes.Repeat([]byte{1}, 300))
	stream = append(stream, firstPingresp, 0)
	stream = appendPublish(stream, "t", []byte("abcdefgh"))

	for _, chunk := range []int{1, len(stream)} {
		client, server := net.Pipe()
		go func() {
			for b := stream; len(b) > 0; {
				n := min(chunk, len(b))
				if _, err := server.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
			server.Close()
		}()
		fr := newFrameReader(client, 16)
		var sizes []int
		for {
			pkt, err := fr.next()
			if err != nil {
				break
			}
			sizes = append(sizes, len(pkt))
		}
		client.Close()
		if want := []int{1 + 2 + 3 + 300, 2, 1 + 1 + 3 + 8}; !slicesEqual(sizes, want) {
			t.Errorf("chunk %d: packet sizes %v, want %v", chunk, sizes, want)
		}
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPickAddrIsStable(t *testing.T) {
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	seen := map[string]bool{}
	for i := range 300 {
		id := "c-" + strings.Repeat("x", i%7) + string(rune('a'+i%26))
		a := PickAddr(addrs, id)
		if PickAddr(addrs, id) != a {
			t.Fatalf("PickAddr(%q) is not deterministic", id)
		}
		seen[a] = true
	}
	if len(seen) != 3 {
		t.Errorf("PickAddr used %d of 3 addresses", len(seen))
	}
	if PickAddr(addrs[:1], "anything") != addrs[0] {
		t.Error("a single address must always be picked")
	}
}

func TestErrorKind(t *testing.T) {
	_, err := net.DialTimeout("tcp", "127.0.0.1:1", time.Second)
	if err == nil {
		t.Skip("something listens on port 1")
	}
	if got := errorKind(err); got != "connection refused" {
		t.Errorf("errorKind(%v) = %q", err, got)
	}
}
