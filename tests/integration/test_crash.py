"""SIGKILL of the daemon in the middle of a large write: what was fsynced
before is intact, and the vault mounts again."""
import os
import subprocess
import time

import pytest

import pactfs_helpers as H


@pytest.mark.timeout_s(900)
def test_sigkill_during_large_write_keeps_fsynced_data(vault):
    safe = {}
    for name, size in (("before-1.bin", 5 * H.CHUNK + 3), ("before-2.bin", 1000)):
        p = vault.path(name)
        safe[p] = H.seeded_bytes(size, size)
        H.write_file(p, safe[p], fsync=True)
    # An fsynced file later overwritten in part without fsync: after the
    # crash each chunk is wholly the old or wholly the new version (a chunk
    # version is replaced atomically), never a mix and never unreadable.
    over = vault.path("overwritten.bin")
    old = H.seeded_bytes(1, 2 * H.CHUNK)
    H.write_file(over, old, fsync=True)
    patch = H.seeded_bytes(2, H.CHUNK)
    with open(over, "r+b") as f:
        f.seek(H.CHUNK // 2)
        f.write(patch)
    new = old[:H.CHUNK // 2] + patch + old[H.CHUNK // 2 + H.CHUNK:]

    big = vault.path("in-flight.bin")
    writer = subprocess.Popen(["dd", "if=/dev/urandom", "of=" + big, "bs=1M", "count=2000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(big) and os.stat(big).st_size >= 20 * H.CHUNK:
                break
            time.sleep(0.1)
        assert writer.poll() is None, "dd finished before the kill; make it larger"
        vault.kill_daemon()
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    assert writer.returncode != 0, "dd did not notice the daemon died"

    if H.fusermount_u(vault.mnt).returncode != 0:
        assert H.fusermount_u(vault.mnt, lazy=True).returncode == 0
    assert not H.is_mounted(vault.mnt)
    vault.daemon_pid = None
    H.LIVE_VAULTS.discard(vault)

    vault.mount()     # check: must mount again after the crash (exit 0)
    for p, data in safe.items():
        H.assert_same_bytes(H.read_file(p), data, p + " (fsynced before the kill)")
    got = H.read_file(over)
    assert len(got) == 2 * H.CHUNK
    for i in range(2):
        c = slice(i * H.CHUNK, (i + 1) * H.CHUNK)
        assert got[c] in (old[c], new[c]), "chunk %d of overwritten.bin is neither old nor new" % i
    # The file being written when the daemon died: whatever size the
    # metadata settled on, every byte of it must read (no dangling chunk
    # references -> no EIO).
    if os.path.exists(big):
        size = os.stat(big).st_size
        got = H.read_file(big)
        assert len(got) == size, "in-flight file: stat says %d, read gave %d" % (size, len(got))
    # And the vault still takes writes.
    H.write_file(vault.path("after.bin"), b"after the crash", fsync=True)
    vault.remount()
    assert H.read_file(vault.path("after.bin")) == b"after the crash"
    for p, data in safe.items():
        H.assert_same_bytes(H.read_file(p), data, p + " after a second remount")
