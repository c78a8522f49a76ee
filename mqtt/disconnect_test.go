package mqtt

import "testing"

// endsWithDisconnect follows in through a Framer cut into reads of step
// bytes, as a proxy's client direction does with FeedLast, and reports
// whether it would take the stream's end for a client that has closed
// [MQTT-3.14.4-1]: the last packet begun is a DISCONNECT, and it is whole.
func endsWithDisconnect(in []byte, step int) bool {
	var f Framer
	bye := false
	for i := 0; i < len(in); i += step {
		b := in[i:min(i+step, len(in))]
		if _, _, last := f.FeedLast(b, 0); last >= 0 {
			bye = IsDisconnect(b[last])
		}
	}
	return bye && f.AtBoundary()
}

func TestFeedLastDisconnect(t *testing.T) {
	publish := []byte{0x30, 0x05, 0x00, 0x01, 't', 'h', 'i'}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for _, tt := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"3.1.1 DISCONNECT [MQTT-3.14.4-1]", []byte{0xe0, 0x00}, true},
		{"5.0 reason code 0x00 (5.0 section 3.14.2.1)", []byte{0xe0, 0x01, 0x00}, true},
		{"5.0 reason code 0x04, will (the broker's to publish)", []byte{0xe0, 0x01, 0x04}, true},
		{"5.0 reason code and empty properties", []byte{0xe0, 0x02, 0x00, 0x00}, true},
		{"5.0 with a Session Expiry Interval (5.0 section 3.14.2.2.2)", []byte{0xe0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3c}, true},
		{"5.0 with a Reason String (5.0 section 3.14.2.2.3)", []byte{0xe0, 0x08, 0x00, 0x06, 0x1f, 0x00, 0x03, 'b', 'y', 'e'}, true},
		{"after a PUBLISH", cat(publish, []byte{0xe0, 0x00}), true},
		{"PINGREQ, then DISCONNECT", []byte{0xc0, 0x00, 0xe0, 0x00}, true},
		{"empty", nil, false},
		{"PUBLISH only", publish, false},
		{"PINGREQ", []byte{0xc0, 0x00}, false},
		{"DISCONNECT then a PINGREQ", []byte{0xe0, 0x00, 0xc0, 0x00}, false},
		{"a payload that ends like a DISCONNECT", []byte{0x30, 0x06, 0x00, 0x01, 't', 'x', 0xe0, 0x00}, false},
		{"reserved flags are not a DISCONNECT [MQTT-3.14.1-1]", []byte{0xe1, 0x00}, false},
		{"a DISCONNECT cut short", []byte{0xe0, 0x05, 0x00, 0x03, 0x11}, false},
		{"incomplete packet before it", []byte{0x30, 0x09, 0x00, 0xe0, 0x00}, false},
		{"malformed length before it (5.0 section 1.5.5)", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0xe0, 0x00}, false},
	} {
		// Whole, then in reads of every size: a read that begins inside a
		// packet, or a DISCONNECT cut over two reads, decides the same.
		for step := len(tt.in); step >= 1; step-- {
			if got := endsWithDisconnect(tt.in, step); got != tt.want {
				t.Errorf("%s, in reads of %d: ends with a DISCONNECT %v, want %v (% x)", tt.name, step, got, tt.want, tt.in)
			}
		}
		if len(tt.in) == 0 && endsWithDisconnect(nil, 1) {
			t.Errorf("%s: ends with a DISCONNECT", tt.name)
		}
	}
}

// FuzzFeedLast checks FeedLast, as endsWithDisconnect uses it, against a
// walk of the whole input by FrameLen: the first byte picks the read
// size, the rest is the stream. The seed corpus is in
// testdata/fuzz/FuzzFeedLast.
func FuzzFeedLast(f *testing.F) {
	f.Add([]byte{1, 0xe0, 0x00})
	f.Add([]byte{3, 0x30, 0x02, 0x00, 0x00, 0xe0, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		step, stream := int(in[0]%17)+1, in[1:]
		want := false
		for off := 0; off < len(stream); {
			n, err := FrameLen(stream[off:])
			if err != nil || off+n > len(stream) {
				want = false
				break
			}
			want = off+n == len(stream) && IsDisconnect(stream[off])
			off += n
		}
		if got := endsWithDisconnect(stream, step); got != want {
			t.Fatalf("in reads of %d: ends with a DISCONNECT %v, FrameLen's walk says %v\n% x", step, got, want, stream)
		}
	})
}
