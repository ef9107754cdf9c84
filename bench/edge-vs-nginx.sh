#!/usr/bin/env bash
# berth's edge vs nginx as a reverse proxy for the same backend (nginx `return 200`), on
# loopback, measured in one run with wrk (1 thread, 64 keep-alive connections, 10 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
}
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
DIR=$(mktemp -d /tmp/berth-edge-bench.XXXX)
BACKEND=18481; NGINX=18482; EDGE=18483
cat >"$DIR/nginx.conf" <<CONF
worker_processes auto;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from backend\n"; } }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
nginx -c "$DIR/nginx.conf"
cat >"$DIR/routes.json" <<JSON
{"generation": 1, "routes": {"bench.localhost": {"app": "bench", "release": 1, "upstreams": ["127.0.0.1:$BACKEND"]}}}
JSON
"$BERTH" edge --listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" --applied "$DIR/applied" 2>"$DIR/edge.log" &
EDGE_PID=$!
trap 'kill $EDGE_PID 2>/dev/null; nginx -c "$DIR/nginx.conf" -s stop 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do [ -f "$DIR/applied" ] && break; sleep 0.05; done
run() {
  wrk -t1 -c64 -d${BENCH_SECS:-10}s --latency -H "Host: bench.localhost" "http://127.0.0.1:$1/" >"$DIR/$2.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$DIR/$2.txt")
  p99=$(awk '$1=="99%" {print $2}' "$DIR/$2.txt")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$DIR/$2.txt")
  printf '%-8s %12s req/s   p99 %8s   %s\n' "$2" "$rps" "$p99" "$errs"
}
wrk -t1 -c64 -d2s -H "Host: bench.localhost" "http://127.0.0.1:$EDGE/" >/dev/null   # warm-up
run $BACKEND direct
run $NGINX nginx
run $EDGE berth
