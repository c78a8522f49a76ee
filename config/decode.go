package config

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder turns the yaml.Node tree of one document into configuration
// values, reporting every problem with the document's name and the node's line.
type decoder struct {
	file    string
	p       *problems
	b       *builder
	overlay bool // Document.Overlay
	// apisixShaped marks a document written for APISIX: it has APISIX's
	// `#END` line or an `apisix` or `deployment` section.
	apisixShaped bool
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.p.errorf(d.file, n.Line, path, format, args...)
}

func (d *decoder) ignore(n *yaml.Node, path string) {
	d.p.ignored = append(d.p.ignored, fmt.Sprintf("%s:%d: %s", d.file, n.Line, path))
}

// relative resolves a path the document names: a relative path is relative
// to the directory of the document's file.
func (d *decoder) relative(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(d.file), path)
}

// keyValue is one entry of a YAML mapping.
type keyValue struct {
	key          string
	keyNode, val *yaml.Node
}

// fields returns the entries of mapping n. A null n is an empty mapping;
// anything else that is not a mapping is reported. Duplicate keys, which
// yaml.v3 accepts in a Node tree, are reported and dropped.
func (d *decoder) fields(n *yaml.Node, path string) []keyValue {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping, got %s", describe(n))
		return nil
	}
	firstLine := make(map[string]int, len(n.Content)/2)
	kvs := make([]keyValue, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		if line, dup := firstLine[k.Value]; dup {
			d.errorf(k, join(path, k.Value), "duplicate key, first at line %d", line)
			continue
		}
		firstLine[k.Value] = k.Line
		kvs = append(kvs, keyValue{key: k.Value, keyNode: k, val: v})
	}
	return kvs
}

// items returns the elements of list n; a null n is an empty list.
func (d *decoder) items(n *yaml.Node, path string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list, got %s", describe(n))
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		items[i] = deref(item)
	}
	return items
}

// unknownKey reports kv as not allowed here. known lists the keys to
// mention when nothing is close; accepted adds keys only used for the
// did-you-mean suggestion.
func (d *decoder) unknownKey(kv keyValue, path, noun string, known []string, accepted ...[]string) {
	candidates := known
	for _, more := range accepted {
		candidates = append(candidates[:len(candidates):len(candidates)], more...)
	}
	if s := suggest(kv.key, candidates); s != "" {
		d.errorf(kv.keyNode, join(path, kv.key), "unknown %s (did you mean %q?)", noun, s)
		return
	}
	d.errorf(kv.keyNode, join(path, kv.key), "unknown %s (known: %s)", noun, strings.Join(known, ", "))
}

// str reads any scalar as its text. ok is false for null and for errors.
func (d *decoder) str(n *yaml.Node, path string) (s string, ok bool) {
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "must be a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// int reads an integer scalar; ok is false for null and for errors.
func (d *decoder) int(n *yaml.Node, path string) (v int, ok bool) {
	if isNull(n) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		d.errorf(n, path, "must be an integer, got %s", describe(n))
		return 0, false
	}
	return v, true
}

// intMin reads an integer of at least lo.
func (d *decoder) intMin(n *yaml.Node, path string, lo int) (v int, ok bool) {
	v, ok = d.int(n, path)
	if ok && v < lo {
		d.errorf(n, path, "must be >= %d, got %d", lo, v)
		return 0, false
	}
	return v, ok
}

// intIn reads an integer in lo..hi.
func (d *decoder) intIn(n *yaml.Node, path string, lo, hi int) (v int, ok bool) {
	v, ok = d.int(n, path)
	if ok && (v < lo || v > hi) {
		d.errorf(n, path, "must be %d..%d, got %d", lo, hi, v)
		return 0, false
	}
	return v, ok
}

// bool reads a boolean scalar; ok is false for null and for errors.
func (d *decoder) bool(n *yaml.Node, path string) (v, ok bool) {
	if isNull(n) {
		return false, false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		if b, err := strconv.ParseBool(n.Value); err == nil {
			return b, true
		}
	}
	d.errorf(n, path, "must be true or false, got %s", describe(n))
	return false, false
}

// id reads an APISIX id, which files write as an integer or a string; both
// become the same string, so `upstream_id: 1` refers to `id: "1"`.
func (d *decoder) id(n *yaml.Node, path string) (id string, ok bool) {
	if isNull(n) {
		return "", false
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!int":
		var v int64
		if err := n.Decode(&v); err != nil {
			d.errorf(n, path, "must be a string or an integer, got %s", describe(n))
			return "", false
		}
		return strconv.FormatInt(v, 10), true
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str":
		id = n.Value
	default:
		d.errorf(n, path, "must be a string or an integer, got %s", describe(n))
		return "", false
	}
	if msg := checkID(id); msg != "" {
		d.errorf(n, path, "%s", msg)
		return "", false
	}
	return id, true
}

// checkID applies APISIX's id rule, which keeps ids usable in Admin API URLs.
func checkID(id string) string {
	if id == "" || len(id) > 64 {
		return fmt.Sprintf("must be 1 to 64 characters, got %q", id)
	}
	for _, r := range id {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Sprintf("may contain only letters, digits, '-', '_' and '.', got %q", id)
		}
	}
	return ""
}

// duration reads a number of seconds (APISIX style: 6, 0.5) or a Go
// duration string ("10s", "1m30s"). Negative durations are errors.
func (d *decoder) duration(n *yaml.Node, path string) (v time.Duration, ok bool) {
	if isNull(n) {
		return 0, false
	}
	const usage = `must be seconds as a number (6, 0.5) or a duration like "10s"`
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%s, got %s", usage, describe(n))
		return 0, false
	}
	switch n.Tag {
	case "!!int", "!!float":
		var secs float64
		if err := n.Decode(&secs); err != nil || math.IsNaN(secs) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			d.errorf(n, path, "%s, got %s", usage, describe(n))
			return 0, false
		}
		v = time.Duration(secs * float64(time.Second))
	case "!!str":
		var err error
		if v, err = time.ParseDuration(n.Value); err != nil {
			d.errorf(n, path, "%s, got %s", usage, describe(n))
			return 0, false
		}
	default:
		d.errorf(n, path, "%s, got %s", usage, describe(n))
		return 0, false
	}
	if v < 0 {
		d.errorf(n, path, "must not be negative, got %s", v)
		return 0, false
	}
	return v, true
}

// oneOf reads a string that must be one of allowed.
func (d *decoder) oneOf(n *yaml.Node, path string, allowed ...string) (s string, ok bool) {
	s, ok = d.str(n, path)
	if !ok {
		return "", false
	}
	for _, a := range allowed {
		if s == a {
			return s, true
		}
	}
	d.errorf(n, path, "must be %s, got %q", orList(allowed), s)
	return "", false
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names what a node is, for "must be X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing"
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return n.Value
	}
	return "nothing"
}

// join appends a mapping key to a field path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a list index to a field path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// orList formats []string{"a", "b", "c"} as `a, b or c`.
func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// suggest returns the candidate closest to an unknown key: within edit
// distance 3, or sharing a prefix with it. It returns "" when none is close.
func suggest(key string, candidates []string) string {
	key = strings.ToLower(key)
	best, bestDist, bestPrefix := "", math.MaxInt, 0
	for _, c := range candidates {
		dist, prefix := levenshtein(key, c), commonPrefix(key, c)
		near := dist <= 3 && dist < len(key) ||
			len(key) >= 3 && (strings.HasPrefix(c, key) || strings.HasPrefix(key, c)) ||
			prefix >= 5
		// Closest first; on a tie, the longer shared prefix ("retry" is
		// "retries", not "key").
		if near && (dist < bestDist || dist == bestDist && prefix > bestPrefix) {
			best, bestDist, bestPrefix = c, dist, prefix
		}
	}
	return best
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// levenshtein is the edit distance between a and b, counted in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
