"""Clients verify the co-signature of sysadmin/dataadmin roles (docs/accounts.md,
"Co-signature").  The attacker is one of two sysadmins who also edits meta.db:
it unseals its own account key (as its owner can), re-signs another account's
registry record with a new role, re-signs the vault head over it and writes
both into meta.db, as a patched pactfs-admin would.  pactfs-admin and mounts
must refuse the record; the same re-signing without a role change (the
control) is accepted, so the refusal is the co-signature rule's."""
import hashlib
import struct
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import pactfs_helpers as H
from test_accounts import (ADMIN, BOB, AccountMount, accounts, add_and_enrol,  # noqa: F401
                           passfile, sql as q)
from test_audit_forgery import unseal_account_key

ROLE_DATAADMIN, ROLE_USER = 0x2, 0x8


def blob(b):
    return struct.pack(">I", len(b)) + b


def take_blob(buf, pos):
    (n,) = struct.unpack(">I", buf[pos:pos + 4])
    return buf[pos + 4:pos + 4 + n], pos + 4 + n


def sign(key, msg):
    return key.sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                    hashes.SHA256())


def param(v, key):
    r = q(v, "SELECT value FROM params WHERE key = ?", (key,))
    return bytes(r[0][0]) if r else None


def set_param(v, key, value):
    q(v, "INSERT OR REPLACE INTO params(key, value) VALUES(?, ?)", (key, value))


def account_id(v, name):
    return q(v, "SELECT id FROM accounts WHERE name = ?", (name,))[0][0]


def forge_record(v, key, signer_id, target, roles=None, version=None):
    """Re-sign target's registry record (serial + 1) with key as signer_id,
    optionally with new roles (the accounts row follows) or another format
    byte, then re-sign the vault head over it (counter + 1)."""
    vault_id = param(v, "vault_id")
    tid = account_id(v, target)
    stored = param(v, "registry.account.%d" % tid)
    tbs, _ = take_blob(stored, 0)
    # "PFSR" u8 version | str vault | u64 id | str name | str key_name |
    # u32 roles | u8 disabled | u64 serial | blob pubkey | u64 signer | rest
    pos = 5
    for _ in range(1):
        _, pos = take_blob(tbs, pos)
    pos += 8
    for _ in range(2):
        _, pos = take_blob(tbs, pos)
    roles_at = pos
    (old_roles,) = struct.unpack(">I", tbs[pos:pos + 4])
    serial_at = pos + 5
    (serial,) = struct.unpack(">Q", tbs[serial_at:serial_at + 8])
    _, pos = take_blob(tbs, serial_at + 8)
    signer_at = pos
    new = bytearray(tbs)
    if version is not None:
        new[4] = version
    new[roles_at:roles_at + 4] = struct.pack(">I", old_roles if roles is None else roles)
    new[serial_at:serial_at + 8] = struct.pack(">Q", serial + 1)
    new[signer_at:signer_at + 8] = struct.pack(">Q", signer_id)
    record = blob(bytes(new)) + blob(sign(key, bytes(new)))
    set_param(v, "registry.account.%d" % tid, record)
    if roles is not None:
        q(v, "UPDATE accounts SET roles = ? WHERE id = ?", (roles, tid))
    # the head: "PFSH" u8 1 | str vault | u64 counter | u32 format | u64 signer |
    # u64 time | u32 nf | nf x 60 bytes | u32 na | na x (u64 id, u64 serial, sha256)
    htbs, _ = take_blob(param(v, "vault_head"), 0)
    _, pos = take_blob(htbs, 5)
    h = bytearray(htbs)
    (counter,) = struct.unpack(">Q", h[pos:pos + 8])
    h[pos:pos + 8] = struct.pack(">Q", counter + 1)
    h[pos + 12:pos + 20] = struct.pack(">Q", signer_id)
    h[pos + 20:pos + 28] = struct.pack(">Q", int(time.time()))
    pos += 28
    (nf,) = struct.unpack(">I", h[pos:pos + 4])
    pos += 4 + nf * 52
    (na,) = struct.unpack(">I", h[pos:pos + 4])
    pos += 4
    for _ in range(na):
        (aid,) = struct.unpack(">Q", h[pos:pos + 8])
        if aid == tid:
            h[pos + 8:pos + 16] = struct.pack(">Q", serial + 1)
            h[pos + 16:pos + 48] = hashlib.sha256(record).digest()
        pos += 48
    set_param(v, "vault_head", blob(bytes(h)) + blob(sign(key, bytes(h))))


def item(key, vault_id, signer_id, k, content):
    """A signed item (cosign.h): what one sysadmin signs alone."""
    tbs = (b"PFSQ" + bytes([1]) + blob(vault_id) + blob(k.encode()) + blob(content.encode()) +
           struct.pack(">QQ", signer_id, int(time.time())))
    return blob(tbs) + blob(sign(key, tbs))


def registry_line(v, name):
    p = v.admin("accounts", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    line = [x for x in p.stdout.splitlines() if x.startswith(name + " ")]
    assert line, p.stdout
    return line[0]


def test_one_sysadmin_cannot_give_a_role_alone(accounts):
    v, mounts = accounts
    # alone, a sysadmin cannot make an existing account a sysadmin (clients
    # would have no endorsement of it): a new account enrols as one instead
    p = v.admin("account-role", BOB, v.dir, "--role", "sysadmin", "--account", ADMIN,
                "--passfile", v.passfile)
    assert p.returncode == 3 and "register a new account" in p.stderr, p.stdout + p.stderr
    sam_pw = passfile(v, "sam.pass", "a second admin's passphrase 4")
    add_and_enrol(v, "sam", sam_pw, role="sysadmin")
    for name in (ADMIN, "sam", H.ACCOUNT, BOB):      # alice: dataadmin made by init
        assert "NOT VERIFIED" not in registry_line(v, name), name
    with open(v.passfile) as f:
        key = unseal_account_key(v, ADMIN, f.read().strip())
    admin_id = account_id(v, ADMIN)

    # control: the attacker's re-signing, without a role change, is accepted
    forge_record(v, key, admin_id, BOB)
    assert "NOT VERIFIED" not in registry_line(v, BOB), registry_line(v, BOB)

    # bob made a dataadmin by one sysadmin alone
    forge_record(v, key, admin_id, BOB, roles=ROLE_DATAADMIN | ROLE_USER)
    line = registry_line(v, BOB)
    assert "NOT VERIFIED" in line and "dataadmin role of \"bob\"" in line, line
    assert "sysadmin \"sam\" never endorsed it" in line, line
    bob = mounts[BOB]
    p = bob.mount(check=False)
    assert p.returncode != 0 and "never endorsed it" in p.stderr, p.stdout + p.stderr
    p = v.admin("grant", H.FOLDER, ADMIN, "read", v.dir, "--account", BOB,
                "--passfile", bob.account_pass)
    assert p.returncode != 0 and "never endorsed it" in p.stderr, p.stdout + p.stderr

    # the setting switched off by the same sysadmin alone changes nothing
    vault_id = param(v, "vault_id")
    set_param(v, "policy.cosign", item(key, vault_id, admin_id, "policy.cosign", "required=no"))
    set_param(v, "policy.cosign.cosig",
              blob(item(key, vault_id, admin_id, "policy.cosign.change", "required=no")) * 2)
    assert "NOT VERIFIED" in registry_line(v, BOB)
    assert "so it is needed now" in v.admin("cosign-policy", v.dir).stdout

    # nor a co-signature made of its own item twice
    set_param(v, "registry.cosig.%d" % account_id(v, BOB),
              blob(item(key, vault_id, admin_id, "role.%d" % account_id(v, BOB),
                        "roles=0x%x serial=1" % (ROLE_DATAADMIN | ROLE_USER))) * 2)
    assert "NOT VERIFIED" in registry_line(v, BOB)

    # nor the record written in the format before co-signatures
    forge_record(v, key, admin_id, BOB, version=3)
    line = registry_line(v, BOB)
    assert "NOT VERIFIED" in line and "format before co-signatures" in line, line

    # the other sysadmin's endorsement removed: refused too (fail closed)
    forge_record(v, key, admin_id, BOB, version=4)
    q(v, "DELETE FROM params WHERE key = ?", ("registry.endorse.%d" % account_id(v, "sam"),))
    line = registry_line(v, BOB)
    assert "NOT VERIFIED" in line and "endorsement is missing" in line, line
