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
// a batch of BatchSize bytes is full. Log does no I/O itself: a full batch
// is written by a goroutine of its own, so that an event loop that logs a
// connection's end is not held up by the output (a file on a busy disk, a
// stdout whose reader lags). While a write is under way records wait in
// memory, up to MaxBacklog bytes; past that Log waits for the output, as a
// blocking write would. A failed write is reported by Err (the lines of
// that batch are lost: a log is not a queue). Swap changes the output, for
// reopening a rotated file.
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
	MaxBacklog = 64 * BatchSize        // records waiting while a write is under way, at most
)

// Writer writes records to an io.Writer. It is safe for concurrent use.
type Writer struct {
	format Format

	mu      sync.Mutex
	out     io.Writer
	buf     []byte      // the batch being filled
	full    [][]byte    // batches waiting for the writer, oldest first
	queued  int         // bytes in full, waiting (not the batch being written)
	free    [][]byte    // written batches, for reuse
	rec     Record      // the record being encoded: a copy, so Log's argument stays on its caller's stack
	flusher *time.Timer // fires FlushDelay after the first record of a batch
	pending bool        // flusher is armed
	writing bool        // a writer is draining full, writing outside mu
	written sync.Cond   // on mu: a write ended
	err     error       // the first write error
	closed  bool
}

// keptBatches is how many written batches a Writer keeps for reuse.
const keptBatches = 4

// New returns a Writer of records to out in format (JSON when nil).
func New(out io.Writer, format Format) *Writer {
	if format == nil {
		format = JSON
	}
	w := &Writer{format: format, out: out, buf: make([]byte, 0, BatchSize)}
	w.written.L = &w.mu
	w.flusher = time.AfterFunc(time.Hour, w.flushLater)
	w.flusher.Stop()
	return w
}

// Log encodes r and queues it for writing.
func (w *Writer) Log(r *Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.queued >= MaxBacklog && !w.closed {
		w.written.Wait() // the output is this far behind: wait for it
	}
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
		w.queueLocked()
		if !w.writing {
			w.writing = true
			go w.writeOut()
		}
	case !w.pending:
		w.pending = true
		w.flusher.Reset(FlushDelay)
	}
}

// queueLocked hands the batch being filled to the writer and starts the
// next one. w.mu is held.
func (w *Writer) queueLocked() {
	w.full = append(w.full, w.buf)
	w.queued += len(w.buf)
	if n := len(w.free); n > 0 {
		w.buf = w.free[n-1][:0]
		w.free = w.free[:n-1]
	} else {
		w.buf = make([]byte, 0, BatchSize)
	}
}

// writeOut writes the queued batches, and those queued meanwhile, until
// none is left. It runs with w.writing set, as the only writer.
func (w *Writer) writeOut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.drainLocked()
}

func (w *Writer) flushLater() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = false
	if len(w.buf) > 0 {
		w.queueLocked()
	}
	if !w.writing { // else the writer under way takes this batch too
		w.writing = true
		w.drainLocked()
	}
}

// drainLocked writes the queued batches, with w.mu released during each
// write, until none is left, then clears w.writing. w.mu is held and
// w.writing set by the caller.
func (w *Writer) drainLocked() {
	for len(w.full) > 0 {
		b, out := w.full[0], w.out
		w.full[0] = nil
		w.full = w.full[1:]
		w.queued -= len(b)
		w.mu.Unlock()
		_, err := out.Write(b)
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		if len(w.free) < keptBatches && cap(b) <= 2*BatchSize { // one huge record is not kept
			w.free = append(w.free, b[:0])
		}
		w.written.Broadcast()
	}
	w.full = nil
	w.writing = false
	w.written.Broadcast()
}

// flushLocked writes out what is buffered, once any write under way has
// ended. w.mu is held.
func (w *Writer) flushLocked() {
	if w.pending {
		w.flusher.Stop()
		w.pending = false
	}
	if len(w.buf) > 0 {
		w.queueLocked()
	}
	for w.writing {
		w.written.Wait()
	}
	w.writing = true
	w.drainLocked()
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
	w.written.Broadcast()
	return w.err
}
