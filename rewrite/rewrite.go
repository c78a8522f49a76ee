// Package rewrite changes the client id, user name and password of an MQTT
// CONNECT from templates over the connection's variables, the way NGINX
// Plus's mqtt_set_connect does: a device can keep its serial number to
// itself and still be known to the broker by its certificate.
//
//	rule, err := rewrite.NewRule("$ssl_client_s_dn_cn", "", "") // client id only
//	if err != nil { ... }                                     // unknown variable, bad syntax
//	out, err := rule.Apply(connect, &vs)                      // vs is the connection's vars.Set
//	if err != nil {
//		// a *rewrite.Refusal: answer with a CONNACK carrying its Code
//	}
//	pkt := mqtt.AppendConnect(nil, out) // every other field and property kept as sent
//
// A template is literal text with variables in it: "$name" or "${name}";
// "$$" is a literal "$". Apply never half-writes a packet: a template that
// yields an empty (or, for the client id and user name, invalid UTF-8)
// value refuses the CONNECT instead.
package rewrite

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/vars"
)

// Template is a parsed template string.
type Template struct {
	src   string
	parts []vars.Part
}

// ParseTemplate parses s, rejecting unknown variables and a "$" that starts
// none.
func ParseTemplate(s string) (*Template, error) {
	parts, err := vars.SplitTemplate(s, vars.Names)
	if err != nil {
		return nil, err
	}
	return &Template{src: s, parts: parts}, nil
}

// String returns the template as written.
func (t *Template) String() string { return t.src }

// Expand returns the template's text with the variables of v in it.
func (t *Template) Expand(v *vars.Set) string {
	if len(t.parts) == 1 && t.parts[0].Name != "" {
		s, _ := v.Get(t.parts[0].Name)
		return s
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.Name == "" {
			b.WriteString(p.Lit)
			continue
		}
		s, _ := v.Get(p.Name)
		b.WriteString(s)
	}
	return b.String()
}

// Rule is what the mqtt-rewrite plugin sets; a nil template keeps the
// field as the client sent it.
type Rule struct {
	ClientID, Username, Password *Template
}

// NewRule parses the three templates; an empty string keeps that field.
func NewRule(clientID, username, password string) (*Rule, error) {
	r := &Rule{}
	for _, f := range []struct {
		name, src string
		dst       **Template
	}{{"client_id", clientID, &r.ClientID}, {"username", username, &r.Username}, {"password", password, &r.Password}} {
		if f.src == "" {
			continue
		}
		t, err := ParseTemplate(f.src)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = t
	}
	return r, nil
}

// Refusal is why Apply refused a CONNECT: the field, the CONNACK reason
// code to answer with, and a reason for the log and the 5.0 Reason String.
type Refusal struct {
	Field  string // "client_id", "username" or "password"
	Code   mqtt.ReasonCode
	Reason string
}

func (r *Refusal) Error() string { return "mqtt-rewrite " + r.Field + ": " + r.Reason }

// maxField is the longest string an MQTT length prefix can describe.
const maxField = 65535

// Apply returns a copy of c with the rule's fields set from v. c is not
// changed; the copy shares c's Will and Properties. The variables
// mqtt_client_id and mqtt_username in v are the CONNECT's as the client sent
// them; the caller updates v from the result.
func (r *Rule) Apply(c *mqtt.Connect, v *vars.Set) (*mqtt.Connect, error) {
	out := *c
	if r.ClientID != nil {
		id := r.ClientID.Expand(v)
		if msg := checkString(id); msg != "" {
			// [MQTT-3.1.3-5]/[MQTT-3.1.3-9]: the server may reject an
			// identifier; 0x85 (0x02 in 3.1.1) says so.
			return nil, &Refusal{Field: "client_id", Code: mqtt.ClientIdentifierNotValid, Reason: fmt.Sprintf("template %q %s", r.ClientID, msg)}
		}
		out.ClientID = id
	}
	if r.Username != nil {
		u := r.Username.Expand(v)
		if msg := checkString(u); msg != "" {
			return nil, &Refusal{Field: "username", Code: mqtt.BadUsernameOrPassword, Reason: fmt.Sprintf("template %q %s", r.Username, msg)}
		}
		out.Username, out.HasUsername = u, true
	}
	if r.Password != nil {
		p := r.Password.Expand(v)
		switch {
		case p == "":
			return nil, &Refusal{Field: "password", Code: mqtt.BadUsernameOrPassword, Reason: fmt.Sprintf("template %q yields an empty value", r.Password)}
		case len(p) > maxField:
			return nil, &Refusal{Field: "password", Code: mqtt.BadUsernameOrPassword, Reason: fmt.Sprintf("template %q yields %d bytes, more than %d", r.Password, len(p), maxField)}
		case out.Level != mqtt.Level5 && !out.HasUsername:
			// [MQTT-3.1.2-22] in 3.1.1 (and 3.1): no password without a
			// user name. 5.0 allows it.
			return nil, &Refusal{Field: "password", Code: mqtt.BadUsernameOrPassword, Reason: "a password without a user name is not allowed before MQTT 5.0 [MQTT-3.1.2-22]; set username too"}
		}
		out.Password, out.HasPassword = []byte(p), true
	}
	return &out, nil
}

// checkString applies the rules for MQTT UTF-8 strings [MQTT-1.5.3-1]
// [MQTT-1.5.3-2] and the length prefix; it returns "" when s may be sent.
func checkString(s string) string {
	switch {
	case s == "":
		return "yields an empty value"
	case len(s) > maxField:
		return fmt.Sprintf("yields %d bytes, more than %d", len(s), maxField)
	case !utf8.ValidString(s):
		return "yields invalid UTF-8 [MQTT-1.5.3-1]"
	case strings.ContainsRune(s, 0):
		return "yields U+0000 [MQTT-1.5.3-2]"
	}
	return ""
}
