package config

import (
	"strings"
	"testing"
)

func TestAdmissionCaps(t *testing.T) {
	t.Parallel()
	cfg, err := parseOne(t, `
stream_proxy:
  tcp: [9000]
  max_unfinished_connections: 5000
  max_unfinished_per_address: 200
  reserved_descriptors: 2000
`)
	if err != nil {
		t.Fatal(err)
	}
	sp := cfg.StreamProxy
	if sp.MaxUnfinishedConnections != 5000 || sp.MaxUnfinishedPerAddress != 200 || sp.ReservedDescriptors != 2000 {
		t.Fatalf("got %d, %d, %d", sp.MaxUnfinishedConnections, sp.MaxUnfinishedPerAddress, sp.ReservedDescriptors)
	}
	cfg, err = parseOne(t, "stream_proxy: {tcp: [9000]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if sp := cfg.StreamProxy; sp.MaxUnfinishedConnections != 0 || sp.MaxUnfinishedPerAddress != 0 || sp.ReservedDescriptors != 0 {
		t.Fatalf("unset caps are %+v, want 0 (derived from the open-file limit)", sp)
	}
}

func TestAdmissionCapsErrors(t *testing.T) {
	t.Parallel()
	_, err := Parse(
		Document{Name: "a.yaml", Data: []byte("stream_proxy:\n  tcp: [9000]\n  max_unfinished_connections: -1\n  max_unfinished_per_address: lots\n  reserved_descriptors: 10\n")},
		Document{Name: "b.yaml", Data: []byte("stream_proxy:\n  reserved_descriptors: 20\n  max_unfinished_per_adress: 3\n")},
	)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`a.yaml:3: stream_proxy.max_unfinished_connections: must be >= 0, got -1`,
		`a.yaml:4: stream_proxy.max_unfinished_per_address: must be an integer`,
		`b.yaml:2: stream_proxy.reserved_descriptors: already set at a.yaml:5; set it in one place only`,
		`b.yaml:3: stream_proxy.max_unfinished_per_adress: unknown key (did you mean "max_unfinished_per_address"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
