#!/usr/bin/env python3
"""Derives the vectors of balance's TestRingVectors, independently of the Go
code, from the two sources mqgate's ring methods reproduce:

- lua-resty-chash (openresty/lua-resty-balancer, lib/resty/chash.lua and
  chash.c), which APISIX's chash balancer uses: base_hash =
  crc32(id) XOR 0xffffffff; per point, continue the raw (table-driven, not
  finalized) CRC from base_hash over the previous point's 4 bytes, little
  endian, starting from 0, then finalize (XOR 0xffffffff); 160 points per
  unit of weight; the id is "host:port" with every ":" replaced by NUL;
  find: the first point >= crc32(key), else point 0; next: index + 1 mod n.
- NGINX (src/stream/ngx_stream_upstream_hash_module.c,
  ngx_stream_upstream_init_chash): point = crc32(HOST \\0 PORT PREV_HASH),
  one CRC over the concatenation, with the port the digits after the last
  ':'; points sorted, equal values merged; find: the first point >= crc32
  (key), wrapping; walking past a down peer: the next point (hp->hash++).

The script models lua-resty-chash with its own bitwise CRC-32 (no zlib),
models NGINX with zlib.crc32 over the concatenation, checks that both give
the same points, then prints the node order of each key (each node once, in
ring order from the key's point), first with all nodes up, then with one
node down. Run: python3 balance/testdata/ring_vectors.py
"""
import struct
import zlib

def raw_crc_update(crc, data):
    # Reflected CRC-32, polynomial 0xEDB88320, no pre/post inversion: the
    # crc32_update of chash.c.
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc

def crc32(data):  # ngx.crc32_short: init 0xffffffff, final XOR
    return raw_crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF

def apisix_points(addr, weight):
    node_id = addr.replace(":", "\0").encode()
    base = crc32(node_id) ^ 0xFFFFFFFF
    prev, out = 0, []
    for _ in range(weight * 160):
        h = raw_crc_update(base, struct.pack("<I", prev)) ^ 0xFFFFFFFF
        out.append(h)
        prev = h
    return out

def nginx_points(addr, weight):
    host, _, port = addr.rpartition(":")
    base = host.encode() + b"\0" + port.encode()
    prev, out = 0, []
    for _ in range(weight * 160):
        h = zlib.crc32(base + struct.pack("<I", prev))
        out.append(h)
        prev = h
    return out

def ring(nodes, points):
    pts = sorted((h, i) for i, (addr, w) in enumerate(nodes) for h in points(addr, w))
    return pts

def order(pts, nnodes, key, down=()):
    h = zlib.crc32(key.encode())
    start = next((i for i, p in enumerate(pts) if p[0] >= h), 0)
    seen, out = set(), []
    for j in range(len(pts)):
        n = pts[(start + j) % len(pts)][1]
        if n in seen:
            continue
        seen.add(n)
        if n not in down:
            out.append(n)
    return out

NODES = [("10.0.0.1:1883", 1), ("10.0.0.2:1883", 2), ("broker-3.example:1883", 1), ("10.0.0.4:8883", 3)]
KEYS = ["", "a", "meter-001", "meter-002", "valve-17", "phone-x", "sensor/42", "0123456789abcdef0123"]

for addr, w in NODES:
    assert apisix_points(addr, w) == nginx_points(addr, w), addr
pts = ring(NODES, nginx_points)
print("first points of", NODES[0][0], ["0x%08x" % h for h in nginx_points(*NODES[0])[:3]])
for key in KEYS:
    print("%-24r crc32=0x%08x all up %s, node 1 down %s" % (
        key, zlib.crc32(key.encode()), order(pts, len(NODES), key), order(pts, len(NODES), key, down={1})))
# IPv6: the ids differ between the two.
print("ipv6 apisix", ["0x%08x" % h for h in apisix_points("[::1]:1883", 1)[:2]],
      "nginx", ["0x%08x" % h for h in nginx_points("[::1]:1883", 1)[:2]])
