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

import pactfs_helpers as H

C = H.CHUNK


def db(v):
    return sqlite3.connect(os.path.join(v.dir, "meta.db"), timeout=30)


def make_format1(v):
    """Turn the new vault's meta.db into what format 1 (schema 1) wrote: no
    schema-3 change feed, sessions, holds or locks, no schema-2 columns, no
    signed file head (nor its anchor in the key directory)."""
    with db(v) as c:
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


def test_upgrade_backup_is_taken_before_migration_and_run_resumes(new_vault):
    v = new_vault
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
