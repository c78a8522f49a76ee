// Package accesslog writes mqgate's access log: one record per connection,
// and one per HTTP request on an HTTP route (Method set),
// encoded by a Format into a buffer without allocating, and written out in
// batches, so that the log a user keeps by default costs little next to
// the connection it describes.
//
//	w := accesslog.New(os.Stdout, accesslog.JSON)
//	defer w.Close() // writes out what is buffered
//	w.Log(&accesslog.Record{Listener: ":1883", ClientID: "meter-1", End: "client_closed"})
//
// A record reaches the output at most FlushDelay after Log, or at once when
// a batch of BatchSize bytes is full. Log never blocks on a slow output for
// longer than one write of a batch, and a failed write is reported by Err
// (the lines of that batch are lost: a log is not a queue). Swap changes
// the output, for reopening a rotated file.
package accesslog

import (
	"io"
	"net/netip"
	"sync"
	"time"
)

// Record is one connection's access-log record, or one HTTP request's:
// with Method set, Route is the HTTP route, Status the response's, BytesUp
// and BytesDown the request and response bodies, Duration the request's,
// and the MQTT fields are left out.
type Record struct {
	Time          time.Time // when the record was made; zero: when Log is called
	Listener      string
	Client        netip.AddrPort
	Route         string
	ClientID      string
	Username      string
	ProtocolLevel int
	Node          string
	BytesUp       int64
	BytesDown     int64
	Duration      time.Duration
	End           string
	Detail        string // empty: left out
	ErrorKind     string // empty: left out

	ProxyProtocolPeer netip.AddrPort // zero: no PROXY header, left out

	TLS        bool // the fields below up to UpstreamClientID are written only with TLS
	TLSVersion string
	TLSResumed bool
	SNI        string
	// The client certificate's subject, serial and fingerprint; written
	// when ClientSerial is not empty.
	ClientSDN, ClientSerial, ClientFingerprint string

	UpstreamClientID string // the client id sent to the broker when a rewrite changed it; empty: left out

	Transport   string         // "ws" or "wss" for MQTT over WebSocket; empty: left out
	ForwardedBy netip.AddrPort // the trusted proxy whose X-Real-IP/X-Forwarded-For gave Client; zero: left out

	// For log.access_log_format (Template); JSON leaves them out.
	Server      netip.AddrPort // the address the client connected to
	Upstream    string         // the node's upstream id
	Status      int            // NGINX's $status of the session
	ClientSDNCN string         // the client certificate subject's common name

	// An HTTP request: its method (empty for a connection's record), Host
	// header, request URI (path and query) and protocol ("HTTP/1.1"), and
	// the headers NGINX's combined format logs.
	Method, Host, URI, Proto string
	UserAgent, Referer       string
}

// Format appends one encoded record, its line end included, to dst and
// returns the extended buffer. It must not keep r or dst.
type Format func(dst []byte, r *Record) []byte

// Batching of the write path.
const (
	BatchSize  = 32 << 10              // a full batch is written at once
	FlushDelay = 50 * time.Millisecond // a record waits at most this long
)

// Writer writes records to an io.Writer. It is safe for concurrent use.
type Writer struct {
	format Format

	mu      sync.Mutex
	out     io.Writer
	buf     []byte
	rec     Record      // the record being encoded: a copy, so Log's argument stays on its caller's stack
	flusher *time.Timer // fires FlushDelay after the first record of a batch
	pending bool        // flusher is armed
	err     error       // the first write error
	closed  bool
}

// New returns a Writer of records to out in format (JSON when nil).
func New(out io.Writer, format Format) *Writer {
	if format == nil {
		format = JSON
	}
	w := &Writer{format: format, out: out, buf: make([]byte, 0, BatchSize)}
	w.flusher = time.AfterFunc(time.Hour, w.flushLater)
	w.flusher.Stop()
	return w
}

// Log encodes r and queues it for writing.
func (w *Writer) Log(r *Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.rec = *r
	if w.rec.Time.IsZero() {
		w.rec.Time = time.Now()
	}
	w.buf = w.format(w.buf, &w.rec)
	w.rec = Record{} // keep no strings alive
	switch {
	case len(w.buf) >= BatchSize:
		w.flushLocked()
	case !w.pending:
		w.pending = true
		w.flusher.Reset(FlushDelay)
	}
}

func (w *Writer) flushLater() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
}

// flushLocked writes the batch out. w.mu is held.
func (w *Writer) flushLocked() {
	if w.pending {
		w.flusher.Stop()
		w.pending = false
	}
	if len(w.buf) == 0 {
		return
	}
	if _, err := w.out.Write(w.buf); err != nil && w.err == nil {
		w.err = err
	}
	if cap(w.buf) > 4*BatchSize {
		w.buf = make([]byte, 0, BatchSize) // one huge record is not kept
	}
	w.buf = w.buf[:0]
}

// SetFormat makes f the format of the records logged from now on (JSON
// when nil): a reload that changes log.access_log_format.
func (w *Writer) SetFormat(f Format) {
	if f == nil {
		f = JSON
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.format = f
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.err
}

// Swap writes out what is buffered to the current output, then makes out
// the output and returns the previous one (for the caller to close).
func (w *Writer) Swap(out io.Writer) io.Writer {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	old := w.out
	w.out = out
	return old
}

// Err returns the first error writing to the output, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close writes out what is buffered; later records are dropped. It does
// not close the output.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	w.closed = true
	return w.err
}
