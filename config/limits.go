package config

import (
	"net/netip"

	"gopkg.in/yaml.v3"
)

// Values of stream_proxy.on_duplicate_client_id.
const (
	DuplicateAllow      = "allow"       // default: both connections stay
	DuplicateKeepNewest = "keep_newest" // the older connection is closed
	DuplicateKeepOldest = "keep_oldest" // the newer CONNECT is refused
)

var (
	duplicatePolicies = []string{DuplicateAllow, DuplicateKeepNewest, DuplicateKeepOldest}
)

// prefixes reads a list of IPs and CIDRs.
func (d *decoder) prefixes(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	for i, item := range d.items(n, path) {
		p := index(path, i)
		s, ok := d.str(item, p)
		if !ok {
			if isNull(item) {
				d.errorf(item, p, "must be an IP address or a CIDR, got nothing")
			}
			continue
		}
		prefix, msg := parsePrefix(s)
		if msg != "" {
			d.errorf(item, p, "%s", msg)
			continue
		}
		out = append(out, prefix)
	}
	return out
}

// admissionCap reads one of the unfinished-connection caps of stream_proxy:
// an integer of at least 1, or 0 for the default derived from the
// open-file limit (admission.Defaults).
func (d *decoder) admissionCap(kv keyValue, path string, dst *int) {
	if !d.setOnce("stream_proxy."+kv.key, kv, path) {
		return
	}
	if v, ok := d.intMin(kv.val, path, 0); ok {
		*dst = v
	}
}
