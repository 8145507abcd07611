#!/usr/bin/env bash
# bench/run.sh: pactfs side by side with gocryptfs, securefs and a plain FUSE
# passthrough, same machine, same run, same workloads; prints one table with
# the medians and, on every row, how many times faster pactfs is than the
# best encrypted peer and than each peer.  See bench/README.md.
#
#   bench/run.sh [--quick] [--only pactfs,gocryptfs,securefs,passthrough] [--repeat N] [--keep-log]
#                [--ab DIR] [--workloads LIST]
#
# Needs root (drop_caches, FUSE mounts).  pactfs binaries come from
# $PACTFS_BUILD (or ./) and are built under /tmp when missing there.
set -euo pipefail
shopt -s inherit_errexit

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(dirname "$BENCH_DIR")
ALL_FS=(pactfs pactfs-b gocryptfs securefs passthrough)
PEERS=(gocryptfs securefs)   # the encrypted peers "best peer" is taken from

# ---------------------------------------------------------------- options --
QUICK=0
ONLY="pactfs,gocryptfs,securefs,passthrough"
KEEP_LOG=0
REPEAT=3
WORKLOAD_SET=a,b,c,d,e,f,g,h
AB_DIR=
PACTFS_B_BIN=

usage() {
    cat <<EOF
usage: $0 [--quick] [--only LIST] [--repeat N] [--keep-log] [--ab DIR] [--workloads LIST]
  --quick       smoke run: 64 MiB files, 1,000-file tree, 5 s fio runs
  --only LIST   comma-separated subset of: pactfs gocryptfs securefs passthrough
  --repeat N    N rounds (default 3), filesystems interleaved in each; the
                table shows medians and the per-round figures follow it
  --keep-log    copy the command log next to the results file
  --ab DIR      A/B of two pactfs builds: also run the pactfs binaries in DIR
                as "pactfs-b", right beside pactfs in every round (the order
                of the two alternates per round), and print their medians
                and ratio per row under the table
  --workloads LIST  run only these workloads (letters of the table, e.g.
                c,e,f for tar x, cold read-all and rm -rf; b needs a, and
                d, e, f need c)
environment: PACTFS_BUILD=DIR  build directory holding pactfs and pactfs-admin
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) [ $# -ge 2 ] || { usage >&2; exit 2; }; ONLY=$2; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --repeat) [ $# -ge 2 ] || { usage >&2; exit 2; }; REPEAT=$2; shift ;;
        --repeat=*) REPEAT=${1#--repeat=} ;;
        --workloads) [ $# -ge 2 ] || { usage >&2; exit 2; }; WORKLOAD_SET=$2; shift ;;
        --workloads=*) WORKLOAD_SET=${1#--workloads=} ;;
        --keep-log) KEEP_LOG=1 ;;
        --ab) [ $# -ge 2 ] || { usage >&2; exit 2; }; AB_DIR=$2; shift ;;
        --ab=*) AB_DIR=${1#--ab=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

FS_LIST=()
IFS=, read -r -a requested <<<"$ONLY"
for fs in "${requested[@]}"; do
    case "$fs" in
        pactfs|gocryptfs|securefs|passthrough) FS_LIST+=("$fs") ;;
        *) echo "run.sh: --only: unknown filesystem '$fs' (pactfs, gocryptfs, securefs, passthrough)" >&2; exit 2 ;;
    esac
done
if [ -n "$AB_DIR" ]; then
    [ -x "$AB_DIR/pactfs" ] && [ -x "$AB_DIR/pactfs-admin" ] \
        || { echo "run.sh: --ab: no pactfs and pactfs-admin in '$AB_DIR'" >&2; exit 2; }
    PACTFS_B_BIN=$(cd "$AB_DIR" && pwd)
    has_pactfs=0
    for fs in "${FS_LIST[@]}"; do [ "$fs" = pactfs ] && has_pactfs=1; done
    [ "$has_pactfs" = 1 ] || FS_LIST+=(pactfs)
    FS_LIST+=(pactfs-b)
fi
[ ${#FS_LIST[@]} -gt 0 ] || { echo "run.sh: --only: nothing to run" >&2; exit 2; }
want() { case ",$WORKLOAD_SET," in *,"$1",*) return 0 ;; esac; return 1; }
if want b && ! want a; then echo "run.sh: --workloads: b needs a" >&2; exit 2; fi
if { want d || want e || want f; } && ! want c; then
    echo "run.sh: --workloads: d, e and f need c" >&2; exit 2
fi
case "$REPEAT" in
    ''|*[!0-9]*|0) echo "run.sh: --repeat wants a whole number >= 1, not '$REPEAT'" >&2; exit 2 ;;
esac

if [ "$QUICK" = 1 ]; then
    SEQ_MIB=64; TREE_FILES=1000; FIO_MIB=64; FIO_SECONDS=5
else
    SEQ_MIB=512; TREE_FILES=4000; FIO_MIB=256; FIO_SECONDS=20
fi

# ---------------------------------------------------------------- helpers --
progress() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
has() { for x in "${@:2}"; do [ "$x" = "$1" ] && return 0; done; return 1; }

# All command output goes to the log so the progress lines stay readable.
log_tail() { [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -n 15 "$LOG" | sed 's/^/    | /' >&2; true; }

# Runs "$@" with output to the log and sets ELAPSED (seconds, 3 decimals).
ELAPSED=
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    if ! "$@" >>"$LOG" 2>&1; then
        progress "FAILED: $*"
        log_tail
        return 1
    fi
    t1=$(date +%s.%N)
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# ------------------------------------------------------------ prerequisites --
[ "$(id -u)" = 0 ] || die "run as root: cold runs write /proc/sys/vm/drop_caches and mount FUSE filesystems"

ensure_packages() {
    local missing=()
    command -v gocryptfs >/dev/null || missing+=(gocryptfs)
    command -v securefs >/dev/null || missing+=(securefs)
    command -v fio >/dev/null || missing+=(fio)
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    pkg-config --exists fuse3 2>/dev/null || missing+=(libfuse3-dev)
    command -v jq >/dev/null || missing+=(jq)
    command -v cc >/dev/null || missing+=(gcc)
    [ ${#missing[@]} -eq 0 ] && return 0
    progress "installing missing packages: ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}
ensure_packages

# ------------------------------------------------------- working directory --
WORK=$(mktemp -d /tmp/pactfs-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/pactfs-bench.XXXXXX)   # inputs, in RAM so reads are free
LOG=$WORK/commands.log
PASSFILE=$WORK/passfile
: >"$LOG"
declare -A MOUNT_PID=() MOUNTED=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for mnt in "${!MOUNTED[@]}"; do
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    done
    for pid in "${MOUNT_PID[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" != 0 ] && [ "$KEEP_LOG" = 1 ]; then cp "$LOG" "$BENCH_DIR/failed-run.log" || true; fi
    rm -rf "$WORK" "$SHM"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf 'bench-password-%s\n' "$RANDOM$RANDOM" >"$PASSFILE"
chmod 600 "$PASSFILE"
# securefs takes a key file instead of a password (none on its command line)
SECUREFS_KEY=$WORK/securefs.key
head -c 32 /dev/urandom >"$SECUREFS_KEY"
chmod 600 "$SECUREFS_KEY"

# ------------------------------------------------------------------ inputs --
# A deterministic synthetic source tree: dNN/sNN/ with 20 files per leaf
# directory, text of source-like sizes (60% 0.2-4 KiB, 30% 4-16 KiB,
# 10% 16-64 KiB) from a fixed-seed Park-Miller generator.
make_tree() {
    local root=$1 nfiles=$2
    mawk -v root="$root" -v n="$nfiles" '
    function rnd() { seed = (seed * 16807) % 2147483647; return seed / 2147483647 }
    function size_of(r) {
        if (r < 0.6) return 200 + int(rnd() * 3900)
        if (r < 0.9) return 4096 + int(rnd() * 12288)
        return 16384 + int(rnd() * 49152)
    }
    BEGIN {
        seed = 20240601
        ext[0] = "c"; ext[1] = "h"; ext[2] = "txt"; ext[3] = "md"
        for (f = 0; f < n; f++) {
            leaf = int(f / 20)
            dir = sprintf("%s/d%02d/s%02d", root, int(leaf / 10), leaf % 10)
            if (!(dir in made)) { system("mkdir -p " dir); made[dir] = 1 }
            path = sprintf("%s/file%05d.%s", dir, f, ext[f % 4])
            want = size_of(rnd())
            for (done = 0; done < want; done += length(line)) {
                line = sprintf("/* file %d line %d: lorem ipsum dolor sit amet %08d */\n", f, done, int(rnd() * 1e8))
                if (done + length(line) > want) line = substr(line, 1, want - done)
                printf "%s", line > path
            }
            close(path)
        }
    }'
}

prepare_inputs() {
    progress "inputs: ${SEQ_MIB} MiB of random data and a ${TREE_FILES}-file tree in $SHM"
    head -c "${SEQ_MIB}M" /dev/urandom >"$SHM/random.bin"
    make_tree "$SHM/tree" "$TREE_FILES"
    tar cf "$SHM/tree.tar" -C "$SHM" tree
    TREE_COUNT=$(find "$SHM/tree" -type f | wc -l)
    TREE_DIRS=$(find "$SHM/tree" -type d | wc -l)
    TREE_BYTES=$(du -sb "$SHM/tree" | cut -f1)
    rm -rf "$SHM/tree"
    [ "$TREE_COUNT" = "$TREE_FILES" ] || die "tree generator made $TREE_COUNT files, wanted $TREE_FILES"
}

# ------------------------------------------------------------------ builds --
build_passthrough() {
    progress "building bench/passthrough.c"
    mkdir -p "$WORK/bin"
    # shellcheck disable=SC2046
    cc -O2 -std=gnu11 -Wall -Wextra -o "$WORK/bin/passthrough" "$BENCH_DIR/passthrough.c" \
        $(pkg-config --cflags --libs fuse3) >>"$LOG" 2>&1 \
        || { log_tail; die "bench/passthrough.c did not build"; }
}

# The committed HEAD (what the report names), or the working tree when this
# is no git checkout.  Copied by content (-c, no -t) so that only changed
# files get a new mtime and make stays incremental across runs; no --delete,
# so the files autoreconf generated there survive.
export_pactfs_source() {
    local dest=$1 from=$SRC_DIR
    if git -C "$SRC_DIR" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        from=$WORK/export
        mkdir -p "$from"
        git -C "$SRC_DIR" archive HEAD | tar x -C "$from"
        PACTFS_VERSION="commit $(git -C "$SRC_DIR" rev-parse --short HEAD)"
        progress "pactfs source: git HEAD, $PACTFS_VERSION"
    fi
    rsync -rlc --exclude .git --exclude autom4te.cache --exclude 'bench/results-*' \
        "$from/" "$dest/"
}

# pactfs binaries: $PACTFS_BUILD (or ./) if they are there, otherwise an
# optimised build of this source tree under /tmp (kept for the next run).
PACTFS_BIN=
PACTFS_VERSION="not run"
find_or_build_pactfs() {
    local dir=${PACTFS_BUILD:-.}
    if [ -x "$dir/pactfs" ] && [ -x "$dir/pactfs-admin" ]; then
        PACTFS_BIN=$(cd "$dir" && pwd)
        PACTFS_VERSION="binaries from $PACTFS_BIN"
    else
        [ -n "${PACTFS_BUILD:-}" ] && progress "no pactfs binaries in PACTFS_BUILD=$PACTFS_BUILD; building"
        local top=/tmp/pactfs-bench-build
        PACTFS_VERSION="working tree of $SRC_DIR"
        progress "building pactfs (optimised, no sanitizers) in $top"
        mkdir -p "$top/src" "$top/obj"
        export_pactfs_source "$top/src"
        if [ ! -x "$top/src/configure" ]; then
            (cd "$top/src" && autoreconf -fi) >>"$LOG" 2>&1 || { log_tail; die "autoreconf failed"; }
        fi
        if [ ! -f "$top/obj/Makefile" ]; then
            (cd "$top/obj" && ../src/configure -q) >>"$LOG" 2>&1 || { log_tail; die "configure failed"; }
        fi
        make -C "$top/obj" -j"$(nproc)" pactfs pactfs-admin >>"$LOG" 2>&1 \
            || { log_tail; die "pactfs did not build (log above; set PACTFS_BUILD to a build dir)"; }
        PACTFS_BIN=$top/obj
    fi
    if ldd "$PACTFS_BIN/pactfs" ${PACTFS_B_BIN:+"$PACTFS_B_BIN/pactfs"} 2>/dev/null \
            | grep -q -E 'libasan|libubsan'; then
        progress "WARNING: $PACTFS_BIN/pactfs is a sanitizer build; its figures will be far too slow"
    fi
}

# ------------------------------------------------------------ mount/umount --
# Every filesystem runs in the foreground under our own pid, so cleanup can
# stop exactly what it started.  fs_setup creates the backing store once;
# fs_mount mounts it and sets DATA[fs] to the directory the workloads use.
declare -A DATA=()

fs_setup() {
    local fs=$1 base=$WORK/$1
    rm -rf "$base"   # a fresh store each round
    mkdir -p "$base/mnt"
    case "$fs" in
        pactfs|pactfs-b)
            "$(pactfs_bin "$fs")/pactfs-admin" init "$base/vault" --name bench --account bench \
                --passfile "$PASSFILE" --kdf-time 1 --kdf-memory 65536 </dev/null >>"$LOG" 2>&1 \
                || { log_tail; die "pactfs-admin init failed"; } ;;
        gocryptfs)
            mkdir -p "$base/cipher"
            gocryptfs -init -q -passfile "$PASSFILE" "$base/cipher" </dev/null >>"$LOG" 2>&1 \
                || { log_tail; die "gocryptfs -init failed"; } ;;
        securefs)
            mkdir -p "$base/cipher"
            securefs create --keyfile "$SECUREFS_KEY" "$base/cipher" </dev/null >>"$LOG" 2>&1 \
                || { log_tail; die "securefs create failed"; } ;;
        passthrough)
            mkdir -p "$base/backing" ;;
    esac
}

# The pactfs binaries of pactfs (A) or pactfs-b (B, --ab).
pactfs_bin() { if [ "$1" = pactfs-b ]; then echo "$PACTFS_B_BIN"; else echo "$PACTFS_BIN"; fi; }

fs_start_daemon() {
    local fs=$1 base=$WORK/$1 mnt=$WORK/$1/mnt
    case "$fs" in
        pactfs|pactfs-b)
            "$(pactfs_bin "$fs")/pactfs" mount "$base/vault" "$mnt" --account bench \
                --passfile "$PASSFILE" -f </dev/null >>"$LOG" 2>&1 & ;;
        gocryptfs)
            gocryptfs -fg -q -passfile "$PASSFILE" "$base/cipher" "$mnt" </dev/null >>"$LOG" 2>&1 & ;;
        securefs)   # foreground unless -b; Debian's defaults otherwise
            securefs mount --keyfile "$SECUREFS_KEY" "$base/cipher" "$mnt" </dev/null >>"$LOG" 2>&1 & ;;
        passthrough)
            "$WORK/bin/passthrough" -f -o max_write=1048576 "$base/backing" "$mnt" \
                </dev/null >>"$LOG" 2>&1 & ;;
    esac
    MOUNT_PID[$fs]=$!
}

fs_mount() {
    local fs=$1 mnt=$WORK/$1/mnt i
    fs_start_daemon "$fs"
    local pid=${MOUNT_PID[$fs]}
    for ((i = 0; i < 1200; i++)); do
        if mountpoint -q "$mnt"; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            local status=0
            wait "$pid" 2>/dev/null || status=$?
            unset "MOUNT_PID[$fs]"
            log_tail
            die "$fs failed to mount at $mnt (it exited with status $status; its last log lines are above)"
        fi
        sleep 0.1
    done
    mountpoint -q "$mnt" || { log_tail; die "$fs did not mount at $mnt within 120 s"; }
    MOUNTED[$mnt]=1
    if [ "$fs" = pactfs ] || [ "$fs" = pactfs-b ]; then
        DATA[$fs]=$mnt/Contracts   # files live inside a contract folder
        [ -d "${DATA[$fs]}" ] || die "pactfs mounted but $mnt/Contracts is missing"
    else
        DATA[$fs]=$mnt
    fi
}

# Unmount and wait until the daemon has flushed and exited.
fs_umount() {
    local fs=$1 mnt=$WORK/$1/mnt pid=${MOUNT_PID[$1]} i
    for ((i = 0; i < 50; i++)); do
        fusermount3 -u "$mnt" 2>>"$LOG" && break
        sleep 0.2
    done
    mountpoint -q "$mnt" && die "$fs: cannot unmount $mnt (busy?)"
    unset "MOUNTED[$mnt]"
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "$fs daemon (pid $pid) still running 120 s after unmount"
    wait "$pid" || progress "note: $fs daemon exited with status $? after unmount"
    unset "MOUNT_PID[$fs]"
}

# Cold = the page cache dropped AND the FUSE daemon restarted (its own caches gone).
remount_cold() {
    fs_umount "$1"
    drop_caches
    fs_mount "$1"
}

# ---------------------------------------------------------------- workloads --
declare -A RESULT=()
NOTES=()
WORKLOADS=(a b c d e f g h)
declare -A LABEL=(
    [a]="a. seq write ${SEQ_MIB} MiB, dd bs=1M fsync"
    [b]="b. cold seq read, dd bs=1M"
    [c]="c. tar x, ${TREE_FILES} files"
    [d]="d. cold ls -lR"
    [e]="e. cold read every file"
    [f]="f. rm -rf tree"
    [g]="g. fio 4k randread, ${FIO_SECONDS} s"
    [h]="h. fio 4k randwrite, ${FIO_SECONDS} s"
)
declare -A UNIT=([a]=MiB/s [b]=MiB/s [c]=s [d]=s [e]=s [f]=s [g]=IOPS [h]=IOPS)

list_tree() { ls -lR "$1" >/dev/null; }
read_every_file() { find "$1" -type f -exec cat {} + >/dev/null; }
# RESULT[fs,w] holds one figure per round, space-separated.
add_result() { RESULT[$1,$2]="${RESULT[$1,$2]:-}${RESULT[$1,$2]:+ }$3"; }
record_seconds() { add_result "$1" "$2" "$ELAPSED"; }
record_mibs() { add_result "$1" "$2" "$(awk -v m="$3" -v t="$ELAPSED" 'BEGIN { printf "%.1f", m / t }')"; }
record_failure() { add_result "$1" "$2" FAIL; NOTES+=("$1: workload $2 failed in round $ROUND (see progress lines)"); }
note() { NOTES+=("$*"); progress "NOTE: $*"; }

run_fio() {
    local fs=$1 rw=$2 out=$WORK/fio-$1-$2.json
    local extra=()
    [ "$rw" = randwrite ] && extra=(--end_fsync=1)
    if ! fio --name="$rw" --filename="${DATA[$fs]}/fio.dat" --size="${FIO_MIB}M" --bs=4k \
        --rw="$rw" --ioengine=psync --iodepth=1 --direct=0 --time_based \
        --runtime="$FIO_SECONDS" "${extra[@]}" --output-format=json --output="$out" \
        >>"$LOG" 2>&1; then
        progress "FAILED: fio $rw on $fs"
        log_tail
        return 1
    fi
    local side=read
    [ "$rw" = randwrite ] && side="write"
    jq -r ".jobs[0].$side.iops | floor" "$out"
}

# Resident memory (VmRSS, KiB) of a filesystem's daemon, "-" if unknown.
daemon_rss_kib() {
    local pid=${MOUNT_PID[$1]:-}
    [ -n "$pid" ] && awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print "-" }' \
        "/proc/$pid/status" 2>/dev/null || echo -
}
declare -A RSS_IDLE=() RSS_END=() LOADS=()

# CPU seconds (utime + stime) the filesystem's daemon has used so far, "-"
# if unknown.  Each timed workload records the daemon's share in DCPU[fs,w]
# (less hurt by a loaded machine than wall time; shown in the --ab report).
CLK_TCK=$(getconf CLK_TCK)
daemon_cpu() {
    local pid=${MOUNT_PID[$1]:-}
    [ -n "$pid" ] && awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' \
        "/proc/$pid/stat" 2>/dev/null || echo -
}
declare -A DCPU=()
CPU0=-
cpu_mark() { CPU0=$(daemon_cpu "$1"); }
cpu_record() {   # read once the daemon went idle (work it queued counts)
    local now prev i
    now=$(daemon_cpu "$1")
    for ((i = 0; i < 50; i++)); do
        prev=$now
        sleep 0.2
        now=$(daemon_cpu "$1")
        [ "$now" = "$prev" ] && break
    done
    [ "$CPU0" = - ] || [ "$now" = - ] && return 0
    DCPU[$1,$2]="${DCPU[$1,$2]:-}${DCPU[$1,$2]:+ }$(awk -v a="$CPU0" -v b="$now" 'BEGIN { printf "%.2f", b - a }')"
}

# One timed workload W on filesystem FS: its seconds and the daemon's CPU.
timed_seconds() {   # timed_seconds FS W COMMAND...
    local fs=$1 w=$2
    shift 2
    progress "$fs: ${LABEL[$w]}"
    cpu_mark "$fs"
    if timed "$@"; then
        record_seconds "$fs" "$w"
        cpu_record "$fs" "$w"
    else
        record_failure "$fs" "$w"
    fi
}

bench_one() {
    local fs=$1 d
    progress "== $fs: round $ROUND of $REPEAT, setting up"
    LOADS[$fs]="${LOADS[$fs]:-}${LOADS[$fs]:+ }$(cut -d' ' -f1 /proc/loadavg)"
    fs_setup "$fs"
    fs_mount "$fs"
    d=${DATA[$fs]}
    sleep 1   # idle: mounted, nothing done yet
    RSS_IDLE[$fs]="${RSS_IDLE[$fs]:-}${RSS_IDLE[$fs]:+ }$(daemon_rss_kib "$fs")"

    if want a; then
        progress "$fs: ${LABEL[a]}"
        cpu_mark "$fs"
        if timed dd if="$SHM/random.bin" of="$d/big" bs=1M conv=fsync; then
            record_mibs "$fs" a "$SEQ_MIB"; cpu_record "$fs" a
        else record_failure "$fs" a; fi
    fi

    if want b; then
        remount_cold "$fs"; d=${DATA[$fs]}
        progress "$fs: ${LABEL[b]}"
        cpu_mark "$fs"
        if timed dd if="$d/big" of=/dev/null bs=1M; then
            record_mibs "$fs" b "$SEQ_MIB"; cpu_record "$fs" b
        else record_failure "$fs" b; fi
        cmp -s "$SHM/random.bin" "$d/big" || note "$fs: read-back of the ${SEQ_MIB} MiB file DIFFERS from what was written"
    fi

    rm -f "$d/big"

    if want c; then
        timed_seconds "$fs" c tar xf "$SHM/tree.tar" -C "$d"
    fi

    if want d; then
        remount_cold "$fs"; d=${DATA[$fs]}
        timed_seconds "$fs" d list_tree "$d/tree"
    fi

    if want e; then
        remount_cold "$fs"; d=${DATA[$fs]}
        timed_seconds "$fs" e read_every_file "$d/tree"
        # Untimed check that the tree came back intact (contents and count).
        tar df "$SHM/tree.tar" -C "$d" >>"$LOG" 2>&1 \
            || note "$fs: extracted tree DIFFERS from the archive (tar --compare)"
    fi

    if want f; then
        timed_seconds "$fs" f rm -rf "$d/tree"
    fi

    rm -rf "$d/tree"

    if want g || want h; then
        progress "$fs: laying out the ${FIO_MIB} MiB fio file (untimed)"
        dd if="$SHM/random.bin" of="$d/fio.dat" bs=1M count="$FIO_MIB" conv=fsync >>"$LOG" 2>&1 \
            || die "$fs: cannot write the fio file"
        if [ "$FIO_MIB" -gt "$SEQ_MIB" ]; then   # random.bin is smaller: extend it
            dd if=/dev/urandom of="$d/fio.dat" bs=1M seek="$SEQ_MIB" count=$((FIO_MIB - SEQ_MIB)) \
                conv=fsync,notrunc >>"$LOG" 2>&1 || die "$fs: cannot write the fio file"
        fi

        remount_cold "$fs"; d=${DATA[$fs]}
        local iops
        progress "$fs: ${LABEL[g]} (starts cold)"
        if iops=$(run_fio "$fs" randread); then add_result "$fs" g "$iops"
        else record_failure "$fs" g; fi
        progress "$fs: ${LABEL[h]}"
        if iops=$(run_fio "$fs" randwrite); then add_result "$fs" h "$iops"
        else record_failure "$fs" h; fi
    fi

    RSS_END[$fs]="${RSS_END[$fs]:-}${RSS_END[$fs]:+ }$(daemon_rss_kib "$fs")"
    rm -f "$d/fio.dat"
    fs_umount "$fs"
    progress "== $fs: done"
}

# ------------------------------------------------------------------- report --
# The median of one figure's rounds; FAIL if any round failed, - if none ran.
# Median of the daemon CPU seconds of a workload, "-" if none.
median_cpu() {
    local values=${DCPU[$1,$2]:-}
    [ -n "$values" ] || { echo -; return; }
    tr ' ' '\n' <<<"$values" | sort -g | awk '{ v[NR] = $1 }
        END { printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median() {
    local values=${RESULT[$1,$2]:-}
    [ -n "$values" ] || { echo -; return; }
    case " $values " in *" FAIL "*) echo FAIL; return ;; esac
    local format=%.3f
    case "${UNIT[$2]}" in MiB/s) format=%.1f ;; IOPS) format=%.0f ;; esac
    tr ' ' '\n' <<<"$values" | sort -g | awk -v f="$format" '{ v[NR] = $1 }
        END { printf f "\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# How many times faster pactfs is than a peer, on the medians, whatever the
# unit: peer/pactfs for seconds, pactfs/peer for MiB/s and IOPS (above 1:
# pactfs is faster).  "-" when either figure is missing or failed.
speedup() {   # speedup WORKLOAD PACTFS_FIGURE PEER_FIGURE
    case "$2$3" in *FAIL*|*-*) echo -; return ;; esac
    awk -v p="$2" -v q="$3" -v secs="$([ "${UNIT[$1]}" = s ] && echo 1 || echo 0)" 'BEGIN {
        if (secs) { if (p + 0 == 0) print "-"; else printf "%.2f", q / p }
        else      { if (q + 0 == 0) print "-"; else printf "%.2f", p / q } }'
}

ratio() {   # ratio WORKLOAD PEER
    speedup "$1" "$(median pactfs "$1")" "$(median "$2" "$1")"
}

# The best median among the encrypted peers that ran (lowest seconds,
# highest MiB/s or IOPS), "-" if none.
best_peer() {
    local w=$1 fs v best=-
    for fs in "${PEERS[@]}"; do
        v=$(median "$fs" "$w")
        case "$v" in FAIL|-) continue ;; esac
        if [ "$best" = - ]; then best=$v
        elif [ "${UNIT[$w]}" = s ]; then best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b < a) ? b : a }')
        else best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }'); fi
    done
    echo "$best"
}

print_report() {
    local kernel cpu
    kernel=$(uname -r)
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "pactfs benchmark, $(date '+%Y-%m-%d %H:%M %Z') on $(hostname)"
    echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $kernel"
    echo "backing stores: $(df -T "$WORK" | awk 'NR == 2 { print $1 " (" $2 ")" }') under $WORK; inputs in /dev/shm"
    echo "versions: pactfs ($PACTFS_VERSION), $(gocryptfs -version 2>/dev/null | cut -d';' -f1), securefs $(dpkg-query -W -f='${Version}' securefs 2>/dev/null || echo '?'), $(fio --version), libfuse $(pkg-config --modversion fuse3)"
    echo "mode: $([ "$QUICK" = 1 ] && echo quick || echo full); tree: $TREE_COUNT files in $TREE_DIRS dirs, $((TREE_BYTES / 1024)) KiB; fio file ${FIO_MIB} MiB, psync, iodepth 1, direct=0"
    echo "load average (1/5/15 min): $LOAD_BEFORE before, $LOAD_AFTER after; rounds: $REPEAT$([ "$REPEAT" -gt 1 ] && echo ', table shows medians')"
    echo "x = how many times faster pactfs is than the peer on that row (above 1: faster,"
    echo "    below 1: slower), whatever the unit; best = the better of gocryptfs and securefs"
    echo
    local fmt='%-36s %-6s %10s %10s %10s %10s %7s %7s %7s %7s\n'
    # shellcheck disable=SC2059
    printf "$fmt" workload unit pactfs gocryptfs securefs passthru "x best" "x gocfs" "x secfs" "x pass"
    # shellcheck disable=SC2059
    printf "$fmt" "$(printf '%.0s-' {1..36})" ------ ---------- ---------- ---------- ---------- ------- ------- ------- -------
    local w
    for w in "${WORKLOADS[@]}"; do
        # shellcheck disable=SC2059
        printf "$fmt" "${LABEL[$w]}" "${UNIT[$w]}" \
            "$(median pactfs "$w")" "$(median gocryptfs "$w")" "$(median securefs "$w")" \
            "$(median passthrough "$w")" \
            "$(speedup "$w" "$(median pactfs "$w")" "$(best_peer "$w")")" \
            "$(ratio "$w" gocryptfs)" "$(ratio "$w" securefs)" "$(ratio "$w" passthrough)"
    done
    if [ -n "$AB_DIR" ]; then
        echo
        echo "A/B: pactfs = $PACTFS_BIN, pactfs-b = $PACTFS_B_BIN (--ab), run beside each other in"
        echo "every round, alternating which goes first; A/B = how many times faster pactfs is than"
        echo "pactfs-b on the medians (below 1: pactfs is slower by 1 - A/B)"
        local abfmt='%-36s %-6s %10s %10s %7s\n'
        # shellcheck disable=SC2059
        printf "$abfmt" workload unit pactfs pactfs-b "A/B"
        for w in "${WORKLOADS[@]}"; do
            # shellcheck disable=SC2059
            printf "$abfmt" "${LABEL[$w]}" "${UNIT[$w]}" "$(median pactfs "$w")" \
                "$(median pactfs-b "$w")" "$(ratio "$w" pactfs-b)"
        done
        echo "1-min load average at the start of each round: pactfs ${LOADS[pactfs]:--}; pactfs-b ${LOADS[pactfs-b]:--}"
        echo
        echo "daemon CPU seconds (utime + stime of the daemon during the workload), medians;"
        echo "A/B = pactfs-b / pactfs (below 1: pactfs used more CPU)"
        # shellcheck disable=SC2059
        printf "$abfmt" workload unit pactfs pactfs-b "A/B"
        for w in a b c d e f; do
            local ca cb
            ca=$(median_cpu pactfs "$w"); cb=$(median_cpu pactfs-b "$w")
            # shellcheck disable=SC2059
            printf "$abfmt" "${LABEL[$w]}" "cpu s" "$ca" "$cb" \
                "$(awk -v a="$ca" -v b="$cb" 'BEGIN { if (a + 0 > 0 && b != "-") printf "%.2f", b / a; else print "-" }')"
        done
    fi
    if [ "$REPEAT" -gt 1 ]; then
        echo
        echo "per-round figures (the table shows their medians):"
        local fs
        for w in "${WORKLOADS[@]}"; do
            for fs in "${ALL_FS[@]}"; do
                [ -n "${RESULT[$fs,$w]:-}" ] && printf '  %-36s %-12s %s\n' "${LABEL[$w]}" "$fs" "${RESULT[$fs,$w]}"
                [ -n "${DCPU[$fs,$w]:-}" ] && printf '  %-36s %-12s %s\n' "  daemon CPU s" "$fs" "${DCPU[$fs,$w]}"
            done
        done
    fi
    echo
    echo "daemon resident memory (VmRSS, KiB, per round): idle = 1 s after the mount,"
    echo "end = after the last workload (fio randwrite), before the unmount"
    local fs
    for fs in "${ALL_FS[@]}"; do
        [ -n "${RSS_IDLE[$fs]:-}" ] && printf '  %-12s idle %-24s end %s\n' "$fs" "${RSS_IDLE[$fs]}" "${RSS_END[$fs]:--}"
    done
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo
        printf 'note: %s\n' "${NOTES[@]}"
    fi
}

# -------------------------------------------------------------------- main --
for fs in "${FS_LIST[@]}"; do
    mountpoint -q "$WORK/$fs/mnt" 2>/dev/null && die "unexpected mount at $WORK/$fs/mnt"
done
prepare_inputs
has passthrough "${FS_LIST[@]}" && build_passthrough
has pactfs "${FS_LIST[@]}" && find_or_build_pactfs

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
    order=("${ALL_FS[@]}")
    # --ab: B before A every other round, so a drift in load hits both alike
    [ $((ROUND % 2)) = 0 ] && order=(pactfs-b pactfs gocryptfs securefs passthrough)
    for fs in "${order[@]}"; do
        if has "$fs" "${FS_LIST[@]}"; then bench_one "$fs"; fi
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

RESULTS_FILE=$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).txt
print_report | tee "$RESULTS_FILE"
[ "$KEEP_LOG" = 1 ] && cp "$LOG" "${RESULTS_FILE%.txt}.log"
progress "results written to $RESULTS_FILE (not committed)"
