package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzParse decodes arbitrary YAML as a configuration file: it never
// panics, every problem is an *Error naming the file and a line of the
// document (or 0 for the file as a whole), and a valid document parses
// to the same summary twice. Seeds: the testdata files and
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(Document{Name: "f.yaml", Data: data})
		// YAML breaks lines at \n, \r\n, a lone \r, NEL, LS and PS; a
		// document in UTF-16 (a byte order mark) has its own: not checked.
		lines := bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\r")) + bytes.Count(data, []byte("\n")) + 1
		for _, br := range []string{"\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(br))
		}
		if !utf8.Valid(data) {
			lines = len(data) + 1
		}
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v, want a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if e.File != "f.yaml" && e.File != "" {
					t.Fatalf("error in file %q: %v", e.File, e)
				}
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("line %d of a %d-line document: %v", e.Line, lines, e)
				}
			}
			return
		}
		again, err := Parse(Document{Name: "f.yaml", Data: data})
		if err != nil || again.Summary() != cfg.Summary() {
			t.Fatalf("parsed twice: %q then %q, %v", cfg.Summary(), again.Summary(), err)
		}
	})
}
