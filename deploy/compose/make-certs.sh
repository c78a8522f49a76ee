#!/usr/bin/env bash
# A self-signed ECDSA certificate for localhost, for the quick start's TLS
# port (8883): deploy/compose/certs/server.crt and server.key. Clients take
# it with --cafile deploy/compose/certs/server.crt.
#
#   bash deploy/compose/make-certs.sh [DIR]
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
# The container runs as uid 65532, not the owner: let it read the key.
chmod 0644 "$dir/server.key"
echo "wrote $dir/server.crt and $dir/server.key"
