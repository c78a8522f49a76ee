package plugin

import (
	"slices"

	"github.com/mqgate/mqgate/vars"
)

// Keys that limit-conn and limit-req count by.
const (
	KeyRemoteAddr = "remote_addr"    // the client's IP address
	KeyClientID   = "mqtt_client_id" // the CONNECT's client id
	KeyUsername   = "mqtt_username"  // the CONNECT's user name
	KeyRoute      = "route_id"       // one count for the whole route
)

// LimitSettings are what limit-conn and limit-req share: the key they count by, the
// allowance above the limit and the refusal's Reason String.
type LimitSettings struct {
	Burst       int    // >= 0, default 0
	Key         string // Key*; default remote_addr
	RejectedMsg string // the 5.0 Reason String of the refusal
}

// LimitKeysShared are the keys DecodeLimit reads.
func LimitKeysShared() []string { return []string{"burst", "key", "key_type", "rejected_msg"} }

// NewLimit is a LimitSettings with its defaults: key remote_addr, no burst.
func NewLimit(rejectedMsg string) LimitSettings {
	return LimitSettings{Key: KeyRemoteAddr, RejectedMsg: rejectedMsg}
}

// DecodeLimit reads one of the keys LimitKeysShared names into l and
// reports whether f was one of them.
func DecodeLimit(f Field, l *LimitSettings) bool {
	switch f.Name {
	case "burst":
		l.Burst, _ = f.Val.IntMin(0)
	case "key":
		l.Key = DecodeLimitKey(f.Val, l.Key)
	case "key_type":
		DecodeKeyType(f.Val)
	case "rejected_msg":
		if s, ok := f.Val.String(); ok && s != "" {
			l.RejectedMsg = s
		}
	default:
		return false
	}
	return true
}

// LimitKeys are the values of a limit plugin's `key`.
func LimitKeys() []string { return []string{KeyRemoteAddr, KeyClientID, KeyUsername, KeyRoute} }

// DecodeLimitKey reads a limit plugin's `key`, def when it is invalid.
func DecodeLimitKey(n Node, def string) string {
	// "$remote_addr" (APISIX's and NGINX's spelling) and NGINX Plus's
	// $mqtt_preread_clientid and _username name the same variables.
	s, ok := n.String()
	if !ok {
		return def // reported, or null
	}
	if name, known := vars.Canonical(s); known && slices.Contains(LimitKeys(), name) {
		return name
	}
	if k, ok := n.OneOf(LimitKeys()...); ok {
		return k
	}
	return def
}

// DecodeKeyType accepts APISIX's key_type "var", the only kind mqgate has.
func DecodeKeyType(n Node) {
	if s, ok := n.String(); ok && s != "var" {
		n.Errorf(`must be "var" (combinations are not supported), got %q`, s)
	}
}

// LimitValue is the value a limit counts by: the CONNECT field, the
// route, or the client's address.
func (c *Conn) LimitValue(key string) string {
	var v string
	switch key {
	case KeyClientID:
		v = c.Connect.ClientID
	case KeyUsername:
		v = c.Connect.Username
	case KeyRoute:
		v = c.Route
	}
	if v == "" {
		// An empty id or user name counts by address, as APISIX falls back.
		return c.Remote.String()
	}
	return v
}
