"""Re-keying after a revoke (issue 7): pactfs-admin revoke --rekey, rekey.

The attack: while still a member, bob keeps everything he can (every folder
key his envelopes open, the data key of every file; tests/tools/keyprobe
does it with the library, as a modified client would).  After the revoke
and the re-keying, those saved keys are tried on what the metadata and the
stores hold now: no current wrapped data key unwraps and no current chunk
opens, while the remaining members read every file.
"""
import os
import signal
import sqlite3
import subprocess
import time

import pytest

import pactfs_helpers as H
from test_accounts import admin, audit_events
from test_multi import office  # noqa: F401  (two PostgreSQL workstations)
from test_pg import pg  # noqa: F401  (the session's PostgreSQL)
from test_signed_state import add_users

EXIT_INTEGRITY = 14


def keyprobe(*args):
    p = H.run([os.path.join(H.build_dir(), "tests", "tools", "keyprobe")] + [str(a) for a in args])
    assert p.returncode == 0, "keyprobe %s -> %d\n%s%s" % (args[0], p.returncode, p.stdout,
                                                          p.stderr)
    if args[0] == "try":
        return dict(kv.split("=") for kv in p.stdout.split())


def probe(v, saved):
    got = {k: int(x) for k, x in keyprobe("try", v.conf, saved).items()}
    assert got["files"] > 0 and got["chunks"] > 0, got
    return got


def db(v):
    return sqlite3.connect(os.path.join(v.dir, "meta.db"), timeout=30)


def files_of(v, n, size, prefix="f"):
    """n files of size bytes (+ a subdirectory, a sparse file, a hard link)."""
    want = {}
    os.makedirs(v.path("sub"), exist_ok=True)
    for i in range(n):
        name = os.path.join("sub" if i % 3 == 0 else "", "%s%03d.pdf" % (prefix, i))
        want[name] = H.seeded_bytes(i + 1, size + i * 1000)
        H.write_file(v.path(name), want[name])
    with open(v.path("sparse.bin"), "wb") as f:
        f.seek(3 * 1024 * 1024)
        f.write(b"tail")
    want["sparse.bin"] = b"\0" * (3 * 1024 * 1024) + b"tail"
    os.link(v.path(list(want)[1]), v.path("link.pdf"))
    want["link.pdf"] = want[list(want)[1]]
    os.sync()
    return want


def read_all(mnt_folder, want):
    for name, data in want.items():
        H.assert_same_bytes(H.read_file(os.path.join(mnt_folder, name)), data, name)


def key_versions(v):
    with db(v) as c:
        return sorted(r[0] for r in c.execute(
            "SELECT key_version FROM inodes WHERE folder_id <> 0 AND (mode & 61440) = 32768"))


def members_with_files(v, tmp_path, grants, n, size):
    """Accounts granted {name: rights}, n files written by alice, and what
    bob, still a member, saves: his folder keys and every file's data key."""
    mounts = add_users(v, list(grants))
    for name, rights in grants.items():
        admin("grant", H.FOLDER, name, rights, v.dir, vault=v)
    v.mount()
    want = files_of(v, n, size)
    v.unmount()
    saved = str(tmp_path / "bob.saved")
    keyprobe("save", v.conf, "bob", mounts["bob"].account_pass, saved)
    return mounts, want, saved


def test_revoke_rekey_saved_keys_open_nothing(new_vault, tmp_path):
    v = new_vault
    mounts, want, saved = members_with_files(v, tmp_path, {"bob": "read,write", "carol": "read"},
                                             7, 1500 * 1024)
    before = probe(v, saved)
    assert before["unwrapped"] == before["files"] and before["opened"] == before["chunks"], \
        "control: the saved keys must open the files before the revoke: %s" % before
    with db(v) as c:
        (gc_before,) = c.execute("SELECT count(*) FROM gc_queue").fetchone()

    p = admin("revoke", H.FOLDER, "bob", "--rekey", v.dir, vault=v)
    assert "re-keyed under fresh data keys" in p.stdout, p.stdout
    assert "0 left" in p.stdout, p.stdout

    after = probe(v, saved)
    assert after["unwrapped"] == 0 and after["opened"] == 0, \
        "bob's saved keys still open current data after the re-keying: %s" % after
    assert after["chunks"] == before["chunks"]
    assert set(key_versions(v)) == {2}
    with db(v) as c:
        (gc_after,) = c.execute("SELECT count(*) FROM gc_queue").fetchone()
    assert gc_after >= gc_before + before["chunks"], "old fragments not queued for deletion"

    # the remaining members read everything
    v.mount()
    read_all(v.folder, want)
    H.write_file(v.path("after.txt"), b"written after the re-keying", fsync=True)
    v.unmount()
    carol = mounts["carol"]
    carol.mount()
    try:
        read_all(carol.folder, want)
        assert H.read_file(os.path.join(carol.folder, "after.txt")) == b"written after the re-keying"
    finally:
        carol.unmount()
    assert probe(v, saved)["opened"] == 0

    rekeys = [e for e in audit_events(v) if e["op"] == "rekey"]
    assert rekeys and rekeys[-1]["result"] == "ok", rekeys
    assert "files re-keyed" in rekeys[-1]["path"]

    # a second run finds everything done
    p = admin("rekey", H.FOLDER, v.dir, vault=v)
    assert "0 files re-keyed" in p.stdout and "0 left" in p.stdout, p.stdout


def test_rekey_resumes_after_kill_and_trusts_no_row(new_vault, tmp_path):
    v = new_vault
    _, want, saved = members_with_files(v, tmp_path, {"bob": "read"}, 60, 600 * 1024)
    admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
    total = len(key_versions(v))
    assert set(key_versions(v)) == {1}

    # killed in the middle
    proc = subprocess.Popen([H.binary("pactfs-admin"), "rekey", H.FOLDER, v.dir, "--passfile",
                             v.passfile], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=v.env)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        done = key_versions(v).count(2)
        if done >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    done = key_versions(v).count(2)
    assert 0 < done < total, "the kill did not land mid-way (%d of %d done)" % (done, total)
    assert probe(v, saved)["opened"] > 0          # not finished: old keys still open some

    # the database operator marks a file not yet done as done: the rerun
    # does not take the row's word for it (its data key does not unwrap
    # under the version it names), reports it and exits 14
    with db(v) as c:
        (ino,) = c.execute("SELECT ino FROM inodes WHERE key_version = 1 AND (mode & 61440) = "
                           "32768 LIMIT 1").fetchone()
        c.execute("UPDATE inodes SET key_version = 2 WHERE ino = ?", (ino,))
    p = admin("rekey", H.FOLDER, v.dir, vault=v, expect=EXIT_INTEGRITY)
    assert "inode %d" % ino in p.stderr and "does not unwrap" in p.stderr, p.stderr
    assert "1 left" in p.stdout, p.stdout
    with db(v) as c:
        c.execute("UPDATE inodes SET key_version = 1 WHERE ino = ?", (ino,))

    # the rerun finishes what is left
    p = admin("rekey", H.FOLDER, v.dir, vault=v)
    assert "0 left" in p.stdout, p.stdout
    assert set(key_versions(v)) == {2}
    after = probe(v, saved)
    assert after["opened"] == 0 and after["unwrapped"] == 0, after
    v.mount()
    try:
        read_all(v.folder, want)
    finally:
        v.unmount()


def test_rekey_refuses_a_tampered_file(new_vault):
    """A file whose chunk rows were put back to an older state is not
    re-sealed (that would bless the tampering): reported, exit 14."""
    v = new_vault
    add_users(v, ["bob"])
    admin("grant", H.FOLDER, "bob", "read", v.dir, vault=v)
    v.mount()
    H.write_file(v.path("a.pdf"), H.seeded_bytes(5, 300000), fsync=True)
    ino = os.stat(v.path("a.pdf")).st_ino
    v.unmount()
    with db(v) as c:
        c.execute("DELETE FROM chunks WHERE ino = ? AND idx = 0", (ino,))
    admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
    p = admin("rekey", H.FOLDER, v.dir, vault=v, expect=EXIT_INTEGRITY)
    assert "inode %d" % ino in p.stderr and "commitment" in p.stderr, p.stderr
    assert "left alone" in p.stderr


def test_rekey_while_mounted_loses_no_write(new_vault, tmp_path):
    """alice's mount was started before the revoke (it holds only the old
    key version) and keeps writing while the folder is re-keyed: a file
    with unsaved changes across the re-keying, and a writer that saves a
    file again and again.  Every write is kept, in the file itself (no
    conflict copy, no tamper event), and nothing current opens with bob's
    saved keys."""
    import threading
    v = new_vault
    _, want, saved = members_with_files(v, tmp_path, {"bob": "read"}, 24, 700 * 1024)
    v.mount()
    try:
        # unsaved changes held across the re-keying
        held = v.path("held.pdf")
        base = H.seeded_bytes(77, 2 * 1024 * 1024 + 5000)
        H.write_file(held, base, fsync=True)
        fd = os.open(held, os.O_RDWR)
        os.pwrite(fd, b"A" * 5000, 10)

        # a writer saving another file over and over
        busy = v.path("busy.pdf")
        stop, state = threading.Event(), {"last": None, "error": None}

        def writer():
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    data = H.seeded_bytes(1000 + i, 1024 * 1024 + i)
                    with open(busy, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    state["last"] = (i, data)
            except OSError as e:
                state["error"] = e
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        p = admin("revoke", H.FOLDER, "bob", "--rekey", v.dir, vault=v)
        time.sleep(0.3)
        stop.set()
        t.join(60)
        assert state["error"] is None, "the writer failed during the re-keying: %r" % state["error"]
        assert "0 left" in p.stdout, p.stdout

        # the held changes are saved after the re-keying, plus a new one
        os.pwrite(fd, b"B" * 3000, 1024 * 1024 + 100)
        os.fsync(fd)
        os.close(fd)
        expect = bytearray(base)
        expect[10:5010] = b"A" * 5000
        expect[1024 * 1024 + 100:1024 * 1024 + 3100] = b"B" * 3000
        H.assert_same_bytes(H.read_file(held), bytes(expect), "held.pdf")
        H.assert_same_bytes(H.read_file(busy), state["last"][1], "busy.pdf")
        read_all(v.folder, want)
        names = os.listdir(v.folder)
        assert not [n for n in names if "conflict" in n], names
    finally:
        v.unmount()
    tampers = [e for e in audit_events(v) if e["op"] == "tamper"]
    assert not tampers, tampers

    # all of it is under the new key: rekey finds nothing left, and bob's
    # saved keys open nothing (the re-written file included)
    p = admin("rekey", H.FOLDER, v.dir, vault=v)
    assert "0 files re-keyed" in p.stdout, p.stdout
    after = probe(v, saved)
    assert after["opened"] == 0 and after["unwrapped"] == 0, after
    v.mount()
    try:
        H.assert_same_bytes(H.read_file(held), bytes(expect), "held.pdf after remount")
        H.assert_same_bytes(H.read_file(busy), state["last"][1], "busy.pdf after remount")
    finally:
        v.unmount()


def test_rekey_on_postgresql_while_two_workstations_have_the_file(pg, office, tmp_path):  # noqa: F811
    """PostgreSQL, two workstations mounted before the revoke: b holds
    unsaved changes of a file while the folder is re-keyed from a third
    process, then saves; a reads the file.  Both adopt the new data key
    (the row lock and the change feed of several workstations), b's
    changes are in the file (no conflict copy), and bob's saved keys open
    nothing that is stored now."""
    from test_multi import BOUND_S, SLACK_S, read_or_none, until
    a, b = office
    mounts = add_users(a, ["bob"])
    admin("grant", H.FOLDER, "bob", "read", a.dir, vault=a)
    n = 2 * H.CHUNK + 100
    old = H.seeded_bytes(11, n)
    H.write_file(a.path("deal.pdf"), old, fsync=True)
    until(lambda: read_or_none(b.path("deal.pdf")) == old, BOUND_S + SLACK_S)
    saved = str(tmp_path / "bob.saved")
    keyprobe("save", a.conf, "bob", mounts["bob"].account_pass, saved)
    assert probe(a, saved)["opened"] > 0

    fb = os.open(b.path("deal.pdf"), os.O_RDWR)
    os.pwrite(fb, b"B" * 4000, H.CHUNK + 5)
    p = admin("revoke", H.FOLDER, "bob", "--rekey", a.dir, vault=a)
    assert "1 files re-keyed" in p.stdout and "0 left" in p.stdout, p.stdout
    os.close(fb)                                     # b saves after the re-keying
    want = bytearray(old)
    want[H.CHUNK + 5:H.CHUNK + 4005] = b"B" * 4000
    # (correctness, not latency: the bound of test_multi plus room for a
    # loaded machine and the adoption's key loading)
    until(lambda: read_or_none(a.path("deal.pdf")) == bytes(want), BOUND_S + SLACK_S + 10)
    H.assert_same_bytes(H.read_file(b.path("deal.pdf")), bytes(want), "deal.pdf on b")
    for w in (a, b):
        assert not [x for x in os.listdir(w.folder) if "conflict" in x], os.listdir(w.folder)
        assert not [e for e in audit_events(w) if e["op"] == "tamper"]
    after = probe(a, saved)
    assert after["opened"] == 0 and after["unwrapped"] == 0, after
