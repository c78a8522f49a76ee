package config

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"gopkg.in/yaml.v3"
)

// Match reports whether s matches. A nil matcher matches everything; the
// zero StringMatch matches only "" (an MQTT client may send an empty id).
// Regex is unanchored RE2, as in NGINX and APISIX; write ^...$ to anchor.
func (m *StringMatch) Match(s string) bool {
	switch {
	case m == nil:
		return true
	case m.Regex != "":
		if m.re == nil { // built by hand rather than loaded
			ok, err := regexp.MatchString(m.Regex, s)
			return ok && err == nil
		}
		return m.re.MatchString(s)
	case m.Prefix != "":
		return strings.HasPrefix(s, m.Prefix)
	}
	return s == m.Exact
}

// String describes the matcher for logs, like `prefix "sensor-"`.
func (m *StringMatch) String() string {
	switch {
	case m == nil:
		return "any"
	case m.Regex != "":
		return fmt.Sprintf("regex %q", m.Regex)
	case m.Prefix != "":
		return fmt.Sprintf("prefix %q", m.Prefix)
	}
	return fmt.Sprintf("exact %q", m.Exact)
}

// stringMatch decodes a plain string (exact) or a mapping with exactly one
// of exact, prefix or regex.
func (d *decoder) stringMatch(n *yaml.Node, path string) *StringMatch {
	if isNull(n) {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return &StringMatch{Exact: n.Value}
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a string or one of {exact: s}, {prefix: s}, {regex: s}, got %s", describe(n))
		return nil
	}
	mf := matchFields{StringMatch: &StringMatch{}}
	stringMatchSection().decode(d, n, path, &mf)
	if mf.kinds != 1 {
		d.errorf(n, path, "set exactly one of exact, prefix or regex")
	}
	return mf.StringMatch
}

// matchFields is a string match written as a mapping, while it decodes:
// kinds counts the forms set, of which there must be one.
type matchFields struct {
	*StringMatch
	kinds int
}

func stringMatchSection() section[matchFields] {
	type f = field[matchFields]
	return section[matchFields]{
		name: "string match",
		fields: []f{
			{name: "exact", decode: func(d *decoder, kv keyValue, p string, m *matchFields) {
				m.kinds++
				m.Exact, _ = d.str(kv.val, p)
			}},
			{name: "prefix", decode: func(d *decoder, kv keyValue, p string, m *matchFields) {
				m.kinds++
				if s, ok := d.str(kv.val, p); ok && s == "" {
					d.errorf(kv.val, p, "must not be empty")
				} else {
					m.Prefix = s
				}
			}},
			{name: "regex", decode: func(d *decoder, kv keyValue, p string, m *matchFields) {
				m.kinds++
				s, ok := d.str(kv.val, p)
				if !ok {
					return
				}
				if s == "" {
					d.errorf(kv.val, p, "must not be empty")
					return
				}
				re, err := regexp.Compile(s)
				if err != nil {
					d.errorf(kv.val, p, "invalid regex: %s", regexError(err))
					return
				}
				m.Regex, m.re = s, re
			}},
		},
	}
}

// regexError drops the "error parsing regexp: " prefix the message would
// otherwise repeat.
func regexError(err error) string {
	if se, ok := errors.AsType[*syntax.Error](err); ok {
		return fmt.Sprintf("%s: `%s`", se.Code, se.Expr)
	}
	return err.Error()
}
