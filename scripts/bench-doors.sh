#!/usr/bin/env bash
# Acquire+release through every door of a 3-node raftlock on 127.0.0.1
# (fsync on): plain HTTP and the Rust client library, each through the
# leader only and through the followers only. Prints one table.
#
#   bash scripts/bench-doors.sh [SECONDS_PER_WORKLOAD] [SERVER_BINARY]
#
# SERVER_BINARY (default: this tree's release build) runs the nodes, so an
# older build can be measured side by side with the same client; the
# library rows need a server that serves /API/v1/native/wait.
set -euo pipefail
secs=${1:-5}
top=$(cd "$(dirname "$0")/.." && pwd)
(cd "$top" && cargo build --release -q)
bin="$top/target/release/raftlock"
server=${2:-$bin}
workloads=a,b64,c16
work=$(mktemp -d /tmp/raftlock-doors.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cluster="1=127.0.0.1:29101,2=127.0.0.1:29102,3=127.0.0.1:29103"
# As in production: peers on mutual TLS, the API on HTTPS, a credential.
"$bin" certs create-ca --certs-dir "$work/certs" >/dev/null
for i in 1 2 3; do "$bin" certs create-node --certs-dir "$work/certs" --id "$i" >/dev/null; done
for i in 1 2 3; do
  RUST_LOG=warn "$server" serve --id "$i" --data-dir "$work/n$i" --listen-peer "127.0.0.1:2910$i" \
    --listen-http "127.0.0.1:2920$i" --initial-cluster "$cluster" --certs-dir "$work/certs" \
    >"$work/n$i.log" 2>&1 &
  pids+=($!)
done
export RAFTLOCK_CA="$work/certs/ca.pem"
for _ in $(seq 1 100); do [ -s "$work/n1/admin.token" ] && break; sleep 0.1; done
RAFTLOCK_CREDENTIAL=$(cat "$work/n1/admin.token"); export RAFTLOCK_CREDENTIAL
api() { curl -s --cacert "$RAFTLOCK_CA" -H "Authorization: Bearer $RAFTLOCK_CREDENTIAL" "$@"; }
for _ in $(seq 1 100); do api -f -o /dev/null https://127.0.0.1:29201/API/v1/cluster && break; sleep 0.1; done
endpoints=127.0.0.1:29201,127.0.0.1:29202,127.0.0.1:29203
drivers="http library"
if ! api -o /dev/null -w '%{http_code}' -X POST https://127.0.0.1:29201/API/v1/native/wait | grep -q 400; then
  drivers="http"  # an older server: no long-polled waits for the library
fi
printf '%-10s %-10s %-28s %12s %10s %10s\n' driver via workload pairs/s "p50 ms" "p99 ms"
for driver in $drivers; do
  for via in leader followers; do
    "$bin" bench --endpoints "$endpoints" --driver "$driver" --via "$via" --secs "$secs" \
      --workloads "$workloads" | tail -n +3 | while IFS= read -r line; do
        name=$(printf '%s' "$line" | cut -c1-28)
        set -- $(printf '%s' "$line" | cut -c29-)
        printf '%-10s %-10s %-28s %12s %10s %10s\n' "$driver" "$via" "$name" "$1" "$2" "$3"
      done
  done
done
