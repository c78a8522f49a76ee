package mqtt

import (
	"fmt"
	"testing"
	"unsafe"
)

// framerTests are streams of whole packets and where each packet ends.
// The Fixed Header is the packet type byte and the Remaining Length, a
// Variable Byte Integer of one to four bytes (3.1.1 section 2.2, 5.0
// sections 1.5.5 and 2.1).
var framerTests = []struct {
	name string
	rule string // the statement or section the stream exercises
	in   []byte
	ends []int // offsets just past each packet
}{
	{"PINGREQ has no body", "3.1.1 section 3.12: Remaining Length 0", unhex("c000"), []int{2}},
	{"two PINGREQ", "3.1.1 section 3.12", unhex("c000c000"), []int{2, 4}},
	{"PUBLISH QoS 0", "5.0 section 3.3", unhex("3005000174ab00"), []int{7}},
	{"one-byte length 127", "5.0 section 1.5.5: 0x7F in one byte", append(unhex("307f"), make([]byte, 127)...), []int{129}},
	{"two-byte length 128", "5.0 section 1.5.5: 0x80 0x01", append(unhex("308001"), make([]byte, 128)...), []int{131}},
	{"three-byte length 16384", "5.0 section 1.5.5: 0x80 0x80 0x01", append(unhex("30808001"), make([]byte, 16384)...), []int{16388}},
	{"longer encoding than needed", "[MQTT-1.5.5-1] binds the sender; a proxy passes 0x80 0x00 on", unhex("c08000e000"), []int{3, 5}},
	{"DISCONNECT 5.0 with reason", "5.0 section 3.14", unhex("e0019ce000"), []int{3, 5}},
	{"SUBSCRIBE after CONNACK-sized packet", "3.1.1 section 3.8", unhex("200200008206000100016100"), []int{4, 12}},
}

func TestFramerBoundaries(t *testing.T) {
	for _, tt := range framerTests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, then one byte at a time: the boundaries do not depend
			// on how the stream is cut into reads.
			var whole Framer
			if n, size := whole.Feed(tt.in, 0); n != len(tt.in) || size != 0 || !whole.AtBoundary() {
				t.Fatalf("%s: Feed(all) = %d, %d, at boundary %v; want %d, 0, true", tt.rule, n, size, whole.AtBoundary(), len(tt.in))
			}
			var f Framer
			var got []int
			for i := range tt.in {
				f.Feed(tt.in[i:i+1], 0)
				if f.AtBoundary() {
					got = append(got, i+1)
				}
			}
			if !equalInts(got, tt.ends) {
				t.Errorf("%s: boundaries byte by byte = %v, want %v", tt.rule, got, tt.ends)
			}
		})
	}
}

func TestFramerFinish(t *testing.T) {
	for _, tt := range framerTests {
		t.Run(tt.name, func(t *testing.T) {
			// From every cut inside the first packet, Finish stops where it ends.
			for cut := 1; cut < tt.ends[0]; cut++ {
				var f Framer
				f.Feed(tt.in[:cut], 0)
				if f.AtBoundary() {
					t.Fatalf("at boundary after %d bytes of a %d-byte packet", cut, tt.ends[0])
				}
				n, done := f.Finish(tt.in[cut:])
				if !done || cut+n != tt.ends[0] || !f.AtBoundary() {
					t.Fatalf("cut %d: Finish = %d, %v; want %d, true", cut, n, done, tt.ends[0]-cut)
				}
				// And with the stream cut again before the end, it waits.
				var g Framer
				g.Feed(tt.in[:cut], 0)
				if n, done := g.Finish(tt.in[cut : tt.ends[0]-1]); done || n != tt.ends[0]-1-cut {
					t.Fatalf("cut %d, short: Finish = %d, %v; want %d, false", cut, n, done, tt.ends[0]-1-cut)
				}
			}
			var f Framer
			if n, done := f.Finish(tt.in); n != 0 || !done {
				t.Errorf("Finish at a boundary = %d, %v; want 0, true", n, done)
			}
		})
	}
}

func TestFramerMaxSize(t *testing.T) {
	small := unhex("c000")                               // 2 bytes
	big := append(unhex("308001"), make([]byte, 128)...) // 131 bytes
	stream := append(append(append([]byte{}, small...), big...), small...)
	var f Framer
	if n, size := f.Feed(stream, 131); n != len(stream) || size != 0 {
		t.Fatalf("max 131: Feed = %d, %d; want %d, 0", n, size, len(stream))
	}
	f = Framer{}
	if n, size := f.Feed(stream, 130); n != 2 || size != 131 {
		t.Fatalf("max 130: Feed = %d, %d; want 2 (the packet's start), 131", n, size)
	}
	// A header split over two reads starts before the second.
	f = Framer{}
	f.Feed(stream[:4], 130)
	if n, size := f.Feed(stream[4:], 130); n != 0 || size != 131 {
		t.Fatalf("split header: Feed = %d, %d; want 0, 131", n, size)
	}
}

func TestFramerLost(t *testing.T) {
	// A fifth Remaining Length byte: no MQTT stream has one (3.1.1 section
	// 2.2.3, 5.0 section 1.5.5).
	var f Framer
	if n, _ := f.Feed(unhex("30ffffffff01"), 0); n != 6 || !f.Lost() || f.AtBoundary() {
		t.Fatalf("Feed = %d, lost %v, at boundary %v; want 6, true, false", n, f.Lost(), f.AtBoundary())
	}
	if n, done := f.Finish(unhex("c000")); done || !f.Lost() {
		t.Fatalf("Finish on a lost stream = %d, %v; want not done", n, done)
	}
	// The largest Remaining Length, four bytes, is not lost.
	f = Framer{}
	f.Feed(unhex("30ffffff7f"), 0)
	if f.Lost() || f.AtBoundary() {
		t.Fatalf("268435455: lost %v, at boundary %v; want false, false", f.Lost(), f.AtBoundary())
	}
}

func TestFramerSize(t *testing.T) {
	if got := unsafe.Sizeof(Framer{}); got != 4 {
		t.Fatalf("Framer is %d bytes, want 4: a pair keeps two", got)
	}
}

func equalInts(a, b []int) bool {
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

// FuzzFramer checks the Framer against FrameLen walking the whole stream
// at once: for any bytes cut into reads anywhere (the first byte of the
// input picks the read size), the Framer is at a boundary exactly where
// FrameLen's walk ends a packet, and lost exactly where FrameLen reports a
// malformed Remaining Length. The seed corpus is in testdata/fuzz/FuzzFramer.
func FuzzFramer(f *testing.F) {
	for _, tt := range framerTests {
		f.Add(append([]byte{3}, tt.in...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		step := int(in[0]%17) + 1
		stream := in[1:]
		// The reference: packet ends by FrameLen over the whole stream.
		ends := map[int]bool{0: true}
		lostAt := -1
		for off := 0; off < len(stream); {
			n, err := FrameLen(stream[off:])
			if err == ErrIncomplete {
				break
			}
			if err != nil {
				lostAt = off
				break
			}
			off += n
			if off <= len(stream) {
				ends[off] = true
			}
		}
		var fr Framer
		for i := 0; i < len(stream); i += step {
			chunk := stream[i:min(i+step, len(stream))]
			if n, size := fr.Feed(chunk, 0); n != len(chunk) || size != 0 {
				t.Fatalf("Feed without max = %d, %d; want %d, 0", n, size, len(chunk))
			}
			end := i + len(chunk)
			if fr.Lost() {
				if lostAt < 0 {
					t.Fatalf("lost after %d bytes; FrameLen finds no malformed length in %x", end, stream)
				}
				return
			}
			// Inside a chunk boundaries are not visible; at its end they are.
			if fr.AtBoundary() != ends[end] {
				t.Fatalf("after %d bytes in reads of %d: at boundary %v, FrameLen says %v\n%x", end, step, fr.AtBoundary(), ends[end], stream)
			}
		}
		if lostAt >= 0 && !fr.Lost() {
			t.Fatalf("FrameLen finds a malformed length at %d; the Framer did not\n%x", lostAt, stream)
		}
	})
}

// BenchmarkFramerFeed follows a read of 64-byte PUBLISH packets, the
// message the data path's benchmarks send: what following the boundaries
// adds to each read.
//
//	go test -run '^$' -bench FramerFeed ./mqtt/
func BenchmarkFramerFeed(b *testing.B) {
	pkt := append([]byte{0x30, 62}, make([]byte, 62)...)
	for _, n := range []int{1, 16} {
		buf := make([]byte, 0, n*len(pkt))
		for range n {
			buf = append(buf, pkt...)
		}
		b.Run(fmt.Sprintf("%d-packets", n), func(b *testing.B) {
			var f Framer
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				f.Feed(buf, 0)
			}
		})
	}
}
