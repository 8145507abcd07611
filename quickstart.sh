#!/bin/sh
# pactfs quick start: from a clean clone on Debian 12, build pactfs, create a
# demo vault under ./demo, mount it at ./demo/contracts, put a few contracts
# in it and show that the three stores hold only ciphertext fragments.
#
# Run from the top of the source tree:  ./quickstart.sh
# Running it again reuses ./demo (and unmounts a stale mount first).
set -eu

cd "$(dirname "$0")"
TOP=$(pwd)
DEMO=$TOP/demo
VAULT=$DEMO/vault
MNT=$DEMO/contracts
PASSFILE=$DEMO/demo-password.txt
ACCOUNT=demo
FOLDER=Contracts
DEPS="build-essential autoconf automake pkg-config libfuse3-dev fuse3 libssl-dev
libisal-dev libsqlite3-dev libpq-dev libconfig-dev libargon2-dev libcurl4-openssl-dev
libjson-c-dev libmicrohttpd-dev libxml2-dev libpwquality-dev cracklib-runtime"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $* (install sudo or run as root)"
    fi
}

install_missing_deps() {
    missing=""
    for p in $DEPS; do
        st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        case "$st" in *" installed") ;; *) missing="$missing $p" ;; esac
    done
    if [ -z "$missing" ]; then
        say "Build dependencies: all installed"
        return
    fi
    say "Installing missing build dependencies:$missing"
    as_root apt-get update
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
}

# Out of tree, in build/release, the same tree ./test.sh builds.
BUILD=$TOP/build/release
build() {
    say "Building pactfs in build/release"
    [ -x ./configure ] || autoreconf -fi
    mkdir -p "$BUILD"
    (cd "$BUILD" && { [ -f Makefile ] || "$TOP/configure" -q; } && make -s -j"$(nproc 2>/dev/null || echo 2)") \
        || die "the build failed (see the messages above)"
    if [ ! -x "$BUILD/pactfs" ] || [ ! -x "$BUILD/pactfs-admin" ]; then
        die "the build did not produce build/release/pactfs and build/release/pactfs-admin"
    fi
}

is_mounted() {
    grep -q " $1 fuse" /proc/self/mounts 2>/dev/null
}

unmount_stale() {
    if is_mounted "$MNT"; then
        say "Unmounting the earlier demo mount at $MNT"
        "$BUILD/pactfs" umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null ||
            fusermount3 -uz "$MNT" || die "cannot unmount $MNT: close the files open there"
    fi
}

create_or_reuse_vault() {
    if [ -f "$VAULT/pactfs.conf" ] && [ -f "$PASSFILE" ]; then
        say "Reusing the demo vault in $VAULT"
        return
    fi
    if [ -e "$DEMO" ] && [ -n "$(ls -A "$DEMO" 2>/dev/null)" ]; then
        die "$DEMO exists but does not hold a demo vault made by this script; move it away and run again"
    fi
    say "Creating the demo vault in $VAULT"
    mkdir -p "$DEMO"
    umask 077
    # A fresh random demo password, kept next to the demo for the remount.
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PASSFILE"
    umask 022
    "$BUILD/pactfs-admin" init "$VAULT" --name demo --account "$ACCOUNT" --folder "$FOLDER" \
        --passfile "$PASSFILE"
}

mount_vault() {
    mkdir -p "$MNT"
    say "Mounting the vault at $MNT"
    "$BUILD/pactfs" mount "$VAULT" "$MNT" --account "$ACCOUNT" --passfile "$PASSFILE"
}

write_samples() {
    say "Copying sample contracts into $MNT/$FOLDER/"
    tmp=$(mktemp -d)
    cat > "$tmp/supply-agreement.txt" <<'EOF'
SUPPLY AGREEMENT between Example Widgets Ltd and Acme Retail plc.
Clause 1. The Supplier delivers 10,000 widgets per month at EUR 4.20 each.
Clause 2. Payment is due 30 days after delivery.
EOF
    cat > "$tmp/nda-mutual.txt" <<'EOF'
MUTUAL NON-DISCLOSURE AGREEMENT.
Each party keeps the other's Confidential Information secret for five years.
EOF
    cat > "$tmp/lease-office-3f.txt" <<'EOF'
OFFICE LEASE, third floor, 12 Harbour Street.
Rent: EUR 8,500 per month, indexed yearly. Term: 36 months.
EOF
    cp "$tmp"/*.txt "$MNT/$FOLDER/"
    rm -rf "$tmp"
    # fsync each file so its fragments are on the stores before we look.
    sync "$MNT/$FOLDER"/*.txt
    ls -l "$MNT/$FOLDER/"
    say "cat $MNT/$FOLDER/supply-agreement.txt"
    cat "$MNT/$FOLDER/supply-agreement.txt"
}

show_ciphertext_only() {
    say "What the three stores hold (a few objects each)"
    for s in "$VAULT"/stores/*; do
        # not the endpoint's identity marker (pactfs-endpoint): fragments
        # ("<id>.<n>") and packs of small files' fragments ("<id>.p")
        n=$(find "$s" -type f ! -name pactfs-endpoint | wc -l)
        echo "$s: $n objects: fragments, or packs of small files' fragments (and the endpoint's identity marker)"
        find "$s" -type f ! -name pactfs-endpoint | head -n 3 | sed 's/^/    /'
    done
    say "Searching the stores and the metadata for a sample phrase and a file name"
    if grep -rl -e "Harbour Street" -e "supply-agreement" "$VAULT"/stores "$VAULT"/meta.db* 2>/dev/null; then
        die "plaintext found in the stores or meta.db: this is a bug, please report it"
    fi
    echo "grep for \"Harbour Street\" (contents) and \"supply-agreement\" (a file name)"
    echo "found nothing: the stores and meta.db hold only ciphertext."
}

install_missing_deps
build
unmount_stale
create_or_reuse_vault
mount_vault
write_samples
show_ciphertext_only

cat <<EOF

Done.  The demo vault is mounted at $MNT
  demo account:   $ACCOUNT
  demo password:  $(cat "$PASSFILE")   (also in $PASSFILE)
  audit trail:    $VAULT/audit.log

Unmount it with:   build/release/pactfs umount $MNT      (or: fusermount3 -u $MNT)
Mount it again:    build/release/pactfs mount $VAULT $MNT --account $ACCOUNT
Remove the demo:   unmount first, then rm -rf $DEMO
EOF
