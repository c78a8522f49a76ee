package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// peer is the fuzzed client's side as the Conn reads it: the bytes, then
// EOF; what the Conn writes (alerts, a KeyUpdate) is dropped.
type peer struct {
	net.Conn
	r io.Reader
}

func (p *peer) Read(b []byte) (int, error)       { return p.r.Read(b) }
func (p *peer) Write(b []byte) (int, error)      { return len(b), nil }
func (p *peer) SetWriteDeadline(time.Time) error { return nil }

var (
	fuzzClientSecret = bytes.Repeat([]byte{1}, 32)
	fuzzServerSecret = bytes.Repeat([]byte{2}, 32)
)

// seal is one record as the client would send it under h.
func seal(h *half, typ byte, data []byte) []byte {
	b := []byte{typeApplication, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(b[3:], uint16(len(data)+1+tagLen))
	b = append(append(b, data...), typ)
	nonce := h.nonce(h.seq)
	h.seq++
	return h.aead().Seal(b[:headerLen], nonce[:], b[headerLen:], b[:headerLen])
}

// FuzzRead feeds a carried connection whatever a client might send after
// the handshake: it reads until an error and must neither panic nor
// return more than it was asked for. The seeds are well-formed records
// (data, a KeyUpdate asking for ours, then data under the next key, a
// close_notify) and cut or altered ones.
func FuzzRead(f *testing.F) {
	client, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	var good []byte
	good = append(good, seal(&client, typeApplication, []byte("\x30\x05\x00\x01tab"))...)
	good = append(good, seal(&client, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 1})...)
	client.update()
	good = append(good, seal(&client, typeApplication, bytes.Repeat([]byte{0xc0, 0}, 100))...)
	good = append(good, seal(&client, typeAlert, []byte{1, 0})...)
	f.Add(good)
	f.Add(good[:len(good)/2])
	bad := bytes.Clone(good)
	bad[7] ^= 1
	f.Add(bad)
	f.Add([]byte{typeApplication, 3, 3, 0xff, 0xff})
	// The edges of TestReadEdges: user_canceled then data, a plaintext
	// change_cipher_spec, a renegotiating ClientHello, a KeyUpdate split
	// across two records, an empty handshake record.
	edge, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	f.Add(append(seal(&edge, typeAlert, []byte{1, alertUserCanceled}), seal(&edge, typeApplication, []byte("x"))...))
	f.Add([]byte{typeCCS, 3, 3, 0, 1, 1})
	edge, _ = newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	f.Add(seal(&edge, typeHandshake, []byte{1, 0, 0, 2, 3, 3}))
	edge, _ = newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	f.Add(append(seal(&edge, typeHandshake, []byte{msgKeyUpdate, 0, 0}), seal(&edge, typeHandshake, []byte{1, 1})...))
	edge, _ = newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	f.Add(seal(&edge, typeHandshake, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
		out, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzServerSecret)
		c := &Conn{Conn: &peer{r: bytes.NewReader(b)}, in: in, out: out}
		p := make([]byte, 100)
		for range 10000 {
			n, err := c.Read(p)
			if n > len(p) {
				t.Fatalf("read %d into %d", n, len(p))
			}
			if err != nil {
				return
			}
		}
	})
}

// TestReadRecords: FuzzRead's first seed reads as its data, across the
// KeyUpdate, then EOF at the close_notify; a flipped bit is a bad MAC.
func TestReadRecords(t *testing.T) {
	client, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	var b []byte
	b = append(b, seal(&client, typeApplication, []byte("\x30\x05\x00\x01tab"))...)
	b = append(b, seal(&client, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 1})...)
	client.update()
	b = append(b, seal(&client, typeApplication, []byte("after"))...)
	b = append(b, seal(&client, typeAlert, []byte{1, 0})...)
	for _, tc := range []struct {
		name string
		flip int // byte to alter, -1 none
		want string
		err  error
	}{
		{"whole", -1, "\x30\x05\x00\x01tabafter", io.EOF},
		{"bad MAC", 8, "", errBadRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Clone(b)
			if tc.flip >= 0 {
				in[tc.flip] ^= 1
			}
			rin, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
			out, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzServerSecret)
			c := &Conn{Conn: &peer{r: bytes.NewReader(in)}, in: rin, out: out}
			got, err := io.ReadAll(c)
			if tc.err == io.EOF && err == nil {
				err = io.EOF // ReadAll hides EOF
			}
			if string(got) != tc.want || err != tc.err {
				t.Errorf("read %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}
