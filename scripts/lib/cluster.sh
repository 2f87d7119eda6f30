# Sourced by the benchmark scripts: starts a 3-node raftlock on 127.0.0.1 as
# in production (peers on mutual TLS, the API on HTTPS, the native protocol
# beside it, a credential), and exports RAFTLOCK_CA and RAFTLOCK_CREDENTIAL
# for the clients. The caller owns `pids` (an array) and its cleanup.
#
#   start_raftlock WORK_DIR SERVER_BINARY PORT_PREFIX [EXTRA SERVE FLAGS...]
#
# PORT_PREFIX 271 gives peers on 27101-27103, HTTP on 27201-27203 and the
# native protocol on 27301-27303 (HTTP + 100, the default).

start_raftlock() {
  local work=$1 server=$2 prefix=$3
  shift 3
  local p=$((prefix / 10)) q=$((prefix % 10))
  local peer="${p}${q}" http="${p}$((q + 1))"
  local cluster="1=127.0.0.1:${peer}01,2=127.0.0.1:${peer}02,3=127.0.0.1:${peer}03"
  rm -rf "$work"/rl* "$work/certs"
  "$server" certs create-ca --certs-dir "$work/certs" >/dev/null
  for i in 1 2 3; do "$server" certs create-node --certs-dir "$work/certs" --id "$i" >/dev/null; done
  for i in 1 2 3; do
    RUST_LOG=${RAFTLOCK_SERVE_LOG:-warn} "$server" serve --id "$i" --data-dir "$work/rl$i" --listen-peer "127.0.0.1:${peer}0$i" \
      --listen-http "127.0.0.1:${http}0$i" --initial-cluster "$cluster" --certs-dir "$work/certs" "$@" \
      >"$work/rl$i.log" 2>&1 &
    pids+=($!)
  done
  export RAFTLOCK_CA="$work/certs/ca.pem"
  for _ in $(seq 1 100); do [ -s "$work/rl1/admin.token" ] && break; sleep 0.1; done
  RAFTLOCK_CREDENTIAL=$(cat "$work/rl1/admin.token"); export RAFTLOCK_CREDENTIAL
  endpoints="127.0.0.1:${http}01,127.0.0.1:${http}02,127.0.0.1:${http}03"
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null --cacert "$RAFTLOCK_CA" -H "Authorization: Bearer $RAFTLOCK_CREDENTIAL" \
      "https://127.0.0.1:${http}01/API/v1/cluster" && return 0
    sleep 0.1
  done
  echo "the cluster in $work did not answer; see $work/rl*.log" >&2
  return 1
}

stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
