// Package tlsrecord carries a TLS 1.3 connection's bytes after crypto/tls
// has done its handshake, so that an idle connection keeps its traffic
// secrets and sequence numbers (about 200 bytes) instead of a tls.Conn
// (5 to 7 KB: its read and handshake buffers, sized by the ClientHello, and
// two AES-GCM states), and holds no buffer and no cipher state while idle.
// It is what kTLS does in the kernel, in user space (this kernel has no
// kTLS): crypto/tls does the handshake, the record layer goes elsewhere.
//
//	log := tlsrecord.NewKeyLog()
//	cfg.KeyLogWriter = log // the traffic secrets, by client random
//	tr := tlsrecord.NewTransport(tcp)
//	tc := tls.Server(tr, cfg)
//	err := tc.Handshake()
//	conn, err := tr.Protect(tc.ConnectionState(), log) // nil, err: keep using tc
//	// conn is a net.Conn of plaintext, as tc was; tc is no longer used
//
// During the handshake the Transport hands crypto/tls the client's bytes
// one record at a time, so that nothing past the client's Finished is
// buffered inside the tls.Conn, notes the client random and keeps the
// server's last encrypted records, from which Protect learns how many
// records (session tickets) crypto/tls sent under the server's traffic
// secret: the first sequence number of the Conn. Only the AES-GCM suites
// are carried (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384); any other
// version or suite stays with crypto/tls.
//
// The Conn answers a KeyUpdate (RFC 8446, 4.6.3), reads a close_notify as
// EOF, sends one on CloseWrite, drops user_canceled alerts (16 in a row at
// most, as crypto/tls), and fails on any other alert or message, with the
// alert RFC 8446 names (a ClientHello, which would be renegotiation, is an
// unexpected_message; so is an unprotected record).
// A read error whose Temporary method reports true (a deadline, a parked
// read with nothing to read) leaves the connection usable, with what was
// read of a record kept.
package tlsrecord

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"sync"
	"time"
)

// TLS record constants (RFC 8446, 5).
const (
	headerLen       = 5
	maxPlaintext    = 16384
	maxCiphertext   = maxPlaintext + 256
	tagLen          = 16
	nonceLen        = 12
	typeCCS         = 20
	typeAlert       = 21
	typeHandshake   = 22
	typeApplication = 23
	msgKeyUpdate    = 24
	maxRecord       = headerLen + maxCiphertext
	maxSentRecords  = 8 // the server's last encrypted records the Transport keeps, for Protect
	// maxIgnored is how many records in a row may be ignored (user_canceled
	// alerts) before the connection fails, as crypto/tls's
	// maxUselessRecords.
	maxIgnored = 16
)

// Alert descriptions sent (RFC 8446, 6).
const (
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertIllegalParameter  = 47
	alertDecodeError       = 50
	alertUserCanceled      = 90
)

// ErrUnsupported is Protect's answer for a connection it does not carry
// (not TLS 1.3, another suite, a handshake it could not follow).
var ErrUnsupported = errors.New("tlsrecord: not a connection this package carries")

// KeyLog is a tls.Config.KeyLogWriter that keeps the application traffic
// secrets of handshakes under way, by client random, until Protect takes
// them. Entries nobody takes (a handshake that failed late) are dropped
// after a minute.
type KeyLog struct {
	mu        sync.Mutex
	m         map[[32]byte]*secrets
	lastSweep time.Time
}

type secrets struct {
	client, server []byte
	at             time.Time
}

// NewKeyLog returns an empty KeyLog.
func NewKeyLog() *KeyLog { return &KeyLog{m: make(map[[32]byte]*secrets)} }

const keyLogTTL = time.Minute

// Write takes one NSS key log line ("LABEL <client random> <secret>").
// Only the application traffic secrets are kept.
func (k *KeyLog) Write(line []byte) (int, error) {
	f, n := splitLine(line)
	if n != 3 {
		return len(line), nil
	}
	label, random, secret := f[0], f[1], f[2]
	client := string(label) == "CLIENT_TRAFFIC_SECRET_0"
	if !client && string(label) != "SERVER_TRAFFIC_SECRET_0" {
		return len(line), nil
	}
	var r [32]byte
	if hex.DecodedLen(len(random)) != len(r) {
		return len(line), nil
	}
	if _, err := hex.Decode(r[:], random); err != nil {
		return len(line), nil
	}
	s := make([]byte, hex.DecodedLen(len(secret)))
	if _, err := hex.Decode(s, secret); err != nil {
		return len(line), nil
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.lastSweep) > keyLogTTL {
		k.lastSweep = now
		for key, e := range k.m {
			if now.Sub(e.at) > keyLogTTL {
				delete(k.m, key)
			}
		}
	}
	e := k.m[r]
	if e == nil {
		e = &secrets{at: now}
		k.m[r] = e
	}
	if client {
		e.client = s
	} else {
		e.server = s
	}
	return len(line), nil
}

// take removes and returns the secrets of the handshake with this client
// random.
func (k *KeyLog) take(random [32]byte) (client, server []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.m[random]
	delete(k.m, random)
	if e == nil {
		return nil, nil
	}
	return e.client, e.server
}

// Len is the number of handshakes whose secrets are kept (for tests).
func (k *KeyLog) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// splitLine splits a key log line into its first fields, separated by
// spaces or newlines: up to 4 (n), in an array, so that the four lines of
// every TLS 1.3 handshake allocate nothing here.
func splitLine(line []byte) (f [4][]byte, n int) {
	for len(line) > 0 && n < len(f) {
		i := 0
		for i < len(line) && line[i] != ' ' && line[i] != '\n' {
			i++
		}
		if i > 0 {
			f[n] = line[:i]
			n++
		}
		if i < len(line) {
			i++
		}
		line = line[i:]
	}
	return f, n
}

// Transport is the connection under a tls.Conn during the handshake (see
// the package doc). It is a net.Conn; its methods other than Read and
// Write are the wrapped connection's.
type Transport struct {
	net.Conn

	// reading: the client's records, one at a time, from what one read
	// of the connection gave (rbuf[rlo:rhi], and rerr once it is used up)
	rbuf    *[]byte
	rlo     int
	rhi     int
	rerr    error
	hdr     [headerLen]byte
	hn      int // header bytes read of the current record
	left    int // body bytes of the current record still to hand out
	records int // records whose header was read
	body    int // body bytes of the first record handed out
	random  [32]byte
	gotRand int // bytes of the client random seen

	// writing: the server's records
	whdr    [headerLen]byte
	whn     int
	wleft   int
	wtyp    byte
	sent    [][]byte // the server's last encrypted records, oldest first
	cur     []byte   // the encrypted record being written
	rbad    bool     // the client's first record was too short for the random
	taken   bool     // Protect took the connection
	through bool     // Protect left it to crypto/tls: pass everything through
}

// NewTransport wraps c for a handshake.
func NewTransport(c net.Conn) *Transport { return &Transport{Conn: c} }

// handshakeBufSize is the Transport's read-ahead: a ClientHello with
// post-quantum key shares (about 2.7 KB from Go's client) in one read.
const handshakeBufSize = 4 << 10

var handshakePool = sync.Pool{New: func() any { b := make([]byte, handshakeBufSize); return &b }}

// Read hands out at most the rest of the current record. It reads the
// connection ahead, as much as one read gives (the client's CCS, Finished
// and first records often come in one segment), so that handing crypto/tls
// a record at a time costs no system call per record header; what is read
// past the handshake goes to the Conn (Protect) or to crypto/tls.
func (t *Transport) Read(b []byte) (int, error) {
	if t.through {
		if t.rbuf != nil {
			return t.buffered(b)
		}
		return t.Conn.Read(b)
	}
	if t.taken {
		return 0, errors.New("tlsrecord: transport read after Protect")
	}
	if len(b) == 0 {
		return 0, nil
	}
	if t.rlo == t.rhi {
		if t.rerr != nil {
			err := t.rerr
			t.rerr = nil
			return 0, err
		}
		if t.rbuf == nil {
			t.rbuf = handshakePool.Get().(*[]byte)
		}
		n, err := t.Conn.Read(*t.rbuf)
		t.rlo, t.rhi = 0, n
		if n == 0 {
			return 0, err
		}
		t.rerr = err // after the bytes
	}
	avail := (*t.rbuf)[t.rlo:t.rhi]
	if t.left == 0 {
		n := copy(b[:min(len(b), headerLen-t.hn)], avail)
		copy(t.hdr[t.hn:], b[:n])
		t.hn += n
		t.rlo += n
		if t.hn == headerLen {
			t.hn = 0
			t.left = int(binary.BigEndian.Uint16(t.hdr[3:]))
			t.records++
		}
		return n, nil
	}
	n := copy(b[:min(len(b), t.left)], avail)
	t.rlo += n
	if t.records == 1 && t.hdr[0] == typeHandshake {
		// The ClientHello: type (1), length (3), version (2), random (32).
		for i := range n {
			if off := t.body + i - 6; off >= 0 && off < len(t.random) {
				t.random[off] = b[i]
				t.gotRand++
			}
		}
		t.body += n
	}
	t.left -= n
	if t.records == 1 && t.left == 0 && t.gotRand < len(t.random) {
		t.rbad = true
	}
	return n, nil
}

// buffered hands out what was read ahead, once the Transport passes
// everything through; then the read error that came with it, if any.
func (t *Transport) buffered(b []byte) (int, error) {
	n := copy(b, (*t.rbuf)[t.rlo:t.rhi])
	t.rlo += n
	if t.rlo < t.rhi {
		return n, nil
	}
	t.dropBuf()
	err := t.rerr
	t.rerr = nil
	if n > 0 && err != nil {
		return n, nil // the error comes with the next Read
	}
	return n, err
}

// dropBuf gives the read-ahead buffer back.
func (t *Transport) dropBuf() {
	if t.rbuf != nil {
		handshakePool.Put(t.rbuf)
		t.rbuf, t.rlo, t.rhi = nil, 0, 0
	}
}

// Write writes b and follows the records in it, keeping the last
// encrypted ones.
func (t *Transport) Write(b []byte) (int, error) {
	n, err := t.Conn.Write(b)
	if !t.through {
		t.follow(b[:n])
	}
	return n, err
}

func (t *Transport) follow(b []byte) {
	for len(b) > 0 {
		if t.wleft == 0 {
			k := copy(t.whdr[t.whn:], b)
			t.whn += k
			b = b[k:]
			if t.whn < headerLen {
				return
			}
			t.whn = 0
			t.wtyp = t.whdr[0]
			t.wleft = int(binary.BigEndian.Uint16(t.whdr[3:]))
			t.cur = nil
			if t.wtyp == typeApplication {
				t.cur = append(make([]byte, 0, headerLen+t.wleft), t.whdr[:]...)
			}
			if t.wleft == 0 {
				t.keep()
			}
			continue
		}
		k := min(len(b), t.wleft)
		if t.cur != nil {
			t.cur = append(t.cur, b[:k]...)
		}
		t.wleft -= k
		b = b[k:]
		if t.wleft == 0 {
			t.keep()
		}
	}
}

func (t *Transport) keep() {
	if t.cur == nil {
		return
	}
	if len(t.sent) == maxSentRecords {
		copy(t.sent, t.sent[1:])
		t.sent = t.sent[:len(t.sent)-1]
	}
	t.sent = append(t.sent, t.cur)
	t.cur = nil
}

// Forget drops the secrets of a handshake that failed.
func (t *Transport) Forget(log *KeyLog) {
	log.take(t.random)
	t.through = true
	t.sent, t.cur = nil, nil
	t.dropBuf()
	t.rerr = nil
}

// Protect returns a Conn that carries the connection from here on, when
// the handshake was TLS 1.3 with an AES-GCM suite and its secrets are in
// log; otherwise ErrUnsupported, and the caller keeps the tls.Conn. Call
// it right after the handshake, before any byte is read or written through
// the tls.Conn, which must not be used afterwards (not even closed). The
// secrets are taken from log either way.
func (t *Transport) Protect(cs tls.ConnectionState, log *KeyLog) (c *Conn, err error) {
	client, server := log.take(t.random)
	defer func() {
		if err != nil {
			t.through = true // what was read ahead goes to crypto/tls
			if t.rlo == t.rhi && t.rerr == nil {
				t.dropBuf()
			}
		}
		t.sent, t.cur = nil, nil
	}()
	if t.rbad || t.gotRand < len(t.random) || t.left != 0 || t.hn != 0 || t.wleft != 0 || t.whn != 0 {
		return nil, ErrUnsupported
	}
	if cs.Version != tls.VersionTLS13 || client == nil || server == nil {
		return nil, ErrUnsupported
	}
	in, err := newHalf(cs.CipherSuite, client)
	if err != nil {
		return nil, err
	}
	out, err := newHalf(cs.CipherSuite, server)
	if err != nil {
		return nil, err
	}
	// The records crypto/tls sent under the server's traffic secret are
	// the last ones (session tickets): the first of them opens with
	// sequence number 0; no record opens when there were none.
	aead := out.aead()
	for i, rec := range t.sent {
		if _, err := openRecord(aead, &out, 0, rec); err == nil {
			out.seq = uint64(len(t.sent) - i)
			break
		}
	}
	t.taken = true
	c = &Conn{Conn: t.Conn, in: in, out: out}
	if t.rlo < t.rhi {
		// The client's first records came with its Finished.
		c.buf = recordPool.Get().(*[]byte)
		c.hi = copy(*c.buf, (*t.rbuf)[t.rlo:t.rhi])
	}
	// A read error that came with the last bytes (EOF, a deadline) is the
	// connection's to report again on the Conn's next read.
	t.rerr = nil
	t.dropBuf()
	return c, nil
}

// half is one direction's protection: its traffic secret, key and IV,
// and the next record's sequence number.
type half struct {
	suite  uint16
	secret []byte
	key    []byte
	iv     [nonceLen]byte
	seq    uint64
	c      cipher.AEAD // while bytes flow; nil while idle
	quiet  int64       // unix nanoseconds when the bytes last ran out
}

// keepCipher is how soon bytes must come again for the cipher state to be
// kept when they run out: a busy connection does not make it again for
// every packet, an idle one (keepalives minutes or seconds apart) holds none.
const keepCipher = time.Second

// idle is called when the bytes ran out: the cipher state goes unless they
// ran out less than keepCipher ago as well.
func (h *half) idle() { h.idleAt(time.Now().UnixNano()) }

// idleAt is idle at now, on the caller's clock.
func (h *half) idleAt(now int64) {
	if now-h.quiet >= int64(keepCipher) {
		h.c = nil
	}
	h.quiet = now
}

func newHalf(suite uint16, secret []byte) (half, error) {
	h := half{suite: suite}
	if h.hash() == nil {
		return half{}, ErrUnsupported
	}
	h.setSecret(secret)
	return h, nil
}

func (h *half) hash() func() hash.Hash {
	switch h.suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return sha256.New
	case tls.TLS_AES_256_GCM_SHA384:
		return sha512.New384
	}
	return nil
}

func (h *half) keyLen() int {
	if h.suite == tls.TLS_AES_256_GCM_SHA384 {
		return 32
	}
	return 16
}

// expandLabel is HKDF-Expand-Label (RFC 8446, 7.1) with an empty context
// and an output of at most one hash block, as every one here is (a key, an
// IV, the next traffic secret): HMAC(secret, HkdfLabel || 0x01) cut to n
// (RFC 5869, 2.3), appended to dst. mac is an HMAC keyed with the secret,
// so that the key and IV of one secret share it (crypto/hkdf makes an HMAC
// per output, with its allocations).
func expandLabel(mac hash.Hash, dst []byte, label string, n int) []byte {
	var info [2 + 1 + len("tls13 ") + len("traffic upd") + 1 + 1]byte
	b := binary.BigEndian.AppendUint16(info[:0], uint16(n))
	b = append(b, byte(len("tls13 ")+len(label)))
	b = append(b, "tls13 "...)
	b = append(b, label...)
	b = append(b, 0, 1) // the empty context, then the first block's counter
	mac.Reset()
	mac.Write(b)
	var sum [sha512.Size384]byte
	return append(dst, mac.Sum(sum[:0])[:n]...)
}

func (h *half) setSecret(secret []byte) {
	mac := hmac.New(h.hash(), secret)
	h.secret = secret
	h.key = expandLabel(mac, nil, "key", h.keyLen())
	copy(h.iv[:], expandLabel(mac, h.iv[:0], "iv", nonceLen))
	h.seq = 0
	h.c = nil
}

// update moves to the next traffic secret (KeyUpdate, RFC 8446, 7.2).
func (h *half) update() {
	h.setSecret(expandLabel(hmac.New(h.hash(), h.secret), nil, "traffic upd", len(h.secret)))
}

// aead returns the cipher state, made again after an idle time.
func (h *half) aead() cipher.AEAD {
	if h.c == nil {
		b, err := aes.NewCipher(h.key)
		if err != nil {
			panic(err) // the key has the suite's length
		}
		h.c, err = cipher.NewGCM(b)
		if err != nil {
			panic(err)
		}
	}
	return h.c
}

func (h *half) nonce(seq uint64) [nonceLen]byte {
	n := h.iv
	for i := range 8 {
		n[nonceLen-1-i] ^= byte(seq >> (8 * i))
	}
	return n
}

// openRecord decrypts rec (header and ciphertext) in place with sequence
// number seq and returns the inner plaintext, content type last.
func openRecord(c cipher.AEAD, h *half, seq uint64, rec []byte) ([]byte, error) {
	if len(rec) < headerLen+tagLen+1 || rec[0] != typeApplication {
		return nil, errBadRecord
	}
	nonce := h.nonce(seq)
	return c.Open(rec[headerLen:headerLen], nonce[:], rec[headerLen:], rec[:headerLen])
}

var errBadRecord = errors.New("tls: bad record MAC")

// Conn is a TLS 1.3 connection carried by this package: a net.Conn of
// plaintext whose deadlines, addresses and Close are the transport's.
type Conn struct {
	net.Conn

	rmu     sync.Mutex
	in      half
	buf     *[]byte // records read from the transport, while some are
	lo      int     // buf[lo:hi]: what is not yet taken
	hi      int
	plain   []byte // decrypted bytes not yet read: in buf
	rerr    error  // a read failed for good
	ignored int    // records ignored in a row (user_canceled alerts)

	wmu       sync.Mutex
	out       half
	closeSent bool
	werr      error
}

var recordPool = sync.Pool{New: func() any { b := make([]byte, maxRecord); return &b }}

// Read returns plaintext: every whole record already read from the
// transport that fits in p, so that a burst of small records (an MQTT
// client's PUBLISHes, one record each) is passed on in one write, not one
// per record; it reads the transport only when it has nothing to return.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for {
		if len(c.plain) > 0 {
			k := copy(p[n:], c.plain)
			c.plain = c.plain[k:]
			n += k
			if n == len(p) {
				c.release()
				return n, nil
			}
		}
		if c.rerr != nil {
			if n > 0 {
				return n, nil // the error comes with the next Read
			}
			return 0, c.rerr
		}
		if c.buf == nil {
			c.buf, c.lo, c.hi = recordPool.Get().(*[]byte), 0, 0
		}
		b := *c.buf
		if avail := c.hi - c.lo; avail >= headerLen {
			m := int(binary.BigEndian.Uint16(b[c.lo+3:]))
			if m > maxCiphertext {
				c.sendAlert(alertRecordOverflow)
				c.fail(fmt.Errorf("tls: oversized record received with length %d", m))
				continue
			}
			if avail >= headerLen+m {
				rec := b[c.lo : c.lo+headerLen+m]
				c.lo += headerLen + m
				if err := c.record(rec); err != nil {
					c.fail(err)
				}
				continue
			}
		}
		if n > 0 {
			// No whole record left: return what there is rather than
			// wait for the transport.
			c.release()
			return n, nil
		}
		if c.lo > 0 {
			c.hi = copy(b, b[c.lo:c.hi])
			c.lo = 0
		}
		m, err := c.Conn.Read(b[c.hi:])
		c.hi += m
		if m > 0 {
			continue
		}
		c.release()
		switch {
		case err == nil:
		case err == io.EOF && c.hi > c.lo:
			return 0, c.fail(io.ErrUnexpectedEOF)
		case err == io.EOF:
			return 0, c.fail(io.EOF)
		default:
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() {
				// Retried later, with what was read kept. Nothing more
				// to read now: an idle connection keeps no cipher state.
				if c.buf == nil {
					c.in.idle()
				}
				return 0, err
			}
			return 0, c.fail(err)
		}
	}
}

// release gives the record buffer back when it holds nothing.
func (c *Conn) release() {
	if c.buf != nil && len(c.plain) == 0 && c.lo == c.hi {
		recordPool.Put(c.buf)
		c.buf, c.lo, c.hi, c.plain = nil, 0, 0, nil
	}
}

func (c *Conn) fail(err error) error {
	c.rerr = err
	c.plain = nil
	c.lo, c.hi = 0, 0
	c.release()
	c.in.c = nil
	return err
}

// record handles one record: application data becomes c.plain.
func (c *Conn) record(rec []byte) error {
	data, answer, alert, err := open(&c.in, &c.ignored, rec)
	if alert != 0 {
		c.sendAlert(alert)
	}
	if err != nil {
		return err
	}
	c.plain = data
	if answer { // update_requested: answer, then update ours
		c.wmu.Lock()
		// Nothing is written after close_notify: the answer would be
		// the one record the peer no longer expects.
		if !c.closeSent && c.werr == nil {
			err = c.writeRecord(typeHandshake, keyUpdateMsg[:])
			if err == nil {
				c.out.update()
			}
		}
		c.wmu.Unlock()
	}
	return err
}

// keyUpdateMsg is a KeyUpdate with update_not_requested (RFC 8446, 4.6.3).
var keyUpdateMsg = [5]byte{msgKeyUpdate, 0, 0, 1, 0}

// open is the record rules of the client's stream, for Conn and Records:
// it opens one whole record rec (header and ciphertext) in place with in
// and returns its application data (in rec; empty for a record that
// carries none). answer reports a KeyUpdate with update_requested, which
// the caller answers with its own (RFC 8446, 4.6.3) before anything else
// it seals; in moved to its next secret already. A close_notify is io.EOF.
// Any other error fails the connection, after the alert alert (RFC 8446,
// 6) when it is not 0 (it is 0 for the peer's own alert).
func open(in *half, ignored *int, rec []byte) (data []byte, answer bool, alert byte, err error) {
	if rec[0] != typeApplication {
		// After the handshake every record is protected (RFC 8446, 5):
		// a change_cipher_spec is only allowed before the client's
		// Finished, which crypto/tls read.
		return nil, false, alertUnexpectedMessage, fmt.Errorf("tls: unprotected record of type %d after the handshake", rec[0])
	}
	inner, err := openRecord(in.aead(), in, in.seq, rec)
	if err != nil {
		return nil, false, alertBadRecordMAC, errBadRecord
	}
	in.seq++
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, false, alertUnexpectedMessage, errors.New("tls: record with no content type")
	}
	typ, data := inner[i], inner[:i]
	if len(data) > maxPlaintext {
		return nil, false, alertRecordOverflow, errors.New("tls: oversized plaintext")
	}
	switch typ {
	case typeApplication:
		if len(data) > 0 {
			*ignored = 0
		}
		return data, false, 0, nil
	case typeAlert:
		if len(data) != 2 {
			return nil, false, alertDecodeError, errors.New("tls: malformed alert")
		}
		switch data[1] {
		case 0:
			return nil, false, 0, io.EOF // close_notify
		case alertUserCanceled:
			// The only alert TLS 1.3 does not make fatal (RFC 8446, 6.1);
			// crypto/tls drops it and reads on, so does this.
			if *ignored++; *ignored > maxIgnored {
				return nil, false, alertUnexpectedMessage, errors.New("tls: too many ignored records")
			}
			return nil, false, 0, nil
		}
		return nil, false, 0, fmt.Errorf("tls: peer sent alert %d", data[1])
	case typeHandshake:
		*ignored = 0
		answer, alert, err := handshake(in, data)
		return nil, answer, alert, err
	}
	return nil, false, alertUnexpectedMessage, fmt.Errorf("tls: unexpected record type %d", typ)
}

// handshake handles post-handshake messages: only KeyUpdate is expected
// from a client (no post-handshake authentication is asked for).
func handshake(in *half, data []byte) (answer bool, alert byte, err error) {
	if len(data) == 0 {
		return false, alertUnexpectedMessage, errors.New("tls: empty handshake record") // RFC 8446, 5.1
	}
	for len(data) > 0 {
		// A client's KeyUpdate (5 bytes) comes whole in one record; a
		// message split across records is refused rather than buffered.
		if len(data) < 4 {
			return false, alertUnexpectedMessage, errors.New("tls: handshake message split across records")
		}
		n := int(data[1])<<16 | int(data[2])<<8 | int(data[3])
		if len(data) < 4+n {
			return false, alertUnexpectedMessage, errors.New("tls: handshake message split across records")
		}
		typ, body := data[0], data[4:4+n]
		data = data[4+n:]
		if typ != msgKeyUpdate {
			// A ClientHello (renegotiation, which TLS 1.3 does not have),
			// a client's NewSessionTicket, a Certificate nobody asked for.
			return false, alertUnexpectedMessage, fmt.Errorf("tls: unexpected post-handshake message %d", typ)
		}
		if len(body) != 1 {
			return false, alertDecodeError, errors.New("tls: malformed KeyUpdate")
		}
		if body[0] > 1 {
			return false, alertIllegalParameter, fmt.Errorf("tls: KeyUpdate request_update %d", body[0]) // RFC 8446, 4.6.3
		}
		if len(data) > 0 {
			// A KeyUpdate must end its record (RFC 8446, 5.1).
			return false, alertUnexpectedMessage, errors.New("tls: data after a KeyUpdate in its record")
		}
		in.update()
		answer = body[0] == 1
	}
	return answer, 0, nil
}

// Write sends p in records of at most 16 KB.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closeSent {
		return 0, errors.New("tls: write after CloseWrite")
	}
	n := 0
	for n < len(p) {
		k := min(len(p)-n, maxPlaintext)
		if err := c.writeRecord(typeApplication, p[n:n+k]); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// ReleaseWrite drops the sending cipher state of an idle connection (the
// pipe calls it when the direction that writes here parks); it is made
// again for the next write.
func (c *Conn) ReleaseWrite() {
	c.wmu.Lock()
	c.out.idle()
	c.wmu.Unlock()
}

// writeRecord seals data as one record of type typ and writes it; under
// wmu.
func (c *Conn) writeRecord(typ byte, data []byte) error {
	bp := recordPool.Get().(*[]byte)
	defer recordPool.Put(bp)
	b := append((*bp)[:HeaderRoom], data...)
	b = sealRecord(&c.out, b, typ)
	if _, err := c.Conn.Write(b); err != nil {
		c.werr = err // part of a record may have gone: the stream is lost
		return err
	}
	return nil
}

// sealRecord is the one sealing of a record, for Conn and Records: b is
// HeaderRoom bytes of room, then the plaintext (at most 16 KB), and has
// Overhead bytes of capacity past it; the record is sealed in place with
// out's next sequence number (RFC 8446, 5.2, 5.3) and returned, b's first
// bytes its header.
func sealRecord(out *half, b []byte, typ byte) []byte {
	n := len(b) - headerLen + 1 + tagLen
	b[0], b[1], b[2] = typeApplication, 3, 3
	binary.BigEndian.PutUint16(b[3:], uint16(n))
	b = append(b, typ)
	nonce := out.nonce(out.seq)
	b = out.aead().Seal(b[:headerLen], nonce[:], b[headerLen:], b[:headerLen])
	out.seq++
	return b
}

// sendAlert tells the peer why the connection ends (best effort).
func (c *Conn) sendAlert(desc byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil && !c.closeSent {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeRecord(typeAlert, []byte{2, desc}) // fatal (RFC 8446, 6.2)
		c.closeSent = true
	}
}

// CloseWrite sends close_notify; as with crypto/tls, the socket itself is
// not shut down.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return nil
	}
	c.closeSent = true
	if c.werr != nil {
		return c.werr
	}
	return c.writeRecord(typeAlert, []byte{1, 0})
}
