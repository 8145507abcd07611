"""Degraded writes (issue 13): with an endpoint failing, writes go on with
the fragments that can be stored (at least coding.min_write_fragments,
default k), the missing ones are repaired when the endpoint is back, and
everything is visible in `pactfs status` and the metrics file.  Below the
minimum, the data stays in write-back, close/fsync report EIO, and a later
flush stores it: nothing is silently lost."""
import errno
import json
import os
import re
import time

import pytest

import pactfs_helpers as H

REPAIR_WAIT_S = 60


def chattr(path, flag):
    p = H.run(["chattr", "-R", flag, path])
    if p.returncode != 0:
        pytest.skip("chattr %s is not supported here: %s" % (flag, p.stderr.strip()))


@pytest.fixture
def unwritable(request):
    """chattr -R +i a store directory (root cannot write it either);
    always undone at teardown."""
    done = []

    def make(path):
        chattr(path, "+i")
        done.append(path)

    yield make
    for p in done:
        H.run(["chattr", "-R", "-i", p])


def status(v):
    """The daemon's status (rewritten every second)."""
    p = v.pactfs("status", "--json", v.mnt)
    assert p.returncode == 0, p.stderr
    time.sleep(1.2)            # figures of what the test just did
    p = v.pactfs("status", "--json", v.mnt)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_status(v, pred, timeout):
    deadline = time.monotonic() + timeout
    st = status(v)
    while not pred(st) and time.monotonic() < deadline:
        time.sleep(0.5)
        st = status(v)
    return st


def set_min_write(v, n):
    with open(v.conf) as f:
        text = f.read()
    text, k = re.subn(r"(chunk_size = \d+;)", r"\1\n    min_write_fragments = %d;" % n, text)
    assert k == 1
    with open(v.conf, "w") as f:
        f.write(text)


def fsck(v, *args):
    return H.run([H.binary("pactfs-fsck"), "-q", *args, v.dir], env=v.env)


def test_write_goes_on_with_one_endpoint_unwritable_then_repairs(new_vault, unwritable):
    v = new_vault
    v.mount_foreground()
    data = H.seeded_bytes(7, 3 * H.CHUNK + 12345)
    unwritable(v.store_dir(1))
    H.write_file(v.path("while-degraded.bin"), data)       # write + close succeed
    fd = os.open(v.path("while-degraded.bin"), os.O_RDONLY)
    os.fsync(fd)                                           # and fsync
    os.close(fd)
    H.assert_same_bytes(H.read_file(v.path("while-degraded.bin")), data, "degraded file")

    st = status(v)
    w = st["writes"]
    assert w["degraded_writes"] >= 4, st
    assert w["repair_queue"] >= 4, st
    assert w["min_write_fragments"] == 2, st
    ep = st["endpoints"][1]
    assert ep["state"] == "failing" and ep["errors"] > 0 and ep["last_error"], st
    assert "degraded write" in v.read_fg_log()
    assert "degraded-write" in audit_ops(v), "the degraded write is not in the audit trail"
    metrics = metrics_text(v)
    assert re.search(r"^pactfs_degraded_writes_total [1-9]", metrics, re.M), metrics
    assert re.search(r'^pactfs_endpoint_up\{endpoint="1"\} 0$', metrics, re.M), metrics

    # The endpoint comes back: the daemon repairs in the background.
    H.run(["chattr", "-R", "-i", v.store_dir(1)], check=True)
    st = wait_status(v, lambda s: s["writes"]["repair_queue"] == 0, REPAIR_WAIT_S)
    assert st["writes"]["repair_queue"] == 0, st
    assert st["writes"]["repairs_done"] >= 4, st
    assert "repaired the missing fragments" in v.read_fg_log()
    v.unmount()
    p = fsck(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"\b0 repairable, 0 unrecoverable", p.stdout), p.stdout
    v.mount()
    H.assert_same_bytes(H.read_file(v.path("while-degraded.bin")), data, "after remount")


def audit_ops(v):
    return [ev["op"] for ev in H.audit_events(v)]


def metrics_text(v):
    with open(status(v)["metrics_file"]) as f:
        return f.read()


def test_below_min_write_fragments_close_fails_and_data_is_kept(new_vault, unwritable):
    v = new_vault
    set_min_write(v, 3)          # this vault must stay fully redundant
    v.mount()
    data = H.seeded_bytes(11, H.CHUNK + 999)
    unwritable(v.store_dir(2))
    fd = os.open(v.path("strict.bin"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EIO
    st = status(v)
    assert st["writes"]["writeback_errors"] >= 1 and st["writes"]["degraded_writes"] == 0, st
    assert st["writes"]["writeback_bytes"] > 0, "the data left write-back: %s" % st
    assert "writeback-failed" in audit_ops(v), "the failed write-back is not audited"
    # Back: the next flush stores what was kept.
    H.run(["chattr", "-R", "-i", v.store_dir(2)], check=True)
    fd = os.open(v.path("strict.bin"), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    v.unmount()
    assert fsck(v).returncode == 0
    v.mount()
    H.assert_same_bytes(H.read_file(v.path("strict.bin")), data, "kept in write-back")


def test_status_without_a_mount(tmp_path):
    p = H.run([H.binary("pactfs"), "status", str(tmp_path)])
    assert p.returncode == 8, p.stdout + p.stderr
    assert "no pactfs mount" in p.stderr
