"""Re-keying after a revoke (issue 7): pactfs-admin revoke --rekey, rekey.

The attack: while still a member, bob keeps everything he can (every folder
key his envelopes open, the data key of every file; tests/tools/keyprobe
does it with the library, as a modified client would).  After the revoke
and the re-keying, those saved keys are tried on what the metadata and the
stores hold now: no current wrapped data key unwraps and no current chunk
opens, while the remaining members read every file.
"""
import errno
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
    if args[0] in ("try", "try-meta"):
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


def test_a_file_held_open_across_the_rekey_reads_and_writes_by_its_new_records(new_vault, tmp_path):
    """The mount remembers the chunk records it committed; the re-keying
    replaces them and deletes the fragments they name.  A handle held open
    across it still reads every byte (the kernel's pages dropped, so the
    reads reach the daemon) and writes into a chunk it did not hold in
    memory: the mount asks the store for a record whose fragments are gone
    and adopts the new data key (was EIO: 'only 0 of 3 fragments good')."""
    v = new_vault
    members_with_files(v, tmp_path, {"bob": "read"}, 1, 1000)
    v.mount()
    try:
        path = v.path("held-open.pdf")
        data = bytearray(H.seeded_bytes(91, 3 * H.CHUNK + 777))
        H.write_file(path, bytes(data), fsync=True)
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, b"Y" * 10, 5)
            data[5:15] = b"Y" * 10
            ino = os.fstat(fd).st_ino
            with db(v) as c:
                old_ids = [r[0].hex() for r in
                           c.execute("SELECT chunk_id FROM chunks WHERE ino = ?", (ino,))]
            assert len(old_ids) == 4, old_ids
            p = admin("revoke", H.FOLDER, "bob", "--rekey", v.dir, vault=v)
            assert "0 left" in p.stdout, p.stdout
            H.await_chunks_deleted(v, old_ids)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            H.assert_same_bytes(os.pread(fd, len(data), 0), bytes(data), "read after the rekey")
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.pwrite(fd, b"Z" * 100, 2 * H.CHUNK + 50)
            data[2 * H.CHUNK + 50:2 * H.CHUNK + 150] = b"Z" * 100
            os.fsync(fd)
        finally:
            os.close(fd)
        H.assert_same_bytes(H.read_file(path), bytes(data), "after the write")
    finally:
        v.unmount()
    assert not [e for e in audit_events(v) if e["op"] == "tamper"]
    v.mount()
    try:
        H.assert_same_bytes(H.read_file(v.path("held-open.pdf")), bytes(data), "after remount")
    finally:
        v.unmount()


def test_a_forged_data_key_in_the_row_is_not_adopted_by_a_held_handle(new_vault):
    """The attack on the path above: while a handle is open, the database
    operator swaps the file's wrapped data key for another file's (a valid
    wrap, of the wrong inode) and a chunk's fragments are gone, so the
    handle's read asks for the row again.  The forged key must not be
    adopted: the read fails (EIO), a 'tamper' event names the file, and
    the next read fails the same way."""
    v = new_vault
    v.mount()
    try:
        path = v.path("victim.pdf")
        H.write_file(path, H.seeded_bytes(92, 3 * H.CHUNK), fsync=True)
        H.write_file(v.path("other.pdf"), H.seeded_bytes(93, 1000), fsync=True)
        ino, other = os.stat(path).st_ino, os.stat(v.path("other.pdf")).st_ino
        fd = os.open(path, os.O_RDONLY)
        try:
            with db(v) as c:
                (chunk1,) = c.execute("SELECT chunk_id FROM chunks WHERE ino = ? AND idx = 1",
                                      (ino,)).fetchone()
                c.execute("UPDATE inodes SET wrapped_dek = (SELECT wrapped_dek FROM inodes"
                          " WHERE ino = ?) WHERE ino = ?", (other, ino))
            gone = [f for f in H.fragment_files(os.path.join(v.dir, "stores"))
                    if os.path.basename(f).split(".")[0] == chunk1.hex()]
            assert len(gone) == 3, gone
            for f in gone:
                os.unlink(f)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for _ in range(2):
                with pytest.raises(OSError) as e:
                    os.pread(fd, H.CHUNK, H.CHUNK)
                assert e.value.errno == errno.EIO, e.value
        finally:
            os.close(fd)
    finally:
        v.unmount()
    tampers = [e for e in audit_events(v) if e["op"] == "tamper"]
    assert tampers and all(e["path"].endswith("victim.pdf") for e in tampers), tampers


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


# ---- names, symlink targets and xattrs (sealed under the folder key) ----

def meta_rows(v, fid, hints=()):
    """What the database operator reads of the folder with sqlite3: every
    directory entry pointing into it (the folder's own name in the root
    included), every symlink target and xattr of its inodes, as keyprobe
    try-meta lines."""
    lines = ["hint " + h.encode().hex() for h in hints]
    with db(v) as c:
        for parent, name in c.execute(
                "SELECT d.parent, d.name FROM dirents d JOIN inodes i ON i.ino = d.ino "
                "WHERE i.folder_id = ?", (fid,)):
            lines.append("name %d %s" % (parent, bytes(name).hex()))
        for ino, target in c.execute(
                "SELECT s.ino, s.target FROM symlinks s JOIN inodes i ON i.ino = s.ino "
                "WHERE i.folder_id = ?", (fid,)):
            lines.append("symlink %d %s" % (ino, bytes(target).hex()))
        for ino, name, value in c.execute(
                "SELECT x.ino, x.name, x.value FROM xattrs x JOIN inodes i ON i.ino = x.ino "
                "WHERE i.folder_id = ?", (fid,)):
            lines.append("xattr %d %s %s" % (ino, bytes(name).hex(), bytes(value).hex()))
    return lines


def probe_meta(v, fid, saved, tmp_path, hints=()):
    rows = tmp_path / "rows.txt"
    rows.write_text("\n".join(meta_rows(v, fid, hints)) + "\n")
    return {k: int(x) for k, x in keyprobe("try-meta", saved, rows).items()}


def folder_of(v, path):
    with db(v) as c:
        return c.execute("SELECT folder_id FROM inodes WHERE ino = ?",
                         (os.stat(path).st_ino,)).fetchone()[0]


XATTRS = {"user.client": b"ACME Corp, merger code BLUEBIRD", "user.note": b"price 41.5M"}
XATTR_ON = ("merger-bluebird/drafts/offer-acme.pdf", "merger-bluebird", "")   # "": the top


def names_targets_xattrs(v):
    """Secret names, a symlink, a fifo, xattrs on a file and two directories."""
    os.makedirs(v.path("merger-bluebird/drafts"))
    H.write_file(v.path("merger-bluebird/drafts/offer-acme.pdf"), b"offer", fsync=True)
    os.symlink("merger-bluebird/drafts/offer-acme.pdf", v.path("latest-offer"))
    os.mkfifo(v.path("merger-bluebird/pipe"))
    for p in XATTR_ON:
        for k, val in XATTRS.items():
            os.setxattr(v.path(p), k, val)
    os.sync()


def see_names_targets_xattrs(folder):
    """What a member's mount shows: every name, the target, the xattrs."""
    assert sorted(os.listdir(os.path.join(folder, "merger-bluebird"))) == ["drafts", "pipe"]
    assert os.listdir(os.path.join(folder, "merger-bluebird/drafts")) == ["offer-acme.pdf"]
    assert os.readlink(os.path.join(folder, "latest-offer")) == \
        "merger-bluebird/drafts/offer-acme.pdf"
    assert H.read_file(os.path.join(folder, "latest-offer")) == b"offer"
    for p in XATTR_ON:
        full = os.path.join(folder, p)
        assert sorted(os.listxattr(full)) == sorted(XATTRS), p
        for k, val in XATTRS.items():
            assert os.getxattr(full, k) == val, (p, k)


def test_rekey_reseals_names_targets_and_xattrs(new_vault, tmp_path):
    """bob saves his folder keys while a member.  After revoke --rekey, no
    directory entry name, symlink target or xattr (name or value) in
    meta.db opens with them, read with sqlite3 and tried with the project's
    crypto; a mount started before the revoke and a new one see them all at
    once."""
    v = new_vault
    mounts = add_users(v, ["bob", "carol"])
    admin("grant", H.FOLDER, "bob", "read,write", v.dir, vault=v)
    admin("grant", H.FOLDER, "carol", "read", v.dir, vault=v)
    v.mount()
    names_targets_xattrs(v)
    fid = folder_of(v, v.folder)
    v.unmount()
    saved = str(tmp_path / "bob.saved")
    keyprobe("save", v.conf, "bob", mounts["bob"].account_pass, saved)
    before = probe_meta(v, fid, saved, tmp_path, XATTRS)
    # control: the folder's name and 5 entries; 1 target; 3 inodes x 2 xattrs
    assert before == {"names": 6, "names_opened": 6, "symlinks": 1, "symlinks_opened": 1,
                      "xattrs": 6, "xattr_names_opened": 6, "xattr_values_opened": 6}, before

    carol = mounts["carol"]
    carol.mount()                    # mounted before the revoke: holds key version 1 only
    try:
        see_names_targets_xattrs(carol.folder)
        p = admin("revoke", H.FOLDER, "bob", "--rekey", v.dir, vault=v)
        assert "Names, symlink targets and xattrs: 13 re-sealed" in p.stdout, p.stdout
        assert "in all), 0 left." in p.stdout, p.stdout
        # right after the re-keying, before any periodic check
        see_names_targets_xattrs(carol.folder)
    finally:
        carol.unmount()
    after = probe_meta(v, fid, saved, tmp_path, XATTRS)
    assert after == {"names": 6, "names_opened": 0, "symlinks": 1, "symlinks_opened": 0,
                     "xattrs": 6, "xattr_names_opened": 0, "xattr_values_opened": 0}, \
        "bob's saved folder key still opens rows in meta.db: %s" % after
    v.mount()
    try:
        see_names_targets_xattrs(v.folder)
        os.setxattr(v.path("merger-bluebird"), "user.note", b"changed")
        assert os.getxattr(v.path("merger-bluebird"), "user.note") == b"changed"
    finally:
        v.unmount()
    rekeys = [e for e in audit_events(v) if e["op"] == "rekey"]
    assert "13 names, symlink targets and xattrs re-sealed" in rekeys[-1]["path"], rekeys[-1]
    p = admin("rekey", H.FOLDER, v.dir, vault=v)
    assert "0 re-sealed" in p.stdout and "0 left" in p.stdout, p.stdout


def test_rekey_trusts_no_name_or_xattr_row(new_vault, tmp_path):
    """The database operator moves a sealed xattr value to another file and
    points an entry at another child: rekey re-seals neither (that would
    bless them), reports both, exits 14, and re-seals everything else."""
    v = new_vault
    mounts = add_users(v, ["bob"])
    admin("grant", H.FOLDER, "bob", "read", v.dir, vault=v)
    v.mount()
    names_targets_xattrs(v)
    H.write_file(v.path("other.pdf"), b"x", fsync=True)
    fid = folder_of(v, v.folder)
    a = os.stat(v.path("merger-bluebird/drafts/offer-acme.pdf")).st_ino
    d = os.stat(v.path("merger-bluebird")).st_ino
    other = os.stat(v.path("other.pdf")).st_ino
    v.unmount()
    saved = str(tmp_path / "bob.saved")
    keyprobe("save", v.conf, "bob", mounts["bob"].account_pass, saved)
    with db(v) as c:
        # the value of one of the file's xattrs, moved onto the directory's row
        (val,) = c.execute("SELECT value FROM xattrs WHERE ino = ? LIMIT 1", (a,)).fetchone()
        (xname,) = c.execute("SELECT name FROM xattrs WHERE ino = ? LIMIT 1", (d,)).fetchone()
        c.execute("UPDATE xattrs SET value = ? WHERE ino = ? AND name = ?", (val, d, xname))
        # other.pdf's entry now points at the offer
        c.execute("UPDATE dirents SET ino = ? WHERE ino = ?", (a, other))
    p = admin("revoke", H.FOLDER, "bob", "--rekey", v.dir, vault=v, expect=EXIT_INTEGRITY)
    assert "an xattr of inode %d" % d in p.stderr and "opens under no key" in p.stderr, p.stderr
    assert "binding does not verify" in p.stderr, p.stderr
    assert "2 left." in p.stdout, p.stdout
    after = probe_meta(v, fid, saved, tmp_path, XATTRS)
    # only the two altered rows stay under the old key (the moved value is
    # bound to the offer's inode, so the probe, which binds each value to
    # its row's inode, does not count it)
    assert after["names_opened"] == 1 and after["symlinks_opened"] == 0, after
    assert after["xattr_names_opened"] == 1, after
