package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/plugin/registry"
)

// TestREADMEExamples: every ```yaml block of the README and of each stream
// plugin's README is a configuration mqgate accepts (a block starting
// "# config.yaml" goes with the next one, as APISIX's pair of files), and
// every ```yaml fragment block is valid YAML.
func TestREADMEExamples(t *testing.T) {
	t.Setenv("MQGATE_ADMIN_KEY", "0123456789abcdef0123456789abcdef") // the examples' admin.keys[].key_env
	testREADMEExamples(t, "../../README.md", 5)
	for _, m := range registry.Modules() {
		testREADMEExamples(t, filepath.Join("../../plugin", m.Name, "README.md"), 1)
	}
}

func testREADMEExamples(t *testing.T, path string, atLeast int) {
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```(yaml[^\n]*)\n(.*?)^```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < atLeast {
		t.Fatalf("found %d yaml blocks in %s; the pattern is broken", len(blocks), path)
	}
	var pending []config.Document
	for i, b := range blocks {
		info, body := strings.TrimSpace(b[1]), b[2]
		if info == "yaml fragment" {
			var v any
			if err := yaml.Unmarshal([]byte(body), &v); err != nil {
				t.Errorf("%s yaml fragment %d: %v\n%s", path, i, err, body)
			}
			continue
		}
		if info != "yaml" {
			t.Errorf("%s block %d: info string %q, want yaml or yaml fragment", path, i, info)
			continue
		}
		pending = append(pending, config.Document{Name: fmt.Sprintf("%s block %d", path, i), Data: []byte(body)})
		if strings.HasPrefix(body, "# config.yaml") {
			continue // goes with the next block
		}
		if _, err := config.Parse(pending...); err != nil {
			t.Errorf("%s example %d does not load:\n%v\n%s", path, i, err, body)
		}
		pending = nil
	}
	if pending != nil {
		t.Errorf("%s ends with an unpaired # config.yaml block", path)
	}
}
