#!/usr/bin/env bash
# The Debian packages, built and used as an administrator would:
#   1. dpkg-buildpackage -us -uc -b in a clean copy of the tree,
#   2. lintian: no errors,
#   3. systemd-analyze security of the packaged keyd and auditd units:
#      exposure at most 2.0,
#   4. a fresh Debian 12 chroot (debootstrap --variant=minbase, the mirror of
#      /etc/apt/sources.list.d/debian.sources; /dev /proc /sys bound in):
#      apt-get install of the three .debs, a vault created with
#      pactfs-admin, mounted through /etc/fstab (`mount MOUNTPOINT`) and with
#      `mount -t pactfs`, a file written and read back, unmounted; the
#      service users, their directories and the installed units' settings;
#      each service started as the unit starts it (its user, its limits,
#      no new privileges) far enough to read its configuration.
# Prints TAP ("ok N - ..." / "not ok N - ...") and "# skip REASON" when the
# chroot cannot be made (mirror unreachable, not root).  Everything lives
# under BUILD (default build/pkg), removed again at the end except the .debs.
# Usage: tests/pkg/run.sh [BUILD_DIR]
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$TOP/build/pkg}
JOBS=${JOBS:-2}
N=0 FAILED=0
ok()   { N=$((N + 1)); echo "ok $N - $*"; }
fail() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

ROOT=$BUILD/chroot
MOUNTED=()
cleanup() {
    if [ -d "$ROOT" ]; then
        chroot "$ROOT" sh -c 'umount -l /mnt/contracts /mnt/second' >/dev/null 2>&1
        for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null; done
        # Nothing bound may be left before the tree goes.
        if ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
    fi
}
trap cleanup EXIT

rm -rf "$BUILD" && mkdir -p "$BUILD/src" || exit 1

# ---------------------------------------------------------------- build
SRC=$BUILD/src/pactfs-0.1.0
mkdir -p "$SRC"
(cd "$TOP" && git ls-files -co --exclude-standard | grep -v '^build' | tar -cf - -T -) \
    | tar -xf - -C "$SRC" || { fail "copy of the tree"; exit 1; }
echo "# dpkg-buildpackage ($(elapsed))"
if (cd "$SRC" && DEB_BUILD_OPTIONS="parallel=$JOBS nocheck" \
        dpkg-buildpackage -us -uc -b >"$BUILD/build.log" 2>&1); then
    ok "dpkg-buildpackage -us -uc -b builds pactfs, pactfs-keyd, pactfs-auditd"
else
    fail "dpkg-buildpackage (see $BUILD/build.log)"; tail -30 "$BUILD/build.log"
    echo "1..$N"; exit 1
fi
DEBS=()
for p in pactfs pactfs-keyd pactfs-auditd; do
    f=$(ls "$BUILD"/src/${p}_*.deb 2>/dev/null | head -1)
    [ -n "$f" ] && DEBS+=("$f")
done
check "three binary packages" [ ${#DEBS[@]} -eq 3 ]

# Contents: what mount(8) and systemd look for.
contents() { dpkg-deb -c "$1" | awk '{print $6}'; }
check "pactfs ships /sbin/mount.pactfs" grep -qx './sbin/mount.pactfs' <(contents "${DEBS[0]}")
check "pactfs ships the mount unit template" grep -qx './lib/systemd/system/pactfs-mount@.service' <(contents "${DEBS[0]}")
check "pactfs ships its manual pages" [ "$(contents "${DEBS[0]}" | grep -c '/usr/share/man/man[158]/.*\.gz$')" -ge 4 ]

# ---------------------------------------------------------------- lintian
echo "# lintian ($(elapsed))"
if lintian --fail-on error "$BUILD"/src/*.changes >"$BUILD/lintian.log" 2>&1; then
    ok "lintian: no errors ($(grep -c '^W:' "$BUILD/lintian.log") warnings)"
else
    fail "lintian reports errors"; grep '^E:' "$BUILD/lintian.log" | head -20
fi

# ------------------------------------------------------ unit hardening
UNPACK=$BUILD/unpack
for d in "${DEBS[@]}"; do dpkg-deb -x "$d" "$UNPACK"; done
for s in keyd auditd; do
    u=$UNPACK/lib/systemd/system/pactfs-$s.service
    level=$(systemd-analyze security --offline=true "$u" 2>/dev/null \
            | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "# pactfs-$s.service exposure: ${level:-?}"
    check "systemd-analyze security pactfs-$s.service: exposure ${level:-?} <= 2.0" \
        awk -v l="${level:-99}" 'BEGIN { exit !(l <= 2.0) }'
done

# ---------------------------------------------------------------- chroot
if [ "$(id -u)" -ne 0 ]; then
    echo "# skip chroot: not root"; echo "1..$N"; [ $FAILED -eq 0 ]; exit
fi
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "# debootstrap bookworm from $MIRROR ($(elapsed))"
if ! debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1; then
    echo "# skip chroot: debootstrap could not reach $MIRROR ($(tail -1 "$BUILD/debootstrap.log"))"
    echo "1..$N"; [ $FAILED -eq 0 ]; exit
fi
ok "debootstrap --variant=minbase bookworm ($(elapsed))"
for d in dev proc sys; do
    mount --bind "/$d" "$ROOT/$d" && MOUNTED+=("$ROOT/$d")
done
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
mkdir -p "$ROOT/tmp/debs" && cp "${DEBS[@]}" "$ROOT/tmp/debs/"
echo "# apt-get install ($(elapsed))"
if in_root sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends /tmp/debs/*.deb' >"$BUILD/install.log" 2>&1; then
    ok "apt-get install of the three packages in a fresh chroot ($(elapsed))"
else
    fail "apt-get install (see $BUILD/install.log)"; tail -20 "$BUILD/install.log"
    echo "1..$N"; exit 1
fi

# A vault, mounted through /etc/fstab and with mount -t pactfs.
PW='correct horse battery staple 42'
in_root sh -c "umask 077; printf '%s\n' '$PW' > /root/pw"
check "pactfs-admin init" in_root pactfs-admin init /srv/vault --account alice \
    --passfile /root/pw --kdf-time 1 --kdf-memory 8192
mkdir -p "$ROOT/mnt/contracts" "$ROOT/mnt/second"
echo "/srv/vault /mnt/contracts pactfs noauto,account=alice,passfile=/root/pw 0 0" \
    >>"$ROOT/etc/fstab"
check "mount /mnt/contracts (through /etc/fstab and /sbin/mount.pactfs)" \
    in_root mount /mnt/contracts
check "the fstab mount is a pactfs FUSE mount" \
    grep -q " $ROOT/mnt/contracts fuse" /proc/mounts
check "write a file" in_root sh -c 'echo "contract body 42" > /mnt/contracts/Contracts/a.txt'
check "read it back" in_root sh -c 'grep -qx "contract body 42" /mnt/contracts/Contracts/a.txt'
check "pactfs status sees the mount" in_root sh -c 'pactfs status /mnt/contracts | grep -q "0 ok"'
check "umount /mnt/contracts" in_root umount /mnt/contracts
# The daemon flushes and exits after the unmount; then a second mount sees the file.
for _ in $(seq 1 50); do grep -q " $ROOT/mnt/contracts " /proc/mounts || break; sleep 0.2; done
sleep 1
check "mount -t pactfs -o account=,passfile=" in_root mount -t pactfs /srv/vault /mnt/second \
    -o account=alice,passfile=/root/pw
check "the file is there after a remount" \
    in_root sh -c 'grep -qx "contract body 42" /mnt/second/Contracts/a.txt'
check "umount /mnt/second" in_root umount /mnt/second
check "fsck: the vault is clean" in_root sh -c 'sleep 1; pactfs-fsck -q /srv/vault'

# The services: their users, directories and the installed units' settings.
for s in keyd auditd; do
    u=$ROOT/lib/systemd/system/pactfs-$s.service
    check "system user pactfs-$s" in_root getent passwd pactfs-$s
    check "/etc/pactfs/$s is pactfs-$s's, mode 700" \
        [ "$(in_root stat -c '%U %a' /etc/pactfs/$s)" = "pactfs-$s 700" ]
    for want in "User=pactfs-$s" "ExecStart=/usr/bin/pactfs-$s -f -c /etc/pactfs/$s.conf" \
            "NoNewPrivileges=yes" "ProtectSystem=strict" "CapabilityBoundingSet=" \
            "PrivateUsers=yes" "SystemCallFilter=@system-service" "StateDirectory=pactfs-$s"; do
        check "pactfs-$s.service: $want" grep -qx -- "$want" "$u"
    done
    check "pactfs-$s.service is not enabled before it is configured" \
        [ ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/pactfs-$s.service" ]
    # Started as the unit starts it (user, no new privileges, its limits):
    # without a configuration it must stop with the configuration exit code
    # (3), naming the file, not crash or fail on permissions.
    out=$(in_root prlimit --core=0 \
          setpriv --reuid=pactfs-$s --regid=pactfs-$s --init-groups --no-new-privs \
          /usr/bin/pactfs-$s -f -c /etc/pactfs/$s.conf 2>&1)
    rc=$?
    check "pactfs-$s runs as its user and reports the missing configuration (exit $rc)" \
        sh -c "[ $rc -eq 3 ] && printf '%s' \"\$1\" | grep -q /etc/pactfs/$s.conf" _ "$out"
    [ $rc -eq 3 ] || echo "# $out"
done

# Each service configured and started as its unit runs it (its user, no
# new privileges, no core dumps), answering over TLS on 127.0.0.1.
PKI=$BUILD/pki
"$TOP/tests/keyd/mkca.sh" "$PKI" >/dev/null 2>&1
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_service() { # name port
    in_root sh -c "install -d -o pactfs-$1 -g pactfs-$1 -m 700 /var/lib/pactfs-$1 /var/log/pactfs-$1"
    chroot "$ROOT" prlimit --core=0 setpriv --reuid=pactfs-$1 --regid=pactfs-$1 --init-groups \
        --no-new-privs /usr/bin/pactfs-$1 -f -c /etc/pactfs/$1.conf >"$BUILD/$1.log" 2>&1 &
    SVC_PID=$!
    for _ in $(seq 1 50); do
        curl -s -o /dev/null --cacert "$PKI/ca.pem" "https://127.0.0.1:$2/" && break
        kill -0 $SVC_PID 2>/dev/null || break
        sleep 0.2
    done
}
put_secret() { # service file content
    in_root sh -c "umask 077; cat > /etc/pactfs/$1/$2; chown pactfs-$1: /etc/pactfs/$1/$2" <<<"$3"
}
KP=$(free_port)
cp "$PKI/server.pem" "$ROOT/etc/pactfs/keyd/server.pem"
put_secret keyd server.key "$(cat "$PKI/server.key")"
put_secret keyd master.key "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
put_secret keyd admin.token "$TOKEN"
printf '%s\n' "port = $KP;" \
    'cert_file = "/etc/pactfs/keyd/server.pem";' 'key_file = "/etc/pactfs/keyd/server.key";' \
    'database = "/var/lib/pactfs-keyd/keyd.db";' \
    'master_key_file = "/etc/pactfs/keyd/master.key";' \
    'admin_token_file = "/etc/pactfs/keyd/admin.token";' \
    'audit_log = "/var/log/pactfs-keyd/audit.jsonl";' > "$ROOT/etc/pactfs/keyd.conf"
start_service keyd "$KP"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.pem" \
       -H "Authorization: Bearer $TOKEN" -d '{"source":"192.0.2.1"}' "https://127.0.0.1:$KP/v1/unlock")
check "pactfs-keyd started as pactfs-keyd answers an admin call over TLS (HTTP $code)" [ "$code" = 200 ]
check "its database and audit log are pactfs-keyd's" \
    [ "$(in_root stat -c %U /var/lib/pactfs-keyd/keyd.db /var/log/pactfs-keyd/audit.jsonl | sort -u)" = pactfs-keyd ]
kill $SVC_PID 2>/dev/null; wait $SVC_PID 2>/dev/null
[ "$code" = 200 ] || tail -5 "$BUILD/keyd.log"

AP=$(free_port)
cp "$PKI/server.pem" "$ROOT/etc/pactfs/auditd/server.pem"
cp "$PKI/ca.pem" "$ROOT/etc/pactfs/auditd/clients-ca.pem"
put_secret auditd server.key "$(cat "$PKI/server.key")"
VID=$(sed -n 's/^ *id = "\([0-9a-f]*\)";/\1/p' "$ROOT/srv/vault/pactfs.conf" | head -1)
FP=$(sed -n 's/^ *root_fingerprint = "\([0-9a-f]*\)";/\1/p' "$ROOT/srv/vault/pactfs.conf" | head -1)
printf '%s\n' "port = $AP;" \
    'cert_file = "/etc/pactfs/auditd/server.pem";' 'key_file = "/etc/pactfs/auditd/server.key";' \
    'client_ca_file = "/etc/pactfs/auditd/clients-ca.pem";' \
    'store_dir = "/var/lib/pactfs-auditd";' \
    "vaults = ( { id = \"$VID\"; root_fingerprint = \"$FP\"; } );" \
    'auditors = [ "pactfs test client" ];' > "$ROOT/etc/pactfs/auditd.conf"
start_service auditd "$AP"
code=$(curl -s -o "$BUILD/verify.json" -w '%{http_code}' --cacert "$PKI/ca.pem" \
       --cert "$PKI/client.pem" --key "$PKI/client.key" "https://127.0.0.1:$AP/v1/verify?vault=$VID")
check "pactfs-auditd started as pactfs-auditd answers an auditor over TLS (HTTP $code)" [ "$code" = 200 ]
kill $SVC_PID 2>/dev/null; wait $SVC_PID 2>/dev/null
[ "$code" = 200 ] || tail -5 "$BUILD/auditd.log"

echo "# done in $(elapsed)"
echo "1..$N"
[ $FAILED -eq 0 ]
