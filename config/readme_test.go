package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEExample loads README.md's "everything in one file" example, so
// the reference cannot drift from the decoder.
func TestREADMEExample(t *testing.T) {
	t.Setenv("MQGATE_ADMIN_KEY", "0123456789abcdef0123456789abcdef")
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "## Example: everything in one file\n\n```yaml\n")
	if !ok {
		t.Fatal("README.md lacks the example")
	}
	example, _, _ := strings.Cut(after, "```")
	cfg, err := Parse(Document{Name: "README.md", Data: []byte(example)})
	if err != nil {
		t.Fatalf("the README example does not load:\n%v", err)
	}
	if cfg.Admin == nil || cfg.Reload == nil || len(cfg.StreamRoutes) == 0 {
		t.Errorf("example: %+v", cfg)
	}
}
