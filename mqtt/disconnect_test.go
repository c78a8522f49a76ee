package mqtt

import "testing"

func TestEndsWithDisconnect(t *testing.T) {
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
		{"5.0 reason code 0x00", []byte{0xe0, 0x01, 0x00}, true},
		{"5.0 reason code 0x04, will (the broker's to publish)", []byte{0xe0, 0x01, 0x04}, true},
		{"5.0 reason code and empty properties", []byte{0xe0, 0x02, 0x00, 0x00}, true},
		{"after a PUBLISH", cat(publish, []byte{0xe0, 0x00}), true},
		{"PINGREQ, then DISCONNECT", []byte{0xc0, 0x00, 0xe0, 0x00}, true},
		{"empty", nil, false},
		{"PUBLISH only", publish, false},
		{"PINGREQ", []byte{0xc0, 0x00}, false},
		{"DISCONNECT then a PINGREQ", []byte{0xe0, 0x00, 0xc0, 0x00}, false},
		{"a payload that ends like a DISCONNECT", []byte{0x30, 0x06, 0x00, 0x01, 't', 'x', 0xe0, 0x00}, false},
		{"reserved flags are not a DISCONNECT [MQTT-3.14.1-1]", []byte{0xe1, 0x00}, false},
		{"5.0 with properties: not recognised", []byte{0xe0, 0x05, 0x00, 0x03, 0x11, 0x00, 0x00}, false},
		{"incomplete packet before it", []byte{0x30, 0x09, 0x00, 0xe0, 0x00}, false},
		{"malformed length before it", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0xe0, 0x00}, false},
	} {
		if got := EndsWithDisconnect(tt.in); got != tt.want {
			t.Errorf("%s: EndsWithDisconnect(% x) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
}

// FuzzEndsWithDisconnect checks EndsWithDisconnect against a walk of the
// whole input by FrameLen. The seed corpus is in
// testdata/fuzz/FuzzEndsWithDisconnect.
func FuzzEndsWithDisconnect(f *testing.F) {
	f.Add([]byte{0xe0, 0x00})
	f.Add([]byte{0x30, 0x02, 0xe0, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		want := false
		for off := 0; off < len(in); {
			n, err := FrameLen(in[off:])
			if err != nil || off+n > len(in) {
				want = false
				break
			}
			rl := n - 2
			want = off+n == len(in) && in[off] == 0xe0 && n >= 2 && in[off+1] == byte(rl) && rl <= 2
			off += n
		}
		if got := EndsWithDisconnect(in); got != want {
			t.Fatalf("EndsWithDisconnect(% x) = %v, want %v", in, got, want)
		}
	})
}
