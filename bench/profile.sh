#!/bin/bash
# Profile the pactfs daemon during one workload: a fresh vault (as
# bench/run.sh makes it), mounted, the workload run under
# `perf record` (cpu-clock, DWARF call graphs), then the share of the
# daemon's samples per innermost pactfs function (bench/perf_shares.py).
#
#   sudo bench/profile.sh tar|read|rm|seqw TREE.tar [OUT.data]
#
# TREE.tar: any tarball of small files (`tar cf tree.tar -C SRC .` of a
# source tree; bench/run.sh's synthetic tree is not kept).  read and rm
# first extract it untimed, sync and drop the page cache.  seqw writes 256
# MiB.  PACTFS_BUILD=DIR: the build holding pactfs and pactfs-admin (else
# ./).  Exit 0 when the workload and the profile succeeded, 1 otherwise,
# 2 on bad usage.
set -euo pipefail
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; tar|read|rm|seqw) ;; *) usage >&2; exit 2 ;; esac
WL=$1; TREE=${2:?"bench/profile.sh: name a tarball of small files (see --help)"}
OUT=${3:-/tmp/pactfs-profile-$WL.data}
B=${PACTFS_BUILD:-.}
[ -x "$B/pactfs" ] && [ -x "$B/pactfs-admin" ] || { echo "profile.sh: no pactfs in $B (set PACTFS_BUILD)" >&2; exit 2; }
[ -r "$TREE" ] || { echo "profile.sh: cannot read $TREE" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile.sh: perf is missing: apt-get install linux-perf" >&2; exit 1; }
W=$(mktemp -d /tmp/pactfs-profile.XXXXXX)
PID=
cleanup() {
    mountpoint -q "$W/mnt" && { fusermount3 -u "$W/mnt" || umount "$W/mnt"; }
    [ -n "$PID" ] && wait "$PID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
echo benchpass > "$W/pass"
"$B/pactfs-admin" init "$W/vault" --name bench --account bench --passfile "$W/pass" \
    --kdf-time 1 --kdf-memory 65536 </dev/null >"$W/log" 2>&1
mkdir "$W/mnt"
"$B/pactfs" mount "$W/vault" "$W/mnt" --account bench --passfile "$W/pass" -f </dev/null >>"$W/log" 2>&1 &
PID=$!
for _ in $(seq 200); do mountpoint -q "$W/mnt" && break; sleep 0.1; done
mountpoint -q "$W/mnt" || { tail -5 "$W/log" >&2; echo "profile.sh: the mount failed" >&2; exit 1; }
D=$W/mnt/Contracts
if [ "$WL" = read ] || [ "$WL" = rm ]; then
    tar xf "$TREE" -C "$D"; sync; sleep 3; echo 3 > /proc/sys/vm/drop_caches
fi
perf record -q -g --call-graph dwarf,16384 -F 999 -p "$PID" -o "$OUT" 2>/dev/null &
PERF=$!
sleep 0.5
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
C0=$(cpu); T0=$(date +%s.%N)
case $WL in
    tar) tar xf "$TREE" -C "$D"; sync "$D" ;;
    read) find "$D" -type f -exec cat {} + >/dev/null ;;
    rm) rm -rf "${D:?}"/* ;;
    seqw) head -c $((256 << 20)) /dev/urandom > "$W/rand"; dd if="$W/rand" of="$D/big" bs=1M conv=fsync status=none ;;
esac
T1=$(date +%s.%N)
sleep 1   # work the daemon queued (commits, deletions) counts
C1=$(cpu)
kill -INT "$PERF"; wait "$PERF" || true
printf '%s: %.2f s wall, %.2f s daemon CPU (workload and 1 s after)\n' "$WL" \
    "$(echo "$T1 - $T0" | bc)" "$(echo "($C1 - $C0) / $(getconf CLK_TCK)" | bc -l)"
perf script -i "$OUT" 2>/dev/null | python3 "$(dirname "$0")/perf_shares.py" 30
