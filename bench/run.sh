#!/usr/bin/env bash
# bench/run.sh: the mqgate benchmark in one command.
#
#   bash bench/run.sh                 # full run, about 7 minutes
#   QUICK=1 bash bench/run.sh         # smoke test, about 1 minute
#
# Optional: ROUNDS=N (default 3), TARGETS=no-proxy,haproxy,nginx,mqgate,
# PHASES=order,connect,throughput-64B,throughput-1KB,latency,tls-connect,tls-resume,tls-throughput-64B,
#   ws-connect,ws-throughput-64B,wss-connect,wss-throughput-64B,idle,tls-idle,ws-idle,wss-idle,
# MQGATE_BIN=/path/to/mqgate (default: go build ./cmd/mqgate).
#
# Installs what is missing (Debian: haproxy, nginx, libnginx-mod-stream,
# libnginx-mod-stream-js, mosquitto; needs root), builds the harness, runs it
# and writes bench/results/latest.{md,json,png}. Every process it starts
# listens on 127.0.0.1 only and is stopped by pid at the end. Exits 2 when a
# target failed its hashing check or a phase failed (results are still
# written).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null || { echo "run.sh: Go is required (expected in /usr/local/go)" >&2; exit 1; }

policy_created=""
work=""
bench_pid=""
cleanup() {
  if [[ -n "$bench_pid" ]] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [[ -n "$policy_created" ]]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [[ -n "$work" ]]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_missing() {
  local missing=()
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v nginx >/dev/null || missing+=(nginx)
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
  [[ -e /usr/lib/nginx/modules/ngx_stream_js_module.so ]] || missing+=(libnginx-mod-stream-js)
  command -v mosquitto >/dev/null || missing+=(mosquitto)
  if ((${#missing[@]} == 0)); then
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    echo "run.sh: missing ${missing[*]}; run as root to apt-get install them" >&2
    exit 1
  fi
  echo "run.sh: installing ${missing[*]}" >&2
  # The packages would start their own services; the benchmark starts its
  # own processes, so keep them from starting while installing.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_missing

# Every process started from here on inherits the hard open files limit.
ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d /tmp/mqbench.XXXXXX)"
cd "$repo"
echo "run.sh: building the harness" >&2
go build -o "$work/mqbench" ./bench/cmd/mqbench

command_line="bash bench/run.sh"
for v in MQGATE_BIN PHASES TARGETS ROUNDS QUICK; do
  if [[ -n "${!v:-}" ]]; then
    command_line="$v=${!v} $command_line"
  fi
done

args=(run -repo "$repo" -work "$work/run" -out "$here/results" -command "$command_line")
if [[ "${QUICK:-0}" != 0 ]]; then
  args+=(-quick)
fi
if [[ -n "${ROUNDS:-}" ]]; then
  args+=(-rounds "$ROUNDS")
fi
if [[ -n "${TARGETS:-}" ]]; then
  args+=(-targets "$TARGETS")
fi
if [[ -n "${PHASES:-}" ]]; then
  args+=(-phases "$PHASES")
fi
if [[ -n "${MQGATE_BIN:-}" ]]; then
  args+=(-mqgate-bin "$MQGATE_BIN")
fi

"$work/mqbench" "${args[@]}" &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=""
exit "$status"
