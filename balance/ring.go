package balance

import (
	"cmp"
	"fmt"
	"hash/crc32"
	"iter"
	"slices"
	"strings"
)

// Hash methods of TypeConsistentHash, as spelled in the configuration.
const (
	// HashRendezvous is mqgate's own weighted rendezvous hashing (chash.go).
	HashRendezvous = "rendezvous"
	// HashAPISIX is the ring of lua-resty-chash, which APISIX's chash
	// balancer uses.
	HashAPISIX = "apisix"
	// HashNGINX is the ring of NGINX's `hash $key consistent`.
	HashNGINX = "nginx"
)

// ringPointsPerWeight is the number of points a node gets on the ring per
// unit of weight: CONSISTENT_POINTS in lua-resty-chash, the 160 of
// ngx_stream_upstream_init_chash.
const ringPointsPerWeight = 160

// MaxRingWeight bounds the sum of the weights of one upstream's nodes in a
// ring method, so that its points (8 bytes each, 160 per unit of weight)
// stay within about 5 MB and build in milliseconds.
const MaxRingWeight = 4096

// ring is the ketama-style consistent hash ring that lua-resty-chash
// (APISIX's chash) and NGINX's `hash $key consistent` build, reproduced
// point for point so that a fleet moved from either keeps every client on
// the broker it had:
//
//	id(node)      = host "\x00" port                       (see ringID)
//	point(node,0) = crc32(id(node) + le32(0))
//	point(node,j) = crc32(id(node) + le32(point(node,j-1)))  for j < 160 × weight
//
// crc32 is IEEE CRC-32 (zlib's), le32 the 4 bytes of a uint32, least
// significant first. NGINX computes crc32(HOST \0 PORT PREV_HASH) by
// continuing one CRC over the concatenation; lua-resty-chash hands its C
// code the un-finalized CRC of the id (crc32 XOR 0xffffffff) and continues
// it the same way, which is the same number. The points of all the nodes
// of a priority tier are sorted by value; a key k goes to the node of the
// first point >= crc32(k), wrapping to the first point past the largest.
//
// A node that may not be dialled (down, unhealthy, already tried) is
// walked past: the next points are tried in ring order, as NGINX's
// ngx_stream_upstream_get_chash_peer does (hp->hash++), and as APISIX
// does in effect: it rebuilds the ring from the healthy nodes only, where
// k's first point >= crc32(k) is the next healthy one of the full ring,
// and retries with picker:next, the following point. Order yields each
// node once, in the order its first point comes up.
//
// Where the two differ, and mqgate follows each:
//   - the id of an IPv6 node: APISIX replaces every ":" of "host:port" by
//     NUL, NGINX only the one before the port (of "[::1]:1883" as written
//     in its server line);
//   - points of equal value (a CRC collision, about once in 10^6 rings of
//     ten nodes): NGINX keeps one of them, lua-resty-chash all. mqgate
//     sorts ties by node list position and, for NGINX, keeps the first;
//     which one the originals keep depends on their sort, so a key hashing
//     to exactly that value may differ.
//
// Unlike rendezvous hashing, a node's keys fall to its ring successors
// rather than spreading over every node, and Order costs a binary search
// plus a walk of the points until the nodes wanted are seen.
type ring struct {
	pool
	// points per tier of pool.tiers, sorted by hash.
	points [][]ringPoint
}

type ringPoint struct {
	hash uint32
	node int32 // index in pool.nodes
}

func newRing(p pool, method string) (*ring, error) {
	total := 0
	for _, n := range p.nodes {
		total += n.Weight
		if total > MaxRingWeight {
			return nil, fmt.Errorf("balance: hash method %s: the nodes' weights add up to more than %d (160 ring points per unit of weight); scale the weights down", method, MaxRingWeight)
		}
	}
	r := &ring{pool: p, points: make([][]ringPoint, len(p.tiers))}
	for ti, tier := range p.tiers {
		var pts []ringPoint
		for _, n := range tier {
			pts = appendRingPoints(pts, ringID(p.nodes[n].Addr, method), p.nodes[n].Weight*ringPointsPerWeight, int32(n))
		}
		slices.SortFunc(pts, func(a, b ringPoint) int {
			return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.node, b.node))
		})
		if method == HashNGINX {
			pts = slices.CompactFunc(pts, func(a, b ringPoint) bool { return a.hash == b.hash })
		}
		r.points[ti] = slices.Clip(pts)
	}
	return r, nil
}

// ringID is the string a node's points are hashed from: "host\x00port".
// addr is "host:port" with an IPv6 host in brackets, as the configuration
// and NGINX's server lines write it.
func ringID(addr, method string) string {
	if method == HashAPISIX {
		// apisix/balancer/chash.lua: str_gsub(serv, ":", "\0").
		return strings.ReplaceAll(addr, ":", "\x00")
	}
	// ngx_stream_upstream_init_chash: the port is the digits after the
	// last ':'.
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && strings.Trim(addr[i+1:], "0123456789") == "" {
		return addr[:i] + "\x00" + addr[i+1:]
	}
	return addr + "\x00"
}

// appendRingPoints appends num points of node, chained from id.
func appendRingPoints(dst []ringPoint, id string, num int, node int32) []ringPoint {
	base := crc32.Update(0, crc32.IEEETable, []byte(id))
	var prev [4]byte // the previous point, little endian; zero for the first
	for range num {
		// crc32.Update continues the CRC of id over prev: the CRC of
		// id + prev, computed once per point over 4 bytes only.
		h := crc32.Update(base, crc32.IEEETable, prev[:])
		dst = append(dst, ringPoint{hash: h, node: node})
		prev = [4]byte{byte(h), byte(h >> 8), byte(h >> 16), byte(h >> 24)}
	}
	return dst
}

// RingHash is the hash a ring method places key by: IEEE CRC-32, as
// ngx_crc32_long and ngx.crc32_short compute it. It reads the string byte
// by byte through crc32's table rather than convert it to a []byte, which
// would escape to the heap once per connection; client ids are short.
func RingHash(key string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(key); i++ {
		crc = crc32.IEEETable[byte(crc)^key[i]] ^ crc>>8
	}
	return ^crc
}

func (r *ring) Order(key string) iter.Seq[int] {
	return func(yield func(int) bool) {
		h := RingHash(key)
		for ti, tier := range r.tiers {
			pts := r.points[ti]
			start, _ := slices.BinarySearchFunc(pts, h, func(p ringPoint, h uint32) int { return cmp.Compare(p.hash, h) })
			var seenBuf [smallTier]int
			seen := seenBuf[:0]
			left := len(tier) // nodes of the tier not yet yielded or skipped
			for i := 0; i < len(pts) && left > 0; i++ {
				n := int(pts[(start+i)%len(pts)].node)
				if slices.Contains(seen, n) {
					continue
				}
				seen = append(seen, n)
				left--
				if !r.isHealthy(n) {
					continue
				}
				if !yield(n) {
					return
				}
			}
		}
	}
}
