#!/usr/bin/env bash
# Runs the same lock workloads against a 3-member etcd and a 3-node raftlock,
# both on 127.0.0.1 with fsync on, and prints them side by side with the
# ratio raftlock/etcd. Installs Debian's etcd-server if it is missing.
#
#   bash scripts/bench-vs-etcd.sh [SECONDS_PER_WORKLOAD]
set -euo pipefail
secs=${1:-5}
workloads=a,b1,b16,b64,c16
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/raftlock-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server (Debian package)..."
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq etcd-server >/dev/null; fi
fi
# Debian starts a system etcd on 2379/2380; the benchmark uses its own ports.
(cd "$top" && cargo build --release -q)
bin="$top/target/release/raftlock"

wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" -X "${2:-GET}" -d '{}' && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# etcd: 3 members, client ports 23791-23793, peer ports 23801-23803.
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
wait_http http://127.0.0.1:23791/v3/maintenance/status POST
"$bin" bench --target etcd --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 \
  --secs "$secs" --workloads "$workloads" | tee "$work/etcd.txt"
for p in "${pids[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()

# raftlock: 3 nodes, peer ports 27101-27103, HTTP 27201-27203.
rcluster="1=127.0.0.1:27101,2=127.0.0.1:27102,3=127.0.0.1:27103"
# As in production: peers on mutual TLS, the API on HTTPS, a credential.
"$bin" certs create-ca --certs-dir "$work/certs" >/dev/null
for i in 1 2 3; do "$bin" certs create-node --certs-dir "$work/certs" --id "$i" >/dev/null; done
for i in 1 2 3; do
  RUST_LOG=warn "$bin" serve --id "$i" --data-dir "$work/rl$i" --listen-peer "127.0.0.1:2710$i" \
    --listen-http "127.0.0.1:2720$i" --initial-cluster "$rcluster" --certs-dir "$work/certs" \
    >"$work/rl$i.log" 2>&1 &
  pids+=($!)
done
export RAFTLOCK_CA="$work/certs/ca.pem"
for _ in $(seq 1 100); do [ -s "$work/rl1/admin.token" ] && break; sleep 0.1; done
RAFTLOCK_CREDENTIAL=$(cat "$work/rl1/admin.token"); export RAFTLOCK_CREDENTIAL
for _ in $(seq 1 100); do
  curl -sf -o /dev/null --cacert "$RAFTLOCK_CA" -H "Authorization: Bearer $RAFTLOCK_CREDENTIAL" \
    https://127.0.0.1:27201/API/v1/cluster && break
  sleep 0.1
done
"$bin" bench --target raftlock --endpoints 127.0.0.1:27201,127.0.0.1:27202,127.0.0.1:27203 \
  --secs "$secs" --workloads "$workloads" | tee "$work/raftlock.txt"

echo
printf '%-28s %12s %12s %8s %12s %12s %8s\n' workload "etcd pairs/s" "raftlock" ratio "etcd p50" "raftlock" ratio
paste -d'|' <(tail -n +3 "$work/etcd.txt") <(tail -n +3 "$work/raftlock.txt") | awk -F'|' '{
  n = split($1, e, /  +/); split($2, r, /  +/);
  printf "%-28s %12.0f %12.0f %8.2f %12.2f %12.2f %8.2f\n", e[1], e[2], r[2], r[2]/(e[2]>0?e[2]:1), e[3], r[3], r[3]/(e[3]>0?e[3]:1)
}'
