#!/usr/bin/env bash
# Images: (1) a cached rebuild of a multi-stage Dockerfile app by berth (the build as
# berth's berth_build_duration_seconds counts it: FROM resolution and pull, buildah as the
# unprivileged build user, import, SBOM, signature) against buildah run by hand on the same
# Dockerfile (root, same storage driver, base pulled from the same registry, image written
# to an OCI layout); median of 5 each, one source line changed per rebuild. (2) Pull + start:
# `berth deploy --image` of an image in a registry on loopback, to its first HTTP 200 through
# the edge (a new app each time: pull, unpack, start), median of 5, with a bare `skopeo copy`
# of the same image for scale. Everything runs on loopback: Debian's docker-registry, berth's
# own bridge (10.77.201.0/24). Needs root, buildah, skopeo, docker-registry, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
work=$(mktemp -d /tmp/berth-images.XXXX)
API=17371; EDGE=18371; REG=15371
cleanup() {
  # The control plane first (its supervisor would restart what `down` stops), then the rest.
  [ -n "${UP:-}" ] && { kill "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; "$BERTH" --data-dir "$work/data" down >/dev/null 2>&1 || true; }
  [ -n "${REGPID:-}" ] && kill "$REGPID" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# A registry on loopback.
cat > "$work/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$REG}
EOF
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
REGPID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$REG/v2/" >/dev/null && break; sleep 0.1; done

# A busybox base image (httpd), made with buildah and pushed there.
root="$work/rootfs"; mkdir -p "$root/bin" "$root/www" "$root/etc"
cp /bin/busybox "$root/bin/"
for a in sh httpd seq cp mkdir echo; do ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo hello > "$root/www/index.html"
bh=(buildah --root "$work/bh/root" --runroot "$work/bh/run" --storage-driver vfs)
ctr=$("${bh[@]}" from scratch)
"${bh[@]}" copy "$ctr" "$root" / >/dev/null
"${bh[@]}" config --port 8080/tcp --cmd '["httpd","-f","-p","8080","-h","/www"]' "$ctr"
"${bh[@]}" commit --quiet --format oci "$ctr" "oci:$work/base:1" >/dev/null
skopeo copy --quiet --dest-tls-verify=false "oci:$work/base:1" "docker://127.0.0.1:$REG/base/busybox:1"

# The app: a multi-stage Dockerfile whose last stage copies one changing file.
app="$work/site"; mkdir -p "$app"
cat > "$app/Dockerfile" <<EOF
FROM 127.0.0.1:$REG/base/busybox:1 AS build
COPY build.txt /src/build.txt
RUN mkdir -p /out && for i in \$(seq 1 20000); do echo "line \$i"; done > /out/big.txt && cp /src/build.txt /out/
FROM 127.0.0.1:$REG/base/busybox:1
COPY --from=build /out /www
COPY page.txt /www/page.txt
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
echo build > "$app/build.txt"
echo 0 > "$app/page.txt"

# berth.
"$BERTH" --data-dir "$work/data" up --api-port $API --edge-port $EDGE --bridge bimg --subnet 10.77.201.0/24 --drain-grace 1s >"$work/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 100); do [ -f "$work/data/api.json" ] && break; sleep 0.1; done
B=("$BERTH" --data-dir "$work/data")
token=$(cat "$work/data/api-token")
build_sum() {
  curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$API/metrics" \
    | awk '/^berth_build_duration_seconds_sum\{/ && /outcome="succeeded"/ {print $2}'
}
run() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" "$work/up.log" >&2; exit 1; }; }
run "${B[@]}" deploy "$app"   # cold: pulls the base, fills the layer cache
berth_ms=()
for i in 1 2 3 4 5; do
  echo "$i" > "$app/page.txt"
  before=$(build_sum)
  run "${B[@]}" deploy "$app"
  after=$(build_sum)
  berth_ms+=("$(awk -v a="$after" -v b="$before" 'BEGIN {printf "%d", (a - b) * 1000}')")
done

# buildah by hand, same Dockerfile, its own warm cache.
hand=(buildah --root "$work/hand/root" --runroot "$work/hand/run" --storage-driver vfs)
(cd "$app" && "${hand[@]}" bud --quiet --layers --isolation chroot --tls-verify=false -t site . >/dev/null)
hand_ms=()
for i in 1 2 3 4 5; do
  echo "hand $i" > "$app/page.txt"
  start=$(now_ms)
  (cd "$app" && "${hand[@]}" bud --quiet --layers --isolation chroot --tls-verify=false -t site . >/dev/null)
  "${hand[@]}" push --quiet site "oci:$work/hand-out:$i" >/dev/null
  hand_ms+=($(( $(now_ms) - start )))
done
bm=$(printf '%s\n' "${berth_ms[@]}" | median)
hm=$(printf '%s\n' "${hand_ms[@]}" | median)
echo "cached multi-stage rebuild (ms): berth ${berth_ms[*]} | buildah by hand ${hand_ms[*]}"
echo "median: berth $bm ms, buildah by hand $hm ms, berth's overhead $(awk -v b="$bm" -v h="$hm" 'BEGIN {printf "%+.1f%%", (b / h - 1) * 100}')"

# Pull + start to first response.
ref="127.0.0.1:$REG/base/busybox:1"
pull_ms=()
for i in 1 2 3 4 5; do
  start=$(now_ms)
  run "${B[@]}" deploy --image "$ref" --app "pulled$i"
  until curl -fsS -H "Host: pulled$i.localhost" "http://127.0.0.1:$EDGE/" 2>/dev/null | grep -q hello; do sleep 0.005; done
  pull_ms+=($(( $(now_ms) - start )))
done
copy_ms=()
for i in 1 2 3 4 5; do
  start=$(now_ms)
  skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/copy$i:1"
  copy_ms+=($(( $(now_ms) - start )))
done
echo "pull + start to first 200 (ms): ${pull_ms[*]}; median $(printf '%s\n' "${pull_ms[@]}" | median)"
echo "bare skopeo copy of the same image (ms): ${copy_ms[*]}; median $(printf '%s\n' "${copy_ms[@]}" | median)"
