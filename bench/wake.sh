#!/usr/bin/env bash
# Scale to zero: time from a request to a sleeping app until its first byte (the edge holds
# the request, the control plane starts an instance, the edge forwards it), median of 10,
# for the same tiny static HTTP server bench/cold-start.sh starts with bare `crun run` /
# `runsc run`, at both isolation levels (and what a sleeping trusted app holds: its container
# created, not started). Traffic goes only to loopback and berth's own
# bridge (10.77.203.0/24). Needs root, gcc, crun, runsc.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
work=$(mktemp -d /tmp/berth-wake.XXXX)
API=17372; EDGE=18372
cleanup() {
  # The control plane first (its supervisor would restart what `down` stops), then the rest.
  [ -n "${UP:-}" ] && { kill "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; "$BERTH" --data-dir "$work/data" down >/dev/null 2>&1 || true; }
  rm -rf "$work"
}
trap cleanup EXIT
# The smallest HTTP server (as in bench/cold-start.sh).
sed -n '/^cat > "\$work\/server.c" <<.C.$/,/^C$/p' bench/cold-start.sh | sed '1d;$d' > "$work/server.c"
"$BERTH" --data-dir "$work/data" up --api-port $API --edge-port $EDGE --bridge bwake --subnet 10.77.203.0/24 >"$work/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 100); do [ -f "$work/data/api.json" ] && break; sleep 0.1; done
B=("$BERTH" --data-dir "$work/data")
asleep() { "${B[@]}" --json apps | python3 -c "import json,sys; print(any(a['name']=='$1' and a.get('sleeping') for a in json.load(sys.stdin)))"; }
for isolation in trusted sandbox; do
  app="wake-$isolation"
  mkdir -p "$work/$app"
  gcc -static -O2 -o "$work/$app/server" "$work/server.c"
  echo 'web: ./server' > "$work/$app/Procfile"
  printf 'isolation = "%s"\n[scale]\nmin = 0\nidle = "1s"\n' "$isolation" > "$work/$app/berth.toml"
  "${B[@]}" deploy "$work/$app" >/dev/null 2>&1 || { cat "$work/up.log"; exit 1; }
  times=()
  for _ in $(seq 1 10); do
    for _ in $(seq 1 200); do [ "$(asleep "$app")" = True ] && break; sleep 0.1; done
    t=$(curl -s -o /dev/null -w '%{time_starttransfer}' -H "Host: $app.localhost" "http://127.0.0.1:$EDGE/")
    times+=("$(awk -v t="$t" 'BEGIN {printf "%d", t * 1000}')")
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (a[5]+a[6])/2}')
  echo "$isolation: wake-up to first byte (ms): $sorted; median $median"
  eval "wake_$isolation=$median"
  if [ "$isolation" = trusted ]; then
    # What a sleeping trusted app holds: its container created, waiting to be started.
    for _ in $(seq 1 200); do [ "$(asleep "$app")" = True ] && break; sleep 0.1; done
    sleep 1
    pid=$(crun --root "$work/data/run/crun" list --format json | python3 -c "import json,sys; print(next((c['pid'] for c in json.load(sys.stdin) if c['id'].startswith('$app-') and c['status'] == 'created'), ''))")
    if [ -n "$pid" ]; then
      echo "trusted, asleep: one created container, its waiting process $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status") resident ($(tr '\0' ' ' < "/proc/$pid/cmdline"))"
    else
      echo "trusted, asleep: no container prepared"
    fi
  fi
done
# The same server started bare, in the same run: the floor a wake-up is compared with.
gcc -static -O2 -o "$work/server" "$work/server.c"
bare=$(cargo bench --locked -p berth-control --bench cold_start -- "$work/server" 2>/dev/null)
echo "$bare" | sed -n '/cold start to first/,/bare runsc/p'
crun=$(echo "$bare" | awk '/bare crun/ {print $3}')
runsc=$(echo "$bare" | awk '/bare runsc/ {print $3}')
awk -v w="$wake_trusted" -v b="$crun" 'BEGIN {printf "trusted: wake-up %.0f ms = %.2fx a bare crun run to first 200 (%.1f ms; target <= 1.5x)\n", w, w / b, b}'
awk -v w="$wake_sandbox" -v b="$runsc" 'BEGIN {printf "sandbox: wake-up %.0f ms = %.2fx a bare runsc run to first 200 (%.1f ms; target <= 2x)\n", w, w / b, b}'
