#!/bin/bash
# Start a throwaway Ceph cluster for the S3 tests: one monitor, one memstore
# OSD and one radosgw per PORT, HTTPS on 127.0.0.1 with a test CA, all state
# under DIR (nothing in /etc/ceph or /var/lib/ceph).  Prints shell variables
# for the tests on stdout; stop everything with stop-rgw.sh DIR.
#
#   tests/s3/start-rgw.sh DIR PORT [PORT...]
#
# Every wait is bounded; on failure the script says what did not come up,
# shows the end of its log and stops what it started.
set -euo pipefail

usage() { echo "usage: $0 DIR PORT [PORT...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
DIR=$1; shift
PORTS=("$@")
HERE=$(cd "$(dirname "$0")" && pwd)
ACCESS_KEY=${S3_TEST_ACCESS_KEY:-PACTFSTESTACCESSKEY1}
SECRET_KEY=${S3_TEST_SECRET_KEY:-pactfs-test-secret-key-0123456789abcdef}
BOOT_WAIT_S=60

log() { echo "start-rgw: $*" >&2; }
die() {
    log "$*"
    for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
        [ -s "$f" ] && { echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; }
    done
    "$HERE/stop-rgw.sh" "$DIR" --keep >&2 || true
    exit 1
}

install_ceph_if_missing() {
    local missing=0
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool uuidgen; do
        command -v "$b" >/dev/null || missing=1
    done
    [ $missing = 0 ] && return 0
    log "installing ceph (ceph-mon ceph-osd radosgw ceph-common uuid-runtime)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends \
        ceph-mon ceph-osd radosgw ceph-common uuid-runtime >&2 ||
        { log "apt-get install of the ceph packages failed"; exit 1; }
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

make_certs() {
    local d=$DIR/tls
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=pactfs test CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
    chmod 600 "$d"/*.key
}

write_conf() {
    local fsid=$1 monport=$2
    cat > "$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$monport
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
# With auth none every on-wire mode must be crc, or radosgw hangs 300 s.
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms cluster mode = crc
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon warn on pool no redundancy = false
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
log to stderr = false
err to stderr = false

[mon.a]
mon data = $DIR/mon

[osd]
osd data = $DIR/osd.\$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd memory target = 943718400
CONF
    for p in "${PORTS[@]}"; do
        cat >> "$DIR/ceph.conf" <<CONF

[client.rgw.$p]
rgw frontends = beast ssl_endpoint=127.0.0.1:$p ssl_certificate=$DIR/tls/server.crt ssl_private_key=$DIR/tls/server.key
rgw data = $DIR/rgw.$p
CONF
    done
}

# Run a daemon in the foreground of a background job; record its pid.
spawn() {
    local name=$1; shift
    "$@" -c "$DIR/ceph.conf" -f >"$DIR/log/$name.out" 2>&1 &
    echo "$! $name" >> "$DIR/pids"
    echo $!
}

wait_for() {   # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up within ${limit}s"
        sleep 0.3
    done
}

ceph_cmd() { timeout 15 ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }

osd_is_up() { ceph_cmd osd stat -f json | grep -q '"num_up_osds":1'; }

rgw_answers() {
    curl -s -o /dev/null --max-time 3 --cacert "$DIR/tls/ca.crt" "https://127.0.0.1:$1/"
}

start_mon() {
    local fsid=$1 monport=$2
    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
        >"$DIR/log/mon-mkfs.out" 2>&1 || die "ceph-mon --mkfs failed"
    spawn mon.a ceph-mon -i a >/dev/null
    wait_for $BOOT_WAIT_S "the ceph monitor" ceph_cmd mon stat
}

start_osd() {
    local uuid id
    uuid=$(uuidgen)
    id=$(ceph_cmd osd new "$uuid") || die "ceph osd new failed"
    mkdir -p "$DIR/osd.$id"
    ceph-osd -c "$DIR/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" \
        >"$DIR/log/osd-mkfs.out" 2>&1 || die "ceph-osd --mkfs failed"
    spawn "osd.$id" ceph-osd -i "$id" >/dev/null
    wait_for $BOOT_WAIT_S "the ceph OSD" osd_is_up
}

start_rgw() {
    local p=$1 pid
    mkdir -p "$DIR/rgw.$p"
    pid=$(spawn "rgw.$p" radosgw -n "client.rgw.$p")
    echo "RGW_PID_$p=$pid" >> "$DIR/env"
    wait_for $BOOT_WAIT_S "radosgw on port $p" rgw_answers "$p"
}

main() {
    local t0=$SECONDS fsid monport
    install_ceph_if_missing
    [ ! -e "$DIR/ceph.conf" ] || { log "$DIR already holds a cluster; stop it first"; exit 1; }
    mkdir -p "$DIR/run" "$DIR/log"
    : > "$DIR/pids"; : > "$DIR/env"
    fsid=$(uuidgen)
    monport=$(free_port)
    make_certs
    write_conf "$fsid" "$monport"
    start_mon "$fsid" "$monport"
    start_osd
    for p in "${PORTS[@]}"; do start_rgw "$p"; done
    timeout 60 radosgw-admin -c "$DIR/ceph.conf" user create --uid=pactfs-test \
        --display-name="pactfs test" --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" \
        >"$DIR/log/user.out" 2>&1 || die "radosgw-admin user create failed"
    {
        echo "CEPH_CONF=$DIR/ceph.conf"
        echo "S3_ACCESS_KEY=$ACCESS_KEY"
        echo "S3_SECRET_KEY=$SECRET_KEY"
        echo "S3_CA=$DIR/tls/ca.crt"
        echo "S3_PORTS=\"${PORTS[*]}\""
        echo "S3_PIDS=\"$(cut -d' ' -f1 "$DIR/pids" | tr '\n' ' ' | sed 's/ $//')\""
        cat "$DIR/env"
        echo "S3_START_SECONDS=$((SECONDS - t0))"
    } | tee "$DIR/env.sh"
}

main
