package vars

import (
	"fmt"
	"slices"
	"strings"
)

// Part is one piece of a template: literal text, or a variable when Name
// is set.
type Part struct {
	Lit, Name string
}

// SplitTemplate splits s into literal text and variables, the syntax every
// mqgate template shares (mqtt-rewrite, log.access_log_format): "$name" or
// "${name}", and "$$" for a literal "$". A name that is not in known, and a
// "$" that starts no name, are errors. An alias of Aliases stands for its
// variable.
func SplitTemplate(s string, known []string) ([]Part, error) {
	var parts []Part
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		var name string
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return nil, fmt.Errorf(`"${" at byte %d has no closing "}"`, i)
			}
			name = s[i+2 : i+2+end]
			i += 3 + end
		} else {
			j := i + 1
			for j < len(s) && isNameByte(s[j]) {
				j++
			}
			name = s[i+1 : j]
			i = j
		}
		if name == "" {
			return nil, fmt.Errorf(`"$" at byte %d starts no variable name (write "$$" for a literal "$")`, i)
		}
		if a, alias := Aliases[name]; alias && slices.Contains(known, a) {
			name = a // NGINX Plus's $mqtt_preread_clientid and _username
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown variable $%s (known: %s)", name, strings.Join(known, ", "))
		}
		if lit.Len() > 0 {
			parts = append(parts, Part{Lit: lit.String()})
			lit.Reset()
		}
		parts = append(parts, Part{Name: name})
	}
	if lit.Len() > 0 {
		parts = append(parts, Part{Lit: lit.String()})
	}
	return parts, nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_'
}
