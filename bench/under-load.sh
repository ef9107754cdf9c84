#!/usr/bin/env bash
# The progressive-delivery walk under continuous load, on a platform of its own: examples/hello
# behind berth's edge while, one phase after another, it is scaled out and in, redeployed,
# shipped as a bad canary (half its answers 500: rolled back by the analysis) and a good one
# (promoted), its edge upgraded (a new berth binary takes the listening sockets over), put
# to sleep and woken by a request, and drilled (`berth drill`). For each phase: requests
# sent, failed, and which release failed them. Two clients, a new connection per request,
# about 200 requests per second, each phase at most 2 minutes; traffic only to loopback.
# Needs root and a release build (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
work=$(mktemp -d /tmp/berth-under-load.XXXX)
API=17472; EDGE=18472
UP_ARGS=(up --api-port $API --edge-port $EDGE --bridge bload --subnet 10.77.204.0/24)
cleanup() {
  [ -n "${LOAD:-}" ] && kill "$LOAD" 2>/dev/null || true
  [ -n "${UP:-}" ] && kill "$UP" 2>/dev/null || true
  "$BERTH" --data-dir "$work/data" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
B=("$BERTH" --data-dir "$work/data")

start_platform() {  # $1: the berth binary
  "$1" --data-dir "$work/data" "${UP_ARGS[@]}" >>"$work/up.log" 2>&1 &
  UP=$!
  disown "$UP"  # the drill kills it on purpose
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$API/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "berth up failed:"; tail -n 20 "$work/up.log"; exit 1
}

# The load: new connection per request, answers counted by status and by the release that
# gave them; stops on SIGTERM or after 120 s, then writes its summary.
cat > "$work/load.py" <<'PY'
import http.client, json, re, signal, sys, threading, time
port, out = int(sys.argv[1]), sys.argv[2]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
lock = threading.Lock()
seen = {"requests": 0, "failed": 0, "failed_by": {}, "examples": []}
def client():
    deadline = time.time() + 120
    while not stop.is_set() and time.time() < deadline:
        what = None
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/", headers={"Host": "hello.localhost", "Connection": "close"})
            r = c.getresponse()
            body = r.read().decode(errors="replace")
            c.close()
            if r.status != 200:
                m = re.search(r"release=(v\d+)", body)
                what = (m.group(1) if m else "edge") + f" {r.status}"
        except Exception as e:
            what = f"error {type(e).__name__}"
        with lock:
            seen["requests"] += 1
            if what:
                seen["failed"] += 1
                seen["failed_by"][what] = seen["failed_by"].get(what, 0) + 1
        time.sleep(0.01)
threads = [threading.Thread(target=client) for _ in range(2)]
for t in threads: t.start()
while any(t.is_alive() for t in threads):
    time.sleep(0.1)
json.dump(seen, open(out, "w"))
PY

# phase NAME COMMAND…: the command under load; prints the phase's line.
phase() {
  local name=$1; shift
  python3 "$work/load.py" $EDGE "$work/$name.json" & LOAD=$!
  sleep 1
  local started=$SECONDS outcome=ok
  "$@" >"$work/$name.out" 2>&1 || outcome="exit $?"
  sleep 1
  kill -TERM "$LOAD"; wait "$LOAD" || true; LOAD=
  python3 - "$work/$name.json" "$name" "$((SECONDS - started))" "$outcome" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
by = ", ".join(f"{k}: {v}" for k, v in sorted(s["failed_by"].items())) or "none"
print(f"{sys.argv[2]:<22} {sys.argv[3]:>4}s  command {sys.argv[4]:<7}  {s['requests']:>6} requests  {s['failed']:>4} failed ({by})")
PY
}

start_platform "$BERTH"
app="$work/hello"
cp -r examples/hello "$app"
"${B[@]}" deploy "$app" >"$work/first-deploy.out" 2>&1
echo "phase                  time  command           load"
phase "steady" sleep 5
phase "scale out web=3" "${B[@]}" scale hello web=3
phase "scale in web=1" "${B[@]}" scale hello web=1
phase "redeploy" "${B[@]}" deploy "$app"
printf '[health]\npath = "/"\n[deploy]\nstrategy = "canary"\nsteps = [20, 50]\nstep_pause = "5s"\n[env]\nFAIL_RATE = "0.5"\n' > "$app/berth.toml"
phase "bad canary" "${B[@]}" deploy "$app"
grep -h "canary" "$work/bad canary.out" | tail -n 2 | sed 's/^/    /'
sed -i 's/FAIL_RATE = "0.5"/FAIL_RATE = "0"/' "$app/berth.toml"
phase "good canary" "${B[@]}" deploy "$app"
grep -h "canary" "$work/good canary.out" | tail -n 1 | sed 's/^/    /'

# The edge upgrade: the control plane stops (the edge keeps serving), and `berth up` from
# another berth binary starts a new edge that takes the listening sockets over.
upgrade() {
  kill -9 "$UP"; while kill -0 "$UP" 2>/dev/null; do sleep 0.05; done
  cp "$BERTH" "$work/berth-next"
  start_platform "$work/berth-next"
}
phase "edge upgrade" upgrade
grep -h "replacing the running edge" "$work/up.log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'

# Sleep and wake: idle after 3 s without requests; the next request is held, then served.
printf '[health]\npath = "/"\n[scale]\nmin = 0\nidle = "3s"\n' > "$app/berth.toml"
"${B[@]}" deploy "$app" >"$work/idle-deploy.out" 2>&1
for _ in $(seq 1 100); do
  "${B[@]}" --json apps | python3 -c "import json,sys; sys.exit(0 if any(a['name']=='hello' and a.get('sleeping') for a in json.load(sys.stdin)) else 1)" && break
  sleep 0.2
done
woke=$(curl -s -o /dev/null -w '%{http_code} in %{time_total}s' -H 'Host: hello.localhost' "http://127.0.0.1:$EDGE/")
echo "sleep and wake         the first request to the sleeping app: $woke"
printf '[health]\npath = "/"\n' > "$app/berth.toml"
"${B[@]}" deploy "$app" >"$work/awake-deploy.out" 2>&1

echo "drill (berth drill hello --phase 5s):"
"${B[@]}" drill hello --phase 5s 2>&1 | sed 's/^/    /'
