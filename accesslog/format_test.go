package accesslog_test

import (
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
		`$request_time`: "unknown variable $request_time",
	} {
		if _, err := accesslog.ParseTemplate(format); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", format, err, want)
		}
	}
}
