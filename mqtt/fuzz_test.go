package mqtt

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzParseConnect checks that ParseConnect never panics, that every error
// is a *ProtocolError of a known kind, and that what it accepts AppendConnect
// writes back byte for byte (when the Remaining Length was minimal) and
// ParseConnect reads again to the same Connect. The seed corpus is in
// testdata/fuzz/FuzzParseConnect; the test tables add to it.
func FuzzParseConnect(f *testing.F) {
	for _, tt := range validConnectTests {
		f.Add(tt.pkt)
	}
	for _, tt := range invalidConnectTests {
		f.Add(tt.pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c, err := ParseConnect(pkt)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseConnect returned %+v with error %v", c, err)
			}
			checkFuzzedError(t, err)
			return
		}
		out := AppendConnect(nil, c)
		if minimalRemainingLength(pkt) && !bytes.Equal(out, pkt) {
			t.Fatalf("AppendConnect(ParseConnect(p)) differs from p\n got %x\nwant %x", out, pkt)
		}
		again, err := ParseConnect(out)
		if err != nil {
			t.Fatalf("ParseConnect(AppendConnect(c)) error: %v\n c %+v\n packet %x", err, c, out)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("ParseConnect(AppendConnect(c)) = %+v, want %+v", again, c)
		}
	})
}

// checkFuzzedError checks the invariants of every ParseConnect error.
func checkFuzzedError(t *testing.T, err error) {
	var perr *ProtocolError
	if !errors.As(err, &perr) {
		t.Fatalf("error %v is a %T, want *ProtocolError", err, err)
	}
	switch perr.Kind {
	case KindNotMQTT, KindMalformed, KindProtocol, KindUnsupportedVersion, KindClientIDRejected:
	default:
		t.Fatalf("error %v has unknown kind %q", err, perr.Kind)
	}
	if perr.Reason == "" {
		t.Fatalf("error %#v has no reason", perr)
	}
	// Before 5.0 a server answers only an unsupported level or a rejected
	// client identifier; the rest is closed without a CONNACK
	// [MQTT-3.1.4-1].
	if perr.Level != Level5 && perr.Code != 0 &&
		perr.Kind != KindUnsupportedVersion && perr.Kind != KindClientIDRejected {
		t.Fatalf("error %v at level %d has code %v, want 0", err, perr.Level, perr.Code)
	}
	if perr.Code != 0 && perr.Code < 0x80 {
		t.Fatalf("error %v has code %v, which is not a refusal", err, perr.Code)
	}
}

// FuzzFrameLen checks FrameLen against the decoding algorithm of 5.0
// section 1.5.5.
func FuzzFrameLen(f *testing.F) {
	for _, seed := range []string{"", "10", "1000", "e000aabb", "107f", "108001", "10ff7f", "10ffffff7f", "10ffffffff01", "108080808001", "108000", "10808080"} {
		f.Add(unhex(seed))
	}
	f.Add(mosquitto5Will)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := FrameLen(b)
		wantN, incomplete, malformed := referenceFrameLen(b)
		switch {
		case incomplete:
			if err != ErrIncomplete {
				t.Fatalf("FrameLen(%x) = %d, %v; want ErrIncomplete", b, n, err)
			}
		case malformed:
			var perr *ProtocolError
			if !errors.As(err, &perr) || perr.Kind != KindMalformed {
				t.Fatalf("FrameLen(%x) = %d, %v; want a malformed *ProtocolError", b, n, err)
			}
		default:
			if err != nil || n != wantN {
				t.Fatalf("FrameLen(%x) = %d, %v; want %d, nil", b, n, err, wantN)
			}
			if more, err := FrameLen(append(b, 0xaa)); err != nil || more != n {
				t.Fatalf("FrameLen(%x + one byte) = %d, %v; want %d, nil", b, more, err, n)
			}
		}
	})
}

// referenceFrameLen decodes the Remaining Length as the non-normative
// algorithm of 5.0 section 1.5.5 does.
func referenceFrameLen(b []byte) (n int, incomplete, malformed bool) {
	if len(b) == 0 {
		return 0, true, false
	}
	multiplier, value := 1, 0
	for i := 1; ; i++ {
		if multiplier > 128*128*128 {
			return 0, false, true
		}
		if i >= len(b) {
			return 0, true, false
		}
		value += int(b[i]&127) * multiplier
		if b[i]&128 == 0 {
			return 1 + i + value, false, false
		}
		multiplier *= 128
	}
}
