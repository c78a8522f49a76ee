package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// full is a record with every field set.
func full() Record {
	return Record{
		Time:              time.Date(2026, 12, 1, 9, 30, 1, 234567890, time.UTC),
		Listener:          "0.0.0.0:8883",
		Client:            netip.MustParseAddrPort("192.0.2.7:40001"),
		Route:             "meters",
		ClientID:          "meter-7",
		Username:          "acme",
		ProtocolLevel:     5,
		Node:              "10.0.0.2:1883",
		BytesUp:           1234,
		BytesDown:         56789,
		Duration:          1500 * time.Millisecond,
		End:               "client_closed",
		Detail:            "a \"quoted\" detail\n",
		ErrorKind:         "malformed",
		ProxyProtocolPeer: netip.MustParseAddrPort("[2001:db8::1]:5000"),
		TLS:               true,
		TLSVersion:        "TLSv1.3",
		TLSResumed:        true,
		SNI:               "mqtt.example.com",
		ClientSDN:         "CN=meter-7,O=Acme",
		ClientSerial:      "0A1B",
		ClientFingerprint: "ab12",
		UpstreamClientID:  "acme/meter-7",
		Transport:         "wss",
		ForwardedBy:       netip.MustParseAddrPort("10.0.0.9:41000"),
	}
}

// viaSlog is the line log/slog's JSONHandler wrote for r before this
// package: the reference the JSON format keeps.
func viaSlog(r *Record) []byte {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, nil)
	attrs := []slog.Attr{
		slog.String("listener", r.Listener),
		slog.String("client", r.Client.String()),
		slog.String("route", r.Route),
		slog.String("client_id", r.ClientID),
		slog.String("username", r.Username),
		slog.Int("protocol_level", r.ProtocolLevel),
		slog.String("node", r.Node),
		slog.Int64("bytes_up", r.BytesUp),
		slog.Int64("bytes_down", r.BytesDown),
		slog.Float64("duration_s", r.Duration.Seconds()),
		slog.String("end", r.End),
	}
	if r.Detail != "" {
		attrs = append(attrs, slog.String("detail", r.Detail))
	}
	if r.ErrorKind != "" {
		attrs = append(attrs, slog.String("error_kind", r.ErrorKind))
	}
	if r.ProxyProtocolPeer.IsValid() {
		attrs = append(attrs, slog.String("proxy_protocol_peer", r.ProxyProtocolPeer.String()))
	}
	if r.TLS {
		attrs = append(attrs, slog.String("tls_version", r.TLSVersion), slog.Bool("tls_resumed", r.TLSResumed), slog.String("ssl_server_name", r.SNI))
		if r.ClientSerial != "" {
			attrs = append(attrs, slog.String("ssl_client_s_dn", r.ClientSDN), slog.String("ssl_client_serial", r.ClientSerial), slog.String("ssl_client_fingerprint", r.ClientFingerprint))
		}
	}
	if r.UpstreamClientID != "" {
		attrs = append(attrs, slog.String("upstream_client_id", r.UpstreamClientID))
	}
	if r.Transport != "" {
		attrs = append(attrs, slog.String("transport", r.Transport))
	}
	if r.ForwardedBy.IsValid() {
		attrs = append(attrs, slog.String("forwarded_by", r.ForwardedBy.String()))
	}
	rec := slog.NewRecord(r.Time, slog.LevelInfo, "connection", 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(context.Background(), rec)
	return buf.Bytes()
}

func TestJSONSameAsSlog(t *testing.T) {
	minimal := Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600)), End: "refused"}
	tiny := full()
	tiny.Duration = 300 // 3e-07 s: the exponent form
	plain := full()
	plain.TLS, plain.ClientSerial = false, ""
	noCert := full()
	noCert.ClientSerial = ""
	odd := full()
	odd.ClientID = "tab\there <b>&</b> \x00\x1f \u2028\u2029 \xff end\\"
	odd.Username = "ünïcødé 🙂"
	for name, r := range map[string]Record{"full": full(), "minimal": minimal, "tiny duration": tiny, "plain": plain, "no client cert": noCert, "odd strings": odd} {
		t.Run(name, func(t *testing.T) {
			got, want := JSON(nil, &r), viaSlog(&r)
			if !bytes.Equal(got, want) {
				t.Errorf("JSON:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestEscaped(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{`"q"`, `\"q\"`},
		{`back\slash`, `back\\slash`},
		{"\n\r\t", `\n\r\t`},
		{"\x00\x01\x1f", `\u0000\u0001\u001f`},
		{"\x7f", "\x7f"}, // DEL is allowed in JSON strings
		{"<>&", "<>&"},   // no HTML escaping, as slog
		{"a\xffb", `a\ufffdb`},
		{"\u2028\u2029", `\u2028\u2029`},
		{"é🙂", "é🙂"},
	} {
		if got := string(appendEscaped(nil, tt.in)); got != tt.want {
			t.Errorf("appendEscaped(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzJSON checks that every record encodes to one line of valid JSON whose
// strings decode back to the record's (invalid UTF-8 as U+FFFD).
func FuzzJSON(f *testing.F) {
	f.Add("meter-7", "acme", "detail", int64(12), int64(-1))
	f.Add("\x00\"\\\n\u2028", "\xff\xfe", "", int64(0), int64(1<<62))
	f.Fuzz(func(t *testing.T, clientID, username, detail string, n int64, d int64) {
		r := full()
		r.ClientID, r.Username, r.Detail, r.BytesUp, r.Duration = clientID, username, detail, n, time.Duration(d)
		line := JSON(nil, &r)
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("not one line: %q", line)
		}
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("invalid JSON %q: %v", line, err)
		}
		for key, want := range map[string]string{"client_id": clientID, "username": username} {
			if got[key] != strings.ToValidUTF8(want, "\uFFFD") && got[key] != validRunes(want) {
				t.Errorf("%s = %q, want %q", key, got[key], want)
			}
		}
	})
}

// validRunes replaces each invalid byte by U+FFFD, as the encoder does
// (strings.ToValidUTF8 replaces a run of them by one).
func validRunes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

func TestJSONAllocatesNothing(t *testing.T) {
	r := full()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = JSON(buf[:0], &r) }); n != 0 {
		t.Errorf("JSON allocates %v times per record, want 0", n)
	}
	w := New(discard{}, nil)
	defer w.Close()
	if n := testing.AllocsPerRun(100, func() { w.Log(&r) }); n != 0 {
		t.Errorf("Writer.Log allocates %v times per record, want 0", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// sink records each Write it gets.
type sink struct {
	mu     sync.Mutex
	writes [][]byte
	wrote  chan struct{}
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 100)} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, append([]byte(nil), p...))
	s.mu.Unlock()
	s.wrote <- struct{}{}
	return len(p), nil
}

func (s *sink) all() (writes int, data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes), string(bytes.Join(s.writes, nil))
}

func TestWriterBatches(t *testing.T) {
	s := newSink()
	w := New(s, nil)
	r := full()
	for range 3 {
		w.Log(&r)
	}
	<-s.wrote // the batch goes out after FlushDelay, in one write
	n, data := s.all()
	if n != 1 || strings.Count(data, "\n") != 3 {
		t.Fatalf("%d writes of %d lines, want 1 of 3", n, strings.Count(data, "\n"))
	}

	// A full batch is written at once, without waiting.
	line := len(JSON(nil, &r))
	for range BatchSize/line + 1 {
		w.Log(&r)
	}
	<-s.wrote
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n, data = s.all()
	if want := 3 + BatchSize/line + 1; strings.Count(data, "\n") != want {
		t.Errorf("%d lines after Close, want %d", strings.Count(data, "\n"), want)
	}
	if n < 2 {
		t.Errorf("%d writes, want the full batch and the rest", n)
	}
	w.Log(&r) // dropped after Close
	if _, after := s.all(); after != data {
		t.Error("a record logged after Close was written")
	}
}

func TestWriterSwap(t *testing.T) {
	first, second := &bytes.Buffer{}, &bytes.Buffer{}
	w := New(first, nil)
	r := full()
	w.Log(&r)
	if old := w.Swap(second); old != first {
		t.Fatalf("Swap returned %v, want the first output", old)
	}
	w.Log(&r)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Count(first.String(), "\n") != 1 || strings.Count(second.String(), "\n") != 1 {
		t.Errorf("first %q, second %q: want one line each", first, second)
	}
}

func TestWriterFormat(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, func(dst []byte, r *Record) []byte { return append(append(dst, r.ClientID...), '\n') })
	r := full()
	w.Log(&r)
	_ = w.Close()
	if out.String() != "meter-7\n" {
		t.Errorf("got %q", out.String())
	}
}

func TestWriterTimeDefaultsToNow(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, nil)
	before := time.Now().Add(-time.Second)
	w.Log(&Record{End: "refused"})
	_ = w.Close()
	var got struct{ Time time.Time }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Time.Before(before) {
		t.Errorf("time %v, want about now", got.Time)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errFull }

var errFull = &json.UnsupportedValueError{Str: "disk full"}

func TestWriterReportsErrors(t *testing.T) {
	w := New(failing{}, nil)
	r := full()
	w.Log(&r)
	if err := w.Flush(); err != errFull {
		t.Errorf("Flush = %v, want the write error", err)
	}
	if !reflect.DeepEqual(w.Err(), error(errFull)) {
		t.Errorf("Err = %v", w.Err())
	}
}

// BenchmarkEncode compares the JSON format with log/slog's JSONHandler, which
// wrote the record before.
//
//	go test -run '^$' -bench Encode -benchmem ./accesslog/
func BenchmarkEncode(b *testing.B) {
	r := full()
	r.Detail, r.ErrorKind, r.ProxyProtocolPeer, r.TLS, r.UpstreamClientID = "", "", netip.AddrPort{}, false, ""
	b.Run("JSON", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		b.ReportAllocs()
		for b.Loop() {
			buf = JSON(buf[:0], &r)
		}
	})
	b.Run("slog", func(b *testing.B) {
		logger := slog.New(slog.NewJSONHandler(discard{}, nil))
		b.ReportAllocs()
		for b.Loop() {
			logger.LogAttrs(context.Background(), slog.LevelInfo, "connection",
				slog.String("listener", r.Listener),
				slog.String("client", r.Client.String()),
				slog.String("route", r.Route),
				slog.String("client_id", r.ClientID),
				slog.String("username", r.Username),
				slog.Int("protocol_level", r.ProtocolLevel),
				slog.String("node", r.Node),
				slog.Int64("bytes_up", r.BytesUp),
				slog.Int64("bytes_down", r.BytesDown),
				slog.Float64("duration_s", r.Duration.Seconds()),
				slog.String("end", r.End))
		}
	})
	b.Run("Writer.Log", func(b *testing.B) {
		w := New(discard{}, nil)
		defer w.Close()
		b.ReportAllocs()
		for b.Loop() {
			w.Log(&r)
		}
	})
}

// stalled is an output whose writes wait until release is closed.
type stalled struct {
	started chan struct{} // one receive per write begun
	release chan struct{}
	mu      sync.Mutex
	out     bytes.Buffer
}

func (s *stalled) Write(p []byte) (int, error) {
	s.started <- struct{}{}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

// Log does no I/O of its own: while the output is stuck in a write, an
// event loop logging a connection's end goes on, up to MaxBacklog.
func TestWriterLogsWhileWriting(t *testing.T) {
	s := &stalled{started: make(chan struct{}, 64), release: make(chan struct{})}
	w := New(s, func(dst []byte, r *Record) []byte { return append(append(dst, r.ClientID...), '\n') })
	line := BatchSize/8 + 1 // 8 records fill a batch
	id := func(i int) string { return fmt.Sprintf("%0*d", line-1, i) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 8 {
			w.Log(&Record{ClientID: id(i)})
		}
		<-s.started               // the full batch is being written, and stays stuck
		for i := 8; i < 24; i++ { // two batches more, logged while the write is stuck
			w.Log(&Record{ClientID: id(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Log waited for a stuck write with less than MaxBacklog buffered")
	}
	close(s.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(s.out.String(), "\n"), "\n")
	if len(lines) != 24 {
		t.Fatalf("%d lines, want 24", len(lines))
	}
	for i, l := range lines {
		if l != id(i) {
			t.Fatalf("line %d is %q…, want record %d: out of order", i, l[max(len(l)-4, 0):], i)
		}
	}
}

// Past MaxBacklog, Log waits for the output rather than grow without bound.
func TestWriterBacklogBounded(t *testing.T) {
	s := &stalled{started: make(chan struct{}, 1024), release: make(chan struct{})}
	w := New(s, func(dst []byte, r *Record) []byte { return append(append(dst, r.ClientID...), '\n') })
	big := strings.Repeat("x", BatchSize-1)
	w.Log(&Record{ClientID: big})
	<-s.started
	logged := make(chan int, MaxBacklog/BatchSize+2)
	go func() {
		for i := range MaxBacklog/BatchSize + 1 {
			w.Log(&Record{ClientID: big})
			logged <- i
		}
	}()
	// MaxBacklog/BatchSize records fit while the first write is stuck; the
	// next one waits.
	for range MaxBacklog / BatchSize {
		select {
		case <-logged:
		case <-time.After(10 * time.Second):
			t.Fatal("Log waited below MaxBacklog")
		}
	}
	select {
	case i := <-logged:
		t.Fatalf("record %d logged past MaxBacklog while the output was stuck", i)
	case <-time.After(50 * time.Millisecond):
	}
	close(s.release)
	<-logged
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s.out.String(), "\n"); n != MaxBacklog/BatchSize+2 {
		t.Errorf("%d lines, want %d", n, MaxBacklog/BatchSize+2)
	}
}
