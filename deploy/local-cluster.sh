#!/usr/bin/env bash
# A local cluster to try cluster mode by hand: one redis-server and three
# presenced nodes on loopback, every role on each node. Ctrl-C stops all.
#
#   make cluster            # or: deploy/local-cluster.sh
#   nodes: http://127.0.0.1:8081, :8082, :8083 (WS at /v1/ws)
#   tokens: ./target/release/presenced token --user alice --data-dir .cluster
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6390}
SHARDS=${SHARDS:-16}
DIR=${CLUSTER_DIR:-.cluster}
BIN=./target/release/presenced

command -v redis-server >/dev/null || {
  echo "redis-server is missing: apt-get install redis-server" >&2
  exit 1
}
cargo build --release -q -p presenced
mkdir -p "$DIR"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes \
  --dir "$DIR" --daemonize no >"$DIR/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# One development secret shared by every node, in the cluster's directory.
if [ ! -f "$DIR/jwt-secret" ]; then
  (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$DIR/jwt-secret")
fi
for n in 1 2 3; do
  "$BIN" serve --redis "redis://127.0.0.1:$REDIS_PORT/0" --shards "$SHARDS" \
    --node-id "local-$n" --listen "127.0.0.1:808$n" --data-dir "$DIR" \
    >"$DIR/node-$n.out" 2>"$DIR/node-$n.log" &
  pids+=($!)
done
sleep 1
echo "redis on 127.0.0.1:$REDIS_PORT; presenced on 127.0.0.1:8081, :8082, :8083"
echo "mint a token: $BIN token --user alice --data-dir $DIR"
echo "logs in $DIR/; Ctrl-C stops everything"
wait
