#!/usr/bin/env bash
# HTTPS through berth's edge vs nginx terminating TLS for the same backend (an nginx of its
# own, `return 200`), on loopback, one run with wrk (1 thread, 64 connections, 10 s each): keep-alive
# (requests over established TLS connections) and new connections (`Connection: close`, so
# every request pays a full TLS handshake). Both sides serve the same ECDSA P-256 certificate
# and offer TLS 1.3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
}
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
DIR=$(mktemp -d /tmp/berth-https-bench.XXXX)
BACKEND=18581; NGINX=18582; EDGE_HTTP=18583; EDGE=18584
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench.localhost" -addext "subjectAltName=DNS:bench.localhost" \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$DIR/key.pem" -out "$DIR/key8.pem"
# The backend: an nginx of its own, reached across processes by both proxies (see
# bench/edge-vs-nginx.sh).
cat >"$DIR/backend.conf" <<CONF
worker_processes auto;
pid $DIR/backend.pid;
error_log $DIR/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from backend\n"; } }
}
CONF
cat >"$DIR/nginx.conf" <<CONF
worker_processes auto;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX ssl http2;
    ssl_certificate $DIR/cert.pem;
    ssl_certificate_key $DIR/key8.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
nginx -c "$DIR/backend.conf"
nginx -c "$DIR/nginx.conf"
cat >"$DIR/routes.json" <<JSON
{"generation": 1, "routes": {"bench.localhost": {"app": "bench", "release": 1, "upstreams": ["127.0.0.1:$BACKEND"]}}}
JSON
python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
entry = {"names": ["bench.localhost"], "chain_pem": open(f"{d}/cert.pem").read(), "key_pem": open(f"{d}/key8.pem").read()}
json.dump({"generation": 1, "fallback": entry, "certs": []}, open(f"{d}/certs.json", "w"))
PY
# In a session of its own, as nginx puts itself (autogroup scheduling: see
# bench/edge-vs-nginx.sh).
setsid "$BERTH" edge --listen "127.0.0.1:$EDGE_HTTP" --tls-listen "127.0.0.1:$EDGE" --routes "$DIR/routes.json" \
  --applied "$DIR/applied" --certs "$DIR/certs.json" 2>"$DIR/edge.log" &
EDGE_PID=$!
trap 'kill $EDGE_PID 2>/dev/null; nginx -c "$DIR/nginx.conf" -s stop 2>/dev/null; nginx -c "$DIR/backend.conf" -s stop 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do [ -f "$DIR/certs.applied" ] && [ -f "$DIR/applied" ] && break; sleep 0.05; done
curl -fsS --cacert "$DIR/cert.pem" --resolve "bench.localhost:$EDGE:127.0.0.1" "https://bench.localhost:$EDGE/" >/dev/null
curl -fsS --cacert "$DIR/cert.pem" --resolve "bench.localhost:$NGINX:127.0.0.1" "https://bench.localhost:$NGINX/" >/dev/null
run() { # port name extra-wrk-args...
  local port=$1 name=$2; shift 2
  wrk -t1 -c64 -d${BENCH_SECS:-10}s --latency -H "Host: bench.localhost" "$@" "https://127.0.0.1:$port/" >"$DIR/$name.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$DIR/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$DIR/$name.txt")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$DIR/$name.txt")
  printf '%-22s %12s req/s   p99 %8s   %s\n' "$name" "$rps" "$p99" "$errs"
}
wrk -t1 -c64 -d2s -H "Host: bench.localhost" "https://127.0.0.1:$EDGE/" >/dev/null   # warm-up
run $NGINX "nginx keep-alive"
run $EDGE "berth keep-alive"
run $NGINX "nginx new-connection" -H "Connection: close"
run $EDGE "berth new-connection" -H "Connection: close"
