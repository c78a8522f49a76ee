// Package plugin is what a stream plugin is made of. A plugin is a module:
// one folder under plugin/<name>/ holding its decoding, defaults and
// validation (setup.go), its runtime (<name>.go), the refusal reasons it
// counts (metrics.go) and its documentation (README.md). plugin/registry
// lists the modules by name, in the order they run; config decodes a
// route's `plugins` with them and the proxy compiles each route's plugins
// once per snapshot.
//
// A module in ten lines:
//
//	func Module() plugin.Module {
//		return plugin.Module{
//			Name: "deny-empty-id", Phase: plugin.Check, Reasons: []string{"empty_id"},
//			Decode: func(n plugin.Node) any { n.Fields(nil, nil); return struct{}{} },
//			New: func(any) plugin.Instance { return deny{} },
//		}
//	}
//
//	func (deny) Admit(c *plugin.Conn) (func(), *plugin.Refusal) {
//		if c.Connect.ClientID != "" { return nil, nil }
//		return nil, &plugin.Refusal{Code: mqtt.ClientIdentifierNotValid, Reason: "empty_id", Text: "empty client id"}
//	}
package plugin

import (
	"log/slog"
	"net/netip"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/vars"
)

// Phase is when a plugin runs among the CONNECT's stages.
type Phase int

const (
	// Check plugins look at the CONNECT and admit or refuse it (or rewrite
	// it) without taking anything: they run first, in registry order.
	Check Phase = iota
	// Limit plugins take a place (a connection slot, a token) that a
	// refusal further on gives back: they run after
	// stream_proxy.max_connections, in registry order.
	Limit
)

// Module is one stream plugin: its name in a route's `plugins`, how it
// decodes, and how a route's settings become a running instance.
type Module struct {
	Name  string // the key in a route's plugins, e.g. "limit-conn"
	Phase Phase
	// Reasons are the refusal reasons the plugin counts, as
	// mqgate_connections_refused_total{reason} names them.
	Reasons []string
	// Decode reads the plugin's settings from a route, reporting every
	// problem on n. The value it returns is compared with
	// reflect.DeepEqual across reloads: equal settings keep the instance
	// (and its counters).
	Decode func(n Node) any
	// New builds the instance for settings that Decode returned without
	// errors.
	New func(settings any) Instance
}

// RouteUpstream is implemented by settings that name the route's broker
// themselves: APISIX's older mqtt-proxy form, `upstream: {host, port}`.
// The configuration makes that the route's upstream.
type RouteUpstream interface {
	RouteUpstream() (host string, port int, ok bool)
}

// Instance is a plugin compiled for one route.
type Instance interface {
	// Admit admits or refuses a CONNECT. On admission, release (nil when
	// nothing was taken) is called once when the connection ends, or when
	// a later stage refuses it.
	Admit(c *Conn) (release func(), refused *Refusal)
}

// Conn is a routed CONNECT as the plugins see it.
type Conn struct {
	// Connect is the CONNECT as the broker will see it. A plugin that
	// changes it sets Packet to its encoding.
	Connect *mqtt.Connect
	Packet  []byte       // the CONNECT to forward; nil: the client's bytes as read
	Remote  netip.Addr   // the client's address (after a PROXY header), unmapped
	Route   string       // the route's id
	Vars    *vars.Set    // the connection's variables; a rewrite updates mqtt_client_id and mqtt_username
	Log     *slog.Logger // the process log
}

// Refusal answers a CONNECT with a CONNACK that says why.
type Refusal struct {
	Code   mqtt.ReasonCode // in 5.0 terms; 3.x clients get its 3.x counterpart
	Reason string          // one of the module's Reasons, counted
	Text   string          // the 5.0 Reason String, and the access log's detail
}

// Node is a YAML value being decoded, with config's error style: every
// problem is reported as `file:line: path: what is wrong`, and decoding
// goes on so that all problems are reported together.
type Node interface {
	// Fields returns the entries of a mapping (a null is an empty one)
	// whose keys are in known or explained. A key in ignored (an APISIX key
	// mqgate accepts without using) is recorded as ignored and left out; a
	// key in no list is reported as unknown, with a "did you mean", and
	// left out. explained keys are returned for the plugin to say why they
	// are wrong (a deprecated key, another product's name), and are not
	// listed as known.
	Fields(known, ignored []string, explained ...string) []Field
	// Errorf reports a problem at this value.
	Errorf(format string, args ...any)
	// ErrorfAt reports a problem at this value's line, for its key key:
	// a required key that is missing, say.
	ErrorfAt(key, format string, args ...any)
	IsNull() bool
	// The readers report a value of the wrong type or range and return
	// ok false; a null is ok false without a report.
	String() (s string, ok bool)
	Int() (v int, ok bool)
	IntMin(lo int) (v int, ok bool)
	Float() (v float64, ok bool)
	OneOf(allowed ...string) (s string, ok bool)
	// Prefixes reads a list of IPs (one-address prefixes) and CIDRs.
	Prefixes() []netip.Prefix
}

// Field is one entry of a mapping.
type Field struct {
	Name string
	Key  Node // the key itself, for problems with the key rather than its value
	Val  Node
}
