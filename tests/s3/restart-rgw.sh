#!/bin/bash
# Start again the radosgw of one PORT of a cluster made by start-rgw.sh DIR
# (after a test killed it).  Prints RGW_PID_PORT=pid once it answers.
#
#   tests/s3/restart-rgw.sh DIR PORT
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR PORT" >&2; exit 2; }
DIR=$1 PORT=$2
radosgw -c "$DIR/ceph.conf" -n "client.rgw.$PORT" -f >>"$DIR/log/rgw.$PORT.out" 2>&1 &
pid=$!
echo "$pid rgw.$PORT" >> "$DIR/pids"
deadline=$((SECONDS + 30))
until curl -s -o /dev/null --max-time 3 --cacert "$DIR/tls/ca.crt" "https://127.0.0.1:$PORT/"; do
    if [ $SECONDS -ge $deadline ] || [ ! -d "/proc/$pid" ]; then
        echo "restart-rgw: radosgw on port $PORT did not come back within 30s" >&2
        tail -n 15 "$DIR/log/rgw.$PORT.out" >&2
        exit 1
    fi
    sleep 0.1
done
echo "RGW_PID_$PORT=$pid"
