#!/bin/bash
# Stop what start-rgw.sh DIR started (only the pids it recorded) and remove
# DIR.  With --keep the directory stays (start-rgw.sh uses it on failure so
# the logs can be read).
#
#   tests/s3/stop-rgw.sh DIR [--keep]
set -uo pipefail

[ $# -ge 1 ] || { echo "usage: $0 DIR [--keep]" >&2; exit 2; }
DIR=$1
KEEP=${2:-}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*[ZX]' "/proc/$1/status" 2>/dev/null; }

if [ -f "$DIR/pids" ]; then
    pids=$(cut -d' ' -f1 "$DIR/pids")
    # radosgw and the OSD first, the monitor last
    for pid in $(echo "$pids" | tac); do
        alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 50); do
        left=0
        for pid in $pids; do alive "$pid" && left=1; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for pid in $pids; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
fi
# Remove only a directory that start-rgw.sh made.
if [ "$KEEP" != "--keep" ] && [ -f "$DIR/ceph.conf" ] && [ -f "$DIR/pids" ]; then
    rm -rf "$DIR"
fi
exit 0
