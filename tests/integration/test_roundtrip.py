"""File data survives unmount and remount byte for byte: sizes around the
chunk boundary, a large file, and seeded random writes with holes."""
import os
import random

import pytest

import pactfs_helpers as H

C = H.CHUNK
EDGE_SIZES = [0, 1, C - 1, C, C + 1, 2 * C + 17]


def test_edge_sizes_round_trip_through_remount(vault):
    want = {}
    for n in EDGE_SIZES:
        p = vault.path("size-%d.bin" % n)
        data = H.seeded_bytes(n, n)
        H.write_file(p, data)
        want[p] = data
        H.assert_same_bytes(H.read_file(p), data, "%s before remount" % p)
    vault.remount()
    for p, data in want.items():
        assert os.stat(p).st_size == len(data), p
        H.assert_same_bytes(H.read_file(p), data, "%s after remount" % p)


def test_all_zero_chunk_is_data_not_hole(vault):
    # An all-zero block is data like any other: it must read back, sized.
    p = vault.path("zeros.bin")
    data = bytes(C) + b"tail"
    H.write_file(p, data)
    vault.remount()
    H.assert_same_bytes(H.read_file(p), data, p)


@pytest.mark.timeout_s(1200)
def test_100mib_random_round_trip(vault):
    p = vault.path("big.bin")
    total = 100 * C
    digest = H.write_stream(p, 1234, total)
    assert os.stat(p).st_size == total
    vault.remount()
    assert os.stat(p).st_size == total
    assert H.sha256_file(p) == digest, "100 MiB file differs after remount"


def test_unaligned_reads_match(vault):
    # Reads crossing chunk boundaries at odd offsets and lengths.
    p = vault.path("odd.bin")
    data = H.seeded_bytes(7, 3 * C + 5)
    H.write_file(p, data)
    vault.remount()
    rng = random.Random(8)
    fd = os.open(p, os.O_RDONLY)
    try:
        for _ in range(200):
            off = rng.randrange(0, len(data) + 10)
            n = rng.randrange(1, C + 300)
            got = os.pread(fd, n, off)
            H.assert_same_bytes(got, data[off:off + n], "pread(%d, %d)" % (n, off))
    finally:
        os.close(fd)


def _random_writes(path, ref_path, seed, nops, span):
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    rfd = os.open(ref_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(nops):
            op = rng.random()
            if op < 0.85:
                off = rng.randrange(0, span)
                n = rng.choice([1, 7, 4096, rng.randrange(1, 300 * 1024), C, C + 3])
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                os.pwrite(rfd, data, off)
            else:
                size = rng.randrange(0, span)
                os.ftruncate(fd, size)
                os.ftruncate(rfd, size)
        # One write far past EOF leaves a sparse hole that must read as zeros.
        far = span + 3 * C + 12345
        os.pwrite(fd, b"END-OF-SPARSE", far)
        os.pwrite(rfd, b"END-OF-SPARSE", far)
    finally:
        os.close(fd)
        os.close(rfd)


@pytest.mark.timeout_s(900)
def test_seeded_random_writes_match_reference_through_remount(vault, tmp_path):
    ref = str(tmp_path / "reference.bin")
    p = vault.path("random.bin")
    _random_writes(p, ref, seed=20240501, nops=300, span=8 * C)
    want = H.read_file(ref)
    H.assert_same_bytes(H.read_file(p), want, "random writes before remount")
    vault.remount()
    assert os.stat(p).st_size == len(want)
    H.assert_same_bytes(H.read_file(p), want, "random writes after remount")
    # A second round on the remounted file, then remount again.
    _random_writes(p, ref, seed=99, nops=100, span=12 * C)
    vault.remount()
    H.assert_same_bytes(H.read_file(p), H.read_file(ref), "second round after remount")


def test_sparse_hole_and_write_past_eof(vault):
    p = vault.path("sparse.bin")
    with open(p, "wb") as f:
        f.write(b"head")
        f.seek(5 * C + 100)
        f.write(b"tail")
    vault.remount()
    data = H.read_file(p)
    assert len(data) == 5 * C + 104
    assert data[:4] == b"head"
    assert data[-4:] == b"tail"
    assert data[4:-4] == bytes(len(data) - 8), "hole does not read as zeros"


def test_truncate_down_then_up_reads_zeros_through_remount(vault):
    p = vault.path("trunc.bin")
    data = H.seeded_bytes(3, 3 * C + 1000)
    H.write_file(p, data)
    cut = C + C // 2 + 3
    os.truncate(p, cut)
    os.truncate(p, 4 * C)
    want = data[:cut] + bytes(4 * C - cut)
    H.assert_same_bytes(H.read_file(p), want, "before remount")
    vault.remount()
    H.assert_same_bytes(H.read_file(p), want, "after remount")
