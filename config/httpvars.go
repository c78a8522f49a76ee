package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// VarExpr is one item of an HTTP route's `vars`, in APISIX's simple form
// (lua-resty-expr's [var, operator, value]): every item must hold for the
// route to match.
//
//	vars: [["arg_version", "==", "2"], ["http_x_tenant", "in", ["a", "b"]], ["cookie_session", "~~", "^s-[0-9]+$"]]
type VarExpr struct {
	// Var is what is compared: arg_<name> (a query argument), http_<name>
	// (a request header, "_" for "-", any case), cookie_<name>, or uri,
	// host, request_method, remote_addr, scheme.
	Var string
	// Op is ==, ~= (not equal), >, < (as numbers), ~~ (RE2 match), ~*
	// (case-insensitive match) or in (one of Values).
	Op     string
	Not    bool // "!" before the operator negates it
	Value  string
	Values []string // for in
	re     *regexp.Regexp
}

// The operators of VarExpr.
var varOps = []string{"==", "~=", ">", "<", "~~", "~*", "in"}

// httpVarNames are the plain variables a VarExpr may name; arg_, http_ and
// cookie_ take any name after the prefix.
var httpVarNames = []string{"uri", "host", "request_method", "remote_addr", "scheme"}

var httpVarPrefixes = []string{"arg_", "http_", "cookie_"}

// Match reports whether the expression holds for the variable's value; ok
// is false when the request has no such variable. As in APISIX a missing
// variable matches only ~= (nil is not equal to anything), and "!" turns
// the answer round.
func (e *VarExpr) Match(value string, ok bool) bool {
	return e.match(value, ok) != e.Not
}

func (e *VarExpr) match(v string, ok bool) bool {
	if !ok {
		return e.Op == "~="
	}
	switch e.Op {
	case "==":
		return v == e.Value
	case "~=":
		return v != e.Value
	case ">", "<":
		a, err1 := strconv.ParseFloat(v, 64)
		b, err2 := strconv.ParseFloat(e.Value, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return e.Op == ">" && a > b || e.Op == "<" && a < b
	case "~~", "~*":
		if e.re == nil { // built by hand rather than loaded
			p := e.Value
			if e.Op == "~*" {
				p = "(?i)" + p
			}
			ok, err := regexp.MatchString(p, v)
			return ok && err == nil
		}
		return e.re.MatchString(v)
	case "in":
		return slices.Contains(e.Values, v)
	}
	return false
}

// String writes the expression back in APISIX's form, for logs.
func (e *VarExpr) String() string {
	not := ""
	if e.Not {
		not = `"!", `
	}
	if e.Op == "in" {
		return fmt.Sprintf("[%q, %s%q, %q]", e.Var, not, e.Op, e.Values)
	}
	return fmt.Sprintf("[%q, %s%q, %q]", e.Var, not, e.Op, e.Value)
}

// httpVars decodes a route's vars: a list of [var, operator, value] or
// [var, "!", operator, value].
func (d *decoder) httpVars(n *yaml.Node, path string) []VarExpr {
	var out []VarExpr
	items := d.items(n, path)
	if len(items) > 0 && items[0].Kind == yaml.ScalarNode {
		// One expression where a list of them goes: say so once.
		d.errorf(n, path, `must be a list of [var, operator, value] lists, like [["arg_name", "==", "json"]], got one list of %s`, describe(items[0]))
		return nil
	}
	for i, item := range items {
		p := index(path, i)
		if item.Kind != yaml.SequenceNode {
			d.errorf(item, p, `must be a list [var, operator, value], like ["arg_name", "==", "json"], got %s`, describe(item))
			continue
		}
		parts := d.items(item, p)
		if len(parts) > 0 && parts[0].Kind == yaml.ScalarNode && slices.Contains([]string{"AND", "OR", "!AND", "!OR"}, parts[0].Value) {
			d.errorf(item, p, "%s expressions are not supported: list [var, operator, value] items, which must all hold", parts[0].Value)
			continue
		}
		e := VarExpr{}
		if len(parts) == 4 && parts[1].Kind == yaml.ScalarNode && parts[1].Value == "!" {
			e.Not = true
			parts = slices.Delete(parts, 1, 2)
		}
		if len(parts) != 3 {
			d.errorf(item, p, `must be [var, operator, value] (or [var, "!", operator, value]), got %d items`, len(d.items(item, p)))
			continue
		}
		var ok bool
		if e.Var, ok = d.str(parts[0], index(p, 0)); !ok {
			continue
		}
		if !slices.Contains(httpVarNames, e.Var) && !slices.ContainsFunc(httpVarPrefixes, func(pre string) bool {
			return strings.HasPrefix(e.Var, pre) && len(e.Var) > len(pre)
		}) {
			d.errorf(parts[0], index(p, 0), "unknown variable %q (known: arg_<name>, http_<name>, cookie_<name>, %s)", e.Var, strings.Join(httpVarNames, ", "))
			continue
		}
		if e.Op, ok = d.oneOf(parts[1], index(p, 1), varOps...); !ok {
			continue
		}
		vp := index(p, 2)
		switch e.Op {
		case "in":
			if parts[2].Kind != yaml.SequenceNode {
				d.errorf(parts[2], vp, "must be a list of values for in, got %s", describe(parts[2]))
				continue
			}
			for j, v := range d.items(parts[2], vp) {
				if s, ok := d.str(v, index(vp, j)); ok {
					e.Values = append(e.Values, s)
				}
			}
		default:
			if e.Value, ok = d.str(parts[2], vp); !ok {
				continue
			}
		}
		switch e.Op {
		case ">", "<":
			if _, err := strconv.ParseFloat(e.Value, 64); err != nil {
				d.errorf(parts[2], vp, "must be a number for %s, got %q", e.Op, e.Value)
				continue
			}
		case "~~", "~*":
			pattern := e.Value
			if e.Op == "~*" {
				pattern = "(?i)" + pattern
			}
			re, err := regexp.Compile(pattern)
			if err != nil {
				d.errorf(parts[2], vp, "invalid regex: %s", regexError(err))
				continue
			}
			e.re = re
		}
		out = append(out, e)
	}
	return out
}
