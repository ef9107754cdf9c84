#!/usr/bin/env bash
# berth's edge vs nginx, HAProxy and Caddy as reverse proxies for the same backend (an nginx
# of its own serving a small answer and a 64 KiB file), on loopback, measured in one run with
# wrk (1 thread, 64 connections): kept-alive connections, then a new connection per request,
# for the small and the 64 KiB response; the median of BENCH_ROUNDS=5 rounds of
# BENCH_SECS=5 s each, the proxies taking turns in each round, in an order that rotates
# from round to round. Each proxy gets the same
# number of worker threads or processes (one per core). Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in nginx wrk haproxy caddy; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
BERTH="${BERTH:-$PWD/target/release/berth}"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
DIR=$(mktemp -d /tmp/berth-edge-bench.XXXX)
BACKEND=18481; NGINX=18482; EDGE=18483; HAPROXY=18484; CADDY=18485
CORES=$(nproc)
head -c 65536 /dev/urandom > "$DIR/big.bin"
chmod 755 "$DIR"; chmod 644 "$DIR/big.bin"
# The backend: an nginx of its own, so that every proxy — nginx included — reaches it across
# processes, as it would an app (an nginx serving backend and proxy in the same worker
# processes would hand many requests to itself without a single wake-up).
cat >"$DIR/backend.conf" <<CONF
worker_processes $CORES;
pid $DIR/backend.pid;
error_log $DIR/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$BACKEND;
    keepalive_requests 1000000;
    location / { return 200 "hello from backend\n"; }
    location = /big { alias $DIR/big.bin; }
  }
}
CONF
cat >"$DIR/nginx.conf" <<CONF
worker_processes $CORES;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    keepalive_requests 1000000;
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
cat >"$DIR/haproxy.cfg" <<CONF
global
  nbthread $CORES
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend front
  bind 127.0.0.1:$HAPROXY
  default_backend back
backend back
  server b1 127.0.0.1:$BACKEND
CONF
cat >"$DIR/Caddyfile" <<CONF
{
  admin off
  auto_https off
}
http://:$CADDY {
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:$BACKEND
}
CONF
cat >"$DIR/routes.json" <<JSON
{"generation": 1, "routes": {"bench.localhost": {"app": "bench", "release": 1, "upstreams": ["127.0.0.1:$BACKEND"]}}}
JSON
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  nginx -c "$DIR/nginx.conf" -s stop 2>/dev/null || true
  nginx -c "$DIR/backend.conf" -s stop 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
# Each server in a session of its own, as nginx puts itself: with the kernel's autogroup
# scheduling, processes of one session share one share of the CPU — a proxy left in the
# script's session would share its share with wrk.
nginx -c "$DIR/backend.conf"
nginx -c "$DIR/nginx.conf"
setsid haproxy -q -f "$DIR/haproxy.cfg" & PIDS+=($!)
GOMAXPROCS=$CORES XDG_DATA_HOME="$DIR" XDG_CONFIG_HOME="$DIR" setsid caddy run --adapter caddyfile --config "$DIR/Caddyfile" >"$DIR/caddy.log" 2>&1 & PIDS+=($!)
setsid "$BERTH" edge --listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" --applied "$DIR/applied" 2>"$DIR/edge.log" & PIDS+=($!)
for _ in $(seq 1 100); do [ -f "$DIR/applied" ] && break; sleep 0.05; done
for port in $HAPROXY $CADDY $EDGE; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" -H "Host: bench.localhost" && break; sleep 0.05; done
done
SECS=${BENCH_SECS:-5}
ROUNDS=${BENCH_ROUNDS:-5}
mkdir -p "$DIR/results"
TARGETS=("$BACKEND direct" "$NGINX nginx" "$HAPROXY haproxy" "$CADDY caddy" "$EDGE berth")
run() { # port name path extra-wrk-args... : appends "req/s p99-ms errors" to $DIR/<name>
  local port=$1 name=$2 path=$3; shift 3
  wrk -t1 -c64 -d"${SECS}s" --latency -H "Host: bench.localhost" "$@" "http://127.0.0.1:$port$path" >"$DIR/out.txt"
  awk '/Requests\/sec/ {rps = $2}
       $1 == "99%" {v = $2; m = 1; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000;
                    sub(/[a-z]+$/, "", v); p99 = v * m}
       /Non-2xx|Socket errors/ {e = e $0 " "}
       END {printf "%s %.2f %s\n", rps, p99, e}' "$DIR/out.txt" >>"$DIR/results/$name"
}
median() { # column file
  sort -g -k"$1","$1" "$2" | awk -v c="$1" '{v[NR] = $c} END {print v[int((NR + 1) / 2)]}'
}
echo "wrk -t1 -c64, ${SECS} s per run, median of $ROUNDS rounds (the proxies take turns, in an order rotating each round)"
for load in keepalive new-connection; do
  extra=()
  [ "$load" = new-connection ] && extra=(-H "Connection: close")
  for path in / /big; do
    size=small; [ "$path" = /big ] && size=64KiB
    echo "$load, $size response:"
    for target in "${TARGETS[@]}"; do
      set -- $target
      rm -f "$DIR/results/$2"
      wrk -t1 -c16 -d1s -H "Host: bench.localhost" "${extra[@]}" "http://127.0.0.1:$1$path" >/dev/null 2>&1 || true
    done
    for round in $(seq 0 $((ROUNDS - 1))); do
      # Each round starts one place further down the list: no proxy always runs right
      # after the same one (what one leaves behind, the next would always pay for).
      for i in $(seq 0 $((${#TARGETS[@]} - 1))); do
        set -- ${TARGETS[$(((round + i) % ${#TARGETS[@]}))]}
        run "$1" "$2" "$path" "${extra[@]}"
      done
    done
    for target in "${TARGETS[@]}"; do
      set -- $target
      errs=$(cut -d' ' -f3- "$DIR/results/$2" | tr -s ' ' | sed 's/^ *$//' | sort -u | tr '\n' ' ')
      printf '  %-8s %12s req/s   p99 %7s ms   (runs: %s)  %s\n' "$2" "$(median 1 "$DIR/results/$2")" \
        "$(median 2 "$DIR/results/$2")" "$(cut -d' ' -f1 "$DIR/results/$2" | cut -d. -f1 | tr '\n' ' ' | sed 's/ $//')" "$errs"
    done
    awk -v b="$(median 1 "$DIR/results/berth")" -v n="$(median 1 "$DIR/results/nginx")" 'BEGIN {printf "  berth / nginx: %.2fx\n", b / n}'
  done
done
