package accesslog_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/vars"
)

// seed003 is the NGINX blog's log_format mqtt, with the client id its
// second half appends.
const seed003 = `$remote_addr [$time_local] $protocol $status $bytes_received $bytes_sent $upstream_addr $mqtt_client_id`

// TestSeed003Line: the format writes the seed's line exactly, from the
// same values: 23 bytes from the client, 4 (the CONNACK) to it, node1.
func TestSeed003Line(t *testing.T) {
	f, err := accesslog.ParseFormat(seed003)
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2017, 3, 23, 11, 41, 56, 0, time.UTC)
	e := &accesslog.Entry{RemoteIP: "127.0.0.1", RemotePort: "50123", Start: end.Add(-1500 * time.Millisecond), End: end,
		Status: 200, BytesReceived: 23, BytesSent: 4, UpstreamAddr: "127.0.0.1:18831", ClientID: "thing001"}
	got := string(f.Append(nil, e))
	if want := "127.0.0.1 [23/Mar/2017:11:41:56 +0000] TCP 200 23 4 127.0.0.1:18831 thing001\n"; got != want {
		t.Errorf("line\n%q\nwant\n%q", got, want)
	}
}

func TestFormatVariables(t *testing.T) {
	end := time.Date(2026, 12, 1, 9, 30, 0, 250_000_000, time.FixedZone("", 3600))
	vs := &vars.Set{SSLServerName: "mqtt.example.com", SSLClientSDNCN: "meter-7"}
	e := &accesslog.Entry{RemoteIP: "192.0.2.7", RemotePort: "40001", ServerIP: "10.0.0.1", ServerPort: "8883",
		Start: end.Add(-2 * time.Second), End: end, Status: 503, BytesReceived: 41, BytesSent: 5,
		UpstreamID: "cloud", ClientID: "meter-7", Username: "ingest", ProtocolLevel: 5,
		EndReason: "refused", Detail: "connection rate exceeded", RouteID: "sensors", Listener: "8883", Vars: vs}
	for _, tc := range []struct{ format, want string }{
		{`$remote_addr:$remote_port -> $server_addr:$server_port`, "192.0.2.7:40001 -> 10.0.0.1:8883"},
		{`$time_iso8601 $msec $session_time`, "2026-12-01T09:30:00+01:00 1796113800.250 2.000"},
		{`${mqtt_client_id}/${mqtt_username}@$mqtt_protocol_level`, "meter-7/ingest@5"},
		{`$status $end "$detail" $route_id $listener $upstream_id "$upstream_addr"`, `503 refused "connection rate exceeded" sensors 8883 cloud ""`},
		{`$ssl_server_name $ssl_client_s_dn_cn $ssl_client_serial.`, "mqtt.example.com meter-7 ."},
		{`costs $$5`, "costs $5"},
	} {
		f, err := accesslog.ParseFormat(tc.format)
		if err != nil {
			t.Errorf("%s: %v", tc.format, err)
			continue
		}
		if got := string(f.Append(nil, e)); got != tc.want+"\n" {
			t.Errorf("%s: %q, want %q", tc.format, got, tc.want)
		}
	}
}

func TestFormatErrors(t *testing.T) {
	for format, want := range map[string]string{
		`$remote_adr`:   "unknown variable $remote_adr",
		`${time_local`:  `"${" at byte 0 has no closing "}"`,
		`50$ off`:       `"$" at byte 3 starts no variable name`,
		`$request_time`: "unknown variable $request_time",
	} {
		if _, err := accesslog.ParseFormat(format); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", format, err, want)
		}
	}
}

// TestFileReopen: after the file is renamed (logrotate) and reopened,
// lines go to a new file at the path; lines written by many goroutines
// meanwhile are each whole, in one file or the other, none lost.
func TestFileReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := accesslog.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				if _, err := fmt.Fprintf(f, "writer-%d line-%03d %s\n", w, i, strings.Repeat("x", 100)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := f.Write([]byte("after reopen\n")); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !bytes.HasSuffix(cur, []byte("after reopen\n")) {
		t.Errorf("the new file does not end with the last line:\n%s", cur)
	}
	lines := strings.Split(strings.TrimSuffix(string(old)+string(cur), "\n"), "\n")
	if len(lines) != writers*each+1 {
		t.Fatalf("%d lines in both files, want %d", len(lines), writers*each+1)
	}
	for _, l := range lines {
		if l != "after reopen" && (len(l) != len("writer-0 line-000 ")+100 || !strings.HasPrefix(l, "writer-")) {
			t.Fatalf("a broken line: %q", l)
		}
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err == nil {
		t.Error("reopen in a removed directory succeeded")
	}
	if _, err := f.Write([]byte("still written\n")); err != nil {
		t.Errorf("after a failed reopen the old file is gone: %v", err)
	}
}
