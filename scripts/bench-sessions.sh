#!/usr/bin/env bash
# Issue 14 (d): N live sessions on a 3-node raftlock (127.0.0.1, fsync on,
# TLS and credentials on) with a TTL of TTL_MS, each renewed every TTL/3
# through the native protocol (32 connections spread over the nodes), kept
# alive for SECS; prints the bench line (spurious expiries must be 0) and
# each node's resident memory before and after, per session.
#
#   bash scripts/bench-sessions.sh [N] [TTL_MS] [SECS] [DRIVER]
#
# Defaults: a million sessions, TTL 60 s (renewed every 20 s: 50,000
# keepalives/s), 180 s (3 TTLs), driver library (native; `http` for the
# HTTP API).
set -euo pipefail
export LC_ALL=C
n=${1:-1000000}
ttl_ms=${2:-60000}
secs=${3:-180}
driver=${4:-library}
top=$(cd "$(dirname "$0")/.." && pwd)
(cd "$top" && cargo build --release -q)
bin="$top/target/release/raftlock"
work=$(mktemp -d /tmp/raftlock-sessions.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${RAFTLOCK_KEEP_WORK:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
source "$top/scripts/lib/cluster.sh"
# A million sessions' worst-case state (each with its kept responses) must
# fit the largest snapshot a follower accepts: fewer kept responses each.
start_raftlock "$work" "$bin" 281 --sessions-max "$((n > 100000 ? n : 100000))" --session-requests-max 16
rss() { for p in "${pids[@]}"; do awk '/VmRSS/ { printf "%d ", $2 / 1024 }' "/proc/$p/status"; done; }
before=$(rss)
echo "resident MB per node before: $before"
"$bin" bench --driver "$driver" --endpoints "$endpoints" --workloads "s$n" --ttl-ms "$ttl_ms" --secs "$secs"
after=$(rss)
echo "resident MB per node after:  $after"
set -- $before
b=("$@")
set -- $after
i=0
for a in "$@"; do
  awk -v a="$a" -v b="${b[$i]}" -v n="$n" -v node=$((i + 1)) \
    'BEGIN { printf "node %d: %.0f bytes per session above the idle node\n", node, (a - b) * 1048576 / n }'
  i=$((i + 1))
done
