#!/bin/bash
# Build tests/s3/test_store_s3.c against a configured build directory and run
# it against radosgw: the running cluster named by S3_CA/S3_ENDPOINT, or a
# fresh one started (and stopped) here.
#
#   tests/s3/run-store-test.sh BUILD_DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)

make -C "$BUILD" -s src/libpactfs.a
flags=$(sed -n 's/^SAN_CFLAGS = //p' "$BUILD/Makefile")
libs="$(pkg-config --libs libcurl libcrypto libssl libxml-2.0 libconfig sqlite3 libpq libisal json-c) -largon2"
# store_s3.o first: the library may predate the file in Makefile.am.
gcc -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla $flags -pthread \
    -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I"$BUILD" -I"$SRC/src" -I"$SRC/tests/unit" \
    $(pkg-config --cflags libxml-2.0) \
    -o "$BUILD/test_store_s3" "$SRC/tests/s3/test_store_s3.c" "$SRC/src/store_s3.c" \
    "$BUILD/src/libpactfs.a" $libs

cleanup() { :; }
if [ -z "${S3_CA:-}" ]; then
    RGW=$(mktemp -d /tmp/pactfs-rgw-XXXXXX)
    rmdir "$RGW"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    eval "$("$HERE/start-rgw.sh" "$RGW" "$port")"
    cleanup() { "$HERE/stop-rgw.sh" "$RGW"; }
    export S3_ENDPOINT="https://127.0.0.1:$port" S3_ACCESS_KEY S3_SECRET_KEY S3_CA
fi
trap cleanup EXIT
down=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export S3_DOWN_URL="https://127.0.0.1:$down"
"$BUILD/test_store_s3"
