"""Accounts, roles, the signed registry and grants, through real mounts
(docs/accounts.md).

One vault may be mounted once per machine, so the accounts take turns:
alice (dataadmin, user, made by init), alice-admin (sysadmin, made by init)
and bob (user, added by the sysadmin).
"""
import errno
import json
import os
import sqlite3

import pytest

import pactfs_helpers as H

ADMIN = H.ACCOUNT + "-admin"
BOB = "bob"
BOB_PASSWORD = "bob's own long passphrase 7"
EXIT_USAGE, EXIT_ACCESS, EXIT_INTEGRITY = 2, 13, 14


AccountMount = H.AccountMount


def finish(v):
    try:
        if H.is_mounted(v.mnt) or v.daemon_pid:
            v.unmount(check=True)
    finally:
        v.emergency_teardown()
    reports = H.sanitizer_reports(v.logdir)
    assert not reports, "sanitizer reports:\n" + "\n".join(reports)


@pytest.fixture
def accounts(new_vault):
    """The vault with bob added; mounts for alice, alice-admin and bob."""
    v = new_vault
    bob_pw = os.path.join(v.base, "bob.pass")
    with open(bob_pw, "w") as f:
        f.write(BOB_PASSWORD + "\n")
    admin("account-add", BOB, v.dir, "--role", "user", "--new-passfile", bob_pw,
          "--account", ADMIN, vault=v)
    mounts = {BOB: AccountMount(v, BOB, bob_pw), ADMIN: AccountMount(v, ADMIN, v.passfile)}
    yield v, mounts
    for m in mounts.values():
        finish(m)


def admin(*args, vault, expect=0):
    """pactfs-admin as ACCOUNT's password holder (alice's passfile is also the
    default sysadmin's); fails the test on another exit code."""
    argv = list(args)
    if "--passfile" not in argv:
        argv += ["--passfile", vault.passfile]
    p = vault.admin(*argv)
    assert p.returncode == expect, "pactfs-admin %s -> exit %d (want %d)\n%s%s" % (
        " ".join(map(str, args)), p.returncode, expect, p.stdout, p.stderr)
    return p


def db(v):
    return sqlite3.connect(os.path.join(v.dir, "meta.db"), timeout=30)


def account_id(v, name):
    with db(v) as c:
        return c.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()[0]


def audit_events(v):
    with open(v.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


def with_mount(m, fn):
    m.mount()
    try:
        return fn()
    finally:
        m.unmount()


def test_grant_read_write_revoke_and_rotation(accounts):
    v, mounts = accounts
    bob = mounts[BOB]
    old = H.seeded_bytes(1, 300000)

    v.mount()
    H.write_file(v.path("old.pdf"), old, fsync=True)
    v.unmount()

    # No envelope: the top level is empty.
    assert with_mount(bob, lambda: os.listdir(bob.mnt)) == []

    # read: the folder appears and reads work; with only read grants the
    # mount is read-only.
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)

    def read_only_checks():
        assert os.listdir(bob.mnt) == [H.FOLDER]
        assert H.read_file(os.path.join(bob.folder, "old.pdf")) == old
        with pytest.raises(OSError) as e:
            H.write_file(os.path.join(bob.folder, "new-by-bob.txt"), b"x")
        assert e.value.errno == errno.EROFS
    with_mount(bob, read_only_checks)

    # With a writable folder beside it, a write to the read-only folder is
    # EACCES and audited as denied.
    admin("folder-create", "Sales", v.dir, vault=v)
    admin("grant", "Sales", BOB, "read,write", v.dir, vault=v)

    def mixed_checks():
        assert sorted(os.listdir(bob.mnt)) == [H.FOLDER, "Sales"]
        H.write_file(os.path.join(bob.mnt, "Sales", "offer.txt"), b"ok", fsync=True)
        with pytest.raises(PermissionError):
            H.write_file(os.path.join(bob.folder, "new-by-bob.txt"), b"x")
    with_mount(bob, mixed_checks)
    denied = [e for e in audit_events(v) if e["account"] == BOB and e["result"] == "denied"]
    assert denied, "no denied event for bob's write in audit.log"

    # read,write: bob writes.
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    with_mount(bob, lambda: H.write_file(os.path.join(bob.folder, "bob.txt"), b"by bob",
                                         fsync=True))
    bob_id = account_id(v, BOB)
    with db(v) as c:
        (contracts_id,) = c.execute("SELECT folder_id FROM envelopes WHERE account_id = ? "
                                    "ORDER BY folder_id LIMIT 1", (bob_id,)).fetchone()
        saved = c.execute("SELECT folder_id, account_id, key_version, rights, granted_by, "
                          "wrapped FROM envelopes WHERE account_id = ? AND folder_id = ?",
                          (bob_id, contracts_id)).fetchall()
    assert [r[2] for r in saved] == [1]

    # revoke: bob's envelopes go, the folder key rotates to version 2.
    admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
    ops = [e["op"] for e in audit_events(v) if e["account"] == H.ACCOUNT]
    assert "revoke" in ops and "key-rotation" in ops and "grant" in ops
    assert with_mount(bob, lambda: os.listdir(bob.mnt)) == ["Sales"]

    v.mount()
    assert H.read_file(v.path("bob.txt")) == b"by bob"      # old data stays readable
    H.write_file(v.path("after.pdf"), b"written after the revoke", fsync=True)
    ino = os.stat(v.path("after.pdf")).st_ino
    v.unmount()
    with db(v) as c:
        (kv,) = c.execute("SELECT key_version FROM inodes WHERE ino = ?", (ino,)).fetchone()
        (cur,) = c.execute("SELECT key_version FROM folders WHERE id = ?",
                           (saved[0][0],)).fetchone()
    assert kv == 2 and cur == 2

    # The database operator replays bob's old envelope: it opens key
    # version 1 only, so the file written after the revoke stays shut (even
    # its name, encrypted under version 2, does not decrypt).
    with db(v) as c:
        c.executemany("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?)", saved)

    def replayed_checks():
        assert sorted(os.listdir(bob.mnt)) == [H.FOLDER, "Sales"]
        assert H.read_file(os.path.join(bob.folder, "old.pdf")) == old
        assert "after.pdf" not in os.listdir(bob.folder)
        with pytest.raises(OSError) as e:
            H.read_file(os.path.join(bob.folder, "after.pdf"))
        assert e.value.errno in (errno.ENOENT, errno.EACCES, errno.EIO)
    with_mount(bob, replayed_checks)


def test_sysadmin_cannot_grant(accounts):
    v, mounts = accounts
    p = admin("grant", H.FOLDER, BOB, "read", v.dir, "--account", ADMIN, vault=v,
              expect=EXIT_ACCESS)
    assert "not a dataadmin" in p.stderr
    # Cryptographically: the sysadmin holds no envelope, so it has no folder
    # key to wrap, and its mount shows nothing.
    admin_id = account_id(v, ADMIN)
    with db(v) as c:
        assert c.execute("SELECT COUNT(*) FROM envelopes WHERE account_id = ?",
                         (admin_id,)).fetchone()[0] == 0
    assert with_mount(mounts[ADMIN], lambda: os.listdir(mounts[ADMIN].mnt)) == []
    # Nor can a plain user who is no member, nor can a dataadmin grant a folder it lacks.
    admin("grant", "Nonexistent", BOB, "read", v.dir, vault=v, expect=EXIT_ACCESS)


def test_registry_tampering_refused(accounts):
    v, mounts = accounts
    bob = mounts[BOB]
    bob_id = account_id(v, BOB)
    with db(v) as c:
        alice_pub, alice_sealed = c.execute(
            "SELECT pubkey, sealed_key FROM accounts WHERE name = ?", (H.ACCOUNT,)).fetchone()
        bob_pub, bob_roles = c.execute("SELECT pubkey, roles FROM accounts WHERE id = ?",
                                       (bob_id,)).fetchone()

    def refused(what):
        p = bob.mount(check=False)
        assert p.returncode == EXIT_INTEGRITY, "%s: mount -> %d\n%s" % (what, p.returncode,
                                                                         p.stderr)
        assert "registry" in p.stderr, p.stderr
        p = admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v, expect=EXIT_INTEGRITY)
        assert "registry" in p.stderr or "does not verify" in p.stderr, p.stderr

    # A swapped public key (the operator's own key would get the envelope).
    with db(v) as c:
        c.execute("UPDATE accounts SET pubkey = ? WHERE id = ?", (alice_pub, bob_id))
    refused("swapped public key")
    # A flipped role.
    with db(v) as c:
        c.execute("UPDATE accounts SET pubkey = ?, roles = 2 WHERE id = ?", (bob_pub, bob_id))
    refused("flipped role")
    with db(v) as c:
        c.execute("UPDATE accounts SET roles = ? WHERE id = ?", (bob_roles, bob_id))
    # An account slipped in by the operator cannot receive a grant.
    with db(v) as c:
        c.execute("INSERT INTO accounts (name, roles, disabled, pubkey, sealed_key, created) "
                  "VALUES ('mallory', 8, 0, ?, ?, 0)", (alice_pub, alice_sealed))
    p = admin("grant", H.FOLDER, "mallory", "read", v.dir, vault=v, expect=EXIT_INTEGRITY)
    assert "no signed registry record" in p.stderr, p.stderr
    p = v.admin("accounts", v.dir)
    assert "mallory" in p.stdout and "NOT VERIFIED" in p.stdout
    # Restored, bob works again.
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    assert with_mount(bob, lambda: os.listdir(bob.mnt)) == [H.FOLDER]


def test_forged_grant_ignored(accounts):
    """An envelope row whose rights were raised in the database is ignored."""
    v, mounts = accounts
    bob = mounts[BOB]
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    with db(v) as c:
        c.execute("UPDATE envelopes SET rights = 3 WHERE account_id = ?", (account_id(v, BOB),))
    bob.mount_foreground()
    try:
        assert os.listdir(bob.mnt) == []
    finally:
        bob.unmount()
    assert "grant does not verify" in bob.read_fg_log()


def test_role_conflict_refused(accounts, tmp_path):
    v, _ = accounts
    p = admin("account-add", "carol", v.dir, "--role", "sysadmin,dataadmin", "--new-passfile",
              v.passfile, "--account", ADMIN, vault=v, expect=EXIT_USAGE)
    assert "both sysadmin and dataadmin" in p.stderr
    p = admin("account-role", H.ACCOUNT, v.dir, "--role", "sysadmin", "--account", ADMIN,
              vault=v, expect=3)
    assert "holds folder envelopes" in p.stderr
    # A dataadmin cannot manage accounts at all.
    admin("account-add", "carol", v.dir, "--role", "user", "--new-passfile", v.passfile,
          vault=v, expect=EXIT_ACCESS)
    # init refuses one account for both jobs.
    other = H.Vault(tmp_path, name="other")
    p = other.init("--sysadmin", H.ACCOUNT, check=False)
    assert p.returncode == 3 and "sysadmin and the data account" in p.stderr, p.stderr


def test_read_only_mount_rename_and_disable(accounts):
    v, mounts = accounts
    bob = mounts[BOB]
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    bob.mount(extra=["-r"])
    try:
        assert os.listdir(bob.folder) == []
        with pytest.raises(OSError) as e:
            H.write_file(os.path.join(bob.folder, "x"), b"x")
        assert e.value.errno in (errno.EROFS, errno.EACCES)
    finally:
        bob.unmount()

    # Rename: the account keeps its key, password and grants.
    admin("account-rename", BOB, "robert", v.dir, "--account", ADMIN, vault=v)
    bob.account = "robert"
    assert with_mount(bob, lambda: os.listdir(bob.mnt)) == [H.FOLDER]
    p = v.admin("accounts", v.dir)
    names = [line.split()[0] for line in p.stdout.splitlines()[1:]]
    assert "robert" in names and BOB not in names

    # Disable: refused at unlock.
    admin("account-disable", "robert", v.dir, "--account", ADMIN, vault=v)
    p = bob.mount(check=False)
    assert p.returncode == EXIT_ACCESS and "disabled" in p.stderr, p.stderr
    ops = {e["op"] for e in audit_events(v) if e["account"] == ADMIN}
    assert {"account-create", "account-rename", "account-disable"} <= ops
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
