"""Endpoint identity (issue 13): each endpoint holds a marker (vault id,
endpoint index) signed by a sysadmin.  A missing, renamed, replaced or
foreign endpoint, or two endpoints swapped, is detected at mount and while
running, treated as offline (degraded rules apply), never written into,
logged, shown by `pactfs status` and audited; an endpoint that comes back
is used again without a remount.  Done as an operator would: mv, mkdir,
cp of another vault's directory, editing the marker file."""
import json
import os
import shutil
import time

import pytest

import pactfs_helpers as H

MARK = "pactfs-endpoint"
WAIT_S = 30


def mark_path(v, i):
    return os.path.join(v.store_dir(i), "pa", MARK)


def fast_checks(v):
    v.env["PACTFS_ENDPOINT_CHECK_MS"] = "300"


def status(v):
    p = v.pactfs("status", "--json", v.mnt)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_for(v, pred, timeout=WAIT_S):
    """The status once pred holds (or the last one after timeout)."""
    end = time.monotonic() + timeout
    while True:
        st = status(v)
        if pred(st) or time.monotonic() > end:
            return st
        time.sleep(0.3)


def endpoint(st, i):
    return st["endpoints"][i]


def files_under(d):
    out = set()
    for root, _dirs, names in os.walk(d):
        for n in names:
            out.add(os.path.join(root, n))
    return out


def audit_ops(v):
    return [(ev["op"], ev.get("path", "")) for ev in H.audit_events(v)]


def admin_mark(v, *extra):
    return v.admin("endpoint-mark", *extra, "--account", H.ACCOUNT + "-admin",
                   "--passfile", v.passfile, v.dir)


def fsck_clean(v):
    p = H.run([H.binary("pactfs-fsck"), "-q", v.dir], env=v.env)
    assert p.returncode == 0, p.stdout + p.stderr


def test_init_marks_every_endpoint_and_pins_it(new_vault):
    v = new_vault
    for i in range(3):
        assert os.path.getsize(mark_path(v, i)) > 100
    with open(v.conf) as f:
        assert 'endpoint_markers = "required"' in f.read()
    v.mount()
    st = status(v)
    assert [e["identity"] for e in st["endpoints"]] == ["ok"] * 3, st


def test_renamed_away_and_replaced_while_mounted(new_vault):
    v = new_vault
    fast_checks(v)
    v.mount_foreground()
    H.write_file(v.path("before.bin"), H.seeded_bytes(1, 300000), fsync=True)   # its write-back done
    away = v.store_dir(1) + ".away"
    os.rename(v.store_dir(1), away)
    os.mkdir(v.store_dir(1), 0o700)          # an empty one put in its place
    held = files_under(away)
    data = H.seeded_bytes(2, 2 * H.CHUNK + 777)
    H.write_file(v.path("during.bin"), data, fsync=True)   # degraded, succeeds
    assert files_under(v.store_dir(1)) == set(), "fragments went into the replacement"
    assert files_under(away) == held, "fragments went into the renamed directory"
    st = wait_for(v, lambda s: endpoint(s, 1)["state"] == "offline")
    e = endpoint(st, 1)
    assert e["state"] == "offline" and e["identity"] in ("replaced", "unmarked"), st
    assert e["offline_reason"], st
    assert st["writes"]["degraded_writes"] >= 3, st
    log = v.read_fg_log()
    assert "endpoint 1" in log and "lost, now offline" in log, log
    assert any(op == "endpoint-lost" and "endpoint 1" in p for op, p in audit_ops(v))
    H.assert_same_bytes(H.read_file(v.path("during.bin")), data, "read while offline")

    # The real directory comes back: used again, the missing fragments repaired.
    os.rmdir(v.store_dir(1))
    os.rename(away, v.store_dir(1))
    st = wait_for(v, lambda s: endpoint(s, 1)["state"] == "ok"
                  and s["writes"]["repair_queue"] == 0)
    assert endpoint(st, 1)["identity"] == "ok" and st["writes"]["repair_queue"] == 0, st
    assert st["writes"]["repairs_done"] >= 3, st
    assert "endpoint 1" in v.read_fg_log() and "is back" in v.read_fg_log()
    assert any(op == "endpoint-back" for op, _ in audit_ops(v))
    v.unmount()
    fsck_clean(v)


def test_foreign_endpoint_at_mount_is_never_written(new_vault, tmp_path):
    v = new_vault
    other = H.Vault(tmp_path, "other")
    other.init()
    os.rename(v.store_dir(2), v.store_dir(2) + ".mine")
    shutil.copytree(other.store_dir(2), v.store_dir(2))   # another vault's endpoint
    foreign = files_under(v.store_dir(2))
    v.mount()
    st = status(v)
    e = endpoint(st, 2)
    assert e["state"] == "offline" and e["identity"] == "foreign", st
    assert "another vault" in e["offline_reason"], st
    data = H.seeded_bytes(3, H.CHUNK + 5)
    H.write_file(v.path("f.bin"), data, fsync=True)
    H.assert_same_bytes(H.read_file(v.path("f.bin")), data, "degraded write")
    assert files_under(v.store_dir(2)) == foreign, "pactfs wrote into another vault's endpoint"
    assert any(op == "endpoint-lost" and "foreign" in p for op, p in audit_ops(v))
    v.unmount()
    # fsck does not clean or repair it either.
    p = H.run([H.binary("pactfs-fsck"), "--repair", "--delete-orphans", v.dir], env=v.env)
    assert "foreign" in p.stderr, p.stdout + p.stderr
    assert files_under(v.store_dir(2)) == foreign, "fsck touched another vault's endpoint"
    # endpoint-mark refuses to take it over.
    p = admin_mark(v, "--endpoint", "2")
    assert p.returncode == 11, p.stdout + p.stderr
    assert "another vault" in p.stderr
    shutil.rmtree(v.store_dir(2))
    os.rename(v.store_dir(2) + ".mine", v.store_dir(2))
    p = H.run([H.binary("pactfs-fsck"), "-q", "--repair", v.dir], env=v.env)
    assert p.returncode == 0, p.stdout + p.stderr
    fsck_clean(v)


def test_two_endpoints_swapped_refuse_the_mount(new_vault):
    v = new_vault
    a, b = v.store_dir(0), v.store_dir(1)
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)
    p = v.mount(check=False)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "marker of endpoint 1, not of endpoint 0" in p.stderr, p.stderr
    assert not H.is_mounted(v.mnt)
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)
    v.mount()
    assert [e["identity"] for e in status(v)["endpoints"]] == ["ok"] * 3


def test_copied_or_edited_marker_is_refused(new_vault):
    v = new_vault
    with open(mark_path(v, 1), "rb") as f:
        good = f.read()
    with open(mark_path(v, 2), "rb") as f:
        good2 = f.read()
    shutil.copy(mark_path(v, 0), mark_path(v, 1))        # endpoint 0's marker on 1
    bad = bytearray(good2)
    bad[-20] ^= 0x01                                     # a flipped signature byte
    with open(mark_path(v, 2), "wb") as f:
        f.write(bytes(bad))
    p = v.mount(check=False)
    assert p.returncode == 7, "two bad endpoints of three must refuse the mount"
    with open(mark_path(v, 2), "wb") as f:
        f.write(good2)
    v.mount()
    st = status(v)
    assert endpoint(st, 1)["identity"] == "misplaced", st
    assert endpoint(st, 2)["identity"] == "ok", st
    v.unmount()
    with open(mark_path(v, 1), "wb") as f:
        f.write(good)
    with open(mark_path(v, 2), "wb") as f:
        f.write(bytes(bad))
    v.mount()
    st = status(v)
    assert endpoint(st, 1)["identity"] == "ok", st
    assert endpoint(st, 2)["identity"] == "bad-marker", st
    assert "does not verify" in endpoint(st, 2)["offline_reason"], st


def test_marker_removed_while_mounted_then_remarked(new_vault):
    v = new_vault
    fast_checks(v)
    v.mount()
    os.unlink(mark_path(v, 0))
    st = wait_for(v, lambda s: endpoint(s, 0)["state"] == "offline")
    assert endpoint(st, 0)["identity"] == "unmarked", st
    H.write_file(v.path("x.bin"), H.seeded_bytes(4, 1000), fsync=True)
    p = admin_mark(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "endpoint 0 (" in p.stdout and ": marked\n" in p.stdout, p.stdout
    st = wait_for(v, lambda s: endpoint(s, 0)["state"] == "ok"
                  and s["writes"]["repair_queue"] == 0)
    assert endpoint(st, 0)["state"] == "ok" and st["writes"]["repair_queue"] == 0, st
    assert any(op == "endpoint-mark" for op, _ in audit_ops(v))


def test_offline_at_mount_comes_back_without_remount(new_vault):
    v = new_vault
    fast_checks(v)
    os.rename(v.store_dir(2), v.store_dir(2) + ".off")
    v.mount()
    st = status(v)
    assert endpoint(st, 2)["state"] == "offline", st
    assert endpoint(st, 2)["identity"] == "unreachable", st
    data = H.seeded_bytes(5, 2 * H.CHUNK)
    H.write_file(v.path("d.bin"), data, fsync=True)
    st = wait_for(v, lambda s: s["writes"]["repair_queue"] >= 2, 10)
    assert st["writes"]["repair_queue"] >= 2, st
    os.rename(v.store_dir(2) + ".off", v.store_dir(2))
    st = wait_for(v, lambda s: endpoint(s, 2)["state"] == "ok"
                  and s["writes"]["repair_queue"] == 0)
    assert endpoint(st, 2)["state"] == "ok" and st["writes"]["repair_queue"] == 0, st
    # Reads use it again: with endpoint 0 gone now, the data still decodes.
    v.unmount()
    os.rename(v.store_dir(0), v.store_dir(0) + ".off")
    v.mount()
    H.assert_same_bytes(H.read_file(v.path("d.bin")), data, "read through endpoints 1+2")
    v.unmount()
    os.rename(v.store_dir(0) + ".off", v.store_dir(0))
    fsck_clean(v)


def test_vault_without_markers_keeps_mounting_then_is_marked(new_vault):
    v = new_vault
    for i in range(3):
        os.unlink(mark_path(v, i))
    with open(v.conf) as f:
        text = f.read()
    with open(v.conf, "w") as f:
        f.write(text.replace('endpoint_markers = "required";', ""))
    v.mount()
    st = status(v)
    assert [e["state"] for e in st["endpoints"]] == ["ok"] * 3, st
    H.write_file(v.path("old.bin"), H.seeded_bytes(6, 5000), fsync=True)
    v.unmount()
    p = admin_mark(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 endpoint(s) marked" in p.stdout, p.stdout
    with open(v.conf) as f:
        assert 'endpoint_markers = "required"' in f.read()
    # From now on a missing marker makes the endpoint offline.
    os.unlink(mark_path(v, 1))
    v.mount()
    assert endpoint(status(v), 1)["identity"] == "unmarked"
    # Only a sysadmin marks.
    p = v.admin("endpoint-mark", "--account", H.ACCOUNT, "--passfile", v.passfile, v.dir)
    assert p.returncode == 13, p.stdout + p.stderr


# ------------------------------------------------ the persisted repair queue

def queue_lines(v):
    path = v.audit_log + ".repair"
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln for ln in f.read().splitlines() if ln]


def fsck_counts(v):
    p = H.run([H.binary("pactfs-fsck"), v.dir], env=v.env)
    return p.returncode, p.stdout + p.stderr


def degraded_write(v, name, seed, size):
    """Write with endpoint 1 renamed away; returns the data."""
    data = H.seeded_bytes(seed, size)
    H.write_file(v.path(name), data, fsync=True)
    return data


@pytest.mark.parametrize("how", ["unmount", "crash"])
def test_repair_queue_survives_unmount_and_crash(new_vault, how):
    v = new_vault
    fast_checks(v)
    v.mount()
    os.rename(v.store_dir(1), v.store_dir(1) + ".away")
    data = degraded_write(v, "q.bin", 7, 3 * H.CHUNK + 1)
    st = wait_for(v, lambda s: s["writes"]["repair_queue"] >= 3, 10)
    assert st["writes"]["repair_queue"] >= 3, st
    assert len(queue_lines(v)) >= 3, queue_lines(v)
    if how == "unmount":
        v.unmount()
    else:
        v.kill_daemon()
        if H.fusermount_u(v.mnt).returncode != 0:
            assert H.fusermount_u(v.mnt, lazy=True).returncode == 0
        v.daemon_pid = None
        H.LIVE_VAULTS.discard(v)
    os.rename(v.store_dir(1) + ".away", v.store_dir(1))
    rc, out = fsck_counts(v)
    assert rc == 14, "the fragments should still be missing before the remount: " + out
    v.mount()             # nothing written: the next mount repairs what was queued
    st = wait_for(v, lambda s: s["writes"]["repair_queue"] == 0
                  and s["writes"]["repairs_done"] >= 3)
    assert st["writes"]["repair_queue"] == 0 and st["writes"]["repairs_done"] >= 3, st
    assert queue_lines(v) == [], queue_lines(v)
    v.unmount()
    rc, out = fsck_counts(v)
    assert rc == 0, out
    v.mount()
    H.assert_same_bytes(H.read_file(v.path("q.bin")), data, "after the repair")


def test_tampered_repair_queue_only_costs_checks(new_vault):
    v = new_vault
    v.mount()
    data = H.seeded_bytes(8, 2 * H.CHUNK)
    H.write_file(v.path("t.bin"), data, fsync=True)
    ino = os.stat(v.path("t.bin")).st_ino
    v.unmount()
    with open(v.audit_log + ".repair", "w") as f:
        f.write("garbage line\n")
        f.write("%d 0 %s\n" % (ino, "00" * 16))             # not the current chunk
        f.write("999999 0 %s\n" % ("ab" * 16))                # no such inode
        f.write("%d 1 %s\n" % (ino, "cd" * 16))
    v.mount()
    time.sleep(1)
    assert queue_lines(v) == [], "stale or malformed lines should be dropped"
    H.assert_same_bytes(H.read_file(v.path("t.bin")), data, "unchanged")
    v.unmount()
    rc, out = fsck_counts(v)
    assert rc == 0, out
