package registry

import (
	"os"
	"path/filepath"
	"testing"
)

// TestModules: every registered plugin has a unique name, its folder
// plugin/<name>/ with a README.md, refusal reasons of its own, and both
// halves of a module.
func TestModules(t *testing.T) {
	t.Parallel()
	names := make(map[string]bool)
	reasons := make(map[string]string)
	for _, m := range Modules() {
		if names[m.Name] {
			t.Errorf("plugin %q registered twice", m.Name)
		}
		names[m.Name] = true
		if m.Decode == nil || m.New == nil {
			t.Errorf("plugin %q: Decode and New are both required", m.Name)
		}
		if _, err := os.Stat(filepath.Join("..", m.Name, "README.md")); err != nil {
			t.Errorf("plugin %q has no plugin/%s/README.md: %v", m.Name, m.Name, err)
		}
		for _, r := range m.Reasons {
			if other, dup := reasons[r]; dup {
				t.Errorf("refusal reason %q of %q is %q's too", r, m.Name, other)
			}
			reasons[r] = m.Name
		}
	}
}
