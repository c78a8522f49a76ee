package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestCloseSettings: stream_proxy.max_packet_size and server_reference.
func TestCloseSettings(t *testing.T) {
	t.Parallel()
	const rest = "\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n"
	// want: "max ref", or the error.
	checkSettings(t, rest, []settingCase{
		{"default", "stream_proxy: {tcp: [9000]}", "0 "},
		{"both", "stream_proxy: {tcp: [9000], max_packet_size: 1048576, server_reference: \"b:1883\"}", "1048576 b:1883"},
		{"negative", "stream_proxy:\n  tcp: [9000]\n  max_packet_size: -1",
			"t.yaml:3: stream_proxy.max_packet_size: must be 0..268435460, got -1"},
		{"not a string", "stream_proxy:\n  tcp: [9000]\n  server_reference: [a]",
			"t.yaml:3: stream_proxy.server_reference: must be a string, got a list"},
	}, func(cfg *Config) string {
		return fmt.Sprintf("%d %s", cfg.StreamProxy.MaxPacketSize, cfg.StreamProxy.ServerReference)
	})
}

// settingCase is one row of a setting's table test: a document, and what
// the test reads of its Config or the one error it gives.
type settingCase struct{ name, yaml, want string }

// checkSettings parses each case's yaml followed by rest and compares
// got(cfg), or the document's single error, with the case's want.
func checkSettings(t *testing.T, rest string, cases []settingCase, got func(*Config) string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(Document{Name: "t.yaml", Data: []byte(tc.yaml + rest)})
			var list ErrorList
			switch {
			case errors.As(err, &list):
				if len(list) != 1 || list[0].Error() != tc.want {
					t.Errorf("errors = %v, want %s", err, tc.want)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if g := got(cfg); g != tc.want {
					t.Errorf("got %q, want %q", g, tc.want)
				}
			}
		})
	}
}

// TestRebalanceSettings: rebalance.rate, default 500.
func TestRebalanceSettings(t *testing.T) {
	t.Parallel()
	const base = "stream_proxy: {tcp: [9000]}\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n"
	cfg, err := Parse(Document{Name: "t.yaml", Data: []byte(base)})
	if err != nil || cfg.RebalanceSettings().Rate != 500 {
		t.Fatalf("default: %v, %v; want rate 500", cfg.RebalanceSettings(), err)
	}
	cfg, err = Parse(Document{Name: "t.yaml", Data: []byte(base + "rebalance: {rate: 25.5}\n")})
	if err != nil || cfg.RebalanceSettings().Rate != 25.5 {
		t.Fatalf("rate 25.5: %v, %v", cfg.RebalanceSettings(), err)
	}
	_, err = Parse(Document{Name: "t.yaml", Data: []byte(base + "rebalance:\n  rate: 0\n")})
	if err == nil || err.Error() != "t.yaml:4: rebalance.rate: must be greater than 0, got 0" {
		t.Errorf("rate 0: %v", err)
	}
	_, err = Parse(Document{Name: "t.yaml", Data: []byte(base + "rebalance: {rat: 5}\n")})
	if err == nil || !strings.Contains(err.Error(), "rebalance.rat") {
		t.Errorf("typo: %v", err)
	}
}
