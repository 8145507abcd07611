"""Accounts, roles, the signed registry and grants, through real mounts
(docs/accounts.md).

One vault may be mounted once per machine, so the accounts take turns:
alice (dataadmin, user, made by init), alice-admin (sysadmin, made by init)
and bob (user, added by the sysadmin).
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import pactfs_helpers as H
from test_pg import finish as pg_finish, pg  # noqa: F401  (the session's PostgreSQL)
from test_keyd import hkdf
from test_memory import needs_plain_heap, writable_memory

ADMIN = H.ACCOUNT + "-admin"
BOB = "bob"
BOB_PASSWORD = "my own long passphrase 7, kept"
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
    add_and_enrol(v, BOB, bob_pw)
    mounts = {BOB: AccountMount(v, BOB, bob_pw), ADMIN: AccountMount(v, ADMIN, v.passfile)}
    yield v, mounts
    for m in mounts.values():
        finish(m)


def add_account(v, name, *extra, role="user"):
    """account-add by the sysadmin; returns the enrolment code it printed."""
    p = admin("account-add", name, v.dir, "--role", role, "--account", ADMIN, *extra, vault=v)
    m = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M)
    assert m, "no enrolment code in:\n" + p.stdout
    return m.group(1)


def enrol(v, name, code, passfile, expect=0):
    """pactfs-admin enroll as the account's owner would run it."""
    codefile = os.path.join(v.base, name + ".code")
    with open(codefile, "w") as f:
        f.write(code + "\n")
    p = v.admin("enroll", name, v.dir, "--code-file", codefile, "--new-passfile", passfile)
    assert p.returncode == expect, "enroll %s -> exit %d (want %d)\n%s%s" % (
        name, p.returncode, expect, p.stdout, p.stderr)
    return p


def add_and_enrol(v, name, passfile, role="user"):
    enrol(v, name, add_account(v, name, role=role), passfile)


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

    # The database operator replays bob's old envelope: bob is no member by
    # the folder's signed state any more, so the row is ignored (with a
    # "tamper" audit event) and the folder does not even appear; the file
    # written after the revoke stays shut in any case.
    with db(v) as c:
        c.executemany("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?)", saved)

    def replayed_checks():
        assert sorted(os.listdir(bob.mnt)) == ["Sales"]
        with pytest.raises(OSError) as e:
            H.read_file(os.path.join(bob.folder, "after.pdf"))
        assert e.value.errno in (errno.ENOENT, errno.EACCES, errno.EIO)
    with_mount(bob, replayed_checks)
    assert [e for e in audit_events(v) if e["account"] == BOB and e["op"] == "tamper"]


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
    # And it mounts no data at all (roles: only user and dataadmin mount).
    p = mounts[ADMIN].mount(check=False)
    assert p.returncode == EXIT_ACCESS and "no data role" in p.stderr, p.stderr
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
    p = admin("account-add", "carol", v.dir, "--role", "sysadmin,dataadmin",
              "--account", ADMIN, vault=v, expect=EXIT_USAGE)
    assert "both sysadmin and dataadmin" in p.stderr
    p = admin("account-role", H.ACCOUNT, v.dir, "--role", "sysadmin", "--account", ADMIN,
              vault=v, expect=3)
    assert "holds folder envelopes" in p.stderr
    # A dataadmin cannot manage accounts at all.
    admin("account-add", "carol", v.dir, "--role", "user", vault=v, expect=EXIT_ACCESS)
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


# ---------------------------------------------------------------- enrolment

EXIT_BAD_PASSWORD, EXIT_EXISTS = 4, 11


def sql(v, query, args=()):
    """One statement on a vault's (or a copy's) meta.db, connection closed
    after (the files are swapped under it by restore)."""
    c = sqlite3.connect(v if isinstance(v, str) else os.path.join(v.dir, "meta.db"),
                        timeout=30)
    try:
        with c:
            return c.execute(query, args).fetchall()
    finally:
        c.close()


def snapshot(v, where):
    """What the sysadmin (who also runs the machine's disks) keeps: the
    metadata store and the local key directory."""
    os.makedirs(where)
    shutil.copy2(os.path.join(v.dir, "meta.db"), where)
    shutil.copytree(os.path.join(v.dir, "keys"), os.path.join(where, "keys"))


def restore(v, where, keys=True, meta=True):
    if meta:
        for suffix in ("-wal", "-shm"):
            p = os.path.join(v.dir, "meta.db" + suffix)
            if os.path.exists(p):
                os.unlink(p)
        shutil.copy2(os.path.join(where, "meta.db"), os.path.join(v.dir, "meta.db"))
    if keys:
        shutil.rmtree(os.path.join(v.dir, "keys"))
        shutil.copytree(os.path.join(where, "keys"), os.path.join(v.dir, "keys"))


def share_file_name(v, account):
    """The local key directory's file of an account (share_local.c)."""
    with open(v.conf) as f:
        vault_id = re.search(r'^\s*id = "([0-9a-f]+)";', f.read(), re.M).group(1)
    return hashlib.sha256((vault_id + "/" + account).encode()).hexdigest()


def test_enrolment_code_is_single_use_and_checked(new_vault):
    v = new_vault
    carol_pw = os.path.join(v.base, "carol.pass")
    with open(carol_pw, "w") as f:
        f.write("an own passphrase, 2 words more\n")
    code = add_account(v, "carol", "--full-name", "Carol C", "--email", "carol@example.com",
                       "--department", "Legal")
    # Pending: listed as such, no key in the row, no grant possible.
    p = v.admin("accounts", v.dir)
    assert re.search(r"^carol .*enrolment pending", p.stdout, re.M), p.stdout
    with db(v) as c:
        assert c.execute("SELECT length(pubkey), length(sealed_key) FROM accounts WHERE "
                         "name = 'carol'").fetchone() == (0, 0)
    p = admin("grant", H.FOLDER, "carol", "read", v.dir, vault=v, expect=EXIT_ACCESS)
    assert "not enrolled" in p.stderr, p.stderr
    # A wrong code (one letter changed) is refused; the right one works once.
    wrong = ("A" if code[0] != "A" else "B") + code[1:]
    p = enrol(v, "carol", wrong, carol_pw, expect=EXIT_BAD_PASSWORD)
    assert "wrong enrolment code" in p.stderr, p.stderr
    p = enrol(v, "carol", code, carol_pw)
    fp = re.search(r"^([0-9a-f]{64})$", p.stdout, re.M).group(1)
    p = enrol(v, "carol", code, carol_pw, expect=EXIT_EXISTS)
    assert "works once" in p.stderr, p.stderr
    admin("grant", H.FOLDER, "carol", "read", v.dir, vault=v)
    carol = AccountMount(v, "carol", carol_pw)
    try:
        assert with_mount(carol, lambda: os.listdir(carol.mnt)) == [H.FOLDER]
    finally:
        finish(carol)
    # The enrolment is audited under carol's new key, with its fingerprint.
    ev = [e for e in audit_events(v) if e["op"] == "account-enrol" and e["account"] == "carol"]
    assert [e.get("errno") or e["result"] for e in ev] == ["EKEYREJECTED", "ok", "EEXIST"], ev
    assert fp in ev[1]["path"], ev
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr


def test_forged_enrolment_refused(accounts):
    """The database operator cannot bind a key of its own to a registered
    account: neither by swapping the row's key nor by a proof of its own."""
    v, mounts = accounts
    bob = mounts[BOB]
    bob_id = account_id(v, BOB)
    with db(v) as c:
        alice = c.execute("SELECT id, pubkey, sealed_key FROM accounts WHERE name = ?",
                          (H.ACCOUNT,)).fetchone()
        (proof,) = c.execute("SELECT value FROM params WHERE key = ?",
                             ("registry.enrol.%d" % bob_id,)).fetchone()
        (alice_proof,) = c.execute("SELECT value FROM params WHERE key = ?",
                                   ("registry.enrol.%d" % alice[0],)).fetchone()
        bob_row = c.execute("SELECT pubkey, sealed_key FROM accounts WHERE id = ?",
                            (bob_id,)).fetchone()
        # alice's key and proof put on bob (the operator's "own" enrolled key).
        c.execute("UPDATE accounts SET pubkey = ?, sealed_key = ? WHERE id = ?",
                  (alice[1], alice[2], bob_id))
        c.execute("UPDATE params SET value = ? WHERE key = ?",
                  (alice_proof, "registry.enrol.%d" % bob_id))
    p = admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v, expect=EXIT_INTEGRITY)
    assert "enrolment proof" in p.stderr, p.stderr
    # A flipped byte in bob's own proof.
    bad = bytearray(proof)
    bad[-5] ^= 1
    with db(v) as c:
        c.execute("UPDATE accounts SET pubkey = ?, sealed_key = ? WHERE id = ?",
                  (bob_row[0], bob_row[1], bob_id))
        c.execute("UPDATE params SET value = ? WHERE key = ?",
                  (bytes(bad), "registry.enrol.%d" % bob_id))
    p = bob.mount(check=False)
    assert p.returncode == EXIT_INTEGRITY and "enrolment proof" in p.stderr, p.stderr
    with db(v) as c:
        c.execute("UPDATE params SET value = ? WHERE key = ?",
                  (proof, "registry.enrol.%d" % bob_id))
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)


def test_sysadmin_cannot_open_enrolled_account(new_vault):
    """The sysadmin registers dave, keeps copies of the metadata store and of
    the key directory at every step, and tries every password it knows (its
    own, the code) on every copy: nothing opens.  dave changes his password;
    his older sealed key put back opens nothing even with his old password
    (the share was replaced).  A re-registration by the sysadmin gives a new
    key that opens none of dave's folders, and is audited."""
    v = new_vault
    snaps = os.path.join(v.base, "snaps")
    dave_pw = os.path.join(v.base, "dave.pass")
    dave_pw2 = os.path.join(v.base, "dave2.pass")
    with open(dave_pw, "w") as f:
        f.write("the first passphrase of six words\n")
    with open(dave_pw2, "w") as f:
        f.write("the second passphrase, also long\n")
    code = add_account(v, "dave")
    code_pw = os.path.join(v.base, "code.pass")
    with open(code_pw, "w") as f:
        f.write(code + "\n")
    snapshot(v, os.path.join(snaps, "registered"))
    enrol(v, "dave", code, dave_pw)
    admin("grant", H.FOLDER, "dave", "read,write", v.dir, vault=v)
    dave = AccountMount(v, "dave", dave_pw)
    try:
        with_mount(dave, lambda: H.write_file(os.path.join(dave.folder, "dave.txt"),
                                              b"dave's contract", fsync=True))
        snapshot(v, os.path.join(snaps, "enrolled"))
        p = admin("passwd", v.dir, "--account", "dave", "--passfile", dave_pw,
                  "--new-passfile", dave_pw2, vault=v)
        snapshot(v, os.path.join(snaps, "changed"))
        ((old_sealed,),) = sql(v, "SELECT sealed_key FROM accounts WHERE name = 'dave'")
        # passwd replaced the share itself, not only its verifier.
        share_file = share_file_name(v, "dave")
        shares = []
        for snap in ("enrolled", "changed"):
            with open(os.path.join(snaps, snap, "keys", share_file), "rb") as f:
                shares.append(f.read()[5:37])
        assert shares[0] != shares[1]
        sysadmin_knows = [v.passfile, code_pw]
        for snap in ("registered", "enrolled", "changed"):
            restore(v, os.path.join(snaps, snap))
            for pw in sysadmin_knows:
                p = dave.pactfs(*dave.mount_args(passfile=pw))
                assert p.returncode != 0, "%s: dave opened with %s" % (snap, pw)
                assert not H.is_mounted(dave.mnt)
        # The older sealed key (from before the password change) with dave's
        # old password: its share is gone, so nothing opens.
        restore(v, os.path.join(snaps, "changed"))
        ((enrolled_sealed,),) = sql(os.path.join(snaps, "enrolled", "meta.db"),
                                    "SELECT sealed_key FROM accounts WHERE name = 'dave'")
        assert enrolled_sealed != old_sealed
        sql(v, "UPDATE accounts SET sealed_key = ? WHERE name = 'dave'", (enrolled_sealed,))
        p = dave.pactfs(*dave.mount_args(passfile=dave_pw))
        assert p.returncode == EXIT_BAD_PASSWORD, p.stdout + p.stderr
        # Put right, dave opens with the new password.
        sql(v, "UPDATE accounts SET sealed_key = ? WHERE name = 'dave'", (old_sealed,))
        dave.account_pass = dave_pw2
        assert with_mount(dave, lambda: H.read_file(os.path.join(dave.folder, "dave.txt"))) \
            == b"dave's contract"

        # Takeover by re-registration: a new key, none of dave's folders.
        p = admin("account-reenrol", "dave", v.dir, "--account", ADMIN, vault=v)
        code2 = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)
        p = dave.pactfs(*dave.mount_args(passfile=dave_pw2))
        assert p.returncode != 0, "the old key still opens after re-registration"
        enrol(v, "dave", code2, v.passfile)
        dave.account_pass = v.passfile
        assert with_mount(dave, lambda: os.listdir(dave.mnt)) == []
        ops = [(e["account"], e["op"]) for e in audit_events(v)]
        assert (ADMIN, "account-reenrol") in ops and ("dave", "account-enrol") in ops
    finally:
        finish(dave)


def test_expired_account_refused(new_vault):
    v = new_vault
    pw = os.path.join(v.base, "erin.pass")
    with open(pw, "w") as f:
        f.write("a passphrase, long enough for it\n")
    enrol(v, "erin", add_account(v, "erin", "--expires", "2001-01-01"), pw)
    erin = AccountMount(v, "erin", pw)
    try:
        p = erin.mount(check=False)
        assert p.returncode == EXIT_ACCESS and "expired" in p.stderr, p.stderr
    finally:
        finish(erin)


# ---------------------------------------------------------- password policy

EXIT_POLICY = 18


def passfile(v, name, text):
    p = os.path.join(v.base, name)
    with open(p, "w") as f:
        f.write(text + "\n")
    return p


def test_password_policy(accounts):
    v, mounts = accounts
    bob = mounts[BOB]
    # Enrolment: too short, a dictionary word, the account's name.
    code = add_account(v, "frank")
    for pw, why in (("a", "fewer than 12"), ("dictionary12", "dictionary"),
                    ("frank-frank-frank", "user name")):
        p = enrol(v, "frank", code, passfile(v, "f.pass", pw), expect=EXIT_POLICY)
        assert why in p.stderr, p.stderr
    refused = [e for e in audit_events(v) if e["op"] == "account-enrol" and
               e["account"] == "frank"]
    assert len(refused) == 3 and all(e.get("errno") == "EDOM" for e in refused), refused
    enrol(v, "frank", code, passfile(v, "f.pass", "quite a long and odd passphrase"))

    # passwd: no reuse of the current or an earlier password.
    pw2 = passfile(v, "bob2.pass", "second long passphrase for the test")
    admin("passwd", v.dir, "--account", BOB, "--passfile", bob.account_pass,
          "--new-passfile", pw2, vault=v)
    p = admin("passwd", v.dir, "--account", BOB, "--passfile", pw2, "--new-passfile",
              bob.account_pass, vault=v, expect=EXIT_POLICY)
    assert "used before" in p.stderr, p.stderr
    p = admin("passwd", v.dir, "--account", BOB, "--passfile", pw2, "--new-passfile",
              pw2, vault=v, expect=EXIT_POLICY)
    ev = [e for e in audit_events(v) if e["op"] == "password-change" and e["account"] == BOB]
    assert [e.get("errno") or e["result"] for e in ev] == ["ok", "EDOM", "EDOM"], ev
    # The history holds keyed hashes only: no plain SHA-256 of a password.
    ((hist,),) = sql(v, "SELECT value FROM params WHERE key = ?",
                     ("account.pwhistory.%d" % account_id(v, BOB),))
    assert len(hist) == 64
    for pw in (BOB_PASSWORD, "second long passphrase for the test"):
        assert hashlib.sha256(pw.encode()).digest() not in hist

    # The sysadmin raises the minimum; a dataadmin cannot change the policy.
    admin("password-policy", v.dir, "--min-length", "40", vault=v, expect=EXIT_ACCESS)
    admin("password-policy", v.dir, "--min-length", "40", "--account", ADMIN, vault=v)
    p = v.admin("password-policy", v.dir)
    assert "min-length=40" in p.stdout, p.stdout + p.stderr
    p = admin("passwd", v.dir, "--account", BOB, "--passfile", pw2, "--new-passfile",
              passfile(v, "bob3.pass", "a third one, long but not forty"), vault=v,
              expect=EXIT_POLICY)
    assert "fewer than 40" in p.stderr, p.stderr
    assert any(e["op"] == "policy-change" and e["account"] == ADMIN for e in audit_events(v))
    # The database operator lowers it: the signature no longer verifies and
    # nothing is accepted until a sysadmin sets it again.
    ((raw,),) = sql(v, "SELECT value FROM params WHERE key = 'policy.password'")
    forged = bytearray(raw)
    i = forged.find(bytes([0, 0, 0, 40]))
    forged[i + 3] = 8
    sql(v, "UPDATE params SET value = ? WHERE key = 'policy.password'", (bytes(forged),))
    p = admin("passwd", v.dir, "--account", BOB, "--passfile", pw2, "--new-passfile",
              passfile(v, "bob4.pass", "short one 9"), vault=v, expect=EXIT_INTEGRITY)
    assert "policy does not verify" in p.stderr, p.stderr


# ------------------------------------------------------ separation of duties

EXIT_DUTY = 19


def duty_events(v, op):
    return [e for e in audit_events(v) if e["op"] == op and e["account"] == ADMIN]


def test_last_dataadmin_is_protected(accounts):
    """A sysadmin alone cannot cut all data management: the last enabled,
    enrolled dataadmin is neither demoted nor disabled (exit 19, audited)."""
    v, _ = accounts
    for args in (("account-role", H.ACCOUNT, v.dir, "--role", "user"),
                 ("account-disable", H.ACCOUNT, v.dir)):
        p = admin(*args, "--account", ADMIN, vault=v, expect=EXIT_DUTY)
        assert "last enabled dataadmin" in p.stderr, p.stderr
    assert duty_events(v, "role-change")[-1].get("errno") == "ECANCELED"
    assert duty_events(v, "account-disable")[-1].get("errno") == "ECANCELED"

    # A registered dataadmin that has not enrolled does not count.
    add_account(v, "dave", role="dataadmin,user")
    admin("account-role", H.ACCOUNT, v.dir, "--role", "user", "--account", ADMIN, vault=v,
          expect=EXIT_DUTY)
    # Nor does one the database operator (or the sysadmin editing meta.db)
    # makes up: bob's row flipped to dataadmin,user does not verify.
    sql(v, "UPDATE accounts SET roles = 10 WHERE name = ?", (BOB,))
    admin("account-role", H.ACCOUNT, v.dir, "--role", "user", "--account", ADMIN, vault=v,
          expect=EXIT_DUTY)
    sql(v, "UPDATE accounts SET roles = 8 WHERE name = ?", (BOB,))

    # With a second enrolled dataadmin the first can go, and then the
    # second is the last one.
    carol_pw = passfile(v, "carol.pass", "a colourful long passphrase 3")
    add_and_enrol(v, "carol", carol_pw, role="dataadmin,user")
    admin("account-role", H.ACCOUNT, v.dir, "--role", "user", "--account", ADMIN, vault=v)
    p = admin("account-disable", "carol", v.dir, "--account", ADMIN, vault=v,
              expect=EXIT_DUTY)
    assert '"carol" is the last enabled dataadmin' in p.stderr, p.stderr
    p = v.admin("accounts", v.dir)
    assert re.search(r"^%s\s+user\b" % re.escape(H.ACCOUNT), p.stdout, re.M), p.stdout


def envelope_row(v, name):
    return sql(v, "SELECT e.wrapped, e.rights, e.granted_by FROM envelopes e JOIN accounts a "
               "ON a.id = e.account_id WHERE a.name = ?", (name,))


def test_demoted_dataadmin_keeps_grants(accounts):
    """Grants and folder states signed by a dataadmin stay good after a
    sysadmin demotes it (its record lists them), and it can sign nothing
    new: its grant is refused, and an older signature of its own replayed
    by the database operator is ignored."""
    v, mounts = accounts
    bob = mounts[BOB]
    data = H.seeded_bytes(8, 70000)
    with_mount(v, lambda: H.write_file(v.path("deal.pdf"), data, fsync=True))
    carol_pw = passfile(v, "carol.pass", "a colourful long passphrase 3")
    add_and_enrol(v, "carol", carol_pw, role="dataadmin,user")
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    older = envelope_row(v, BOB)            # alice's signature while a dataadmin
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    admin("grant", H.FOLDER, "carol", "read,write,manage", v.dir, vault=v)

    p = admin("account-role", H.ACCOUNT, v.dir, "--role", "user", "--account", ADMIN, vault=v)
    assert re.search(r"keeps the \d+ grants and folder states", p.stdout), p.stdout

    # bob's grant (signed by alice) still mounts and reads; so does alice's own.
    assert with_mount(bob, lambda: H.read_file(os.path.join(bob.folder, "deal.pdf"))) == data
    assert with_mount(v, lambda: H.read_file(v.path("deal.pdf"))) == data

    # The demoted account grants nothing any more.
    p = admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v, expect=EXIT_ACCESS)
    assert "dataadmin" in p.stderr, p.stderr

    # alice's earlier, replaced grant (read,write) put back by the database
    # operator: a genuine signature of hers, but not one she held when
    # demoted, so bob's row is ignored.
    current = envelope_row(v, BOB)
    sql(v, "UPDATE envelopes SET wrapped = ?, rights = ? WHERE account_id = ?",
        (older[0][0], older[0][1], account_id(v, BOB)))
    assert with_mount(bob, lambda: os.listdir(bob.mnt)) == []
    sql(v, "UPDATE envelopes SET wrapped = ?, rights = ? WHERE account_id = ?",
        (current[0][0], current[0][1], account_id(v, BOB)))

    # carol manages through alice's kept grant: her grant to bob works.
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, "--account", "carol",
          "--passfile", carol_pw, vault=v)
    bob.mount()
    try:
        H.write_file(os.path.join(bob.folder, "by-bob.txt"), b"bob", fsync=True)
        assert H.read_file(os.path.join(bob.folder, "deal.pdf")) == data
    finally:
        bob.unmount()


def test_auditor_verifies_but_mounts_no_data(accounts):
    """Roles are enforced: an auditor verifies the audit trail but mounts no
    data (exit 13, audited as a denied mount); a user with only read grants
    (a backup account) mounts read-only."""
    v, mounts = accounts
    pw = passfile(v, "audrey.pass", "an auditor's long passphrase 5")
    add_and_enrol(v, "audrey", pw, role="auditor")
    audrey = AccountMount(v, "audrey", pw)
    p = audrey.mount(check=False)
    try:
        assert p.returncode == EXIT_ACCESS, p.stdout + p.stderr
        assert 'account "audrey" has the role auditor and no data role' in p.stderr, p.stderr
        assert not H.is_mounted(audrey.mnt)
    finally:
        finish(audrey)
    denied = [e for e in audit_events(v) if e["op"] == "mount" and e["account"] == "audrey"]
    assert denied and denied[-1]["result"] == "denied", denied
    # Its refusal is part of a signed session the auditor itself verifies.
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    # An auditor who is also a user mounts (the role it has for data).
    admin("account-role", "audrey", v.dir, "--role", "auditor,user", "--account", ADMIN,
          vault=v)
    admin("grant", H.FOLDER, "audrey", "read", v.dir, vault=v)
    assert with_mount(audrey, lambda: os.listdir(audrey.mnt)) == [H.FOLDER]
    # A backup account: a user with a read grant, mounted read-only.
    bob = mounts[BOB]
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    bob.mount(extra=["-r"])
    try:
        assert os.listdir(bob.mnt) == [H.FOLDER]
    finally:
        bob.unmount()


def show(name, v, *extra, expect=0):
    """account-show needs no password."""
    p = v.admin("account-show", name, v.dir, *extra)
    assert p.returncode == expect, p.stdout + p.stderr
    return p


def test_access_review(accounts):
    """account-show and folder-members say what the verified state says:
    roles, status, enrolment and key fingerprint, who granted which rights
    and when; rows that do not verify are not shown as rights."""
    v, _ = accounts
    carol_pw = passfile(v, "carol.pass", "a colourful long passphrase 3")
    code = add_account(v, "carol", "--full-name", "Carol Jones", "--email", "carol@example.com",
                       "--department", "Legal", "--expires", "2099-01-31")
    p = enrol(v, "carol", code, carol_pw)
    fp = re.search(r"\b([0-9a-f]{64})\b", p.stdout + p.stderr).group(1)
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    admin("grant", H.FOLDER, "carol", "read,write", v.dir, vault=v)

    p = show("carol", v, "--json")
    c = json.loads(p.stdout)
    assert c["verified"] and c["roles"] == ["user"] and c["status"] == "enabled", c
    assert (c["full_name"], c["email"], c["department"]) == (
        "Carol Jones", "carol@example.com", "Legal")
    assert c["expires"].startswith("2099-01-31"), c
    assert c["enrolment"]["state"] == "enrolled" and c["enrolment"]["key_fingerprint"] == fp
    assert c["record"]["signed_by"] == ADMIN
    [g] = c["grants"]
    assert (g["rights"], g["granted_by"], g["member"]) == ("read,write", H.ACCOUNT, True), g
    assert g["granted_at"].startswith(time.strftime("%Y-%m-%d", time.gmtime())), g
    p = show("carol", v)
    assert re.search(r"^status\s+enabled$", p.stdout, re.M), p.stdout
    assert "SHA-256 " + fp in p.stdout and "Carol Jones" in p.stdout, p.stdout

    p = admin("folder-members", H.FOLDER, v.dir, "--json", vault=v)
    f = json.loads(p.stdout)
    members = {m["account"]: m for m in f["members"]}
    assert set(members) == {H.ACCOUNT, BOB, "carol"}, members
    assert members[BOB]["rights"] == "read" and members[BOB]["granted_by"] == H.ACCOUNT
    assert members[H.ACCOUNT]["rights"] == "read,write,manage"
    assert f["state"]["signed_by"] == H.ACCOUNT
    p = admin("folder-members", H.FOLDER, v.dir, vault=v)
    assert re.search(r"^carol\s+read,write\s+enabled\s+%s\s+\d{4}-" % re.escape(H.ACCOUNT),
                     p.stdout, re.M), p.stdout

    # The database operator raises bob's rights in his row: not shown as
    # rights (the row does not verify; the state still says read).
    sql(v, "UPDATE envelopes SET rights = 7 WHERE account_id = ?", (account_id(v, BOB),))
    b = json.loads(show(BOB, v, "--json").stdout)
    assert b["grants"] == [] and b["unverified_rows"] == 1, b
    f = json.loads(admin("folder-members", H.FOLDER, v.dir, "--json", vault=v).stdout)
    bob = [m for m in f["members"] if m["account"] == BOB][0]
    assert bob["rights"] == "read" and bob["granted_by"] is None and "note" in bob, bob

    # A folder the acting account does not hold cannot be named.
    admin("folder-members", "Nope", v.dir, vault=v, expect=16)
    show("nobody", v, expect=16)
    # bob (a member) may review; a non-member sysadmin cannot name the folder.
    admin("folder-members", H.FOLDER, v.dir, "--account", "carol", "--passfile", carol_pw,
          vault=v)
    admin("folder-members", H.FOLDER, v.dir, "--account", ADMIN, vault=v, expect=16)


CHECK_S = 2       # accounts.revocation_check_seconds in the revocation test


def refused_within(fn, bound):
    """Call fn until it raises OSError; return (elapsed seconds, errno)."""
    t0 = time.monotonic()
    while True:
        try:
            fn()
        except OSError as e:
            return time.monotonic() - t0, e.errno
        assert time.monotonic() - t0 < bound, "still allowed after %.1f s" % bound
        time.sleep(0.1)


def test_revocation_reaches_running_mount(accounts):
    """A revoke, and an account-disable, reach a mount that is running: within
    accounts.revocation_check_seconds its folder keys are dropped, further
    reads fail with EACCES (an open file too), and the withdrawal and the
    denials are audited."""
    v, mounts = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    big = H.seeded_bytes(3, 3 * 1024 * 1024)
    with_mount(v, lambda: H.write_file(v.path("big.pdf"), big, fsync=True))
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    bob = mounts[BOB]
    path = os.path.join(bob.folder, "big.pdf")
    bob.mount_foreground()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == big[:4096]
            admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
            # an offset the kernel has not cached (nor read ahead) reaches the daemon
            offs = iter(range(len(big) - 4096, 0, -64 * 1024))
            took, err = refused_within(lambda: os.pread(fd, 4096, next(offs)), CHECK_S + 5)
            assert err == errno.EACCES, err
        finally:
            os.close(fd)
        assert took <= CHECK_S + 3, took
        # new opens fail, and the folder no longer appears
        with pytest.raises(OSError) as e:
            H.read_file(path)
        assert e.value.errno in (errno.EACCES, errno.ENOENT)
        assert os.listdir(bob.mnt) == []
    finally:
        bob.unmount()
    ev = [e for e in audit_events(v) if e["account"] == BOB]
    revoked = [e for e in ev if e["op"] == "access-revoked"]
    assert revoked and "revoked" in revoked[-1]["path"], revoked
    assert any(e["op"] == "read" and e["result"] == "denied" for e in ev), ev[-10:]
    assert "its keys are dropped from memory" in bob.read_fg_log()

    # account-disable reaches a running mount the same way.
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    bob.mount()
    try:
        assert H.read_file(path)[:10] == big[:10]
        admin("account-disable", BOB, v.dir, "--account", ADMIN, vault=v)
        took, err = refused_within(lambda: os.listdir(bob.folder), CHECK_S + 5)
        assert took <= CHECK_S + 3 and err in (errno.EACCES, errno.ENOENT), (took, err)
    finally:
        bob.unmount()
    ev = [e for e in audit_events(v) if e["account"] == BOB and e["op"] == "access-revoked"]
    assert "disabled" in ev[-1]["path"], ev


def wait_for_log(m, text, bound):
    """Wait until the mount's foreground log holds text; the seconds it took."""
    t0 = time.monotonic()
    while text not in m.read_fg_log():
        assert time.monotonic() - t0 < bound, "no %r in the mount's log after %.1f s:\n%s" % (
            text, bound, m.read_fg_log()[-2000:])
        time.sleep(0.05)
    return time.monotonic() - t0


MAP_READER = r"""
import hashlib, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
print(hashlib.sha256(mm[:]).hexdigest(), flush=True)
sys.stdin.readline()
print(hashlib.sha256(mm[:]).hexdigest(), flush=True)
"""


def test_revoked_mount_serves_nothing_from_the_kernel_cache(accounts):
    """After a revoke reaches a running mount, the kernel must not go on
    serving what it cached while the account was a member: pages of a file
    read through a descriptor that stays open, pages mapped by a process
    that keeps its mapping, and the names and attributes it looked up.  The
    mount tells the kernel to drop them, so each of these now reaches the
    daemon and is refused."""
    v, mounts = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    data = H.seeded_bytes(8, 256 * 1024)
    with_mount(v, lambda: H.write_file(v.path("cached.pdf"), data, fsync=True))
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    bob = mounts[BOB]
    path = os.path.join(bob.folder, "cached.pdf")
    bob.mount_foreground()
    reader = None
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            # the whole file is now in the kernel's page cache, its name
            # and attributes in the dentry and attribute caches
            assert os.pread(fd, len(data), 0) == data
            assert os.stat(path).st_size == len(data)
            reader = subprocess.Popen([sys.executable, "-c", MAP_READER, path],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            first = reader.stdout.readline().decode().strip()
            assert first == hashlib.sha256(data).hexdigest(), reader.stderr.read()
            admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
            wait_for_log(bob, "its keys are dropped from memory", CHECK_S + 5)
            # the same cached page through the descriptor that stayed open
            with pytest.raises(OSError) as e:
                got = os.pread(fd, 4096, 0)
                pytest.fail("the revoked mount returned %d cached bytes (%s)" % (
                    len(got), "the file's" if got == data[:4096] else "other"))
            assert e.value.errno == errno.EACCES, e.value
        finally:
            os.close(fd)
        # the mapping: its pages are gone, a fault is refused (SIGBUS)
        out, err = reader.communicate(b"\n", timeout=30)
        assert reader.returncode == -signal.SIGBUS, (
            "a mapping kept reading the revoked file (exit %s): %r %r" % (
                reader.returncode, out, err[-500:]))
        reader = None
        # the name and attributes the kernel had looked up are asked again
        with pytest.raises(OSError) as e:
            os.stat(path)
        assert e.value.errno in (errno.EACCES, errno.ENOENT), e.value
        assert os.listdir(bob.mnt) == []
    finally:
        if reader:
            reader.kill()
            reader.communicate()
        bob.unmount()
    ev = [e for e in audit_events(v) if e["account"] == BOB]
    assert any(e["op"] == "access-revoked" for e in ev), ev[-10:]
    assert any(e["op"] == "read" and e["result"] == "denied" for e in ev), ev[-10:]


@needs_plain_heap
def test_withdrawn_folder_leaves_no_plaintext_in_the_mount(accounts):
    """The mount's own plaintext cache of a withdrawn folder goes with its
    keys: the daemon's writable memory, read through /proc/PID/mem, holds
    the file's content while bob is a member (the positive control) and no
    piece of it once the revoke has reached the mount, although the file is
    still open."""
    v, mounts = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    data = os.urandom(256 * 1024)
    # from offset 0: with lazy binding, the first call through a PLT entry
    # after a copy saved the vector registers, 64 bytes of the file's start,
    # in a thread's stack (fixed by linking with -z now; docs/accounts.md)
    offsets = range(0, len(data), 32 * 1024)
    pieces = [data[i:i + 48] for i in offsets]
    bob, path = bob_mounted_on_a_file(v, mounts, "plain.pdf", data, "read")
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, len(data), 0) == data
            memory = writable_memory(bob.fg_proc.pid)
            held = [p for p in pieces if any(p in c for c in memory)]
            assert len(held) == len(pieces), "the dump does not show the cached content"
            admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
            wait_for_log(bob, "its keys are dropped from memory", CHECK_S + 5)
            memory = writable_memory(bob.fg_proc.pid)
            held = [o for o, p in zip(offsets, pieces) if any(p in c for c in memory)]
            assert not held, "%d of %d pieces of the withdrawn file (at offsets %s) are " \
                "still in the mount's memory" % (len(held), len(pieces), held)
        finally:
            os.close(fd)
    finally:
        bob.unmount()


def bob_mounted_on_a_file(v, mounts, name, data, rights):
    """alice writes name (fsync'd), bob is granted rights on the folder and
    mounts in the foreground: bob's mount and the file's path in it."""
    with_mount(v, lambda: H.write_file(v.path(name), data, fsync=True))
    admin("grant", H.FOLDER, BOB, rights, v.dir, vault=v)
    bob = mounts[BOB]
    bob.mount_foreground()
    return bob, os.path.join(bob.folder, name)


@needs_plain_heap
def test_withdrawn_folder_leaves_no_data_key_in_the_mount(accounts):
    """The per-file data key and commitment key of a withdrawn folder's file
    go at the withdrawal, not when the kernel forgets the inode: the DEK,
    unwrapped here with bob's own key (keyprobe), is in the daemon's
    writable memory while the file is open and bob a member (the positive
    control), and nowhere once the revoke has reached the mount, although
    the file is still held open; later reads of the open file are EACCES."""
    v, mounts = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    data = os.urandom(200 * 1024)
    with_mount(v, lambda: H.write_file(v.path("keyed.pdf"), data, fsync=True))
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    bob = mounts[BOB]
    saved = os.path.join(v.base, "bob.keys")
    p = H.run([os.path.join(H.build_dir(), "tests", "tools", "keyprobe"), "save", v.conf, BOB,
               bob.account_pass, saved])
    assert p.returncode == 0, p.stdout + p.stderr
    deks = {}
    with open(saved) as f:
        for line in f:
            if line.startswith("dek "):
                _, ino, hexkey = line.split()
                deks[int(ino)] = bytes.fromhex(hexkey)
    bob.mount_foreground()
    try:
        path = os.path.join(bob.folder, "keyed.pdf")
        dek = deks[os.stat(path).st_ino]
        keys = {"data key": dek, "commitment key": hkdf(dek, "pactfs v2 file commitment")}
        fd = os.open(path, os.O_RDWR)
        try:
            assert os.pread(fd, len(data), 0) == data
            os.pwrite(fd, b"unsaved", 100)   # a dirty chunk held by the mount
            memory = writable_memory(bob.fg_proc.pid)
            for what, key in keys.items():
                assert any(key in c for c in memory), "the control failed: the open " \
                    "file's %s is not in the mount's memory" % what
            admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
            wait_for_log(bob, "its keys are dropped from memory", CHECK_S + 5)
            memory = writable_memory(bob.fg_proc.pid)
            held = [what for what, key in keys.items() if any(key in c for c in memory)]
            assert not held, "the %s of a file of the withdrawn folder is still in the " \
                "mount's memory while the file is open" % " and ".join(held)
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, 0)
            assert e.value.errno == errno.EACCES, e.value
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
    finally:
        bob.unmount()


def test_withdrawn_folders_unsaved_file_is_not_kept_for_write_back(accounts):
    """A file of a withdrawn folder with unsaved changes cannot be saved
    (its keys and plaintext went at the withdrawal): once the kernel forgets
    it, the mount does not keep it on the write-back retry list, where it
    would fail again on every syncer pass and count as a closed file in
    write-back for as long as the mount lives."""
    v, mounts = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    bob, path = bob_mounted_on_a_file(v, mounts, "kept.pdf", b"saved" * 1000, "read,write")
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, b"unsaved", 100)
            admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
            wait_for_log(bob, "its keys are dropped from memory", CHECK_S + 5)
        finally:
            os.close(fd)
        with open("/proc/sys/vm/drop_caches", "w") as f:   # the kernel forgets the inode
            f.write("2\n")
        time.sleep(3)   # several syncer passes
        p = bob.pactfs("status", "--json", bob.mnt)
        assert p.returncode == 0, p.stderr
        writes = json.loads(p.stdout)["writes"]
        assert writes["closed_files_in_writeback"] == 0, writes
        # The loss is on the trail, at the withdrawal (not left to an unmount).
        lost = [e for e in audit_events(v) if e["op"] == "writeback-lost"]
        assert [e["account"] for e in lost] == [BOB], lost
        assert lost[0]["path"].endswith("kept.pdf"), lost
    finally:
        bob.unmount()


NOTIFY_BOUND = 4   # seconds; the polling interval below is 600 s


def pg_vault_slow_checks(tmp_path, pg, name, seed):
    """A PostgreSQL vault with revocation_check_seconds 600 and poll_ms
    60000, so only a notification can explain a quick withdrawal; bob
    enrolled (his password file is returned) with read access to the file
    name (64 KiB, its content returned)."""
    v = H.Vault(tmp_path)
    v.db = pg.create_database()
    v.conninfo = pg.conninfo(v.db)
    v.init("--postgresql", v.conninfo)
    with open(v.conf) as f:
        text = f.read()
    text, n = re.subn(r"(\n\s*conninfo\s*=\s*\"[^\"]*\";)", r"\1\n    poll_ms = 60000;", text)
    assert n == 1, text
    with open(v.conf, "w") as f:
        f.write(text + "accounts = { revocation_check_seconds = 600; };\n")
    bob_pw = passfile(v, "bob.pass", BOB_PASSWORD)
    add_and_enrol(v, BOB, bob_pw)
    data = H.seeded_bytes(seed, 64 * 1024)
    with_mount(v, lambda: H.write_file(v.path(name), data, fsync=True))
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    return v, bob_pw, data


def test_revocation_reaches_running_mount_through_postgresql_notify(tmp_path, pg):
    """On PostgreSQL a revoke, and an account-disable, reach a running mount
    through LISTEN/NOTIFY: with accounts.revocation_check_seconds at 600 and
    the change feed's poll_ms at 60000, only the notification can explain
    the folder being withdrawn within a few seconds.  Reads through an open
    file then fail with EACCES, and the withdrawal and the denial are
    audited."""
    v = None
    bob = None
    try:
        v, bob_pw, data = pg_vault_slow_checks(tmp_path, pg, "notified.pdf", 9)
        bob = AccountMount(v, BOB, bob_pw)
        path = os.path.join(bob.folder, "notified.pdf")
        dropped = "its keys are dropped from memory"

        bob.mount_foreground()
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                assert os.pread(fd, len(data), 0) == data
                admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
                took = wait_for_log(bob, dropped, NOTIFY_BOUND)
                with pytest.raises(OSError) as e:
                    os.pread(fd, 4096, 0)
                assert e.value.errno == errno.EACCES, e.value
            finally:
                os.close(fd)
            assert os.listdir(bob.mnt) == []
        finally:
            bob.unmount()
        ev = [e for e in audit_events(v) if e["account"] == BOB]
        revoked = [e for e in ev if e["op"] == "access-revoked"]
        assert revoked and "access was revoked" in revoked[-1]["path"], ev[-10:]
        assert any(e["op"] == "read" and e["result"] == "denied" for e in ev), ev[-10:]
        print("revoke reached the mount %.2f s after pactfs-admin returned" % took)

        # account-disable (an account change, not a folder's) the same way
        admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
        bob.mount_foreground()
        try:
            assert H.read_file(path) == data
            admin("account-disable", BOB, v.dir, "--account", ADMIN, vault=v)
            took = wait_for_log(bob, dropped, NOTIFY_BOUND)
            with pytest.raises(OSError) as e:
                H.read_file(path)
            assert e.value.errno in (errno.EACCES, errno.ENOENT), e.value
        finally:
            bob.unmount()
        ev = [e for e in audit_events(v) if e["account"] == BOB and e["op"] == "access-revoked"]
        assert "disabled" in ev[-1]["path"], ev
        print("account-disable reached the mount %.2f s after pactfs-admin returned" % took)
    finally:
        if bob:
            finish(bob)
        if v:
            pg_finish(v)



def listening_backends(pg, v, named_only=False):
    """pids of the backends of v's database listening for changes: named
    pactfs-listen; with none so named (a build that did not name it), the
    mount's newest backend (the change-feed connection is opened after the
    metadata connection)."""
    q = ("SELECT pid FROM pg_stat_activity WHERE datname = '%s' AND backend_type = "
         "'client backend'" % v.db)
    named = [int(x) for x in pg.psql(q + " AND application_name = 'pactfs-listen'").split()]
    if named or named_only:
        return named
    return [int(x) for x in pg.psql(q + " ORDER BY backend_start DESC LIMIT 1").split()]


def test_revocation_reaches_running_mount_after_its_listening_connection_broke(tmp_path, pg):
    """A NOTIFY lost to a broken connection is made up for at once, not by
    the timer: with the mount stopped (SIGSTOP), its listening backend is
    terminated (pg_terminate_backend, as a database operator or a server
    restart would) and bob is revoked, so the revoke's NOTIFY reaches
    nobody.  Once the mount runs again it must see the connection gone,
    connect and LISTEN again, and re-check at once: the folder is withdrawn
    within a few seconds although revocation_check_seconds is 600 and
    poll_ms 60000, and the withdrawal is audited.  On the build before, the
    listener stayed broken and only the 600 s timer was left."""
    v = bob = None
    try:
        v, bob_pw, data = pg_vault_slow_checks(tmp_path, pg, "relisten.pdf", 10)
        bob = AccountMount(v, BOB, bob_pw)
        bob.mount_foreground()
        path = os.path.join(bob.folder, "relisten.pdf")
        try:
            assert H.read_file(path) == data
            before = listening_backends(pg, v)
            assert len(before) == 1, before
            # no descriptor in the mount may be open while it is stopped: a
            # forked child closing it would wait for the stopped daemon
            pid = bob.fg_proc.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                assert pg.psql("SELECT pg_terminate_backend(%d)" % before[0]).strip() == "t"
                admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
                # the revoke's NOTIFY went to nobody: the backend is gone
                assert before[0] not in listening_backends(pg, v)
            finally:
                os.kill(pid, signal.SIGCONT)
            took = wait_for_log(bob, "its keys are dropped from memory", NOTIFY_BOUND)
            log = bob.read_fg_log()
            assert "listening for changes to the vault was lost and is made again" in log, \
                log[-2000:]
            with pytest.raises(OSError) as e:
                H.read_file(path)
            assert e.value.errno in (errno.EACCES, errno.ENOENT), e.value
            after = listening_backends(pg, v, named_only=True)
            assert len(after) == 1 and after != before, (before, after)
        finally:
            bob.unmount()
        ev = [e for e in audit_events(v) if e["account"] == BOB]
        revoked = [e for e in ev if e["op"] == "access-revoked"]
        assert revoked and "access was revoked" in revoked[-1]["path"], ev[-10:]
        print("the revoke reached the mount %.2f s after it ran again" % took)
    finally:
        if bob:
            finish(bob)
        if v:
            pg_finish(v)


def test_running_mount_writes_under_the_rotated_key(accounts):
    """A revoke rotates the folder key: a mount that was running before it
    must seal new files under the new key version within the check
    interval, never under the old one the revoked account still holds."""
    v, _ = accounts
    with open(v.conf, "a") as f:
        f.write("accounts = { revocation_check_seconds = %d; };\n" % CHECK_S)
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    v.mount_foreground()
    try:
        H.write_file(v.path("before.txt"), b"written before the revoke\n", fsync=True)
        admin("revoke", H.FOLDER, BOB, v.dir, vault=v)
        with db(v) as c:
            (cur,) = c.execute("SELECT key_version FROM folders").fetchone()
        time.sleep(CHECK_S + 3)
        H.write_file(v.path("after.txt"), b"written after the revoke\n", fsync=True)
        ino_before = os.stat(v.path("before.txt")).st_ino
        ino_after = os.stat(v.path("after.txt")).st_ino
        assert H.read_file(v.path("before.txt")) == b"written before the revoke\n"
        log = v.read_fg_log()
    finally:
        v.unmount()
    with db(v) as c:
        kv = dict(c.execute("SELECT ino, key_version FROM inodes WHERE ino IN (?, ?)",
                            (ino_before, ino_after)).fetchall())
    assert kv[ino_before] < cur, (kv, cur)
    assert kv[ino_after] == cur, "a file written after the revoke used key version %s, " \
        "not the rotated %s" % (kv[ino_after], cur)
    assert "was rotated; new data goes under key version %d" % cur in log, log
    ev = [e for e in audit_events(v) if e["op"] == "key-rotated"]
    assert ev and ev[-1]["result"] == "ok", ev


def test_role_changes_need_a_second_sysadmin(accounts):
    """With two sysadmins, giving or taking sysadmin/dataadmin is proposed by
    one and applied when a second makes the same change (audited both
    times); other role changes and a lone sysadmin are not held up; the
    setting is shown, and switching it off also needs two."""
    v, _ = accounts
    sam_pw = passfile(v, "sam.pass", "a second admin's passphrase 4")
    add_and_enrol(v, "sam", sam_pw, role="sysadmin")
    p = v.admin("cosign-policy", v.dir)
    assert "required; 2 enabled sysadmin(s), so it is needed now" in p.stdout, p.stdout
    carol_pw = passfile(v, "carol.pass", "a colourful long passphrase 3")
    add_and_enrol(v, "carol", carol_pw)

    def roles(name):
        return sql(v, "SELECT roles FROM accounts WHERE name = ?", (name,))[0][0]

    user = roles("carol")
    p = admin("account-role", "carol", v.dir, "--role", "dataadmin,user", "--account", ADMIN,
              vault=v)
    assert "Proposed" in p.stdout and roles("carol") == user, p.stdout
    # the same sysadmin again: still a proposal
    admin("account-role", "carol", v.dir, "--role", "dataadmin,user", "--account", ADMIN,
          vault=v)
    assert roles("carol") == user
    # a different change by the second sysadmin does not confirm it
    p = admin("account-role", "carol", v.dir, "--role", "dataadmin,auditor,user", "--account",
              "sam", "--passfile", sam_pw, vault=v)
    assert "Proposed" in p.stdout and roles("carol") == user
    # the same change by the second applies it
    admin("account-role", "carol", v.dir, "--role", "dataadmin,user", "--account", ADMIN,
          vault=v)
    p = admin("account-role", "carol", v.dir, "--role", "dataadmin,user", "--account", "sam",
              "--passfile", sam_pw, vault=v)
    assert "now has roles" in p.stdout, p.stdout
    assert roles("carol") != user
    assert v.admin("accounts", v.dir).stdout.count("verified") >= 4
    evs = audit_events(v)
    prop = [e for e in evs if e["op"] == "role-change-proposed"]
    assert prop and "roles=dataadmin,user " in prop[-1]["after"], prop
    done = [e for e in evs if e["op"] == "role-change" and e["result"] == "ok"][-1]
    assert done["account"] == "sam" and "(proposed by %s)" % ADMIN in done["path"], done
    # a proposal planted by the database operator (not signed) confirms nothing
    sql(v, "UPDATE params SET value = X'00' WHERE key LIKE 'pending.role.%'")
    p = admin("account-role", "carol", v.dir, "--role", "user", "--account", "sam",
              "--passfile", sam_pw, vault=v)
    assert "Proposed" in p.stdout and roles("carol") != user

    # a new dataadmin is proposed by one sysadmin, registered by the second
    p = admin("account-add", "dan", v.dir, "--role", "dataadmin,user", "--account", ADMIN,
              vault=v)
    assert "Proposed" in p.stdout and not re.search(r"[A-Z2-7]{4}-[A-Z2-7]{4}", p.stdout)
    assert sql(v, "SELECT COUNT(*) FROM accounts WHERE name = 'dan'")[0][0] == 0
    assert [e for e in audit_events(v) if e["op"] == "account-create-proposed"]
    code = add_account(v, "dan", "--account", "sam", "--passfile", sam_pw,
                       role="dataadmin,user")
    assert code and sql(v, "SELECT COUNT(*) FROM accounts WHERE name = 'dan'")[0][0] == 1

    # user <-> auditor: no co-signature needed
    admin("account-role", "bob", v.dir, "--role", "auditor,user", "--account", ADMIN, vault=v)
    assert roles(BOB) != user

    # switching the setting off takes two as well; then one suffices
    p = admin("cosign-policy", v.dir, "--required", "no", "--account", ADMIN, vault=v)
    assert "Proposed" in p.stdout
    admin("cosign-policy", v.dir, "--required", "no", "--account", "sam", "--passfile", sam_pw,
          vault=v)
    assert "not required" in v.admin("cosign-policy", v.dir).stdout
    p = admin("account-role", "carol", v.dir, "--role", "user", "--account", ADMIN, vault=v)
    assert "now has roles" in p.stdout and roles("carol") == user
