package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scripted is the client's side as a Conn sees it: each Read returns the
// next step (bytes, or a Temporary error, as a parked socket with nothing
// to read does), then EOF; Writes are kept, and fail once failAfter bytes
// have gone when it is set.
type scripted struct {
	net.Conn
	steps     []step
	wrote     bytes.Buffer
	failAfter int // >0: writes fail past this many bytes
}

type step struct {
	b   []byte
	err error
}

type temporary struct{}

func (temporary) Error() string   { return "nothing to read yet" }
func (temporary) Temporary() bool { return true }
func (temporary) Timeout() bool   { return false }

var errWriteFailed = errors.New("connection reset by peer")

func (s *scripted) Read(b []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	st := &s.steps[0]
	if st.err != nil {
		s.steps = s.steps[1:]
		return 0, st.err
	}
	n := copy(b, st.b)
	st.b = st.b[n:]
	if len(st.b) == 0 {
		s.steps = s.steps[1:]
	}
	return n, nil
}

func (s *scripted) Write(b []byte) (int, error) {
	if s.failAfter > 0 && s.wrote.Len()+len(b) > s.failAfter {
		n := s.failAfter - s.wrote.Len()
		s.wrote.Write(b[:n])
		return n, errWriteFailed
	}
	return s.wrote.Write(b)
}

func (s *scripted) SetWriteDeadline(time.Time) error { return nil }

// records opens what the Conn wrote with the server's secret: the inner
// plaintexts, content type last, in order.
func records(t *testing.T, b []byte) [][]byte {
	t.Helper()
	h, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzServerSecret)
	var out [][]byte
	for len(b) > 0 {
		if len(b) < headerLen {
			t.Fatalf("%d bytes after the last record", len(b))
		}
		n := headerLen + (int(b[3])<<8 | int(b[4]))
		inner, err := openRecord(h.aead(), &h, h.seq, bytes.Clone(b[:n]))
		if err != nil {
			// The KeyUpdate answer moved the server's key on.
			h.update()
			if inner, err = openRecord(h.aead(), &h, h.seq, bytes.Clone(b[:n])); err != nil {
				t.Fatalf("record %d does not open: %v", len(out), err)
			}
		}
		h.seq++
		out = append(out, inner)
		b = b[n:]
	}
	return out
}

func newTestConn(steps ...step) (*Conn, *scripted) {
	in, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	out, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzServerSecret)
	s := &scripted{steps: steps}
	return &Conn{Conn: s, in: in, out: out}, s
}

// TestReadEdges: what a client may send after the handshake (RFC 8446),
// read by a Conn: the plaintext it yields, the error it ends with, and the
// alert it sends (none: 0).
func TestReadEdges(t *testing.T) {
	t.Parallel()
	client := func() *half { h, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret); return &h }
	data := func(h *half, s string) []byte { return seal(h, typeApplication, []byte(s)) }
	alert := func(h *half, level, desc byte) []byte { return seal(h, typeAlert, []byte{level, desc}) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	oneByOne := func(b []byte) []step { // a byte per read, nothing to read between them
		var out []step
		for i := range b {
			out = append(out, step{b: b[i : i+1]}, step{err: temporary{}})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		steps func() []step
		want  string
		err   string // substring of the final error; "EOF" is io.EOF
		alert byte
	}{
		{"records a byte at a time, parked between [RFC 8446 5.1]", func() []step {
			h := client()
			return oneByOne(cat(data(h, "hello "), data(h, "world"), alert(h, 1, 0)))
		}, "hello world", "EOF", 0},
		{"empty application records are skipped [RFC 8446 5.4]", func() []step {
			h := client()
			return []step{{b: cat(data(h, ""), data(h, ""), data(h, "x"), alert(h, 1, 0))}}
		}, "x", "EOF", 0},
		{"user_canceled is ignored, as crypto/tls does [RFC 8446 6.1]", func() []step {
			h := client()
			return []step{{b: cat(alert(h, 1, alertUserCanceled), data(h, "on"), alert(h, 1, 0))}}
		}, "on", "EOF", 0},
		{"17 user_canceled in a row fail", func() []step {
			h := client()
			var b []byte
			for range maxIgnored + 1 {
				b = append(b, alert(h, 1, alertUserCanceled)...)
			}
			return []step{{b: b}}
		}, "", "too many ignored records", alertUnexpectedMessage},
		{"a fatal alert ends the read [RFC 8446 6.2]", func() []step {
			h := client()
			return []step{{b: cat(data(h, "a"), alert(h, 2, 42))}}
		}, "a", "peer sent alert 42", 0},
		{"malformed alert", func() []step {
			h := client()
			return []step{{b: seal(h, typeAlert, []byte{2})}}
		}, "", "malformed alert", alertDecodeError},
		{"plaintext change_cipher_spec after the handshake [RFC 8446 5]", func() []step {
			return []step{{b: []byte{typeCCS, 3, 3, 0, 1, 1}}}
		}, "", "unprotected record of type 20", alertUnexpectedMessage},
		{"plaintext alert after the handshake", func() []step {
			return []step{{b: []byte{typeAlert, 3, 3, 0, 2, 2, 40}}}
		}, "", "unprotected record of type 21", alertUnexpectedMessage},
		{"record longer than 2^14+256 [RFC 8446 5.2]", func() []step {
			return []step{{b: []byte{typeApplication, 3, 3, 0x41, 0x01}}}
		}, "", "oversized record", alertRecordOverflow},
		{"plaintext longer than 2^14 [RFC 8446 5.1]", func() []step {
			h := client()
			return []step{{b: seal(h, typeApplication, make([]byte, maxPlaintext+1))}}
		}, "", "oversized plaintext", alertRecordOverflow},
		{"altered ciphertext [RFC 8446 5.2]", func() []step {
			b := data(client(), "secret")
			b[headerLen+1] ^= 0x80
			return []step{{b: b}}
		}, "", "bad record MAC", alertBadRecordMAC},
		{"record shorter than its tag", func() []step {
			return []step{{b: []byte{typeApplication, 3, 3, 0, 4, 1, 2, 3, 4}}}
		}, "", "bad record MAC", alertBadRecordMAC},
		{"only padding, no content type [RFC 8446 5.4]", func() []step {
			h := client()
			b := []byte{typeApplication, 3, 3, 0, 0}
			b[4] = 3 + tagLen
			nonce := h.nonce(h.seq)
			return []step{{b: h.aead().Seal(b, nonce[:], []byte{0, 0, 0}, b[:headerLen])}}
		}, "", "no content type", alertUnexpectedMessage},
		{"renegotiation: a ClientHello after the handshake [RFC 8446 4.1.2]", func() []step {
			h := client()
			return []step{{b: cat(data(h, "before"), seal(h, typeHandshake, []byte{1, 0, 0, 2, 3, 3}))}}
		}, "before", "unexpected post-handshake message 1", alertUnexpectedMessage},
		{"a NewSessionTicket from the client [RFC 8446 4.6.1]", func() []step {
			return []step{{b: seal(client(), typeHandshake, []byte{4, 0, 0, 0})}}
		}, "", "unexpected post-handshake message 4", alertUnexpectedMessage},
		{"an empty handshake record [RFC 8446 5.1]", func() []step {
			return []step{{b: seal(client(), typeHandshake, nil)}}
		}, "", "empty handshake record", alertUnexpectedMessage},
		{"a KeyUpdate split across records", func() []step {
			h := client()
			return []step{{b: cat(seal(h, typeHandshake, []byte{msgKeyUpdate, 0, 0}), seal(h, typeHandshake, []byte{1, 0}))}}
		}, "", "split across records", alertUnexpectedMessage},
		{"data after a KeyUpdate in its record [RFC 8446 5.1]", func() []step {
			return []step{{b: seal(client(), typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0, msgKeyUpdate, 0, 0, 1, 0})}}
		}, "", "data after a KeyUpdate", alertUnexpectedMessage},
		{"KeyUpdate with request_update 2 [RFC 8446 4.6.3]", func() []step {
			return []step{{b: seal(client(), typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 2})}}
		}, "", "request_update 2", alertIllegalParameter},
		{"KeyUpdate of two bytes", func() []step {
			return []step{{b: seal(client(), typeHandshake, []byte{msgKeyUpdate, 0, 0, 2, 0, 0})}}
		}, "", "malformed KeyUpdate", alertDecodeError},
		{"KeyUpdate not requested: the next records use the next key [RFC 8446 4.6.3]", func() []step {
			h := client()
			b := cat(data(h, "a"), seal(h, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0}))
			h.update()
			return []step{{b: cat(b, data(h, "b"), alert(h, 1, 0))}}
		}, "ab", "EOF", 0},
		{"a record under the old key after a KeyUpdate", func() []step {
			h := client()
			b := seal(h, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0})
			return []step{{b: cat(b, data(h, "stale"))}}
		}, "", "bad record MAC", alertBadRecordMAC},
		{"EOF inside a record", func() []step {
			b := data(client(), "cut")
			return []step{{b: b[:len(b)-1]}}
		}, "", "unexpected EOF", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, s := newTestConn(tc.steps()...)
			var got []byte
			var err error
			p := make([]byte, 3) // smaller than a record: the rest is kept
			for {
				var n int
				n, err = c.Read(p)
				if n > len(p) {
					t.Fatalf("read %d into %d", n, len(p))
				}
				got = append(got, p[:n]...)
				var ne net.Error
				if err != nil && !(errors.As(err, &ne) && ne.Temporary()) {
					break
				}
			}
			if string(got) != tc.want {
				t.Errorf("read %q, want %q", got, tc.want)
			}
			if tc.err == "EOF" && err != io.EOF || tc.err != "EOF" && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want %s", err, tc.err)
			}
			if n, err2 := c.Read(p); n != 0 || err2 != err {
				t.Errorf("read again: %d, %v; want the same error", n, err2)
			}
			recs := records(t, s.wrote.Bytes())
			switch {
			case tc.alert == 0 && len(recs) > 0:
				t.Errorf("wrote %d records (%x), want none", len(recs), recs[0])
			case tc.alert != 0 && (len(recs) != 1 || !bytes.Equal(recs[0], []byte{2, tc.alert, typeAlert})):
				t.Errorf("wrote %x, want one fatal alert %d", recs, tc.alert)
			}
		})
	}
}

// TestKeyUpdateRequested: a KeyUpdate asking for ours is answered with a
// KeyUpdate under the old key, and what is written afterwards goes under
// the next one; after CloseWrite it is not answered (nothing follows a
// close_notify), while the read side moves on.
func TestKeyUpdateRequested(t *testing.T) {
	t.Parallel()
	for _, closed := range []bool{false, true} {
		h, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
		b := seal(&h, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 1})
		h.update()
		b = append(b, seal(&h, typeApplication, []byte("next"))...)
		c, s := newTestConn(step{b: b})
		if closed {
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		p := make([]byte, 16)
		if n, err := c.Read(p); err != nil || string(p[:n]) != "next" {
			t.Fatalf("closed %v: read %q, %v", closed, p[:n], err)
		}
		want := [][]byte{{msgKeyUpdate, 0, 0, 1, 0, typeHandshake}, []byte("after\x17")}
		if closed {
			want = [][]byte{{1, 0, typeAlert}}
		} else if _, err := c.Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
		got := records(t, s.wrote.Bytes())
		if len(got) != len(want) {
			t.Fatalf("closed %v: wrote %x, want %x", closed, got, want)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("closed %v: record %d is %x, want %x", closed, i, got[i], want[i])
			}
		}
	}
}

// TestWriteErrors: once a write fails (part of a record may have gone)
// every later write and CloseWrite fail with that error and send nothing.
func TestWriteErrors(t *testing.T) {
	t.Parallel()
	c, s := newTestConn()
	s.failAfter = 10
	if n, err := c.Write([]byte("first record")); n != 0 || !errors.Is(err, errWriteFailed) {
		t.Fatalf("write: %d, %v; want 0, the socket's error", n, err)
	}
	sent := s.wrote.Len()
	if _, err := c.Write([]byte("again")); !errors.Is(err, errWriteFailed) {
		t.Errorf("second write: %v, want the first error", err)
	}
	if err := c.CloseWrite(); !errors.Is(err, errWriteFailed) {
		t.Errorf("CloseWrite: %v, want the first error", err)
	}
	if s.wrote.Len() != sent {
		t.Errorf("wrote %d more bytes after the failure", s.wrote.Len()-sent)
	}
	// A write larger than a record fails after the records that went.
	c, s = newTestConn()
	s.failAfter = maxRecord + 10
	if n, err := c.Write(make([]byte, 2*maxPlaintext)); n != maxPlaintext || !errors.Is(err, errWriteFailed) {
		t.Errorf("2 records, the second failing: %d, %v; want %d and the error", n, err, maxPlaintext)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after a failed one succeeded")
	}
	if err := c.CloseWrite(); err == nil {
		t.Error("CloseWrite after a failed write succeeded")
	}
}

// TestReadBatches: one Read returns every whole record the transport gave
// that fits, so that a burst of small records is passed on in one write;
// a record cut at the end waits for its rest, and nothing past p is lost.
func TestReadBatches(t *testing.T) {
	t.Parallel()
	h, _ := newHalf(tls.TLS_AES_128_GCM_SHA256, fuzzClientSecret)
	var burst []byte
	for i := range 10 {
		burst = append(burst, seal(&h, typeApplication, []byte{'a' + byte(i), '-'})...)
	}
	last := seal(&h, typeApplication, []byte("tail"))
	c, _ := newTestConn(step{b: append(burst, last[:7]...)}, step{err: temporary{}}, step{b: last[7:]})
	p := make([]byte, 15)
	for _, want := range []string{"a-b-c-d-e-f-g-h", "-i-j-", "", "tail"} {
		n, err := c.Read(p)
		if want == "" {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Temporary() {
				t.Fatalf("read %q, %v; want the transport's temporary error", p[:n], err)
			}
			continue
		}
		if err != nil || string(p[:n]) != want {
			t.Fatalf("read %q, %v; want %q", p[:n], err, want)
		}
	}
}
