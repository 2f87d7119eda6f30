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
source "$top/scripts/lib/cluster.sh"
start_raftlock "$work" "$server" 291
api() { curl -s --cacert "$RAFTLOCK_CA" -H "Authorization: Bearer $RAFTLOCK_CREDENTIAL" "$@"; }
drivers="http library library-http"
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
