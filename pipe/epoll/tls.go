package epoll

import (
	"io"

	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
)

// This file is MQTT over TLS 1.3 (AES-GCM) inside the loops, its records
// carried by package tlsrecord's rules (tlsrecord.Records): the client's
// records are opened in place in the loop's read buffer, their plaintext
// moved down over the headers and tags before it, so that a burst of
// records reaches the broker in one write; a record cut by the end of a
// read is kept until the rest comes. What the broker sends is read into
// the buffer at tlsrecord.HeaderRoom, at most one record's worth, and
// sealed in place (header before, content type and tag after): one write
// per read, as for plain TCP. A KeyUpdate asking for ours is answered, a
// close_notify is a FIN to the broker, the broker's FIN a close_notify to
// the client, and a record breaking RFC 8446 fails the connection with
// the alert the Conn sends, and the same error.
//
// A wss pair (Conn.ws and Conn.tls, AddWSS) is the two layers composed,
// each in one place: the records' plaintext is the client's WebSocket
// frames, which readTLS hands to readWS (ws.go) in the same buffer, and
// what goes to the client is framed by ws.go and sealed here (seal, and
// toClient's frame header sealed in place with its bytes).

// tlsIn is what a TLS pair adds to a Conn, kept by the loop beside its
// slot: the record layer and a record cut short by the end of a read.
type tlsIn struct {
	rec       *tlsrecord.Records
	part      []byte // the start of a record a read ended inside; nil when at a boundary
	closeSent bool   // a close_notify or an alert went to the client: no record may follow
	closedIn  bool   // the client's close_notify came: its FIN goes to the broker once the bytes before it are out
}

// tlsBrokerRead is the part of the loop's buffer a broker's bytes for a
// TLS client are read into: room for the header before them, one
// record's plaintext, room for its content type and tag after. For a wss
// client the room before is also the frame header's (wsHeadroom), and
// the record's plaintext is that header and the bytes.
func (l *loop) tlsBrokerRead(p *Conn) []byte {
	room := tlsrecord.HeaderRoom
	if p.ws {
		room += wsHeadroom
	}
	return l.buf[room : tlsrecord.HeaderRoom+tlsrecord.MaxPlaintext]
}

// seal is b, bytes for the client (a wss pair's frames), sealed in
// application records; with closing, a close_notify follows them and
// nothing is sealed after it [RFC 8446 6.1]. It is nil once a
// close_notify or an alert went.
func (t *tlsIn) seal(b []byte, closing bool) []byte {
	if t.closeSent {
		return nil
	}
	var out []byte
	if len(b) > 0 {
		out = t.rec.AppendRecords(nil, tlsrecord.TypeApplication, b)
	}
	if closing {
		t.closeSent = true
		out = append(out, t.rec.CloseNotify()...)
	}
	return out
}

// tlsClientRead returns the part of the loop's buffer to read a TLS
// client into, and the record kept from the last read copied before it
// (k bytes): the read goes to l.buf[k:], its bytes are l.buf[:k+n].
func (l *loop) tlsClientRead(p *Conn) (k int) {
	return copy(l.buf, l.tls[p.idx].part)
}

// open opens the whole records in b, a read with the record the last one
// cut short before it, in place: their plaintext is moved down over the
// headers and tags before it, to b[:data]; a record cut short at the end
// is kept (part). It stops at the first record that ends the client's
// stream: err is io.EOF for a close_notify, else the error to fail with,
// after the alert alert when it is not 0. reply is what goes to the
// client first: the answers to KeyUpdates asking for ours [RFC 8446
// 4.6.3], sealed before anything the broker sends after them.
func (t *tlsIn) open(b []byte) (data int, reply []byte, alert byte, err error) {
	part := t.part[:0] // copied into b already (tlsClientRead): its room is reused for the next cut record
	t.part = nil
	i := 0
	for len(b)-i >= tlsrecord.HeaderRoom {
		var n int
		if n, alert, err = tlsrecord.RecordLen(b[i:]); err != nil {
			return data, reply, alert, err
		}
		if len(b)-i < n {
			break
		}
		d, answer, alert, err := t.rec.Open(b[i : i+n])
		i += n
		data += copy(b[data:], d)
		if answer {
			reply = append(reply, t.rec.KeyUpdate()...)
		}
		if err != nil {
			return data, reply, alert, err
		}
	}
	if i < len(b) {
		t.part = append(part, b[i:]...)
	}
	return data, reply, 0, nil
}

// readTLS passes on what a TLS client sent, b the records read into the
// loop's buffer (tlsClientRead): their plaintext goes to the broker in one
// write, a KeyUpdate is answered, a close_notify passes a FIN on, a bad
// record fails the connection.
func (l *loop) readTLS(p *Conn, b []byte) {
	t := l.tls[p.idx]
	if t.closedIn || (p.ws && l.ws[p.idx].closedIn) {
		return // nothing is read after close_notify [RFC 8446 6.1] or a close frame [RFC 6455 5.5.1]
	}
	data, reply, alert, err := t.open(b)
	if len(reply) > 0 && !t.closeSent {
		l.sendRaw(p, client, reply)
		if p.done {
			return
		}
	}
	if p.ws {
		// wss: the plaintext is the client's frames (ws.go), taken apart
		// where it lies; what the frames end with (a close, a failure, a
		// close at a boundary) goes before the records after them.
		if data > 0 {
			l.readWS(p, b[:data])
			if p.done || p.closing() || l.ws[p.idx].closedIn {
				return
			}
		}
		if err == io.EOF && l.ws[p.idx].midFrame() {
			// close_notify inside a frame: as mqttws.Conn over a
			// tlsrecord.Conn ends it (its reader's io.ErrUnexpectedEOF).
			l.finish(p, pipe.ClientError, errClosedInFrame, false)
			return
		}
	} else if data > 0 && !l.clientMQTT(p, b[:data]) {
		return
	}
	switch {
	case err == io.EOF:
		// close_notify, as a FIN on TCP: the broker is told so once
		// the bytes before it are out (flush, closedIn).
		t.closedIn = true
		if p.pending(broker) == nil {
			l.halfClose(p, client)
		}
	case err != nil:
		l.tlsFail(p, alert, err)
	}
}

// toClientTLS sends b, bytes the broker sent, to the TLS client in
// records. b is a read into the loop's buffer at tlsrecord.HeaderRoom
// (tlsBrokerRead), so it is sealed in place and goes out in one write.
// The bytes are counted as MQTT bytes, without the records' overhead.
func (l *loop) toClientTLS(p *Conn, b []byte) {
	t := l.tls[p.idx]
	if len(b) == 0 || t.closeSent {
		return // nothing follows close_notify or an alert [RFC 8446 6.1]
	}
	var rec []byte
	if &b[0] == &l.buf[tlsrecord.HeaderRoom] && len(b) <= tlsrecord.MaxPlaintext {
		rec = t.rec.Seal(l.buf[:tlsrecord.HeaderRoom+len(b)], tlsrecord.TypeApplication)
	} else {
		rec = t.rec.AppendRecords(nil, tlsrecord.TypeApplication, b) // not from a read
	}
	p.meter.Add(false, int64(len(b)))
	p.lastActive = l.now
	l.sendRaw(p, client, rec)
}

// tlsGoodbye says the goodbye of a close at a boundary to a TLS client:
// final (a DISCONNECT, if any) in a record, then close_notify, in one
// write, as Conn's Write and CloseWrite do on the other paths. The stream
// to the client has nothing waiting.
func (l *loop) tlsGoodbye(p *Conn, final []byte) {
	t := l.tls[p.idx]
	if t.closeSent {
		return
	}
	t.closeSent = true
	var b []byte
	if len(final) > 0 {
		b = t.rec.AppendRecords(b, tlsrecord.TypeApplication, final)
	}
	b = append(b, t.rec.CloseNotify()...)
	_, _ = writeFD(int(p.fd[client]), b) // not counted: none of it is the broker's
}

// tlsCloseWrite sends the close_notify that goes before the FIN when the
// broker ended its stream (Conn.CloseWrite). Nothing waits to be written
// to the client (halfClose).
func (l *loop) tlsCloseWrite(p *Conn) {
	if t := l.tls[p.idx]; !t.closeSent {
		t.closeSent = true
		_, _ = writeFD(int(p.fd[client]), t.rec.CloseNotify())
	}
}

// tlsFail fails the connection for a record the client broke it with: the
// alert RFC 8446 names (none for the client's own alert), after what waits
// for the client, then a FIN, the client's last bytes dropped for at most
// pipe.Linger, as wsFail; the pair ends with err, as Conn's Read fails.
func (l *loop) tlsFail(p *Conn, alert byte, err error) {
	if p.closing() {
		l.finish(p, pipe.ClientError, err, true)
		return
	}
	t := l.tls[p.idx]
	var final []byte
	if alert != 0 && !t.closeSent {
		final = t.rec.Alert(alert)
	}
	t.closeSent = true
	if p.ws {
		l.ws[p.idx].closeSent = true // no frame without a record to carry it
	}
	l.failClient(p, err, final)
}

// tlsIdle lets the cipher state of side s's records go when its bytes ran
// out (tlsrecord.Records.Idle): an idle pair keeps none.
func (l *loop) tlsIdle(p *Conn, s int) {
	t := l.tls[p.idx]
	if s == client && t.part != nil {
		return // the rest of a record is on its way
	}
	t.rec.Idle(s == client, l.now)
}

// tlsMidRecord reports whether the client's stream stopped inside a
// record: a FIN then is an error, as Conn's Read says it.
func (l *loop) tlsMidRecord(p *Conn) bool { return l.tls[p.idx].part != nil }
