package epoll

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mqgate/mqgate/internal/sizeclass"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

var (
	testClientSecret = bytes.Repeat([]byte{1}, 32)
	testServerSecret = bytes.Repeat([]byte{2}, 32)
)

// tlsEnds are the two record layers of one connection: the loop's (the
// server's) and the client's, which seals what a client sends and opens
// what the loop seals.
func tlsEnds(t testing.TB) (server, client *tlsrecord.Records) {
	t.Helper()
	server, err := tlsrecord.NewRecords(tls.TLS_AES_128_GCM_SHA256, testClientSecret, testServerSecret)
	if err != nil {
		t.Fatal(err)
	}
	client, err = tlsrecord.NewRecords(tls.TLS_AES_128_GCM_SHA256, testServerSecret, testClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// sealed is data in application records from c.
func sealed(c *tlsrecord.Records, data string) []byte {
	return c.AppendRecords(nil, tlsrecord.TypeApplication, []byte(data))
}

// alertRec is an alert record from c (RFC 8446, 6).
func alertRec(c *tlsrecord.Records, level, desc byte) []byte {
	return c.AppendRecords(nil, tlsrecord.TypeAlert, []byte{level, desc})
}

// tlsOutcome is what tlsIn.open made of a stream.
type tlsOutcome struct {
	data    []byte
	replies int // KeyUpdate answers
	alert   byte
	err     error
	mid     bool // a record cut short was kept at the end
}

// openCut feeds in to a fresh tlsIn in reads of at most cut bytes, as the
// loop does (the record kept from the last read copied before the next),
// and checks every answer opens on the client's side.
func openCut(t *testing.T, server, client *tlsrecord.Records, in []byte, cut int) tlsOutcome {
	t.Helper()
	ti := &tlsIn{rec: server}
	var o tlsOutcome
	for len(in) > 0 && o.err == nil {
		k := min(cut, len(in))
		b := append(append([]byte(nil), ti.part...), in[:k]...)
		in = in[k:]
		var (
			data  int
			reply []byte
		)
		data, reply, o.alert, o.err = ti.open(b)
		o.data = append(o.data, b[:data]...)
		for len(reply) > 0 {
			n, _, err := tlsrecord.RecordLen(reply)
			if err != nil {
				t.Fatal(err)
			}
			d, answer, _, err := client.Open(reply[:n])
			if err != nil || answer || len(d) > 0 {
				t.Fatalf("the loop's answer opened as %q, %v, %v; want a KeyUpdate not asking for one", d, answer, err)
			}
			reply = reply[n:]
			o.replies++
		}
	}
	o.mid = ti.part != nil
	return o
}

// TestTLSOpen: the record rules of the client's stream in the loop, with
// reads cut into 1..N bytes as the kernel may cut them: each case's
// plaintext, answers, alert and error are the same at every cut.
func TestTLSOpen(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", tlsrecord.MaxPlaintext/16)
	for _, tc := range []struct {
		name    string
		in      func(c *tlsrecord.Records) []byte
		data    string
		replies int
		alert   byte
		why     string // in the error; "EOF" is close_notify
		mid     bool
	}{
		{name: "RFC 8446 5.2: an application record is opened", in: func(c *tlsrecord.Records) []byte { return sealed(c, "\x10\x0chello") }, data: "\x10\x0chello"},
		{name: "RFC 8446 5.1: records in one read make one stream",
			in: func(c *tlsrecord.Records) []byte {
				return bytes.Join([][]byte{sealed(c, "\xc0"), sealed(c, "\x00\xc0\x00"), sealed(c, "\xe0\x00")}, nil)
			},
			data: "\xc0\x00\xc0\x00\xe0\x00"},
		{name: "RFC 8446 5.1: a record of 2^14 bytes, the most", in: func(c *tlsrecord.Records) []byte { return sealed(c, big) }, data: big},
		{name: "RFC 8446 5.1: a record cut short at the end is kept",
			in: func(c *tlsrecord.Records) []byte {
				b := append(sealed(c, "ab"), sealed(c, "cd")...)
				return b[:len(b)-3]
			},
			data: "ab", mid: true},
		{name: "RFC 8446 5.2: a changed ciphertext byte is bad_record_mac, what came before passed on",
			in: func(c *tlsrecord.Records) []byte {
				b := sealed(c, "ok")
				bad := sealed(c, "changed")
				bad[7] ^= 1
				return append(b, bad...)
			},
			data: "ok", alert: 20, why: "bad record MAC"},
		{name: "RFC 8446 5.3: a record skipped changes the nonce: bad_record_mac",
			in:    func(c *tlsrecord.Records) []byte { sealed(c, "lost"); return sealed(c, "next") },
			alert: 20, why: "bad record MAC"},
		{name: "RFC 8446 5: an unprotected record after the handshake is unexpected_message",
			in:    func(c *tlsrecord.Records) []byte { return []byte{22, 3, 3, 0, 4, 1, 0, 0, 0} },
			alert: 10, why: "unprotected record"},
		{name: "RFC 8446 5.2: a length over 2^14+256 is record_overflow",
			in:    func(c *tlsrecord.Records) []byte { return []byte{23, 3, 3, 0x41, 0x01} },
			alert: 22, why: "oversized record"},
		{name: "RFC 8446 4.6.3: KeyUpdate update_not_requested, then records under the next key",
			in: func(c *tlsrecord.Records) []byte {
				b := append(sealed(c, "a"), c.KeyUpdate()...)
				return append(b, sealed(c, "b")...)
			},
			data: "ab"},
		{name: "RFC 8446 4.6.3: KeyUpdate update_requested is answered with ours",
			in: func(c *tlsrecord.Records) []byte {
				b := append(sealed(c, "a"), c.KeyUpdateRequest()...)
				return append(b, sealed(c, "b")...)
			},
			data: "ab", replies: 1},
		{name: "RFC 8446 4.6.3: request_update 2 is illegal_parameter",
			in: func(c *tlsrecord.Records) []byte {
				return c.AppendRecords(nil, tlsrecord.TypeHandshake, []byte{24, 0, 0, 1, 2})
			},
			alert: 47, why: "request_update 2"},
		{name: "RFC 8446 4: a post-handshake ClientHello is unexpected_message",
			in: func(c *tlsrecord.Records) []byte {
				return c.AppendRecords(nil, tlsrecord.TypeHandshake, []byte{1, 0, 0, 0})
			},
			alert: 10, why: "unexpected post-handshake message"},
		{name: "RFC 8446 6.1: close_notify ends the stream, what came before passed on",
			in:   func(c *tlsrecord.Records) []byte { return append(sealed(c, "last"), alertRec(c, 1, 0)...) },
			data: "last", why: "EOF"},
		{name: "RFC 8446 6.1: user_canceled is dropped",
			in:   func(c *tlsrecord.Records) []byte { return append(alertRec(c, 1, 90), sealed(c, "on")...) },
			data: "on"},
		{name: "RFC 8446 6.2: another alert fails the connection, no alert sent back",
			in:  func(c *tlsrecord.Records) []byte { return alertRec(c, 2, 40) },
			why: "peer sent alert 40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []byte
			for _, cut := range []int{1, 2, 3, 4, 5, 6, 7, 13, 22, 64, 1000, 1 << 20} {
				server, client := tlsEnds(t)
				if in == nil {
					in = tc.in(client)
					server, client = tlsEnds(t) // the same records, sealed again from sequence 0
					tc.in(client)
				}
				o := openCut(t, server, client, in, cut)
				if string(o.data) != tc.data || o.replies != tc.replies || o.alert != tc.alert || o.mid != tc.mid {
					t.Fatalf("reads of %d: data %q replies %d alert %d mid %v; want %q %d %d %v",
						cut, o.data, o.replies, o.alert, o.mid, tc.data, tc.replies, tc.alert, tc.mid)
				}
				switch {
				case tc.why == "" && o.err != nil, tc.why != "" && (o.err == nil || !strings.Contains(o.err.Error(), tc.why)):
					t.Fatalf("reads of %d: error %v; want one saying %q", cut, o.err, tc.why)
				}
				if o.replies > 0 {
					// The answer moved the loop's sending key: the client opens
					// what it seals next.
					rec := server.Seal(append(make([]byte, tlsrecord.HeaderRoom, 64), "down"...), tlsrecord.TypeApplication)
					if d, _, _, err := client.Open(rec); err != nil || string(d) != "down" {
						t.Fatalf("after the KeyUpdate the client opened %q, %v", d, err)
					}
				}
			}
		})
	}
}

// tlsPair is a pair with a TLS client (AddTLS); the returned Records is
// the client's side of its record layer.
func (h *harness) tlsPair(opts pipe.Options, small bool) (*testPair, *tlsrecord.Records) {
	h.t.Helper()
	tp, proxyClient, proxyBroker := h.sockets()
	if small {
		// So that megabytes cannot hide in the kernel; not below a
		// record's size (16 KB): a receive window smaller than one
		// record stalls on delayed ACKs, 80 ms a record.
		for _, c := range []*net.TCPConn{tp.client, tp.broker, proxyClient, proxyBroker} {
			c.SetReadBuffer(64 << 10)
			c.SetWriteBuffer(64 << 10)
		}
	}
	server, client := tlsEnds(h.t)
	res := make(chan pipe.Result, 1)
	c, err := h.g.AddTLS(ByBroker, proxyClient, proxyBroker, server, opts, func(r pipe.Result) { res <- r })
	if err != nil {
		h.t.Fatal(err)
	}
	tp.conn, tp.result = c, res
	return tp, client
}

// nextRecord reads the loop's next record and opens it as the client:
// its plaintext, or io.EOF for close_notify, or the alert's error.
func nextRecord(t *testing.T, tp *testPair, c *tlsrecord.Records) ([]byte, error) {
	t.Helper()
	hdr := readN(t, tp.client, tlsrecord.HeaderRoom)
	n, _, err := tlsrecord.RecordLen(hdr)
	if err != nil {
		t.Fatal(err)
	}
	if n > tlsrecord.HeaderRoom+tlsrecord.MaxPlaintext+tlsrecord.Overhead {
		t.Fatalf("a record of %d bytes: over 2^14 of plaintext [RFC 8446 5.1]", n)
	}
	rec := append(hdr, readN(t, tp.client, n-tlsrecord.HeaderRoom)...)
	d, _, _, err := c.Open(rec)
	return d, err
}

// TestTLSPairBytes: a burst of the client's records reaches the broker as
// one stream, a KeyUpdate asking for ours is answered between them, and
// what the broker sends, 1 MB the client does not read at first (the
// writes block: backlogs of whole records), comes back in records of at
// most 2^14 bytes in order, under the next key; the meter counts MQTT
// bytes, not the records' overhead.
func TestTLSPairBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	tp, c := h.tlsPair(pipe.Options{}, true)
	in := bytes.Join([][]byte{sealed(c, "\x10\x02ab"), c.KeyUpdateRequest(), sealed(c, "cd"), sealed(c, "ef")}, nil)
	for i := range in { // one byte a write: records cut across reads
		write(t, tp.client, in[i:i+1])
	}
	if got := readN(t, tp.broker, 8); string(got) != "\x10\x02abcdef" {
		t.Fatalf("broker read %q", got)
	}
	if d, err := nextRecord(t, tp, c); err != nil || len(d) != 0 {
		t.Fatalf("the answer to a KeyUpdate: %q %v", d, err)
	}

	const size = 1 << 20
	down := make([]byte, size)
	for i := range down {
		down[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		tp.broker.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := tp.broker.Write(down)
		done <- err
	}()
	waitFor(t, "a blocked write", func() bool { return h.g.loops[0].backlogs.Load() > 0 })
	var got []byte
	for len(got) < size {
		d, err := nextRecord(t, tp, c)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		got = append(got, d...)
	}
	checkCarried(t, tp, done, got, down)
}

// checkCarried checks a pair's carriage of down, written by the broker
// past a blocked write (done: the writer's end), after 8 bytes up: got is
// what the client read of it, the meter counts both ways.
func checkCarried(t *testing.T, tp *testPair, done <-chan error, got, down []byte) {
	t.Helper()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, down) {
		t.Fatal("the broker's bytes came back changed")
	}
	if up, dn := tp.conn.Bytes(); up != 8 || dn != int64(len(down)) {
		t.Errorf("meter up %d down %d, want 8 and %d", up, dn, len(down))
	}
}

// TestTLSPairEnds: how a TLS pair in a loop ends, as tlsrecord.Conn's do
// on the parked path: the client's close_notify is a FIN to the broker
// and the broker's FIN a close_notify then FIN to the client [RFC 8446
// 6.1]; a close at a boundary sends the DISCONNECT in a record, then
// close_notify; a bad record is its alert [RFC 8446 6.2] and a
// client_error with Conn's error, a FIN inside a record too.
func TestTLSPairEnds(t *testing.T) {
	t.Parallel()
	disconnect := []byte{0xe0, 0x02, 0x8d, 0x00}
	for _, tc := range []struct {
		name    string
		act     func(t *testing.T, tp *testPair, c *tlsrecord.Records)
		client  []string // what the client opens, in order: plaintext, "EOF" (close_notify) or an error
		end     pipe.End
		why     string
		clientE bool          // the client's stream is read to its FIN
		opts    *pipe.Options // other than an idle limit of a minute
	}{
		{name: "RFC 8446 6.1: close_notify is a FIN to the broker",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				write(t, tp.client, append(sealed(c, "\xc0\x00"), alertRec(c, 1, 0)...))
				expectEOFAfter(t, tp.broker, "\xc0\x00")
				tp.broker.CloseWrite()
			},
			clientE: true, end: pipe.ClientClosed},
		{name: "RFC 8446 6.1: the broker's FIN is close_notify, then FIN",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				write(t, tp.broker, []byte("\xd0\x00"))
				tp.broker.CloseWrite()
			},
			client: []string{"\xd0\x00", "EOF"}, clientE: true, end: pipe.BrokerClosed},
		{name: "MQTT-3.14: a close at a boundary sends the DISCONNECT in a record, then close_notify",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				tp.conn.CloseAtBoundary(pipe.End("kicked"), disconnect)
			},
			client: []string{string(disconnect), "EOF"}, clientE: true, end: pipe.End("kicked"), why: net.ErrClosed.Error()},
		{name: "MQTT-3.1.2-22: the idle limit's DISCONNECT 0x8D in a record, then close_notify",
			act:    func(t *testing.T, tp *testPair, c *tlsrecord.Records) {},
			client: []string{"\xe0\x01\x8d", "EOF"}, clientE: true, end: pipe.IdleTimeout, why: net.ErrClosed.Error(),
			opts: &pipe.Options{Idle: 100 * time.Millisecond, Level: 5}},
		{name: "MQTT-3.2.2-15: a packet over the limit: DISCONNECT 0x95 in a record, then close_notify",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				write(t, tp.client, sealed(c, "\x30\xff\x7f")) // a PUBLISH of 16,383 bytes
			},
			client: []string{"\xe0\x01\x95", "EOF"}, clientE: true, end: pipe.PacketTooLarge, why: net.ErrClosed.Error(),
			opts: &pipe.Options{Idle: time.Minute, Level: 5, MaxPacketSize: 1000}},
		{name: "RFC 8446 5.2: a bad record is bad_record_mac",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				b := sealed(c, "x")
				b[6] ^= 1
				write(t, tp.client, b)
			},
			client: []string{"alert 20"}, clientE: true, end: pipe.ClientError, why: "bad record MAC"},
		{name: "RFC 8446 5.1: a FIN inside a record",
			act: func(t *testing.T, tp *testPair, c *tlsrecord.Records) {
				b := sealed(c, "xyz")
				write(t, tp.client, b[:len(b)-2])
				tp.client.CloseWrite()
			},
			clientE: true, end: pipe.ClientError, why: io.ErrUnexpectedEOF.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1)
			opts := pipe.Options{Idle: time.Minute, Level: 5}
			if tc.opts != nil {
				opts = *tc.opts
			}
			tp, c := h.tlsPair(opts, false)
			write(t, tp.client, sealed(c, "\x10\x00"))
			if got := readN(t, tp.broker, 2); string(got) != "\x10\x00" {
				t.Fatalf("broker read %q", got)
			}
			tc.act(t, tp, c)
			for _, want := range tc.client {
				d, err := nextRecord(t, tp, c)
				got := string(d)
				if err != nil {
					got = err.Error()
				}
				if !strings.Contains(got, want) {
					t.Fatalf("client opened %q, want %q", got, want)
				}
			}
			if tc.clientE {
				expectEOF(t, tp.client)
			}
			tp.client.CloseWrite()
			res := tp.wait(t)
			if res.End != tc.end || (tc.why == "" && res.Err != nil) || (tc.why != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tc.why))) {
				t.Fatalf("ended %s, %v; want %s %q", res.End, res.Err, tc.end, tc.why)
			}
		})
	}
}

// expectEOFAfter reads want and then the stream's end from c.
func expectEOFAfter(t *testing.T, c net.Conn, want string) {
	t.Helper()
	if got := readN(t, c, len(want)); string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	expectEOF(t, c)
}

// FuzzTLSOpen feeds the loop's record reader whatever a client might send
// after the handshake, in one read and cut into reads of 1..64 bytes: it
// must not panic, pass on more plaintext than it read, or depend on where
// the reads were cut. The seeds (here and in testdata) are records sealed
// with the test secrets, as a client would send them, and broken ones.
func FuzzTLSOpen(f *testing.F) {
	_, c := tlsEnds(f)
	good := bytes.Join([][]byte{sealed(c, "\x30\x05\x00\x01tab"), c.KeyUpdateRequest(), sealed(c, strings.Repeat("\xc0\x00", 100)), alertRec(c, 1, 90), alertRec(c, 1, 0)}, nil)
	f.Add(good, uint16(1))
	f.Add(good[:len(good)/2], uint16(5))
	bad := bytes.Clone(good)
	bad[7] ^= 1
	f.Add(bad, uint16(3))
	f.Add([]byte{23, 3, 3, 0xff, 0xff}, uint16(2))
	f.Add([]byte{22, 3, 3, 0, 4, 1, 0, 0, 0}, uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		feedAll := func(cut int) tlsOutcome {
			server, client := tlsEnds(t)
			return openCut(t, server, client, in, cut)
		}
		whole := feedAll(len(in) + 1)
		cut := feedAll(int(chunk%64) + 1)
		if len(whole.data) > len(in) {
			t.Fatalf("%d bytes of plaintext out of %d", len(whole.data), len(in))
		}
		if !bytes.Equal(whole.data, cut.data) || whole.replies != cut.replies || whole.alert != cut.alert || (whole.err == nil) != (cut.err == nil) || whole.mid != cut.mid {
			t.Fatalf("one read: %q %d %d %v %v; reads of %d: %q %d %d %v %v", whole.data, whole.replies, whole.alert, whole.err, whole.mid,
				chunk%64+1, cut.data, cut.replies, cut.alert, cut.err, cut.mid)
		}
	})
}

// TestTLSInSize keeps what a TLS pair adds to its loop beside the
// 128-byte Conn small: the slot's record state (the Records is apart, its
// cipher states only while bytes flow).
func TestTLSInSize(t *testing.T) {
	const budget = 48
	if got := sizeclass.Of[tlsIn](); got > budget {
		t.Errorf("a tlsIn of %d bytes takes a %d-byte slot, want at most %d", unsafe.Sizeof(tlsIn{}), got, budget)
	}
}
