package config

import (
	"bytes"
	"strings"
	"testing"
)

// TestRawCheck: checks.active send and expect read HAProxy's hex and
// NGINX's match strings to the same bytes; client_id may be longer than 15
// characters except with MQTT 3.1.
func TestRawCheck(t *testing.T) {
	t.Parallel()
	cfg, err := parseOne(t, `
stream_proxy: {tcp: [9000]}
stream_routes: [{upstream_id: u}, {upstream_id: v}]
upstreams:
  - id: u
    nodes: {"a:1883": 1}
    checks:
      active:
        type: tcp
        send: "\\x10\\x20\\x00\\x06MQIsdp\\x03\\x02\\x00\\x3c\\x00\\x12nginx health check"
        expect: "20 02 00 00"
  - id: v
    nodes: {"a:1883": 1}
    checks:
      active: {client_id: mqgate-health-check-eu-west-1-, protocol_level: 5}
`)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Upstreams[0].Checks.Active[0]
	want, _ := ParseProbeBytes("10200006 4d5149736470 0302003c 0012 6e67696e78206865616c746820636865636b")
	if !bytes.Equal(a.Send, want) || !bytes.Equal(a.Expect, []byte{0x20, 2, 0, 0}) {
		t.Errorf("send % x\nwant % x\nexpect % x", a.Send, want, a.Expect)
	}
	if id := cfg.Upstreams[1].Checks.Active[0].ClientID; id != "mqgate-health-check-eu-west-1-" {
		t.Errorf("client_id %q", id)
	}

	_, err = parseOne(t, `
stream_proxy: {tcp: [9000]}
stream_routes: [{upstream_id: u}]
upstreams:
  - id: u
    nodes: {"a:1883": 1}
    checks:
      active:
        - {type: mqtt, send: "10 00"}
        - {type: tcp, send: "1g", expect: ""}
        - {type: tcp, send: "\\x1", expect: "\\q"}
        - {type: mqtt, protocol_level: 3, client_id: mqgate-probe-eu-1}
`)
	wantErrs := []string{
		`h.yaml:8: upstreams[0].checks.active[0].send: only used with type tcp, not mqtt`,
		`h.yaml:9: upstreams[0].checks.active[1].send: must be hex bytes ("20 02 00 00") or an NGINX match string ("\x20\x02\x00\x00"), got "1g"`,
		`h.yaml:9: upstreams[0].checks.active[1].expect: must be hex bytes ("20 02 00 00") or an NGINX match string ("\x20\x02\x00\x00"), got ""`,
		`h.yaml:10: upstreams[0].checks.active[2].send: \x needs two hex digits at byte 0 of "\\x1"`,
		`h.yaml:10: upstreams[0].checks.active[2].expect: unknown escape \q at byte 0 of "\\q"`,
		`h.yaml:11: upstreams[0].checks.active[3].client_id: MQTT 3.1 (protocol_level 3) allows 23 characters and the probe appends 8: at most 15, got 17 (protocol_level 4 and 5 allow longer ids)`,
	}
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if got := err.Error(); got != strings.Join(wantErrs, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(wantErrs, "\n"))
	}
}

// FuzzProbeBytes: any string either fails with an error or reads to at
// most maxProbeBytes bytes; hex written back reads the same.
func FuzzProbeBytes(f *testing.F) {
	for _, s := range []string{"20 02 00 00", `\x20\x02\x00\x00`, `\x10\x20MQIsdp`, "2002", `\`, `\x`, `\x2`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseProbeBytes(s)
		if err != nil {
			return
		}
		if len(b) > maxProbeBytes {
			t.Fatalf("%d bytes", len(b))
		}
		var hex strings.Builder
		for _, c := range b {
			hex.WriteString(string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15]) + " ")
		}
		if len(b) > 0 {
			again, err := ParseProbeBytes(hex.String())
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("%q -> % x -> %q -> % x, %v", s, b, hex.String(), again, err)
			}
		}
	})
}

// TestRawCheckBadType: a refused type is the one error; the keys of the
// type meant are not reported against the default type as well.
func TestRawCheckBadType(t *testing.T) {
	t.Parallel()
	_, err := parseOne(t, `
stream_proxy: {tcp: [9000]}
stream_routes: [{upstream_id: u}]
upstreams:
  - id: u
    nodes: {"a:1883": 1}
    checks: {active: {type: tcpx, send: "10 00", expect: "20 02 00 00"}}
`)
	want := `h.yaml:6: upstreams[0].checks.active.type: must be mqtt, tcp, http or https, got "tcpx"`
	if err == nil || err.Error() != want {
		t.Errorf("errors:\n%v\nwant:\n%s", err, want)
	}
}
