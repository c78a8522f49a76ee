package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReferenceTables: the README's configuration reference lists exactly
// the keys of each field table, in its order, with the table's default
// and whether a reload applies it, and the APISIX keys it ignores.
func TestReferenceTables(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range References() {
		rows := referenceTable(t, string(readme), ref.Section, ref.Table)
		var names []string
		for _, row := range rows {
			var keys []string
			for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(row["Key"], -1) {
				keys = append(keys, m[1])
			}
			known := func(name string) bool {
				return slices.ContainsFunc(ref.Keys, func(k RefKey) bool { return k.Name == name })
			}
			if !slices.ContainsFunc(keys, known) && (len(keys) > 1 || slices.Equal(keys, ref.Ignored)) {
				if !slices.Equal(keys, ref.Ignored) {
					t.Errorf("%s table %d: row %q lists %v, want the ignored APISIX keys %v", ref.Section, ref.Table, row["Key"], keys, ref.Ignored)
				}
				continue
			}
			// A row may document several keys that share their default
			// (tls.client_cert, tls.client_key).
			for _, name := range keys {
				names = append(names, name)
				i := slices.IndexFunc(ref.Keys, func(k RefKey) bool { return k.Name == name })
				if i < 0 {
					continue // reported below
				}
				k := ref.Keys[i]
				if row["Default"] != k.Default {
					t.Errorf("%s.%s: README default %q, field table %q", ref.Section, name, row["Default"], k.Default)
				}
				if want := map[bool]string{true: "restart", false: "live"}[k.Restart]; row["Reload"] != want {
					t.Errorf("%s.%s: README reload %q, field table %q", ref.Section, name, row["Reload"], want)
				}
			}
		}
		var want []string
		for _, k := range ref.Keys {
			want = append(want, k.Name)
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s table %d: README lists %v, field table %v", ref.Section, ref.Table, names, want)
		}
	}
}

// referenceTable returns the rows of the n-th table under the README
// heading "### `section`" (or "#### `section`", or "### section" for a
// heading that is not a key), up to the next heading of either level, as
// column name to cell.
func referenceTable(t *testing.T, readme, section string, n int) []map[string]string {
	t.Helper()
	start := -1
	for _, h := range []string{"\n### `" + section + "`", "\n#### `" + section + "`", "\n### " + section + "\n"} {
		if start = strings.Index(readme, h); start >= 0 {
			break
		}
	}
	if start < 0 {
		t.Fatalf("README has no heading ### `%s`", section)
	}
	body := readme[start+1:]
	for _, h := range []string{"\n### ", "\n#### "} {
		if end := strings.Index(body[1:], h); end >= 0 {
			body = body[:end+1]
		}
	}
	var tables [][]string
	inTable := false
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		if !inTable {
			tables = append(tables, nil)
			inTable = true
		}
		tables[len(tables)-1] = append(tables[len(tables)-1], line)
	}
	if n >= len(tables) {
		t.Fatalf("README section %s has %d tables, want at least %d", section, len(tables), n+1)
	}
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	header := cells(tables[n][0])
	var rows []map[string]string
	for _, line := range tables[n][2:] {
		row := make(map[string]string)
		for i, c := range cells(line) {
			if i < len(header) {
				row[header[i]] = c
			}
		}
		rows = append(rows, row)
	}
	return rows
}
