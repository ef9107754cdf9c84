#!/usr/bin/env bash
# Warm redeploy latency: time from `berth deploy` of an unchanged app until the new release
# answers through the edge. Median of 10.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
DATA=$(mktemp -d /tmp/berth-bench.XXXX)
API=17370; EDGE=18370
"$BERTH" --data-dir "$DATA" up --api-port $API --edge-port $EDGE --bridge bbench --subnet 10.77.200.0/24 --drain-grace 1s >"$DATA/up.log" 2>&1 &
UP=$!
trap '"$BERTH" --data-dir "$DATA" down >/dev/null 2>&1; kill $UP 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do [ -f "$DATA/api.json" ] && break; sleep 0.1; done
B=("$BERTH" --data-dir "$DATA")
"${B[@]}" deploy examples/hello >/dev/null 2>&1
times=()
for v in $(seq 2 11); do
  start=$(date +%s%N)
  "${B[@]}" deploy examples/hello >/dev/null 2>&1
  until curl -fsS -H 'Host: hello.localhost' "http://127.0.0.1:$EDGE/" 2>/dev/null | grep -q "release=v$v "; do sleep 0.005; done
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "warm redeploy (ms): $(echo $sorted | tr '\n' ' ')"
echo "median: $(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (a[5]+a[6])/2}') ms"
