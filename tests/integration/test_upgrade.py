"""pactfs-admin upgrade: a vault made in format 1 (schema version 1) is
backed up, migrated and upgraded, then mounts and reads everything, and the
new checks hold on it.

The format-1 fixture: format 2 changed no byte of any row format 1 wrote
(names, wrapped keys, chunk records and fragments are identical); it only
added dirents.bind and inodes.commitment.  So a vault written by the current
code with those two columns dropped and schema_version set back to 1 is,
row for row, the vault the previous release would have written.
"""
import errno
import hashlib
import os
import sqlite3
import struct
import time

import pactfs_helpers as H

C = H.CHUNK


def db(v):
    return sqlite3.connect(os.path.join(v.dir, "meta.db"), timeout=30)


def make_format1(v):
    """Turn the new vault's meta.db into what format 1 (schema 1) wrote: no
    schema-4 packs, no schema-3 change feed, sessions, holds or locks, no
    schema-2 columns, no signed file head (nor its anchor in the key
    directory).  The vault must have been written with packs off."""
    with db(v) as c:
        (packed,) = c.execute("SELECT count(*) FROM chunks WHERE length(pack) > 0").fetchone()
        assert packed == 0, "written with packs: call v.set_coding(pack_max=0) first"
        c.execute("DROP TABLE free_packs")
        for t in ("chunks", "gc_queue"):
            c.execute("DROP INDEX %s_by_pack" % t)
            c.execute("ALTER TABLE %s DROP COLUMN pack" % t)
            c.execute("ALTER TABLE %s DROP COLUMN pack_offs" % t)
        (vid,) = c.execute("SELECT value FROM params WHERE key = 'vault_id'").fetchone()
        vid = vid if isinstance(vid, bytes) else vid.encode()
        c.execute("DELETE FROM params WHERE key = 'file_head'")
        slot = hashlib.sha256(vid + b"#files/#vault-head").hexdigest()
        if os.path.exists(os.path.join(v.dir, "keys", slot)):
            os.unlink(os.path.join(v.dir, "keys", slot))
        triggers = [r[0] for r in c.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for t in triggers:
            c.execute('DROP TRIGGER "%s"' % t)
        for t in ("changes", "sessions", "holds", "locks"):
            c.execute("DROP TABLE IF EXISTS %s" % t)
        c.execute("ALTER TABLE dirents DROP COLUMN bind")
        c.execute("ALTER TABLE inodes DROP COLUMN commitment")
        c.execute("UPDATE schema_version SET version = 1")
    c.close()


TREE = {
    "a.txt": b"first contract\n" * 100,
    "empty": b"",
    "big.bin": H.seeded_bytes(3, 3 * C + 77),
    "d1/d2/deep.txt": b"deep\n",
    "d1/sparse": None,      # written below: a hole, then data
}


def write_tree(v):
    for rel, data in TREE.items():
        os.makedirs(os.path.dirname(v.path(rel)), exist_ok=True)
        if data is not None:
            H.write_file(v.path(rel), data)
    with open(v.path("d1/sparse"), "wb") as f:
        f.seek(2 * C + 5)
        f.write(b"after a hole")
    os.link(v.path("a.txt"), v.path("d1/hardlink"))
    os.symlink("a.txt", v.path("sym"))


def check_tree(v):
    for rel, data in TREE.items():
        if data is not None:
            assert H.read_file(v.path(rel)) == data, rel
    assert H.read_file(v.path("d1/sparse")) == bytes(2 * C + 5) + b"after a hole"
    assert H.read_file(v.path("d1/hardlink")) == TREE["a.txt"]
    assert os.readlink(v.path("sym")) == "a.txt"


def upgrade(v, *extra):
    return v.admin("upgrade", v.dir, "--account", H.ACCOUNT, "--passfile", v.passfile, *extra)


def test_format1_vault_upgrades_mounts_and_reads(new_vault):
    v = new_vault
    v.set_coding(pack_max=0)    # format 1 had no packs
    v.mount()
    write_tree(v)
    v.unmount()
    make_format1(v)

    # before the upgrade: the new code refuses what it cannot authenticate
    v.mount_foreground()
    e = H.errno_of(H.read_file, v.path("a.txt"))
    assert e == errno.EIO, H.errname(e)
    assert "not upgraded" in v.read_fg_log()
    v.unmount()

    p = upgrade(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Backed up the metadata" in p.stdout
    bak = os.path.join(v.dir, "meta.db.pre-format2")
    with sqlite3.connect(bak) as c:
        # the store as it was before the upgrade (the mount above already
        # migrated its schema; the next test takes one that nothing opened)
        assert c.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
        assert c.execute("SELECT count(*) FROM dirents WHERE length(bind) > 0"
                         ).fetchone()[0] == 0
    assert os.stat(bak).st_mode & 0o777 == 0o600
    assert "files committed" in p.stdout and "0 left alone" in p.stdout, p.stdout

    v.mount_foreground()
    check_tree(v)
    # and the vault keeps working in format 2
    with open(v.path("big.bin"), "r+b") as f:
        f.seek(C)
        f.write(b"changed")
    v.remount(foreground=True)
    want = bytearray(TREE["big.bin"])
    want[C:C + 7] = b"changed"
    assert H.read_file(v.path("big.bin")) == bytes(want)
    assert "TAMPERING" not in v.read_fg_log()
    v.unmount()

    # a second run changes nothing and keeps the first backup
    p = upgrade(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Keeping the backup" in p.stdout
    assert "0 entries bound, 0 files committed" in p.stdout, p.stdout

    # the migrated store (schema 1 -> 4) takes packed chunks beside its
    # standalone ones once packs are on
    v.set_coding(pack_max=65536)
    v.mount()
    H.write_file(v.path("after-upgrade.txt"), b"packed now\n" * 50)
    v.remount()
    assert H.read_file(v.path("a.txt")) == TREE["a.txt"]
    assert H.read_file(v.path("big.bin")) == bytes(want)
    assert H.read_file(v.path("after-upgrade.txt")) == b"packed now\n" * 50
    v.unmount()
    with sqlite3.connect(os.path.join(v.dir, "meta.db")) as c:
        assert c.execute("SELECT version FROM schema_version").fetchone()[0] == 4
        assert c.execute("SELECT count(*) FROM chunks WHERE length(pack) > 0"
                         ).fetchone()[0] == 1


def test_upgrade_backup_is_taken_before_migration_and_run_resumes(new_vault):
    v = new_vault
    v.set_coding(pack_max=0)    # format 1 had no packs
    v.mount()
    write_tree(v)
    v.unmount()
    make_format1(v)
    p = upgrade(v)
    assert p.returncode == 0, p.stdout + p.stderr
    with sqlite3.connect(os.path.join(v.dir, "meta.db.pre-format2")) as c:
        assert c.execute("SELECT version FROM schema_version").fetchone()[0] == 1
        cols = [r[1] for r in c.execute("PRAGMA table_info(dirents)")]
        assert "bind" not in cols
    # an interrupted run: some entries and files still without their values
    with db(v) as c:
        c.execute("UPDATE dirents SET bind = x'' WHERE cookie IN "
                  "(SELECT cookie FROM dirents ORDER BY cookie DESC LIMIT 3)")
        c.execute("UPDATE inodes SET commitment = x'' WHERE ino IN "
                  "(SELECT ino FROM inodes WHERE mode & 61440 = 32768 LIMIT 2)")
    p = upgrade(v)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 entries bound, 2 files committed" in p.stdout, p.stdout
    v.mount_foreground()
    check_tree(v)


def test_upgrade_leaves_invalid_values_alone(new_vault):
    """A binding or commitment that is there but does not verify is never
    rewritten (that would bless tampering): reported, exit 14."""
    v = new_vault
    v.mount()
    write_tree(v)
    ino = os.stat(v.path("a.txt")).st_ino
    big = os.stat(v.path("big.bin")).st_ino
    v.unmount()
    with db(v) as c:
        c.execute("UPDATE dirents SET bind = ? WHERE ino = ?", (b"\x02" + os.urandom(32), ino))
        c.execute("UPDATE inodes SET size = size + 1 WHERE ino = ?", (big,))
        before = c.execute("SELECT bind FROM dirents WHERE ino = ?", (ino,)).fetchall()
    p = upgrade(v)
    assert p.returncode == 14, p.stdout + p.stderr
    assert "binding does not verify" in p.stderr, p.stderr
    assert "commitment does not verify" in p.stderr, p.stderr
    with db(v) as c:
        assert c.execute("SELECT bind FROM dirents WHERE ino = ?", (ino,)).fetchall() == before
    v.mount_foreground()
    assert H.errno_of(H.read_file, v.path("big.bin")) == errno.EIO


def _blob(b):
    return struct.pack(">I", len(b)) + b


def _take(buf, pos):
    (n,) = struct.unpack(">I", buf[pos:pos + 4])
    return buf[pos + 4:pos + 4 + n], pos + 4 + n


def file_head_floors(c):
    """(version, counter, signer, {ino: floor}) of the stored signed file head."""
    (root,) = c.execute("SELECT value FROM params WHERE key = 'file_head'").fetchone()
    tbs, _ = _take(bytes(root), 0)
    assert tbs[:4] == b"PFFH"
    version = tbs[4]
    _, pos = _take(tbs, 5)
    counter, signer, _t, n = struct.unpack(">QQQI", tbs[pos:pos + 28])
    pos += 28
    floors = {}
    if version == 1:
        for i in range(n):
            ino, gen = struct.unpack(">QQ", tbs[pos + 16 * i:pos + 16 * i + 16])
            floors[ino] = gen
        return version, counter, signer, floors
    for i in range(n):
        bid = struct.unpack(">Q", tbs[pos + 40 * i:pos + 40 * i + 8])[0]
        want = tbs[pos + 40 * i + 8:pos + 40 * i + 40]
        (b,) = c.execute("SELECT value FROM params WHERE key = ?",
                         ("file_head/%d" % bid,)).fetchone()
        b = bytes(b)
        assert hashlib.sha256(b).digest() == want, bid
        _, bp = _take(b, 5)
        got_bid, cnt = struct.unpack(">QI", b[bp:bp + 12])
        assert got_bid == bid
        for k in range(cnt):
            ino, gen = struct.unpack(">QQ", b[bp + 12 + 16 * k:bp + 28 + 16 * k])
            floors[ino] = gen
    return version, counter, signer, floors


def test_format1_file_head_is_read_and_converted(new_vault):
    """A vault whose signed file head the previous build wrote (format 1: one
    signed list of every floor, anchored in the key directory by its hash)
    mounts, its floors hold, and the first advance rewrites it as format 2
    (a signed root over buckets) keeping every floor, a deleted file's too."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from test_audit_forgery import unseal_account_key

    v = new_vault
    v.mount()
    write_tree(v)
    v.unmount()
    with db(v) as c:
        version, counter, signer, floors = file_head_floors(c)
        (vid,) = c.execute("SELECT value FROM params WHERE key = 'vault_id'").fetchone()
    assert version == 2 and floors
    vid = vid if isinstance(vid, bytes) else vid.encode()
    # what the previous build wrote: format 1, one more commit's worth of
    # floors (a file since deleted, ino 999999, generation 5), anchored
    floors[999999] = 5
    key = unseal_account_key(v, H.ACCOUNT, H.PASSWORD)
    tbs = (b"PFFH" + bytes([1]) + _blob(vid) + struct.pack(">QQQI", counter + 1, signer,
                                                             int(time.time()), len(floors))
           + b"".join(struct.pack(">QQ", i, floors[i]) for i in sorted(floors)))
    v1 = _blob(tbs) + _blob(key.sign(tbs, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                      salt_length=32), hashes.SHA256()))
    with db(v) as c:
        c.execute("DELETE FROM params WHERE key LIKE 'file_head/%'")
        c.execute("UPDATE params SET value = ? WHERE key = 'file_head'", (v1,))
    slot = hashlib.sha256(vid + b"#files/#vault-head").hexdigest()
    with open(os.path.join(v.dir, "keys", slot), "wb") as f:
        f.write(b"PFSA" + bytes([1]) + struct.pack(">Q", counter + 1)
                + hashlib.sha256(v1).digest() + _blob(b""))
    # it mounts and reads; a read-only look converts nothing
    v.mount()
    check_tree(v)
    v.unmount()
    with db(v) as c:
        assert file_head_floors(c)[0] == 1
    # the first commit's advance converts it
    v.mount()
    H.write_file(v.path("a.txt"), b"a new version\n", fsync=True)
    v.unmount()
    with db(v) as c:
        version2, counter2, _, floors2 = file_head_floors(c)
    assert version2 == 2 and counter2 >= counter + 2, (version2, counter2)
    assert floors2[999999] == 5
    ino_a = [i for i in floors if i != 999999]
    assert all(floors2[i] >= floors[i] for i in ino_a), (floors, floors2)
    # and it mounts again, against the new anchor
    v.mount()
    assert H.read_file(v.path("a.txt")) == b"a new version\n"
    v.unmount()
