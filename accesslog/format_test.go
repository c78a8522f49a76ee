package accesslog_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mqgate/mqgate/accesslog"
)

// seed003 is the NGINX blog's log_format mqtt, with the client id its
// second half appends.
const seed003 = `$remote_addr [$time_local] $protocol $status $bytes_received $bytes_sent $upstream_addr $mqtt_client_id`

// TestSeed003Line: the format writes the seed's line exactly, from the
// same values: 23 bytes from the client, 4 (the CONNACK) to it, node1.
func TestSeed003Line(t *testing.T) {
	f, err := accesslog.ParseTemplate(seed003)
	if err != nil {
		t.Fatal(err)
	}
	r := &accesslog.Record{Client: netip.MustParseAddrPort("127.0.0.1:50123"), Time: time.Date(2017, 3, 23, 11, 41, 56, 0, time.UTC),
		Duration: 1500 * time.Millisecond, Status: 200, BytesUp: 23, BytesDown: 4, Node: "127.0.0.1:18831", ClientID: "thing001"}
	got := string(f.Format(nil, r))
	if want := "127.0.0.1 [23/Mar/2017:11:41:56 +0000] TCP 200 23 4 127.0.0.1:18831 thing001\n"; got != want {
		t.Errorf("line\n%q\nwant\n%q", got, want)
	}
}

// TestTemplateAllocs: a template formats without allocating, as JSON does.
func TestTemplateAllocs(t *testing.T) {
	f, err := accesslog.ParseTemplate(seed003 + ` $time_iso8601 $session_time $ssl_client_s_dn_cn`)
	if err != nil {
		t.Fatal(err)
	}
	r := &accesslog.Record{Client: netip.MustParseAddrPort("127.0.0.1:50123"), Time: time.Now(), Node: "127.0.0.1:18831", ClientID: "thing001"}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = f.Format(buf[:0], r) }); n != 0 {
		t.Errorf("%v allocations per line, want 0", n)
	}
}

func TestFormatVariables(t *testing.T) {
	r := &accesslog.Record{Client: netip.MustParseAddrPort("192.0.2.7:40001"), Server: netip.MustParseAddrPort("10.0.0.1:8883"),
		Time: time.Date(2026, 12, 1, 9, 30, 0, 250_000_000, time.FixedZone("", 3600)), Duration: 2 * time.Second,
		Status: 503, BytesUp: 41, BytesDown: 5, Upstream: "cloud", ClientID: "meter-7", Username: "ingest", ProtocolLevel: 5,
		End: "refused", Detail: "connection rate exceeded", Route: "sensors", Listener: "8883",
		TLS: true, SNI: "mqtt.example.com", ClientSDNCN: "meter-7"}
	for _, tc := range []struct{ format, want string }{
		{`$remote_addr:$remote_port -> $server_addr:$server_port`, "192.0.2.7:40001 -> 10.0.0.1:8883"},
		{`$time_iso8601 $msec $session_time`, "2026-12-01T09:30:00+01:00 1796113800.250 2.000"},
		{`${mqtt_client_id}/${mqtt_username}@$mqtt_protocol_level`, "meter-7/ingest@5"},
		{`$status $end "$detail" $route_id $listener $upstream_id "$upstream_addr"`, `503 refused "connection rate exceeded" sensors 8883 cloud ""`},
		{`$ssl_server_name $ssl_client_s_dn_cn $ssl_client_serial.`, "mqtt.example.com meter-7 ."},
		{`costs $$5`, "costs $5"},
	} {
		f, err := accesslog.ParseTemplate(tc.format)
		if err != nil {
			t.Errorf("%s: %v", tc.format, err)
			continue
		}
		if got := string(f.Format(nil, r)); got != tc.want+"\n" {
			t.Errorf("%s: %q, want %q", tc.format, got, tc.want)
		}
	}
}

func TestFormatErrors(t *testing.T) {
	for format, want := range map[string]string{
		`$remote_adr`:   "unknown variable $remote_adr",
		`${time_local`:  `"${" at byte 0 has no closing "}"`,
		`50$ off`:       `"$" at byte 3 starts no variable name`,
		`$request_body`: "unknown variable $request_body",
	} {
		if _, err := accesslog.ParseTemplate(format); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", format, err, want)
		}
	}
}

// TestHTTPRequestLine: an HTTP request's record in NGINX's combined
// format, and JSON's http_request line; a connection's record leaves the
// HTTP variables empty.
func TestHTTPRequestLine(t *testing.T) {
	const combined = `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time $host $upstream_addr`
	f, err := accesslog.ParseTemplate(combined)
	if err != nil {
		t.Fatal(err)
	}
	r := &accesslog.Record{Client: netip.MustParseAddrPort("192.0.2.7:40001"), Time: time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC),
		Duration: 12 * time.Millisecond, Status: 200, BytesUp: 0, BytesDown: 512, Node: "10.0.0.5:8080", Upstream: "api", Route: "api",
		Method: "GET", Host: "api.example", URI: "/v1/x?y=1", Proto: "HTTP/1.1", UserAgent: "curl/8.5", Referer: "https://app.example/"}
	want := `192.0.2.7 - - [01/Dec/2026:09:30:00 +0000] "GET /v1/x?y=1 HTTP/1.1" 200 512 "https://app.example/" "curl/8.5" 0.012 api.example 10.0.0.5:8080` + "\n"
	if got := string(f.Format(nil, r)); got != want {
		t.Errorf("line\n%q\nwant\n%q", got, want)
	}
	conn := &accesslog.Record{Client: r.Client, Time: r.Time, Status: 200, BytesDown: 4}
	if got, want := string(f.Format(nil, conn)), `192.0.2.7 - - [01/Dec/2026:09:30:00 +0000] "" 200  "" ""   `+"\n"; got != want {
		t.Errorf("a connection's line\n%q\nwant\n%q", got, want)
	}

	line := accesslog.JSON(nil, r)
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	for k, v := range map[string]any{"msg": "http_request", "client": "192.0.2.7:40001", "route": "api", "method": "GET", "host": "api.example",
		"uri": "/v1/x?y=1", "proto": "HTTP/1.1", "status": 200.0, "node": "10.0.0.5:8080", "upstream": "api", "bytes_down": 512.0,
		"http_user_agent": "curl/8.5", "http_referer": "https://app.example/"} {
		if rec[k] != v {
			t.Errorf("JSON %s: %v, want %v (%s)", k, rec[k], v, line)
		}
	}
	if _, ok := rec["client_id"]; ok {
		t.Errorf("an HTTP request's JSON has MQTT fields: %s", line)
	}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = accesslog.JSON(buf[:0], r); buf = f.Format(buf, r) }); n != 0 {
		t.Errorf("%v allocations per HTTP line, want 0", n)
	}
}
