package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/config"
)

// TestREADMEExamples: every ```yaml block of the README is a configuration
// mqgate accepts (a block starting "# config.yaml" goes with the next one, as
// APISIX's pair of files), and every ```yaml fragment block is valid YAML.
func TestREADMEExamples(t *testing.T) {
	t.Setenv("MQGATE_ADMIN_KEY", "0123456789abcdef0123456789abcdef") // the examples' admin.keys[].key_env
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```(yaml[^\n]*)\n(.*?)^```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d yaml blocks in README.md; the pattern is broken", len(blocks))
	}
	var pending []config.Document
	for i, b := range blocks {
		info, body := strings.TrimSpace(b[1]), b[2]
		if info == "yaml fragment" {
			var v any
			if err := yaml.Unmarshal([]byte(body), &v); err != nil {
				t.Errorf("README yaml fragment %d: %v\n%s", i, err, body)
			}
			continue
		}
		if info != "yaml" {
			t.Errorf("README block %d: info string %q, want yaml or yaml fragment", i, info)
			continue
		}
		pending = append(pending, config.Document{Name: fmt.Sprintf("README block %d", i), Data: []byte(body)})
		if strings.HasPrefix(body, "# config.yaml") {
			continue // goes with the next block
		}
		if _, err := config.Parse(pending...); err != nil {
			t.Errorf("README example %d does not load:\n%v\n%s", i, err, body)
		}
		pending = nil
	}
	if pending != nil {
		t.Error("README ends with an unpaired # config.yaml block")
	}
}
