"""statfs and du tell the truth (docs/design-fuse.md, "statfs"): df's free
space is what the user can still store given the endpoints' real free space
and the k+m coding (endpoints on one filesystem counted once), df's used is
what the vault holds, and du of a file matches its size within one chunk,
after an overwrite and a truncate too."""
import os
import shutil
import subprocess

import pactfs_helpers as H

C = H.CHUNK
K, M, N = 2, 1, 3      # pactfs-admin init's default coding and endpoints


def avail_bytes(path):
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize


def df_fields(path):
    """(size, used, avail) in bytes as df(1) prints them for path."""
    out = subprocess.run(["df", "-B1", "--output=size,used,avail", path], check=True,
                         capture_output=True, text=True).stdout.split("\n")[1].split()
    return tuple(int(x) for x in out)


def du_bytes(path):
    """du's disk usage (st_blocks * 512) of one file."""
    out = subprocess.run(["du", "-B1", path], check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[0])


def within(got, want, frac):
    return abs(got - want) <= frac * want


def test_df_on_one_shared_disk_counts_the_disk_once(vault):
    # All three endpoints are directories on one filesystem: every user byte
    # costs (k+m)/k bytes of that one disk.
    for i in range(N):
        assert os.stat(vault.store_dir(i)).st_dev == os.stat(vault.store_dir(0)).st_dev
    want = avail_bytes(vault.store_dir(0)) * K // (K + M)
    size, used, avail = df_fields(vault.mnt)
    assert within(avail, want, 0.10), \
        "df avail %d, endpoints' free space says %d (free * k/(k+m))" % (avail, want)
    assert size == used + avail

    # used is what the vault holds
    p = vault.path("five.bin")
    with open(p, "wb") as f:
        f.write(H.seeded_bytes(5, 5 * C + 123))
        f.flush()
        os.fsync(f.fileno())
    size, used, avail = df_fields(vault.mnt)
    assert abs(used - (5 * C + 123)) <= C, "df used %d after storing 5 MiB" % used
    # inodes: the used count is real, free marked plentiful (no inode table)
    v = os.statvfs(vault.mnt)
    assert v.f_ffree == 1 << 32
    assert 1 <= v.f_files - v.f_ffree < 100


def _tmpfs_endpoints(v, sizes_mib):
    """Move endpoint i onto its own tmpfs of sizes_mib[i] MiB (contents kept)."""
    mounted = []
    for i, mib in enumerate(sizes_mib):
        d = v.store_dir(i)
        orig = d + ".orig"
        os.rename(d, orig)
        os.mkdir(d, 0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % mib,
                        "pactfs-statfs-test", d], check=True)
        mounted.append(d)
        subprocess.run(["cp", "-a", orig + "/.", d + "/"], check=True)
        shutil.rmtree(orig)
    return mounted


def test_df_with_endpoints_on_separate_disks_is_smallest_free_times_k(new_vault):
    # Three endpoints on three filesystems of different sizes, k=2 m=1: each
    # chunk puts one half-size fragment on each, so the smallest one's free
    # space fills after twice that much user data.
    v = new_vault
    mounted = _tmpfs_endpoints(v, [48, 96, 64])
    try:
        v.mount()
        devs = {os.stat(v.store_dir(i)).st_dev for i in range(N)}
        assert len(devs) == N
        free = [avail_bytes(v.store_dir(i)) for i in range(N)]
        want = min(free) * K
        size, used, avail = df_fields(v.mnt)
        assert within(avail, want, 0.10), \
            "df avail %d, endpoints free %s say %d (min * k)" % (avail, free, want)

        # store 16 MiB: each endpoint loses about 8 MiB, the free space 16 MiB
        p = v.path("sixteen.bin")
        H.write_stream(p, 16, 16 * C, fsync=True)
        free2 = [avail_bytes(v.store_dir(i)) for i in range(N)]
        for a, b in zip(free, free2):
            assert within(a - b, 8 * C, 0.10), "endpoint free %s -> %s" % (free, free2)
        size, used, avail2 = df_fields(v.mnt)
        assert within(avail2, min(free2) * K, 0.10)
        assert within(avail - avail2, 16 * C, 0.10)
        assert abs(used - 16 * C) <= C
        v.unmount()
    finally:
        if H.is_mounted(v.mnt):
            v.unmount(check=False)
        for d in mounted:
            subprocess.run(["umount", d], check=False)


def _assert_du(p, what):
    size = os.stat(p).st_size
    du = du_bytes(p)
    assert abs(du - size) <= C, "%s: du %d for a file of %d bytes" % (what, du, size)


def test_du_matches_size_after_write_overwrite_truncate(vault):
    p = vault.path("du.bin")
    with open(p, "wb") as f:
        f.write(H.seeded_bytes(1, 3 * C + 77))
        _assert_du(p, "open, written, not yet flushed")
    _assert_du(p, "written")
    with open(p, "wb") as f:            # overwrite, shorter
        f.write(H.seeded_bytes(2, C + 5))
    _assert_du(p, "overwritten")
    with open(p, "r+b") as f:           # overwrite in place, then grow
        f.seek(C // 2)
        f.write(H.seeded_bytes(3, 4 * C))
    _assert_du(p, "overwritten and grown")
    os.truncate(p, 700 * 1024)
    _assert_du(p, "truncated")
    os.truncate(p, 0)
    assert du_bytes(p) == 0
    with open(p, "wb") as f:
        f.write(H.seeded_bytes(4, 2 * C + 1))
    vault.remount()
    _assert_du(p, "after remount")


def test_du_of_sparse_file_counts_stored_bytes(vault):
    # Holes hold nothing: du reports what the chunks store (within a chunk),
    # while the apparent size stays the file's size.
    p = vault.path("sparse.bin")
    with open(p, "wb") as f:
        f.write(H.seeded_bytes(5, C))
        f.seek(30 * C)
        f.write(H.seeded_bytes(6, C))
    assert os.stat(p).st_size == 31 * C
    assert abs(du_bytes(p) - 2 * C) <= C, "du %d for 2 MiB stored in a 31 MiB file" % du_bytes(p)
    os.truncate(p, 64 * C)           # grown by a hole: nothing more stored
    assert os.stat(p).st_size == 64 * C
    assert abs(du_bytes(p) - 2 * C) <= C
    vault.remount()
    assert os.stat(p).st_size == 64 * C
    assert abs(du_bytes(p) - 2 * C) <= C, "after remount: du %d" % du_bytes(p)
    size, used, avail = df_fields(vault.mnt)
    assert abs(used - 2 * C) <= C, "df used %d with 2 MiB stored" % used
