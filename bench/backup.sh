#!/usr/bin/env bash
# Backup and restore of 1 GiB of volume data through berth, against plain `tar | zstd` of the
# same files. The data: 512 MiB of random bytes (incompressible) and 512 MiB of copies of the
# machine's own programs and libraries (compressible, like real app data). One run each:
#   berth backup create --to DIR   (frozen copy of the volume, tar + zstd, SHA-256, manifest)
#   tar -cf - . | zstd -3          (what an operator would script; zstd's defaults: level 3, one thread)
#   tar -cf - . | zstd -3 -T0      (the same on every core, as berth's compressor runs)
#   berth backup restore           (checks every part, makes the filesystem, unpacks)
#   zstd -d | tar -xf -            (into a freshly made filesystem of the same size)
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH="$PWD/target/release/berth"
[ -x "$BERTH" ] || cargo build --release --locked --bin berth
command -v zstd >/dev/null || apt-get install -y -qq zstd >/dev/null
WORK=$(mktemp -d /var/tmp/berth-bench-backup.XXXX)
DATA="$WORK/data"; OUT="$WORK/backups"; mkdir -p "$DATA" "$OUT"
API=17371; EDGE=18371; TLS=18471
PASS="$WORK/passphrase"; echo "benchmark passphrase" >"$PASS"
"$BERTH" --data-dir "$DATA" up --api-port $API --edge-port $EDGE --edge-tls-port $TLS \
  --bridge bbackup --subnet 10.77.201.0/24 >"$WORK/up.log" 2>&1 &
UP=$!
cleanup() {
  "$BERTH" --data-dir "$DATA" down >/dev/null 2>&1 || true
  "$BERTH" --data-dir "$WORK/restored" down >/dev/null 2>&1 || true
  kill $UP 2>/dev/null || true
  umount "$WORK/plain.mnt" 2>/dev/null || true
  umount "$WORK"/restored/volumes/bench/data.mnt 2>/dev/null || true
  [ -n "${KEEP_LOG:-}" ] && cp "$WORK/up.log" "$KEEP_LOG"; rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 300); do [ -f "$DATA/api.json" ] && break; sleep 0.1; done
B=("$BERTH" --data-dir "$DATA")
"${B[@]}" create bench --volume data:2G:/data >/dev/null
MNT="$DATA/volumes/bench/data.mnt"

echo "filling the volume with 1 GiB…"
for i in $(seq 1 64); do head -c 8M /dev/urandom >"$MNT/random-$i.bin"; done
mkdir -p "$MNT/programs/0"
total=0
for f in $(find /usr/bin /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -size +64k 2>/dev/null); do
  [ $total -ge 536870912 ] && break
  cp "$f" "$MNT/programs/0/" 2>/dev/null || continue
  total=$((total + $(stat -c %s "$f")))
done
# Not enough programs on a small system: copies of them, in more directories.
n=0
while [ $total -lt 536870912 ]; do
  n=$((n + 1)); mkdir -p "$MNT/programs/$n"
  for f in "$MNT"/programs/0/*; do
    [ $total -ge 536870912 ] && break
    cp "$f" "$MNT/programs/$n/"; total=$((total + $(stat -c %s "$f")))
  done
done
sync
BYTES=$(du -sb "$MNT" | cut -f1)
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.0f", b / 1048576 }')
echo "volume data: $MIB MiB"
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", (e - s) / 1e9 }'; }
rate() { awk -v m="$MIB" -v t="$1" 'BEGIN { printf "%.0f", m / t }'; }

drop; s=$(date +%s%N)
"${B[@]}" backup create --to "$OUT" --passphrase-file "$PASS" >/dev/null
e=$(date +%s%N); T_BERTH=$(secs $s $e)
PART=$(ls "$OUT"/*/volumes/bench/data.tar.zst)
drop; s=$(date +%s%N)
tar -C "$MNT" -cf - . | zstd -q -3 -o "$WORK/plain.tar.zst"
e=$(date +%s%N); T_PLAIN=$(secs $s $e)
drop; s=$(date +%s%N)
tar -C "$MNT" -cf - . | zstd -q -3 -T0 -o "$WORK/plain-mt.tar.zst"
e=$(date +%s%N); T_PLAIN_MT=$(secs $s $e)

kill $UP; wait $UP 2>/dev/null || true
"${B[@]}" down >/dev/null
drop; s=$(date +%s%N)
"$BERTH" --data-dir "$WORK/restored" backup restore "$OUT" --passphrase-file "$PASS" >/dev/null
e=$(date +%s%N); T_RESTORE=$(secs $s $e)
truncate -s 2G "$WORK/plain.ext4"; mkfs.ext4 -q -F -m 0 "$WORK/plain.ext4"
mkdir -p "$WORK/plain.mnt"; mount -o loop "$WORK/plain.ext4" "$WORK/plain.mnt"
drop; s=$(date +%s%N)
zstd -q -d -c "$WORK/plain.tar.zst" | tar -C "$WORK/plain.mnt" -xf -
sync
e=$(date +%s%N); T_UNTAR=$(secs $s $e)

printf '%-44s %8s %8s %10s\n' "" "seconds" "MiB/s" "size MiB"
printf '%-44s %8s %8s %10s\n' "berth backup create" "$T_BERTH" "$(rate $T_BERTH)" "$(( $(stat -c %s "$PART") / 1048576 ))"
printf '%-44s %8s %8s %10s\n' "tar | zstd -3" "$T_PLAIN" "$(rate $T_PLAIN)" "$(( $(stat -c %s "$WORK/plain.tar.zst") / 1048576 ))"
printf '%-44s %8s %8s %10s\n' "tar | zstd -3 -T0" "$T_PLAIN_MT" "$(rate $T_PLAIN_MT)" "$(( $(stat -c %s "$WORK/plain-mt.tar.zst") / 1048576 ))"
printf '%-44s %8s %8s\n' "berth backup restore" "$T_RESTORE" "$(rate $T_RESTORE)"
printf '%-44s %8s %8s\n' "zstd -d | tar -x (onto a fresh ext4)" "$T_UNTAR" "$(rate $T_UNTAR)"
awk -v b="$T_BERTH" -v p="$T_PLAIN" -v m="$T_PLAIN_MT" -v r="$T_RESTORE" -v u="$T_UNTAR" 'BEGIN {
  printf "backup: %.2fx tar|zstd, %.2fx tar|zstd -T0; restore: %.2fx zstd -d|tar -x (higher is faster)\n", p / b, m / b, u / r }'
