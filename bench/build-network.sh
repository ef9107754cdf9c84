#!/usr/bin/env bash
# What a build's own network namespace (and its way out through the build proxy) costs: a
# cached rebuild — one file of examples/hello changed, its dependencies restored from the
# build cache — timed from `berth deploy` until the new release answers through the edge.
# Median of BENCH_ROUNDS=10. With BASELINE=/path/to/another/berth, that binary runs a
# platform of its own beside this one and the two take turns, round by round, so that both
# meet the same machine. Traffic stays on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="${BERTH:-$PWD/target/release/berth}"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
ROUNDS="${BENCH_ROUNDS:-10}"
WORK=$(mktemp -d /tmp/berth-build-bench.XXXX)
names=(current)
bins=("$BERTH")
if [ -n "${BASELINE:-}" ]; then names+=(baseline); bins+=("$BASELINE"); fi
cleanup() {
  for i in "${!bins[@]}"; do "${bins[$i]}" --data-dir "$WORK/${names[$i]}" down >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for i in "${!bins[@]}"; do
  n=${names[$i]}
  mkdir -p "$WORK/$n"
  "${bins[$i]}" --data-dir "$WORK/$n" up --api-port $((17380 + i)) --edge-port $((18380 + i)) \
    --edge-tls-port 0 --bridge "bbn$i" --subnet "10.77.$((210 + i)).0/24" --drain-grace 1s \
    >"$WORK/$n/up.log" 2>&1 &
  for _ in $(seq 1 100); do [ -f "$WORK/$n/api.json" ] && break; sleep 0.1; done
  cp -r examples/hello "$WORK/$n/app"
  "${bins[$i]}" --data-dir "$WORK/$n" deploy "$WORK/$n/app" >/dev/null 2>&1   # fills the caches
done
declare -A times
for v in $(seq 2 $((ROUNDS + 1))); do
  for i in "${!bins[@]}"; do
    n=${names[$i]}
    echo "round $v" >"$WORK/$n/app/round.txt"
    start=$(date +%s%N)
    "${bins[$i]}" --data-dir "$WORK/$n" deploy "$WORK/$n/app" >/dev/null 2>&1
    until curl -fsS -H 'Host: hello.localhost' "http://127.0.0.1:$((18380 + i))/" 2>/dev/null | grep -q "release=v$v "; do sleep 0.005; done
    end=$(date +%s%N)
    times[$n]+="$(( (end - start) / 1000000 )) "
  done
done
for n in "${names[@]}"; do
  sorted=$(printf '%s\n' ${times[$n]} | sort -n)
  median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  echo "$n: cached rebuild (ms): $(echo $sorted | tr '\n' ' ')  median $median"
done
