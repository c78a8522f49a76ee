#!/usr/bin/env bash
# Builds mqgate as one static Linux binary: the Dockerfile's build step, and
# what release builds and the packaging test run (same commands, same flags).
#
#   scripts/build-static.sh [OUT]        # default ./mqgate
#   VERSION=v1.2.0 COMMIT=$(git rev-parse HEAD) scripts/build-static.sh /out/mqgate
#
# VERSION and COMMIT default to what git says of the checkout ("dev" and
# "unknown" without git, as in a Docker build context without .git).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-mqgate}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# CGO off: no libc, so the binary runs on any Linux and in an image with
# nothing else in it. -trimpath: no build paths in it. -s -w: no symbol
# table or DWARF (about a third smaller). -buildvcs=false: the commit comes
# from -X, the same with or without .git.
CGO_ENABLED=0 GOOS=${GOOS:-linux} GOARCH=${GOARCH:-$(go env GOARCH)} \
  go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X main.version=${version} -X main.commit=${commit}" \
  -o "$out" ./cmd/mqgate
