#!/usr/bin/env bash
# Runs every test of mqgate, installing first what the tests need:
# Debian packages (with apt-get, when missing) and the Go modules.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto     || need+=(mosquitto)
have mosquitto_pub || need+=(mosquitto-clients)
# The real etcd the etcd provider's tests start (internal/etcdtest).
have etcd          || need+=(etcd-server)
# The benchmark's peers: the tests check the configurations it renders for them.
have haproxy       || need+=(haproxy)
[ -f /usr/lib/nginx/modules/ngx_stream_js_module.so ] || need+=(nginx libnginx-mod-stream libnginx-mod-stream-js)
# Browser tests: Debian's Chromium, driven from Node.js by playwright-core.
[ -x /usr/bin/chromium ] || need+=(chromium)
have node || need+=(nodejs)
have npm  || need+=(npm)
# The compose quick start's certificate script (deploy/compose/make-certs.sh).
have openssl || need+=(openssl)
# systemd-analyze verifies deploy/systemd/mqgate.service; without it (systemd
# is not small to add to a container) that one test says it is skipped.
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The browser tests' Node packages (internal/browsertest/package.json).
if [ ! -d internal/browsertest/node_modules/playwright-core ] || [ ! -d internal/browsertest/node_modules/mqtt ]; then
  echo "installing the browser tests' npm packages" >&2
  npm ci --prefix internal/browsertest --no-audit --no-fund --loglevel=error >/dev/null
fi

go mod download
go vet ./...
go test -race -count=1 -timeout 12m "$@" ./...

# The fuzz targets of what reads untrusted input beyond the MQTT codec
# (configuration files, Admin API bodies, PROXY headers, TLS records after
# the handshake), each briefly on top of its seed corpus in testdata/fuzz;
# MQGATE_FUZZTIME=10m for longer. The default budget is a count, not a
# duration: Go 1.26's coordinator can report its own -fuzztime deadline as a
# failure ("context deadline exceeded", golang/go#75804, fixed in Go 1.27),
# which failed CI once on FuzzReadProxyHeader with no crasher written.
for target in config:FuzzParse admin:FuzzAdminBody proxy:FuzzReadProxyHeader tlsrecord:FuzzRead pipe/epoll:FuzzUnframe pipe/epoll:FuzzTLSOpen pipe/epoll:FuzzWSSRead mqttws:FuzzParseUpgrade mqtt:FuzzFeedLast; do
  go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "${MQGATE_FUZZTIME:-20000x}" "./${target%%:*}/"
done
