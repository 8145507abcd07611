"""The database operator cannot change who reads what (issue 7, part A).

Each attack is made the way the operator would, by editing the metadata
rows directly (python's sqlite3 on meta.db; psql on the PostgreSQL
database for attacks 1 and 2), and must be refused or detected with a clear
message and an audit event, never with wrong access:

1. an unsigned envelope row for an account never granted, a revoked
   account's rows replayed, a disabled member: none receives a rotated key;
2. folders.key_version set back after a revoke, or the older signed folder
   state put back: new data never goes under the old key;
5. an older copy of the whole metadata restored: the mount refuses (exit 17)
   unless --accept-metadata-rollback, which is audited.
"""
import os
import shutil
import sqlite3
import sys

import pytest

import pactfs_helpers as H
from test_accounts import AccountMount, add_and_enrol, admin, audit_events, finish

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXIT_INTEGRITY, EXIT_ROLLBACK = 14, 17
# Passphrases that pass the vault's password policy (not the account name).
PASSWORDS = {"bob": "first member's long passphrase 7", "carol": "second member's long passphrase 8",
             "dave": "third member's long passphrase 9", "erin": "fourth member's long passphrase 10"}


# ------------------------------------------------------------ the two stores

class SqliteRows:
    """Rows of meta.db, edited as the database operator would."""

    def __init__(self, v):
        self.path = os.path.join(v.dir, "meta.db")

    def query(self, sql, *args):
        with sqlite3.connect(self.path, timeout=30) as c:
            return c.execute(sql, args).fetchall()

    def execute(self, sql, *args):
        with sqlite3.connect(self.path, timeout=30) as c:
            c.execute(sql, args)


def pg_literal(a):
    if isinstance(a, (bytes, bytearray, memoryview)):
        return "'\\x%s'::bytea" % bytes(a).hex()
    if isinstance(a, int):
        return str(a)
    return "'%s'" % str(a).replace("'", "''")


class PgRows:
    """The same rows in PostgreSQL, edited with psql as its superuser."""

    def __init__(self, pg, db):
        self.pg, self.db = pg, db

    def _sql(self, sql, args):
        parts = sql.split("?")
        assert len(parts) == len(args) + 1
        return parts[0] + "".join(pg_literal(a) + p for a, p in zip(args, parts[1:]))

    def query(self, sql, *args):
        sql = self._sql(sql.replace("SELECT wrapped", "SELECT encode(wrapped, 'hex')")
                        .replace(", wrapped FROM", ", encode(wrapped, 'hex') FROM")
                        .replace("SELECT value", "SELECT encode(value, 'hex')"), args)
        out = self.pg.psql(sql, self.db)
        rows = []
        for line in out.splitlines():
            if not line:
                continue
            row = []
            for cell in line.split("|"):
                row.append(int(cell) if cell.lstrip("-").isdigit() else cell)
            rows.append(tuple(row))
        return rows

    def execute(self, sql, *args):
        self.pg.psql(self._sql(sql, args), self.db)


def blob(x):
    return bytes.fromhex(x) if isinstance(x, str) else bytes(x)


# ------------------------------------------------------------------ helpers

def add_users(v, names):
    mounts = {}
    for name in names:
        pw = os.path.join(v.base, name + ".pass")
        with open(pw, "w") as f:
            f.write(PASSWORDS[name] + "\n")
        add_and_enrol(v, name, pw)
        mounts[name] = AccountMount(v, name, pw)
    return mounts


def account_id(rows, name):
    return rows.query("SELECT id FROM accounts WHERE name = ?", name)[0][0]


def folder_id(rows, v):
    alice = account_id(rows, H.ACCOUNT)
    return rows.query("SELECT folder_id FROM envelopes WHERE account_id = ? "
                      "ORDER BY folder_id LIMIT 1", alice)[0][0]


def holders(rows, fid, version):
    """{account name: rights} of the envelope rows of one key version."""
    got = rows.query("SELECT a.name, e.rights FROM envelopes e JOIN accounts a "
                     "ON a.id = e.account_id WHERE e.folder_id = ? AND e.key_version = ?",
                     fid, version)
    return {name: rights for name, rights in got}


def events(v, op, account=None):
    return [e for e in audit_events(v)
            if e["op"] == op and (account is None or e["account"] == account)]


def with_mount(m, fn):
    m.mount()
    try:
        return fn()
    finally:
        m.unmount()


# ------------------------------------------------------------------ attack 1

def rotation_attack(v, rows):
    """Attack 1 on either store; returns the account mounts to finish."""
    mounts = add_users(v, ["bob", "carol", "dave", "erin"])
    fid = folder_id(rows, v)
    ids = {n: account_id(rows, n) for n in (H.ACCOUNT, "bob", "carol", "dave", "erin")}
    admin("grant", H.FOLDER, "bob", "read,write", v.dir, vault=v)
    admin("grant", H.FOLDER, "dave", "read", v.dir, vault=v)
    admin("grant", H.FOLDER, "erin", "read", v.dir, vault=v)
    saved_bob = rows.query("SELECT folder_id, account_id, key_version, rights, granted_by, "
                           "wrapped FROM envelopes WHERE account_id = ?", ids["bob"])
    assert saved_bob
    # dave is disabled by the sysadmin; the operator plants an unsigned row
    # with every right for carol, who was never granted (alice's own wrapped
    # bytes, so it even carries a signature, just not for carol).
    admin("account-disable", "dave", v.dir, "--account", H.ACCOUNT + "-admin", vault=v)
    (alice_wrapped,) = rows.query("SELECT wrapped FROM envelopes WHERE account_id = ? AND "
                                  "key_version = 1", ids[H.ACCOUNT])[0]
    rows.execute("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?)", fid, ids["carol"], 1, 7,
                 ids[H.ACCOUNT], blob(alice_wrapped))

    # Rotation 1: revoke bob.  Only alice and erin get version 2, erin
    # with the rights of her verified grant.
    p = admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
    assert holders(rows, fid, 2) == {H.ACCOUNT: 7, "erin": 1}, p.stderr
    assert "is disabled" in p.stderr, p.stderr
    assert "no member by its signed state" in p.stderr, p.stderr
    assert events(v, "tamper", H.ACCOUNT)

    # Rotation 2: bob's old rows replayed, then erin revoked: version 3 is
    # alice's alone (not bob, not carol, not the disabled dave).
    for r in saved_bob:
        rows.execute("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?)", r[0], r[1], r[2], r[3],
                     r[4], blob(r[5]))
    p = admin("revoke", H.FOLDER, "erin", v.dir, vault=v)
    assert holders(rows, fid, 3) == {H.ACCOUNT: 7}, p.stderr
    assert "account %d has envelope rows" % ids["bob"] in p.stderr, p.stderr

    # The planted and replayed rows open nothing at mount either, and say so.
    for name in ("carol", "bob"):
        m = mounts[name]
        assert with_mount(m, lambda m=m: os.listdir(m.mnt)) == []
        assert events(v, "tamper", name), "no tamper event for " + name
    return mounts


def test_rotation_wraps_only_verified_members_sqlite(new_vault):
    v = new_vault
    mounts = {}
    try:
        mounts = rotation_attack(v, SqliteRows(v))
    finally:
        for m in mounts.values():
            finish(m)


# ------------------------------------------------------------------ attack 2

def key_version_attack(v, rows, mount_check=True):
    mounts = add_users(v, ["bob"])
    fid = folder_id(rows, v)
    admin("grant", H.FOLDER, "bob", "read", v.dir, vault=v)
    old_state = rows.query("SELECT value FROM params WHERE key = ?", "folder_state.%d" % fid)
    assert old_state
    admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
    assert rows.query("SELECT key_version FROM folders WHERE id = ?", fid)[0][0] == 2

    # The operator sets the folder's key version back to the one bob holds.
    rows.execute("UPDATE folders SET key_version = 1 WHERE id = ?", fid)
    p = admin("grant", H.FOLDER, "bob", "read", v.dir, vault=v)   # any unlock notices
    assert "names key version 1 but the signed folder state names 2" in p.stderr, p.stderr
    admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
    rows.execute("UPDATE folders SET key_version = 1 WHERE id = ?", fid)
    if mount_check:
        v.mount()
        H.write_file(v.path("after.pdf"), b"written after the rollback of the row", fsync=True)
        ino = os.stat(v.path("after.pdf")).st_ino
        v.unmount()
        (kv,) = rows.query("SELECT key_version FROM inodes WHERE ino = ?", ino)[0]
        assert kv == 3, "a new file went under key version %d" % kv
    tampered = [e for e in events(v, "tamper", H.ACCOUNT) if "folder:%d" % fid in e["path"]]
    assert tampered, "no tamper event for the altered key version"

    # The older signed folder state put back: the vault head catches it and
    # nothing is unlocked.
    rows.execute("UPDATE params SET value = ? WHERE key = ?", blob(old_state[0][0]),
                 "folder_state.%d" % fid)
    before = len(events(v, "tamper"))
    p = v.pactfs(*v.mount_args())
    assert p.returncode == EXIT_INTEGRITY, (p.returncode, p.stdout, p.stderr)
    assert "not the one the vault head commits to" in p.stderr, p.stderr
    assert not H.is_mounted(v.mnt)
    assert len(events(v, "tamper")) > before
    return mounts


def test_key_version_set_back_sqlite(new_vault):
    v = new_vault
    mounts = {}
    try:
        mounts = key_version_attack(v, SqliteRows(v))
    finally:
        for m in mounts.values():
            finish(m)


# ------------------------------------------------------- attacks 1, 2 in PG

@pytest.fixture
def pg_vault(tmp_path, request):
    pg = request.getfixturevalue("pg")
    v = H.Vault(tmp_path)
    v.db = pg.create_database()
    v.init("--postgresql", pg.conninfo(v.db))
    v.rows = PgRows(pg, v.db)
    yield v
    finish(v)


@pytest.fixture(scope="module")
def pg():
    sys.path.insert(0, os.path.join(SRC_ROOT, "tests", "pg"))
    import pg_tls
    try:
        server = pg_tls.PgTls.start()
    except (pg_tls.PgTlsError, OSError, KeyError) as e:
        pytest.fail("the test PostgreSQL (TLS on 127.0.0.1) could not start: %s" % e,
                    pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def test_rotation_wraps_only_verified_members_pg(pg_vault):
    mounts = {}
    try:
        mounts = rotation_attack(pg_vault, pg_vault.rows)
    finally:
        for m in mounts.values():
            finish(m)


def test_key_version_set_back_pg(pg_vault):
    mounts = {}
    try:
        mounts = key_version_attack(pg_vault, pg_vault.rows)
    finally:
        for m in mounts.values():
            finish(m)


# ------------------------------------------------------------------ attack 5

def test_restored_older_metadata_refused(new_vault):
    v = new_vault
    rows = SqliteRows(v)
    v.mount()
    H.write_file(v.path("before.txt"), b"before the backup", fsync=True)
    v.unmount()
    backup = os.path.join(v.base, "meta.db.backup")
    shutil.copyfile(os.path.join(v.dir, "meta.db"), backup)
    assert not os.path.exists(os.path.join(v.dir, "meta.db-wal")) or \
        os.path.getsize(os.path.join(v.dir, "meta.db-wal")) == 0

    # Changes after the copy: a new folder (a new signed state and head).
    admin("folder-create", "Sales", v.dir, vault=v)
    head_after = rows.query("SELECT value FROM params WHERE key = 'vault_head'")[0][0]

    # The operator restores the older copy.
    for suffix in ("-wal", "-shm"):
        if os.path.exists(os.path.join(v.dir, "meta.db" + suffix)):
            os.unlink(os.path.join(v.dir, "meta.db" + suffix))
    shutil.copyfile(backup, os.path.join(v.dir, "meta.db"))
    assert rows.query("SELECT value FROM params WHERE key = 'vault_head'")[0][0] != head_after

    p = v.pactfs(*v.mount_args())
    assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stdout, p.stderr)
    assert "older than" in p.stderr and "accept-metadata-rollback" in p.stderr, p.stderr
    assert not H.is_mounted(v.mnt)
    assert events(v, "rollback", H.ACCOUNT), "no rollback audit event"
    # The admin tools refuse the same way.
    p = v.admin("grant", H.FOLDER, H.ACCOUNT + "-admin", "read", v.dir, "--passfile",
                v.passfile)
    assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stderr)

    # The explicit, audited override mounts it; afterwards it is the anchor.
    v.mount(extra=["--accept-metadata-rollback"])
    assert H.read_file(v.path("before.txt")) == b"before the backup"
    v.unmount()
    accepted = events(v, "rollback-accepted", H.ACCOUNT)
    assert accepted and "older than" in accepted[-1]["path"]
    v.mount()
    v.unmount()

    # Deleting the head (an old format-1 copy) is a rollback too.
    rows.execute("DELETE FROM params WHERE key = 'vault_head'")
    p = v.pactfs(*v.mount_args())
    assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stderr)
    assert "no signed vault head" in p.stderr, p.stderr


# ------------------------------------------------------------- format 1 -> 2

def strip_to_format1(v, rows):
    """What a vault made before format 2 holds: the same rows without the
    signed folder states and head (format 2 changed no table, only added
    these vault parameters), and no anchor in the key directory."""
    import hashlib
    import re
    with open(v.conf) as f:
        vault_id = re.search(r'\bid\s*=\s*"([0-9a-f]+)"', f.read()).group(1)
    rows.execute("DELETE FROM params WHERE key = 'vault_head' OR key LIKE 'folder_state.%'")
    rows.execute("UPDATE params SET value = ? WHERE key = 'format_version'", b"1")
    anchor = os.path.join(v.dir, "keys",
                          hashlib.sha256((vault_id + "/#vault-head").encode()).hexdigest())
    assert os.path.exists(anchor), "no anchor file in the key directory"
    os.unlink(anchor)


def test_upgrade_format1_vault(new_vault):
    v = new_vault
    rows = SqliteRows(v)
    mounts = add_users(v, ["bob"])
    try:
        admin("grant", H.FOLDER, "bob", "read", v.dir, vault=v)
        v.mount()
        H.write_file(v.path("kept.pdf"), b"written in format 1", fsync=True)
        v.unmount()
        strip_to_format1(v, rows)

        p = v.pactfs(*v.mount_args())
        assert p.returncode == 3, (p.returncode, p.stderr)
        assert "pactfs-admin upgrade" in p.stderr, p.stderr

        p = admin("upgrade", v.dir, vault=v)
        assert "1 folder(s) signed now" in p.stdout, p.stdout
        assert events(v, "upgrade-signed-state", H.ACCOUNT)
        fid = folder_id(rows, v)
        assert rows.query("SELECT count(*) FROM params WHERE key = ?",
                          "folder_state.%d" % fid)[0][0] == 1
        v.mount()
        assert H.read_file(v.path("kept.pdf")) == b"written in format 1"
        v.unmount()
        bob = mounts["bob"]
        assert with_mount(bob, lambda: H.read_file(os.path.join(bob.folder, "kept.pdf"))) \
            == b"written in format 1"
        # A second run changes nothing.
        p = admin("upgrade", v.dir, vault=v)
        assert "0 folder(s) signed now" in p.stdout, p.stdout
        # The upgraded vault rotates by its signed state.
        admin("revoke", H.FOLDER, "bob", v.dir, vault=v)
        assert holders(rows, fid, 2) == {H.ACCOUNT: 7}
    finally:
        for m in mounts.values():
            finish(m)
