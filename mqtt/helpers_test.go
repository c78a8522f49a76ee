package mqtt

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/packettest"
)

// Test packets are written as hex, one field per argument, so a row reads
// like the figures of the specification. The helpers only add what is
// tedious to count by hand: length prefixes.

// Variable headers up to the protocol level.
const (
	v31  = "0006 4d5149736470 03" // "MQIsdp" 3
	v311 = "0004 4d515454 04"     // "MQTT" 4
	v5   = "0004 4d515454 05"     // "MQTT" 5
)

// unhex decodes hex, ignoring spaces. A typo in a test table panics, which
// fails the test.
func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic("bad hex in test: " + err.Error())
	}
	return b
}

// frame returns a packet: first byte, the minimally encoded Remaining
// Length, and the body parts concatenated. The Remaining Length is encoded
// here independently of the package code.
func frame(first byte, body ...string) []byte {
	b := unhex(strings.Join(body, ""))
	return append(append([]byte{first}, packettest.AppendLength(nil, len(b))...), b...)
}

// str returns the hex of a length-prefixed field holding s.
func str(s string) string {
	return hex.EncodeToString([]byte{byte(len(s) >> 8), byte(len(s))}) + " " + hex.EncodeToString([]byte(s)) + " "
}

// props returns the hex of a property list with its Variable Byte Integer
// Property Length.
func props(parts ...string) string {
	b := unhex(strings.Join(parts, ""))
	return hex.EncodeToString(packettest.AppendLength(nil, len(b))) + " " + hex.EncodeToString(b) + " "
}

// checkProtocolError fails t unless err is a *ProtocolError with the Kind,
// Rule, Code and Level of want.
func checkProtocolError(t *testing.T, err error, want *ProtocolError) {
	t.Helper()
	var got *ProtocolError
	if !errors.As(err, &got) {
		t.Fatalf("error = %v (%T), want *ProtocolError", err, err)
	}
	if got.Kind != want.Kind || got.Rule != want.Rule || got.Code != want.Code || got.Level != want.Level {
		t.Errorf("error = {Kind: %s, Rule: %q, Code: %v, Level: %d}, want {Kind: %s, Rule: %q, Code: %v, Level: %d} (%v)",
			got.Kind, got.Rule, got.Code, got.Level, want.Kind, want.Rule, want.Code, want.Level, got)
	}
	if got.Reason == "" {
		t.Errorf("error %#v has no Reason", got)
	}
	msg := got.Error()
	if !strings.HasPrefix(msg, "mqtt: ") || want.Rule != "" && !strings.HasSuffix(msg, " ["+want.Rule+"]") {
		t.Errorf("Error() = %q, want \"mqtt: <reason> [%s]\"", msg, want.Rule)
	}
}
