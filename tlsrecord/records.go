package tlsrecord

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Records is a carried connection's record layer without its I/O, for an
// event loop that reads and writes the socket itself (pipe/epoll): the
// traffic secrets, suite and sequence numbers of both directions, taken
// from a Conn with Detach, which goes on from where the Conn stopped.
// The rules are the Conn's own (the same code opens and seals a record and
// decides on an alert); the caller cuts its reads into records:
//
//	n, alert, err := tlsrecord.RecordLen(b) // b holds at least HeaderRoom bytes
//	// ... once b holds n bytes:
//	data, answer, alert, err := r.Open(b[:n]) // in place; data is in b
//	if answer {
//		write(r.KeyUpdate()) // before any other record the loop seals
//	}
//	if alert != 0 {
//		write(r.Alert(alert)) // then fail with err
//	}
//	rec := r.Seal(buf[:HeaderRoom+k], TypeApplication) // buf[HeaderRoom:][:k] is the plaintext
//
// A Records is not safe for concurrent use.
type Records struct {
	in, out half
	ignored int
}

// HeaderRoom is the room a sealed record needs before its plaintext (its
// header), Overhead what it needs after it (content type and tag), and
// MaxPlaintext the most one record carries (RFC 8446, 5.1, 5.2).
const (
	HeaderRoom   = headerLen
	Overhead     = 1 + tagLen
	MaxPlaintext = maxPlaintext
	// MaxRecord is the largest record a peer may send: a record cut
	// across reads is kept up to this size.
	MaxRecord = maxRecord
)

// Content types for Seal (RFC 8446, 5.1).
const (
	TypeAlert       = typeAlert
	TypeHandshake   = typeHandshake
	TypeApplication = typeApplication
)

// ErrDetached is what a Conn's Read and Write return after Detach.
var ErrDetached = errors.New("tlsrecord: connection detached")

// Detach takes the record layer out of c when nothing of the client's
// stream is held in c (no record or plaintext read ahead, no record cut
// short), nothing failed and no close_notify or alert was sent; c is not
// usable after it (its Read and Write fail with ErrDetached; its transport
// is the caller's). Otherwise it reports false and c goes on as before.
func (c *Conn) Detach() (*Records, bool) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.buf != nil || len(c.plain) > 0 || c.rerr != nil || c.werr != nil || c.closeSent {
		return nil, false
	}
	r := &Records{in: c.in, out: c.out, ignored: c.ignored}
	// The loop's clock is not the wall clock idle was kept by; the cipher
	// states go: a pair handed over after its CONNACK is idle more often
	// than not, and the loop makes them again at its next bytes.
	r.in.quiet, r.out.quiet = 0, 0
	r.in.c, r.out.c = nil, nil
	c.in, c.out = half{}, half{}
	c.rerr, c.werr = ErrDetached, ErrDetached
	return r, true
}

// RecordLen returns the length of the record whose header starts b (at
// least HeaderRoom bytes): header and ciphertext. A length past what TLS
// 1.3 allows fails the connection with the alert alert.
func RecordLen(b []byte) (n int, alert byte, err error) {
	m := int(binary.BigEndian.Uint16(b[3:headerLen]))
	if m > maxCiphertext {
		return 0, alertRecordOverflow, fmt.Errorf("tls: oversized record received with length %d", m)
	}
	return headerLen + m, 0, nil
}

// Open opens one whole record rec in place, as Conn's Read does: data is
// its application data, in rec (empty for a record that carries none, a
// KeyUpdate or a user_canceled alert). answer asks for r.KeyUpdate to be
// sent before any other record is sealed. A close_notify is io.EOF; any
// other error fails the connection, after the alert alert when it is not
// 0 (it is 0 when the peer sent the alert).
func (r *Records) Open(rec []byte) (data []byte, answer bool, alert byte, err error) {
	return open(&r.in, &r.ignored, rec)
}

// Seal seals b as one record of type typ in place and returns it: b is
// HeaderRoom bytes of room, then at most MaxPlaintext bytes of plaintext,
// and must have Overhead bytes of capacity past them.
func (r *Records) Seal(b []byte, typ byte) []byte { return sealRecord(&r.out, b, typ) }

// AppendRecords appends data sealed in records of type typ, at most
// MaxPlaintext bytes each, to dst.
func (r *Records) AppendRecords(dst []byte, typ byte, data []byte) []byte {
	for first := true; first || len(data) > 0; first = false {
		k := min(len(data), maxPlaintext)
		start := len(dst)
		dst = append(dst, make([]byte, HeaderRoom)...)
		dst = append(dst, data[:k]...)
		dst = append(dst[:start], r.Seal(dst[start:], typ)...)
		data = data[k:]
	}
	return dst
}

// KeyUpdate seals this side's KeyUpdate (update_not_requested), the answer
// to a peer's update_requested, and moves to the next sending secret
// (RFC 8446, 4.6.3).
func (r *Records) KeyUpdate() []byte {
	b := r.AppendRecords(nil, typeHandshake, keyUpdateMsg[:])
	r.out.update()
	return b
}

// Alert seals a fatal alert desc (RFC 8446, 6.2).
func (r *Records) Alert(desc byte) []byte {
	return r.AppendRecords(nil, typeAlert, []byte{2, desc})
}

// CloseNotify seals a close_notify (RFC 8446, 6.1).
func (r *Records) CloseNotify() []byte {
	return r.AppendRecords(nil, typeAlert, []byte{1, 0})
}

// Idle drops the cipher state of the receiving (in) or sending direction
// when its bytes ran out, as Conn does: unless they ran out less than a
// second before as well (a busy connection keeps it). now is the caller's
// clock in nanoseconds, the same for every call.
func (r *Records) Idle(in bool, now int64) {
	h := &r.out
	if in {
		h = &r.in
	}
	h.idleAt(now)
}

// Reattach gives c back the record layer Detach took, when the caller
// could not carry it after all: c goes on as before Detach.
func (c *Conn) Reattach(r *Records) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.in, c.out, c.ignored = r.in, r.out, r.ignored
	c.rerr, c.werr = nil, nil
}

// NewRecords is the record layer of a TLS 1.3 connection with the AES-GCM
// suite suite whose peer sends under the traffic secret in and is sent to
// under out, both from sequence number 0 (as after a handshake with no
// session ticket): for a peer's side in tests, or a record layer whose
// secrets came another way. Other suites are ErrUnsupported.
//
//	client, _ := tlsrecord.NewRecords(tls.TLS_AES_128_GCM_SHA256, serverSecret, clientSecret)
func NewRecords(suite uint16, in, out []byte) (*Records, error) {
	i, err := newHalf(suite, bytes.Clone(in))
	if err != nil {
		return nil, err
	}
	o, err := newHalf(suite, bytes.Clone(out))
	if err != nil {
		return nil, err
	}
	return &Records{in: i, out: o}, nil
}

// KeyUpdateRequest seals a KeyUpdate with update_requested and moves to
// the next sending secret: the peer answers with its own (RFC 8446,
// 4.6.3).
func (r *Records) KeyUpdateRequest() []byte {
	b := r.AppendRecords(nil, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 1})
	r.out.update()
	return b
}
