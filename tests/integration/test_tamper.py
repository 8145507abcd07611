"""The database operator edits the metadata to change what a contract says
(issue 7, attacks 3 and 4), the way they would: python's sqlite3 on the
vault's meta.db (and psql on PostgreSQL) while nothing is mounted.

Every attack must end in EIO when the file is opened or read, a line from
the daemon naming the file and the check that failed, and an audit event
`tamper` -- never another file's content, zeros, or old data.
"""
import errno
import json
import os
import sqlite3

import pytest

import pactfs_helpers as H

C = H.CHUNK


def db(v):
    return sqlite3.connect(os.path.join(v.dir, "meta.db"), timeout=30)


def tamper_events(v):
    out = []
    with open(v.audit_log, "rb") as f:
        for ln in f.read().split(b"\n"):
            if ln.strip():
                e = json.loads(ln)
                if e.get("op") == "tamper":
                    out.append(e)
    return out


def expect_eio(path):
    e = H.errno_of(H.read_file, path)
    assert e == errno.EIO, "reading %s gave %s, expected EIO" % (path, H.errname(e))


def check_detected(v, name, check, before):
    """EIO already seen by the caller; now the daemon's line and the event."""
    log = v.read_fg_log()
    lines = [ln for ln in log.splitlines() if "TAMPERING DETECTED" in ln and name in ln]
    assert lines, "no tamper line naming %s in the daemon log:\n%s" % (name, log[-3000:])
    assert any(check in ln for ln in lines), \
        "the tamper line does not name the check %r:\n%s" % (check, "\n".join(lines))
    events = tamper_events(v)[before:]
    assert any(ev.get("path", "").endswith(name) for ev in events), \
        "no audit event tamper for %s: %s" % (name, events)


def mkfiles(v, files):
    os.makedirs(v.folder, exist_ok=True)
    inos = {}
    for name, data in files.items():
        H.write_file(v.path(name), data, fsync=True)
        inos[name] = os.stat(v.path(name)).st_ino
    return inos


@pytest.fixture
def tv(new_vault):
    new_vault.mount_foreground()
    return new_vault


APPROVED = b"APPROVED: pay 10,000 EUR on delivery.\n" * 50
REJECTED = b"REJECTED: this offer was declined by legal.\n" * 50


# ------------------------------------------------------------ attack 3: names

@pytest.mark.parametrize("with_binding", [False, True])
def test_swapped_dirents_fail_to_open(tv, with_binding):
    inos = mkfiles(tv, {"approved.txt": APPROVED, "rejected.txt": REJECTED})
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        a = c.execute("SELECT cookie, ino, bind FROM dirents WHERE ino = ?",
                      (inos["approved.txt"],)).fetchone()
        r = c.execute("SELECT cookie, ino, bind FROM dirents WHERE ino = ?",
                      (inos["rejected.txt"],)).fetchone()
        if with_binding:   # the binding goes along with the target
            c.execute("UPDATE dirents SET ino = ?, bind = ? WHERE cookie = ?", (r[1], r[2], a[0]))
            c.execute("UPDATE dirents SET ino = ?, bind = ? WHERE cookie = ?", (a[1], a[2], r[0]))
        else:
            c.execute("UPDATE dirents SET ino = ? WHERE cookie = ?", (r[1], a[0]))
            c.execute("UPDATE dirents SET ino = ? WHERE cookie = ?", (a[1], r[0]))
    tv.mount_foreground()
    # still listed (the names are authentic), but neither opens
    assert sorted(os.listdir(tv.folder)) == ["approved.txt", "rejected.txt"]
    expect_eio(tv.path("approved.txt"))
    expect_eio(tv.path("rejected.txt"))
    check_detected(tv, "approved.txt", "entry binding", before)
    check_detected(tv, "rejected.txt", "entry binding", before)


@pytest.mark.parametrize("listed_first", [False, True])
def test_redirected_and_retyped_entries_fail(tv, listed_first):
    """listed_first: the directory is listed before the names are used, so
    the kernel has what READDIRPLUS gave it and sends no LOOKUP for an
    entry that came with attributes: each one must pass the lookup's
    checks or come without them."""
    inos = mkfiles(tv, {"contract.txt": APPROVED, "other.txt": REJECTED})
    os.mkdir(tv.path("dir"))
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        # contract.txt now points at other.txt's inode (a hard link forged)
        c.execute("UPDATE dirents SET ino = ? WHERE ino = ?",
                  (inos["other.txt"], inos["contract.txt"]))
        # the directory's entry says "regular file", and its inode agrees
        dino = c.execute("SELECT ino FROM dirents WHERE mode & 61440 = 16384 AND parent != 1"
                         ).fetchone()[0]
        c.execute("UPDATE dirents SET mode = 33188 WHERE ino = ?", (dino,))
    tv.mount_foreground()
    if listed_first:
        assert sorted(os.listdir(tv.folder)) == ["contract.txt", "dir", "other.txt"]
    expect_eio(tv.path("contract.txt"))
    assert H.read_file(tv.path("other.txt")) == REJECTED     # its own entry is intact
    e = H.errno_of(os.stat, tv.path("dir"))
    assert e == errno.EIO, "stat of the retyped entry gave %s" % H.errname(e)
    check_detected(tv, "contract.txt", "entry binding", before)
    check_detected(tv, "dir", "entry binding", before)


@pytest.mark.parametrize("listed_first", [False, True])
def test_retyped_inode_row_fails(tv, listed_first):
    """The entry is intact but the inode row it names now says "regular
    file" for a directory (or the reverse): the row is not what the entry
    was written for."""
    os.mkdir(tv.path("dir"))
    inos = mkfiles(tv, {"contract.txt": APPROVED})
    dino = os.stat(tv.path("dir")).st_ino
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        c.execute("UPDATE inodes SET mode = 33188 WHERE ino = ?", (dino,))
        c.execute("UPDATE inodes SET mode = 16877 WHERE ino = ?", (inos["contract.txt"],))
    tv.mount_foreground()
    if listed_first:
        assert sorted(os.listdir(tv.folder)) == ["contract.txt", "dir"]
    e = H.errno_of(os.stat, tv.path("dir"))
    assert e == errno.EIO, "stat of the retyped directory gave %s" % H.errname(e)
    e = H.errno_of(os.stat, tv.path("contract.txt"))
    assert e == errno.EIO, "stat of the retyped file gave %s" % H.errname(e)
    check_detected(tv, "dir", "entry binding", before)
    check_detected(tv, "contract.txt", "entry binding", before)


def test_entry_moved_to_another_directory_fails(tv):
    os.mkdir(tv.path("a"))
    os.mkdir(tv.path("b"))
    inos = mkfiles(tv, {"a/x.txt": APPROVED})
    b_ino = os.stat(tv.path("b")).st_ino
    tv.unmount()
    with db(tv) as c:
        c.execute("UPDATE dirents SET parent = ? WHERE ino = ?", (b_ino, inos["a/x.txt"]))
    tv.mount_foreground()
    # the name was encrypted under parent a: under b it does not even decrypt
    assert os.listdir(tv.path("b")) == []
    assert os.listdir(tv.path("a")) == []


# ------------------------------------------------------------ attack 4: chunks

def three_chunks():
    return H.seeded_bytes(7, 3 * C + 4321)


def test_deleted_chunk_row_is_eio_not_zeros(tv):
    data = three_chunks()
    inos = mkfiles(tv, {"big.bin": data})
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        assert c.execute("DELETE FROM chunks WHERE ino = ? AND idx = 1",
                         (inos["big.bin"],)).rowcount == 1
    tv.mount_foreground()
    expect_eio(tv.path("big.bin"))
    check_detected(tv, "big.bin", "chunk count", before)


def test_older_chunk_row_with_its_fragments_is_eio(tv):
    old = three_chunks()
    inos = mkfiles(tv, {"c.bin": old})
    ino = inos["c.bin"]
    with db(tv) as c:
        row = c.execute("SELECT * FROM chunks WHERE ino = ? AND idx = 1", (ino,)).fetchone()
        cols = [d[1] for d in c.execute("PRAGMA table_info(chunks)")]
    old_id = row[cols.index("chunk_id")].hex()
    saved = {}   # path -> bytes of chunk 1's version-1 fragments
    for i in range(3):
        for p in H.fragment_files(tv.store_dir(i)):
            if os.path.basename(p).startswith(old_id):
                saved[p] = open(p, "rb").read()
    assert len(saved) == 3, saved.keys()
    with open(tv.path("c.bin"), "r+b") as f:   # chunk 1 rewritten: version 2
        f.seek(C)
        f.write(b"NEW!!")
    tv.unmount()
    before = len(tamper_events(tv))
    # put back the old row and its old fragments (the gc deleted them)
    for p, b in saved.items():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b)
    with db(tv) as c:
        c.execute("DELETE FROM chunks WHERE ino = ? AND idx = 1", (ino,))
        c.execute("INSERT INTO chunks (%s) VALUES (%s)"
                  % (", ".join(cols), ", ".join("?" * len(cols))), row)
    tv.mount_foreground()
    expect_eio(tv.path("c.bin"))
    check_detected(tv, "c.bin", "commitment MAC", before)


def test_changed_size_is_eio(tv):
    data = three_chunks()
    inos = mkfiles(tv, {"s.bin": data, "t.bin": data})
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        c.execute("UPDATE inodes SET size = size - 4321 WHERE ino = ?", (inos["s.bin"],))
        c.execute("UPDATE inodes SET size = size + 100 WHERE ino = ?", (inos["t.bin"],))
    tv.mount_foreground()
    expect_eio(tv.path("s.bin"))
    expect_eio(tv.path("t.bin"))
    check_detected(tv, "s.bin", "commitment MAC", before)
    check_detected(tv, "t.bin", "commitment MAC", before)


def test_truncated_chunk_list_is_eio(tv):
    data = three_chunks()
    inos = mkfiles(tv, {"tr.bin": data})
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:   # a consistent-looking shorter file: 1 chunk, 1 MiB
        c.execute("DELETE FROM chunks WHERE ino = ? AND idx >= 1", (inos["tr.bin"],))
        c.execute("UPDATE inodes SET size = ? WHERE ino = ?", (C, inos["tr.bin"]))
    tv.mount_foreground()
    expect_eio(tv.path("tr.bin"))
    check_detected(tv, "tr.bin", "chunk count", before)


def test_commitment_removed_or_copied_is_eio(tv):
    data = three_chunks()
    inos = mkfiles(tv, {"r.bin": data, "q.bin": data})
    tv.unmount()
    before = len(tamper_events(tv))
    with db(tv) as c:
        c.execute("UPDATE inodes SET commitment = x'' WHERE ino = ?", (inos["r.bin"],))
        # q gets r's chunk rows (same content!) -- foreign records
        c.execute("DELETE FROM chunks WHERE ino = ?", (inos["q.bin"],))
    tv.mount_foreground()
    expect_eio(tv.path("r.bin"))
    expect_eio(tv.path("q.bin"))
    check_detected(tv, "r.bin", "commitment record", before)


def test_honest_changes_still_verify(tv):
    """Rewrites, truncation, holes and extension by the mount itself are
    committed and verify after a remount."""
    data = bytearray(three_chunks())
    mkfiles(tv, {"h.bin": bytes(data)})
    with open(tv.path("h.bin"), "r+b") as f:
        f.seek(2 * C + 10)
        f.write(b"xyz")
        f.truncate(5 * C)           # a hole from 3 MiB + 4321 to 5 MiB
        f.seek(6 * C)
        f.write(b"tail")           # chunk 5 a hole, chunk 6 data
    data[2 * C + 10:2 * C + 13] = b"xyz"
    want = bytes(data) + bytes(6 * C - len(data)) + b"tail"
    os.truncate(tv.path("h.bin"), 6 * C + 4)
    tv.remount(foreground=True)
    assert H.read_file(tv.path("h.bin")) == want
    os.truncate(tv.path("h.bin"), C // 2)
    tv.remount(foreground=True)
    assert H.read_file(tv.path("h.bin")) == want[:C // 2]
    assert "TAMPERING" not in tv.read_fg_log()
