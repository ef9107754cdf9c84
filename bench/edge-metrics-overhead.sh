#!/usr/bin/env bash
# What the edge's request metrics and access log cost: the edge of this checkout (counting
# requests; and counting plus writing the access log) against the edge of the last commit
# before it counted requests (built in a worktree), in front of the same nginx backend,
# taking turns, wrk -t1 -c64 keep-alive, 10 s a run, 3 runs each; medians.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV=${BASE_REV:-$(git log --format=%H --grep '^Metrics: /metrics' -1)~1}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
}
BERTH="$PWD/target/release/berth"
cargo build --release --locked --bin berth
BASE_DIR=${BASE_DIR:-/var/tmp/berth-edge-base}
if [ ! -x "$BASE_DIR/target/release/berth" ]; then
  rm -rf "$BASE_DIR"; git worktree prune
  git worktree add --detach "$BASE_DIR" "$BASE_REV" >/dev/null
  (cd "$BASE_DIR" && cargo build --release --locked --bin berth)
fi
BASE="$BASE_DIR/target/release/berth"
DIR=$(mktemp -d /tmp/berth-edge-overhead.XXXX)
BACKEND=18491; EDGE=18493
cat >"$DIR/nginx.conf" <<CONF
worker_processes auto;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from backend\n"; } }
}
CONF
nginx -c "$DIR/nginx.conf"
cat >"$DIR/routes.json" <<JSON
{"generation": 1, "routes": {"bench.localhost": {"app": "bench", "release": 1, "upstreams": ["127.0.0.1:$BACKEND"]}}}
JSON
# (errexit holds in the trap too: every command in it may fail without cutting it short)
trap 'kill $EDGE_PID 2>/dev/null || true; pkill -f "nginx -c $DIR/nginx.conf" || true; sleep 0.2; rm -rf "$DIR"' EXIT
EDGE_PID=
start() {
  rm -f "$DIR/applied"
  if [ "$1" = with ]; then
    "$BERTH" edge --listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" --applied "$DIR/applied" --metrics "$DIR/metrics.json" 2>"$DIR/edge.log" &
  elif [ "$1" = access ]; then
    "$BERTH" edge --listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" --applied "$DIR/applied" --metrics "$DIR/metrics.json" --access-log "$DIR/access.log" 2>"$DIR/edge.log" &
  else
    "$BASE" edge --listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" --applied "$DIR/applied" 2>"$DIR/edge.log" &
  fi
  EDGE_PID=$!
  for _ in $(seq 1 100); do [ -f "$DIR/applied" ] && break; sleep 0.05; done
  wrk -t1 -c64 -d2s -H "Host: bench.localhost" "http://127.0.0.1:$EDGE/" >/dev/null
}
stop() { kill $EDGE_PID; wait $EDGE_PID 2>/dev/null || true; }
cpu() { awk '{ print $14 + $15 }' "/proc/$EDGE_PID/stat"; }
for round in 1 2 3; do
  for kind in without with access; do
    start $kind
    c0=$(cpu); wrk -t1 -c64 -d${BENCH_SECS:-10}s -H "Host: bench.localhost" "http://127.0.0.1:$EDGE/" >"$DIR/$kind-$round.txt"; c1=$(cpu)
    stop
    n=$(awk '/requests in/ {print $1}' "$DIR/$kind-$round.txt")
    # The edge's own CPU time per request (user + system, all its threads): less noisy than
    # the rate on a machine whose 2 cores also run wrk and nginx.
    awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.2f\n", (b - a) * 1e6 / 100 / n }' >"$DIR/$kind-$round.cpu"
    printf '%-8s round %d: %s req/s, %s us of edge CPU per request\n' "$kind" "$round" \
      "$(awk '/Requests\/sec/ {print $2}' "$DIR/$kind-$round.txt")" "$(cat "$DIR/$kind-$round.cpu")"
  done
done
med() { for r in 1 2 3; do awk '/Requests\/sec/ {print $2}' "$DIR/$1-$r.txt"; done | sort -n | sed -n 2p; }
medcpu() { for r in 1 2 3; do cat "$DIR/$1-$r.cpu"; done | sort -n | sed -n 2p; }
W=$(med with); WO=$(med without); A=$(med access)
echo "median: without $WO req/s, with metrics $W req/s, with metrics and access log $A req/s"
awk -v w="$W" -v o="$WO" -v a="$A" 'BEGIN { printf "overhead: metrics %.1f%%, metrics + access log %.1f%%\n", 100 * (o - w) / o, 100 * (o - a) / o }'
CW=$(medcpu with); CWO=$(medcpu without); CA=$(medcpu access)
echo "median edge CPU per request: without $CWO us, with metrics $CW us, with metrics and access log $CA us"
rm -f "$DIR/access.log"
if [ -s "$DIR/metrics.json" ]; then echo "the edge with metrics counted: $(head -c 200 "$DIR/metrics.json")"; fi
