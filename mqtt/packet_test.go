package mqtt

import (
	"errors"
	"testing"

	"github.com/mqgate/mqgate/internal/packettest"
)

func TestFrameLen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		b       []byte
		want    int
		wantErr error // ErrIncomplete, or a *ProtocolError of this kind
	}{
		{name: "empty", b: nil, wantErr: ErrIncomplete},
		{name: "first byte only", b: unhex("10"), wantErr: ErrIncomplete},
		{name: "length continues past the buffer", b: unhex("10 80"), wantErr: ErrIncomplete},
		{name: "three length bytes continue past the buffer", b: unhex("10 ffffff"), wantErr: ErrIncomplete},
		{name: "zero", b: unhex("e0 00"), want: 2},
		{name: "bytes after the packet are not counted", b: unhex("e0 00 aa bb"), want: 2},
		{name: "largest one-byte length", b: unhex("10 7f"), want: 1 + 1 + 127},
		{name: "smallest two-byte length", b: unhex("10 8001"), want: 1 + 2 + 128},
		{name: "largest two-byte length", b: unhex("10 ff7f"), want: 1 + 2 + 16383},
		{name: "smallest three-byte length", b: unhex("10 808001"), want: 1 + 3 + 16384},
		{name: "smallest four-byte length", b: unhex("10 80808001"), want: 1 + 4 + 2097152},
		{name: "largest length", b: unhex("10 ffffff7f"), want: 1 + 4 + MaxRemainingLength},
		{name: "not minimally encoded", b: unhex("10 8000"), want: 3},
		{name: "captured CONNECT", b: mosquitto311, want: len(mosquitto311)},
		{name: "five length bytes", b: unhex("10 ffffffff01"), wantErr: &ProtocolError{Kind: KindMalformed}},
		{name: "four length bytes all continuing", b: unhex("10 80808080"), wantErr: &ProtocolError{Kind: KindMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := FrameLen(tt.b)
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil || got != tt.want {
					t.Errorf("FrameLen(%x) = %d, %v; want %d, nil", tt.b, got, err, tt.want)
				}
			case *ProtocolError:
				var perr *ProtocolError
				if !errors.As(err, &perr) || perr.Kind != want.Kind {
					t.Errorf("FrameLen(%x) = %d, %v; want a %s *ProtocolError", tt.b, got, err, want.Kind)
				}
			default:
				if err != want {
					t.Errorf("FrameLen(%x) = %d, %v; want %v", tt.b, got, err, want)
				}
			}
		})
	}
}

func TestVarint(t *testing.T) {
	t.Parallel()
	for _, v := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		enc := appendVarint(nil, v)
		if want := packettest.AppendLength(nil, v); string(enc) != string(want) {
			t.Errorf("appendVarint(%d) = %x, want %x", v, enc, want)
		}
		if len(enc) != varintLen(v) {
			t.Errorf("varintLen(%d) = %d, want %d", v, varintLen(v), len(enc))
		}
		got, size, err := decodeVarint(enc)
		if err != nil || got != v || size != len(enc) {
			t.Errorf("decodeVarint(%x) = %d, %d, %v; want %d, %d, nil", enc, got, size, err, v, len(enc))
		}
	}
}

func TestPacketTypeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		t    PacketType
		want string
	}{
		{0, "PacketType(0)"},
		{TypeConnect, "CONNECT"},
		{TypeConnack, "CONNACK"},
		{TypePublish, "PUBLISH"},
		{TypePuback, "PUBACK"},
		{TypePubrec, "PUBREC"},
		{TypePubrel, "PUBREL"},
		{TypePubcomp, "PUBCOMP"},
		{TypeSubscribe, "SUBSCRIBE"},
		{TypeSuback, "SUBACK"},
		{TypeUnsubscribe, "UNSUBSCRIBE"},
		{TypeUnsuback, "UNSUBACK"},
		{TypePingreq, "PINGREQ"},
		{TypePingresp, "PINGRESP"},
		{TypeDisconnect, "DISCONNECT"},
		{TypeAuth, "AUTH"},
		{16, "PacketType(16)"},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("PacketType(%d).String() = %q, want %q", byte(tt.t), got, tt.want)
		}
	}
}
