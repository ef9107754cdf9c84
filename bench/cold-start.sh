#!/usr/bin/env bash
# Cold start: time from "start the instance" to the first HTTP 200, median of 20, for one tiny
# static HTTP server: bare `crun run` of a hand-made bundle (the floor), berth trusted, bare
# `runsc run`, berth sandboxed. Then the memory one idle instance costs on the host (RSS and
# PSS of the processes in its cgroup) under each isolation level, and berth's own processes.
# Traffic goes only to a bridge the benchmark creates (10.79.0.0/24). Needs root, gcc, crun,
# runsc.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/berth-cold.XXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/server.c" <<'C'
/* The smallest HTTP server: answers every connection with 200 "ok". */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
  const char *p = getenv("PORT");
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p ? atoi(p) : 8000)};
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) return 1;
  const char *r = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
  for (;;) {
    char buf[1024];
    int c = accept(s, 0, 0);
    if (c < 0) continue;
    if (read(c, buf, sizeof buf) > 0) write(c, r, strlen(r));
    close(c);
  }
}
C
gcc -static -O2 -o "$work/server" "$work/server.c"
cargo build --release --locked --bin berth
cargo bench --locked -p berth-control --bench cold_start -- "$work/server"
# berth's own processes (one control plane and one edge, shared by every instance):
BERTH="$PWD/target/release/berth"
DATA="$work/data"
"$BERTH" --data-dir "$DATA" up --api-port 17380 --edge-port 18380 --bridge bcoldup --subnet 10.79.1.0/24 >"$work/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 100); do [ -f "$DATA/api.json" ] && break; sleep 0.1; done
sleep 2
for pid in $UP $(pgrep -f "berth edge .*$DATA" || true); do
  awk -v pid="$pid" -v comm="$(tr '\0' ' ' < /proc/$pid/cmdline | cut -c1-40)" \
    '/^Rss:/ {r=$2} /^Pss:/ {p=$2} END {printf "  berth process %s (%s): RSS %d KiB, PSS %d KiB\n", pid, comm, r, p}' \
    /proc/$pid/smaps_rollup
done
"$BERTH" --data-dir "$DATA" down >/dev/null 2>&1 || true
kill $UP 2>/dev/null || true
