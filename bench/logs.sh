#!/usr/bin/env bash
# The log store: ingest rate of raw container output against `cat` of the same bytes, a
# regular-expression search over every stored line against `rg` over the raw text, and a
# query for the last five minutes of a log spread over ten hours. Usage: bench/logs.sh [MiB]
# (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
command -v rg >/dev/null || apt-get install -y -qq ripgrep >/dev/null
cargo build --release --locked -p berth-observe --bench logs 2>/dev/null
BIN=$(ls -t target/release/deps/logs-* | grep -v '\.d$' | head -1)
WORK=$(mktemp -d /var/tmp/berth-bench-logs.XXXX)
trap 'rm -rf "$WORK"' EXIT
"$BIN" "$WORK" "$MIB" | tee "$WORK/out"
sync; echo 3 >/proc/sys/vm/drop_caches
s=$(date +%s%N); cat "$WORK/plain.log" > "$WORK/copy.log"; sync; e=$(date +%s%N)
CAT=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", (e - s) / 1e9 }')
rm -f "$WORK/copy.log"
s=$(date +%s%N); rg -c "ERROR connection reset" "$WORK/plain.log" >/dev/null; e=$(date +%s%N)
RG=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", (e - s) / 1e9 }')
INGEST=$(awk '/^ingest/ { print $6 }' "$WORK/out")
GREP=$(awk '/^grep/ { print $2 }' "$WORK/out")
echo "cat of the same bytes: $CAT s ($(awk -v m="$MIB" -v t="$CAT" 'BEGIN { printf "%.0f", m / t }') MiB/s)"
echo "rg over the raw text: $RG s"
awk -v i="$INGEST" -v c="$CAT" -v g="$GREP" -v r="$RG" 'BEGIN {
  printf "ingest at %.0f%% of cat; berth grep %.1fx rg'"'"'s time\n", 100 * c / i, g / r }'
