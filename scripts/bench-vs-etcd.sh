#!/usr/bin/env bash
# Runs the same lock workloads against a 3-member etcd and a 3-node raftlock,
# both on 127.0.0.1 with fsync on, clients spread round-robin over every
# member, and prints one table: etcd through its gRPC Lock API (the official
# Rust client, bench/etcd), raftlock through its Rust client library (the
# native protocol, docs/NATIVE.md) and through HTTP, medians of RUNS runs, with the ratios to etcd. Installs
# Debian's etcd-server and protobuf-compiler if they are missing.
#
#   bash scripts/bench-vs-etcd.sh [SECONDS_PER_WORKLOAD] [RUNS]
set -euo pipefail
export LC_ALL=C
secs=${1:-8}
runs=${2:-3}
workloads=a,b64,c16
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/raftlock-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)..."
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian may start a system etcd on 2379/2380; the benchmark uses its own ports.
(cd "$top" && cargo build --release -q)
(cd "$top/bench/etcd" && cargo build --release -q)
bin="$top/target/release/raftlock"
etcd_bench="$top/bench/etcd/target/release/raftlock-etcd-bench"

source "$top/scripts/lib/cluster.sh"

wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" -X "${2:-GET}" -d '{}' && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

start_etcd() {
  rm -rf "$work"/etcd*
  local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!)
  done
  wait_http http://127.0.0.1:23791/v3/maintenance/status POST
}


# Each run starts fresh clusters, so one run's state does not slow the next.
for run in $(seq 1 "$runs"); do
  start_etcd
  "$etcd_bench" --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 \
    --secs "$secs" --workloads "$workloads" | tee "$work/etcd-$run.txt"
  stop_all
  start_raftlock "$work" "$bin" 271
  for door in library http; do
    "$bin" bench --target raftlock --driver "$door" --endpoints "$endpoints" \
      --secs "$secs" --workloads "$workloads" | tee "$work/$door-$run.txt"
  done
  stop_all
done

# Median of the runs, per workload and column (2: pairs/s, 3: p50 ms).
median() { # file-prefix column -> "workload<TAB>median" lines, sorted by workload
  for f in "$work/$1"-*.txt; do tail -n +3 "$f"; done \
    | awk -F'  +' -v col="$2" '{ print $1 "\t" $col }' | sort -t $'\t' -k1,1 -k2,2g \
    | awk -F'\t' '{ k = $1; v[k, ++c[k]] = $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
      END { for (i = 1; i <= n; i++) { k = order[i]; m = c[k];
        med = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2; printf "%s\t%s\n", k, med } }'
}
echo
echo "medians of $runs runs of $secs s; clients spread over all 3 members; ratio = raftlock / etcd"
printf '%-28s %10s %10s %6s %10s %6s | %9s %9s %6s %9s %6s\n' workload "etcd/s" "library/s" ratio "http/s" ratio \
  "etcd p50" "lib p50" ratio "http p50" ratio
join -t $'\t' <(median etcd 2) <(median library 2) | join -t $'\t' - <(median http 2) \
  | join -t $'\t' - <(median etcd 3) | join -t $'\t' - <(median library 3) | join -t $'\t' - <(median http 3) \
  | awk -F'\t' '{ printf "%-28s %10.0f %10.0f %6.2f %10.0f %6.2f | %9.2f %9.2f %6.2f %9.2f %6.2f\n",
      $1, $2, $3, $3 / ($2 > 0 ? $2 : 1), $4, $4 / ($2 > 0 ? $2 : 1),
      $5, $6, $6 / ($5 > 0 ? $5 : 1), $7, $7 / ($5 > 0 ? $5 : 1) }'
