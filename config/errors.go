package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a configuration file, located by file, line and
// field path.
type Error struct {
	File string // file or document name; empty for problems of the whole configuration
	Line int    // 1-based; 0 when unknown
	Path string // field path like "upstreams[0].nodes[1].port"; may be empty
	Msg  string
	Err  error // underlying cause, if any (a read error, for instance)
}

// Error formats e as "file:line: path: msg", leaving out the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// ErrorList is every problem found in a configuration, sorted by file (in
// load order) and then by line.
type ErrorList []*Error

// Error returns one problem per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is and errors.As look at each problem.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// problems collects what one Parse call finds across all its documents.
type problems struct {
	fileOrder map[string]int // document name -> position, for sorting
	errs      []*Error
	warnings  []*Error
	ignored   []string
}

func newProblems(names []string) *problems {
	order := make(map[string]int, len(names))
	for i, name := range names {
		if _, seen := order[name]; !seen {
			order[name] = i
		}
	}
	return &problems{fileOrder: order}
}

func (p *problems) errorf(file string, line int, path, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) warnf(file string, line int, path, format string, args ...any) {
	p.warnings = append(p.warnings, &Error{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// sorted returns errs ordered by file position then line; problems without a
// file come last. The sort is stable so one line's problems keep their order.
func (p *problems) sorted(errs []*Error) []*Error {
	pos := func(e *Error) int {
		if i, ok := p.fileOrder[e.File]; ok {
			return i
		}
		return len(p.fileOrder)
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(pos(a), pos(b)), cmp.Compare(a.Line, b.Line))
	})
	return errs
}
