"""Clients verify the co-signature of sysadmin/dataadmin roles (docs/accounts.md,
"Co-signature" and "The role roster").  The attacker is one of two sysadmins who also edits meta.db:
it unseals its own account key (as its owner can), re-signs another account's
registry record with a new role, re-signs the vault head over it and writes
both into meta.db, as a patched pactfs-admin would.  pactfs-admin and mounts
must refuse the record; the same re-signing without a role change (the
control) is accepted, so the refusal is the co-signature rule's."""
import hashlib
import os
import re
import struct
import time

import pytest

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import pactfs_helpers as H
from test_accounts import (ADMIN, BOB, AccountMount, accounts, add_and_enrol,  # noqa: F401
                           enrol, passfile, sql as q)
from test_audit_forgery import unseal_account_key

ROLE_SYSADMIN, ROLE_DATAADMIN, ROLE_USER = 0x1, 0x2, 0x8
ROSTER_REFUSED = "differ from the signed role roster"


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


def forge_record(v, key, signer_id, target, roles=None, version=None, disabled=None,
                 record=None):
    """Re-sign target's registry record (serial + 1) with key as signer_id,
    optionally with new roles or disabled flag (the accounts row follows) or
    another format byte, then re-sign the vault head over it (counter + 1).
    record: start from these stored bytes (an earlier record put back)."""
    vault_id = param(v, "vault_id")
    tid = account_id(v, target)
    stored = record or param(v, "registry.account.%d" % tid)
    tbs, _ = take_blob(stored, 0)
    if record:
        (serial_now,) = struct.unpack(">Q", serial_of(param(v, "registry.account.%d" % tid)))
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
    if disabled is not None:
        new[roles_at + 4] = int(disabled)
    if record:
        serial = serial_now
    new[serial_at:serial_at + 8] = struct.pack(">Q", serial + 1)
    new[signer_at:signer_at + 8] = struct.pack(">Q", signer_id)
    record = blob(bytes(new)) + blob(sign(key, bytes(new)))
    set_param(v, "registry.account.%d" % tid, record)
    if roles is not None or record:
        q(v, "UPDATE accounts SET roles = ? WHERE id = ?",
          (struct.unpack(">I", bytes(new[roles_at:roles_at + 4]))[0], tid))
    if disabled is not None or record:
        q(v, "UPDATE accounts SET disabled = ? WHERE id = ?", (new[roles_at + 4], tid))
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


def serial_of(stored):
    tbs, _ = take_blob(stored, 0)
    pos = 5
    _, pos = take_blob(tbs, pos)
    pos += 8
    for _ in range(2):
        _, pos = take_blob(tbs, pos)
    return tbs[pos + 5:pos + 13]


def item(key, vault_id, signer_id, k, content, when=None):
    """A signed item (cosign.h): what one sysadmin signs alone."""
    tbs = (b"PFSQ" + bytes([1]) + blob(vault_id) + blob(k.encode()) + blob(content.encode()) +
           struct.pack(">QQ", signer_id, int(time.time()) if when is None else when))
    return blob(tbs) + blob(sign(key, tbs))


# ---- the role roster (src/roster.h) as a sysadmin with meta.db would write it

def roster_parse(raw):
    """(tbs fields, signer, attest) of a stored roster step."""
    tbs, pos = take_blob(raw, 0)
    (signer,) = struct.unpack(">Q", raw[pos:pos + 8])
    _, pos = take_blob(raw, pos + 8)
    attest, _ = take_blob(raw, pos)
    version = tbs[4]
    vid, p = take_blob(tbs, 5)
    counter, = struct.unpack(">Q", tbs[p:p + 8])
    prev = tbs[p + 8:p + 40]
    when, = struct.unpack(">Q", tbs[p + 40:p + 48])
    required = tbs[p + 48]
    (n,) = struct.unpack(">I", tbs[p + 49:p + 53])
    # format 2 (roster.h): each entry also binds the account's key fingerprint
    entries, keys, q_ = {}, {}, p + 53
    for _ in range(n):
        aid, priv, dis = struct.unpack(">QIB", tbs[q_:q_ + 13])
        entries[aid] = (priv, dis)
        keys[aid] = tbs[q_ + 13:q_ + 45] if version >= 2 else None
        q_ += 45 if version >= 2 else 13
    return dict(vault_id=vid, counter=counter, prev=prev, time=when, required=required,
                entries=entries, keys=keys, version=version, signer=signer, attest=attest)


def forge_roster_step(v, key, signer_id, entries=None, required=None, attest=b"", keys=None,
                      version=2):
    """The next roster step over the current one, signed by key alone (with
    attest as its co-signature), written as current and into the history.
    keys: account id -> bound key fingerprint (default: the current step's)."""
    raw = param(v, "registry.roster")
    cur = roster_parse(raw)
    ent = dict(cur["entries"]) if entries is None else entries
    req = cur["required"] if required is None else required
    fps = dict(cur["keys"])
    fps.update(keys or {})

    def entry(a):
        e = struct.pack(">QIB", a, ent[a][0], ent[a][1])
        return e + (fps.get(a) or bytes(32)) if version >= 2 else e
    tbs = (b"PFRS" + bytes([version]) + blob(cur["vault_id"]) +
           struct.pack(">Q", cur["counter"] + 1) + hashlib.sha256(raw).digest() +
           struct.pack(">QB", max(int(time.time()), cur["time"]), req) +
           struct.pack(">I", len(ent)) + b"".join(entry(a) for a in sorted(ent)))
    step = blob(tbs) + struct.pack(">Q", signer_id) + blob(sign(key, tbs)) + blob(attest)
    set_param(v, "registry.roster", step)
    set_param(v, "registry.roster.%d" % (cur["counter"] + 1), step)
    return cur["counter"] + 1


def roster_anchor_file(v):
    """The local key directory's anchor of the roster (share_local.c)."""
    vault_id = param(v, "vault_id").decode()
    name = hashlib.sha256((vault_id + "#roster/#vault-head").encode()).hexdigest()
    return os.path.join(v.dir, "keys", name)


def drop_roster(v):
    """The vault as one made before the role roster: no roster, no anchor."""
    q(v, "DELETE FROM params WHERE key LIKE 'registry.roster%'")
    os.unlink(roster_anchor_file(v))


def registry_line(v, name):
    p = v.admin("accounts", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    line = [x for x in p.stdout.splitlines() if x.startswith(name + " ")]
    assert line, p.stdout
    return line[0]


@pytest.mark.parametrize("roster", [True, False], ids=["roster", "before-the-roster"])
def test_one_sysadmin_cannot_give_a_role_alone(accounts, roster):
    """With the role roster (every vault made now) and in a vault made
    before it (no roster: the record and endorsement rules alone)."""
    v, mounts = accounts
    # alone, a sysadmin cannot make an existing account a sysadmin (clients
    # would have no endorsement of it): a new account enrols as one instead
    p = v.admin("account-role", BOB, v.dir, "--role", "sysadmin", "--account", ADMIN,
                "--passfile", v.passfile)
    assert p.returncode == 3 and "register a new account" in p.stderr, p.stdout + p.stderr
    sam_pw = passfile(v, "sam.pass", "a second admin's passphrase 4")
    add_and_enrol(v, "sam", sam_pw, role="sysadmin")
    if not roster:
        drop_roster(v)
    for name in (ADMIN, "sam", H.ACCOUNT, BOB):      # alice: dataadmin made by init
        assert "NOT VERIFIED" not in registry_line(v, name), name
    refused = ROSTER_REFUSED if roster else "never endorsed it"
    with open(v.passfile) as f:
        key = unseal_account_key(v, ADMIN, f.read().strip())
    admin_id = account_id(v, ADMIN)

    # control: the attacker's re-signing, without a role change, is accepted
    forge_record(v, key, admin_id, BOB)
    assert "NOT VERIFIED" not in registry_line(v, BOB), registry_line(v, BOB)

    # bob made a dataadmin by one sysadmin alone
    forge_record(v, key, admin_id, BOB, roles=ROLE_DATAADMIN | ROLE_USER)
    line = registry_line(v, BOB)
    if roster:
        assert "NOT VERIFIED" in line and ROSTER_REFUSED in line, line
    else:
        assert "NOT VERIFIED" in line and "dataadmin role of \"bob\"" in line, line
        assert "sysadmin \"sam\" never endorsed it" in line, line
    bob = mounts[BOB]
    p = bob.mount(check=False)
    assert p.returncode != 0 and refused in p.stderr, p.stdout + p.stderr
    p = v.admin("grant", H.FOLDER, ADMIN, "read", v.dir, "--account", BOB,
                "--passfile", bob.account_pass)
    assert p.returncode != 0 and refused in p.stderr, p.stdout + p.stderr

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
    assert "NOT VERIFIED" in line and (
        ROSTER_REFUSED if roster else "format before co-signatures") in line, line

    # the other sysadmin's endorsement removed: refused too (fail closed)
    forge_record(v, key, admin_id, BOB, version=4)
    q(v, "DELETE FROM params WHERE key = ?", ("registry.endorse.%d" % account_id(v, "sam"),))
    line = registry_line(v, BOB)
    assert "NOT VERIFIED" in line and (
        ROSTER_REFUSED if roster else "endorsement is missing") in line, line


# ---- the holes the role roster closes (docs/accounts.md, "The role roster")

def two_sysadmins(accounts):
    """alice-admin and sam sysadmins, alice dataadmin, bob user; the key of
    alice-admin unsealed by its owner, who is the attacker."""
    v, mounts = accounts
    sam_pw = passfile(v, "sam.pass", "a second admin's passphrase 4")
    add_and_enrol(v, "sam", sam_pw, role="sysadmin")
    with open(v.passfile) as f:
        key = unseal_account_key(v, ADMIN, f.read().strip())
    return v, mounts, sam_pw, key, account_id(v, ADMIN)


def as_admin(v, *args, who=ADMIN, pw=None, expect=0):
    p = v.admin(*args, v.dir, "--account", who, "--passfile", pw or v.passfile)
    assert p.returncode == expect, "%s -> %d\n%s%s" % (args, p.returncode, p.stdout, p.stderr)
    return p


def roster_line(v):
    """The roster's line of pactfs-admin accounts; a roster that does not
    verify leaves no sysadmin signature good, not even the endpoint markers,
    and the command stops there with the roster's reason."""
    p = v.admin("accounts", v.dir)
    line = [x for x in p.stdout.splitlines() if x.startswith("Role roster:")]
    if not line and "signed role roster does not verify" in p.stderr:
        return "Role roster: NOT VERIFIED (exit %d): %s" % (p.returncode, p.stderr)
    assert line, p.stdout + p.stderr
    return line[0]


def roles_of(v, name):
    return q(v, "SELECT roles, disabled FROM accounts WHERE name = ?", (name,))[0]


def test_role_taken_away_or_sysadmin_disabled_alone_is_seen(accounts):
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    assert "step" in roster_line(v) and "2 enabled sysadmin(s)" in roster_line(v)
    # control: the attacker's re-signing without a change is accepted
    forge_record(v, key, admin_id, H.ACCOUNT)
    assert "NOT VERIFIED" not in registry_line(v, H.ACCOUNT)

    # hole 1: alice's dataadmin role taken away by one sysadmin alone
    forge_record(v, key, admin_id, H.ACCOUNT, roles=ROLE_USER)
    line = registry_line(v, H.ACCOUNT)
    assert "NOT VERIFIED" in line and ROSTER_REFUSED in line and "dataadmin" in line, line
    p = v.mount(check=False)
    assert p.returncode == 14 and ROSTER_REFUSED in p.stderr, p.stdout + p.stderr

    # hole 3: the other sysadmin disabled in meta.db by one sysadmin alone
    forge_record(v, key, admin_id, "sam", disabled=1)
    line = registry_line(v, "sam")
    assert "NOT VERIFIED" in line and "disabled by its registry record but enabled by the " \
        "signed role roster" in line, line
    # ... and it still counts: pactfs-admin asks for its co-signature
    assert "2 enabled sysadmin(s), so it is needed now" in v.admin("cosign-policy",
                                                                    v.dir).stdout
    p = as_admin(v, "account-role", BOB, "--role", "dataadmin,user")
    assert "Proposed" in p.stdout and roles_of(v, BOB)[0] == ROLE_USER, p.stdout
    # demoted alone instead: seen the same way
    forge_record(v, key, admin_id, "sam", roles=ROLE_USER, disabled=0)
    line = registry_line(v, "sam")
    assert "NOT VERIFIED" in line and ROSTER_REFUSED in line, line

    # the roster rewritten by the same sysadmin: a step without sam, signed alone
    good = param(v, "registry.roster")
    cur = roster_parse(good)
    sam_id = account_id(v, "sam")
    without_sam = {a: e for a, e in cur["entries"].items() if a != sam_id}
    n = forge_roster_step(v, key, admin_id, entries=without_sam)
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "no second sysadmin's co-signature" in line, line
    # nothing opens (exit 7: the metadata store is unusable, as for a corrupt one)
    p = as_admin(v, "account-role", BOB, "--role", "dataadmin,user", expect=7)
    assert "signed role roster does not verify" in p.stderr, p.stderr
    # ... with its own item twice as the co-signature
    q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n,))
    set_param(v, "registry.roster", good)
    vault_id = param(v, "vault_id")
    own = blob(item(key, vault_id, admin_id, "role.%d" % sam_id, "roles=0x8 serial=2"))
    forge_roster_step(v, key, admin_id, entries=without_sam, attest=own + own)
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "not two different sysadmins" in line, line
    # ... or the one sysadmin left as the only one to count (sam disabled in the roster)
    q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n,))
    set_param(v, "registry.roster", good)
    sam_off = dict(cur["entries"])
    sam_off[sam_id] = (ROLE_SYSADMIN, 1)
    forge_roster_step(v, key, admin_id, entries=sam_off)
    assert "no second sysadmin's co-signature" in roster_line(v)
    # the real roster back: everything verifies again but what was forged
    q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n,))
    set_param(v, "registry.roster", good)
    assert "NOT VERIFIED" not in roster_line(v)
    assert "NOT VERIFIED" not in registry_line(v, BOB)


def test_old_cosignature_put_back_after_a_cosigned_demotion(accounts):
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    bob_id = account_id(v, BOB)
    for who, pw in ((ADMIN, None), ("sam", sam_pw)):
        as_admin(v, "account-role", BOB, "--role", "dataadmin,user", who=who, pw=pw)
    assert roles_of(v, BOB)[0] == ROLE_DATAADMIN | ROLE_USER
    promoted_record = param(v, "registry.account.%d" % bob_id)
    promoted_cosig = param(v, "registry.cosig.%d" % bob_id)
    promoted_step = param(v, "registry.roster")
    step = roster_parse(promoted_step)
    assert promoted_cosig and step["attest"] and step["entries"][bob_id] == (ROLE_DATAADMIN, 0)
    for who, pw in ((ADMIN, None), ("sam", sam_pw)):
        as_admin(v, "account-role", BOB, "--role", "user", who=who, pw=pw)
    assert roles_of(v, BOB)[0] == ROLE_USER
    assert "NOT VERIFIED" not in registry_line(v, BOB)
    demoted_step = param(v, "registry.roster")
    n_demoted = roster_parse(demoted_step)["counter"]

    # the promoted record and its valid co-signature put back by one sysadmin
    forge_record(v, key, admin_id, BOB, record=promoted_record)
    set_param(v, "registry.cosig.%d" % bob_id, promoted_cosig)
    line = registry_line(v, BOB)
    assert "NOT VERIFIED" in line and ROSTER_REFUSED in line, line
    # ... and a roster step giving the role back with the earlier co-signature
    entries = dict(roster_parse(demoted_step)["entries"])
    entries[bob_id] = (ROLE_DATAADMIN, 0)
    n = forge_roster_step(v, key, admin_id, entries=entries, attest=step["attest"])
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "an earlier co-signature put back" in line, line
    # ... or the older roster step itself put back as the current one
    q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n,))
    set_param(v, "registry.roster", promoted_step)
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "older roster was put back" in line, line
    # ... with the newer steps deleted from the history too: the registry
    # alone cannot tell, the anchor at this workstation can (exit 17)
    q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n_demoted,))
    assert "NOT VERIFIED" not in registry_line(v, BOB)
    bob = mounts[BOB]
    p = bob.mount(check=False)
    assert p.returncode == 17 and "older roster was put back" in p.stderr, p.stdout + p.stderr
    p = as_admin(v, "account-role", BOB, "--role", "user", who="sam", pw=sam_pw, expect=17)
    assert "roster" in p.stderr, p.stderr
    rb = [e for e in H.audit_events(v) if e["op"] == "rollback"]
    assert rb and "roster" in rb[-1].get("path", "") + str(rb[-1]), rb


def test_cosign_endorse_and_the_first_roster_of_an_older_vault(accounts):
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    p = v.admin("cosign-endorse", "--help")
    assert p.returncode == 0 and "first step" in p.stdout and "Exit 13" in p.stdout, p.stdout
    # a sysadmin made from an existing account with a co-signature has no
    # endorsement of its own until it runs cosign-endorse
    for who, pw in ((ADMIN, None), ("sam", sam_pw)):
        as_admin(v, "account-role", BOB, "--role", "sysadmin", who=who, pw=pw)
    bob_id = account_id(v, BOB)
    assert param(v, "registry.endorse.%d" % bob_id) is None
    bob_pw = mounts[BOB].account_pass
    p = as_admin(v, "cosign-endorse", who=BOB, pw=bob_pw)
    assert "Endorsed 4" in p.stdout and "step" in p.stdout, p.stdout
    assert param(v, "registry.endorse.%d" % bob_id)
    p = as_admin(v, "cosign-endorse", who=H.ACCOUNT, expect=13)
    assert "not a sysadmin" in p.stderr, p.stderr

    # a vault made before the roster (no roster, no anchor): the rules of
    # records and endorsements apply until two sysadmins make its first step
    drop_roster(v)
    assert "none yet" in roster_line(v)
    p = as_admin(v, "cosign-endorse")
    assert "Proposed the first step" in p.stdout, p.stdout
    assert param(v, "registry.roster") is None
    # the same sysadmin again confirms nothing
    p = as_admin(v, "cosign-endorse")
    assert "Proposed" in p.stdout and param(v, "registry.roster") is None
    p = as_admin(v, "cosign-endorse", who="sam", pw=sam_pw)
    assert "at step 1" in p.stdout, p.stdout
    line = roster_line(v)
    assert "step 1, verified (3 enabled sysadmin(s), co-signature required)" in line, line
    first = roster_parse(param(v, "registry.roster"))
    assert first["attest"] and set(first["entries"]) == {
        admin_id, account_id(v, "sam"), bob_id, account_id(v, H.ACCOUNT)}
    evs = H.audit_events(v)
    prop = [e for e in evs if e["op"] == "roster-change-proposed"]
    done = [e for e in evs if e["op"] == "roster-change" and e["result"] == "ok"]
    assert prop and done and done[-1]["account"] == "sam", (prop, done)
    assert "step=1" in done[-1]["after"] and "sam=sysadmin" in done[-1]["after"], done[-1]
    # from now on the roster decides: a role taken away alone is seen
    forge_record(v, key, admin_id, H.ACCOUNT, roles=ROLE_USER)
    line = registry_line(v, H.ACCOUNT)
    assert "NOT VERIFIED" in line and ROSTER_REFUSED in line, line


def test_every_roster_change_is_audited_with_before_and_after(accounts):
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    for who, pw in ((ADMIN, None), ("sam", sam_pw)):
        as_admin(v, "account-disable", H.ACCOUNT, who=who, pw=pw, expect=19)
    # the last dataadmin is protected before any proposal is made
    assert param(v, "pending.disable.%d" % account_id(v, H.ACCOUNT)) is None
    p = as_admin(v, "account-disable", "sam")
    assert "Proposed" in p.stdout and roles_of(v, "sam")[1] == 0, p.stdout
    evs = H.audit_events(v)
    prop = [e for e in evs if e["op"] == "account-disable-proposed"]
    assert prop and "status=disabled" in prop[-1]["after"], prop
    ch = [e for e in evs if e["op"] == "roster-change" and e["result"] == "ok"]
    assert ch, evs[-5:]
    # sam added by the one sysadmin (no key bound yet), then its enrolment
    # bound its key itself: the roster needed one sysadmin (format 2)
    added, bound = ch[-2], ch[-1]
    assert "sam=sysadmin" not in added["before"] and "sam=sysadmin(key none)" in added["after"], \
        added
    assert added["account"] == ADMIN and "step=" in added["before"], added
    assert bound["account"] == "sam" and "sam=sysadmin(key none)" in bound["before"], bound
    assert "sam=sysadmin(key none)" not in bound["after"] and "sam=sysadmin(key " in \
        bound["after"], bound


# ---- re-enrolment of a privileged account (roster format 2: bound keys)

KEY_REFUSED = "is not the one the signed role roster binds"


def reenrol_code(v, name, who=ADMIN, pw=None):
    """account-reenrol by sysadmin who: the code it prints (to itself)."""
    p = as_admin(v, "account-reenrol", name, who=who, pw=pw)
    m = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M)
    assert m, p.stdout
    return m.group(1)


def key_fp(v, name):
    """SHA-256 of the public key the accounts row names (DER)."""
    (der,) = q(v, "SELECT pubkey FROM accounts WHERE name = ?", (name,))[0]
    return hashlib.sha256(bytes(der)).digest()


def bound_fp(v, name):
    return roster_parse(param(v, "registry.roster"))["keys"][account_id(v, name)]


def test_one_sysadmin_cannot_reenrol_another_and_hold_its_key(accounts):
    """Two sysadmins (co-signature on).  alice-admin re-enrols sam, enrols
    sam's account itself with the code it got and a password of its own:
    the key it now holds is not bound by the roster, so sam's account is
    not trusted; binding it takes a second sysadmin, and every forged
    roster step that binds it alone is refused."""
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    sam_id = account_id(v, "sam")
    # sam's enrolment bound its key (the roster then needed one sysadmin)
    assert bound_fp(v, "sam") == key_fp(v, "sam")
    assert "format 2" in roster_line(v) and "2 enabled sysadmin(s)" in roster_line(v)
    old_step = roster_parse(param(v, "registry.roster"))["counter"]

    code = reenrol_code(v, "sam")
    taken_pw = passfile(v, "taken.pass", "the attacker's own passphrase 9")
    p = enrol(v, "sam", code, taken_pw)
    assert "is not trusted" in p.stdout and "cosign-endorse" in p.stdout, p.stdout
    line = registry_line(v, "sam")
    assert "NOT VERIFIED" in line and KEY_REFUSED in line and "cosign-endorse" in line, line
    # the roster still counts sam with its old key: two are needed
    assert "2 enabled sysadmin(s)" in roster_line(v)
    assert bound_fp(v, "sam") != key_fp(v, "sam")
    # the attacker as sam: no sysadmin action, no confirmation of its own proposal
    p = as_admin(v, "account-role", BOB, "--role", "dataadmin,user")
    assert "Proposed" in p.stdout, p.stdout
    p = v.admin("account-role", BOB, "--role", "dataadmin,user", v.dir, "--account", "sam",
                "--passfile", taken_pw)
    assert p.returncode != 0 and KEY_REFUSED in p.stderr, p.stdout + p.stderr
    assert roles_of(v, BOB)[0] == ROLE_USER
    p = v.admin("cosign-endorse", v.dir, "--account", "sam", "--passfile", taken_pw)
    assert p.returncode != 0 and KEY_REFUSED in p.stderr, p.stdout + p.stderr
    # cosign-endorse by the attacker alone only proposes, also when run twice
    for _ in range(2):
        p = as_admin(v, "cosign-endorse")
        assert "Proposed to bind the new key of \"sam\"" in p.stdout, p.stdout
    assert "NOT VERIFIED" in registry_line(v, "sam")
    assert param(v, "pending.key.%d" % sam_id)
    evs = [e for e in H.audit_events(v) if e["op"] == "roster-change-proposed"]
    assert evs and "key of sam" in evs[-1]["path"] + str(evs[-1]), evs[-1:]

    # forged: the attacker binds the key itself (its own key unsealed,
    # the step written into meta.db with sqlite3)
    good = param(v, "registry.roster")
    n = roster_parse(good)["counter"] + 1
    assert n - 1 >= old_step
    new_fp = key_fp(v, "sam")

    def put_back():
        q(v, "DELETE FROM params WHERE key = ?", ("registry.roster.%d" % n,))
        set_param(v, "registry.roster", good)

    forge_roster_step(v, key, admin_id, keys={sam_id: new_fp})
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "no second sysadmin's co-signature" in line, line
    p = as_admin(v, "account-role", BOB, "--role", "user", expect=7)
    assert "signed role roster does not verify" in p.stderr, p.stderr
    # ... with its own item twice as the co-signature
    put_back()
    vault_id = param(v, "vault_id")
    content = "fp=%s roster=%d" % (new_fp.hex(), n - 1)
    own = blob(item(key, vault_id, admin_id, "key.%d" % sam_id, content))
    forge_roster_step(v, key, admin_id, keys={sam_id: new_fp}, attest=own + own)
    assert "not two different sysadmins" in roster_line(v)
    # ... with sam's new key (which it holds) as the second sysadmin
    put_back()
    sam_key = unseal_account_key(v, "sam", "the attacker's own passphrase 9")
    other = blob(item(sam_key, vault_id, sam_id, "key.%d" % sam_id, content))
    forge_roster_step(v, key, admin_id, keys={sam_id: new_fp}, attest=own + other)
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "co-signature of roster step %d does not verify" % n \
        in line, line
    # ... or sam's binding dropped (then it would not count): a change too
    put_back()
    forge_roster_step(v, key, admin_id, keys={sam_id: bytes(32)})
    assert "no second sysadmin's co-signature" in roster_line(v)
    # ... or the step written in format 1 (binding no keys)
    put_back()
    forge_roster_step(v, key, admin_id, version=1)
    line = roster_line(v)
    assert "NOT VERIFIED" in line and "format version 1 after a step of version 2" in line, line
    put_back()
    assert "NOT VERIFIED" not in roster_line(v)
    assert "NOT VERIFIED" in registry_line(v, "sam")
    # the taken account can still not mount or sign anything (exit 14)
    p = as_admin(v, "account-role", BOB, "--role", "user", who="sam", pw=taken_pw, expect=14)
    assert KEY_REFUSED in p.stderr, p.stderr


def three_sysadmins(accounts):
    """alice-admin, sam and tom: tom added with two sysadmins (co-signed) and
    its key bound by two (cosign-endorse), as an operator does it."""
    v, mounts, sam_pw, key, admin_id = two_sysadmins(accounts)
    tom_pw = passfile(v, "tom.pass", "a third admin's passphrase 7")
    p = as_admin(v, "account-add", "tom", "--role", "sysadmin")
    assert "Proposed" in p.stdout, p.stdout
    p = as_admin(v, "account-add", "tom", "--role", "sysadmin", who="sam", pw=sam_pw)
    code = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)
    # sam holds the code: tom's key counts only once two sysadmins bind it
    p = enrol(v, "tom", code, tom_pw)
    assert "is not trusted" in p.stdout, p.stdout
    assert "NOT VERIFIED" in registry_line(v, "tom")
    assert "Proposed to bind" in as_admin(v, "cosign-endorse", who="sam", pw=sam_pw).stdout
    p = as_admin(v, "cosign-endorse")
    assert "binds the new key of \"tom\"" in p.stdout and "co-signed" in p.stdout, p.stdout
    assert "NOT VERIFIED" not in registry_line(v, "tom")
    assert "3 enabled sysadmin(s)" in roster_line(v)
    return v, mounts, sam_pw, tom_pw, key, admin_id


def test_reenrolled_sysadmin_key_counts_after_a_second_sysadmin(accounts):
    """Three sysadmins: alice-admin re-enrols sam and enrols in its place;
    the key becomes sam's (privileged) only when tom co-signs: the second
    sysadmin is the check (it compares the fingerprint with sam first)."""
    v, mounts, sam_pw, tom_pw, key, admin_id = three_sysadmins(accounts)
    code = reenrol_code(v, "sam")
    taken_pw = passfile(v, "taken.pass", "the attacker's own passphrase 9")
    p = enrol(v, "sam", code, taken_pw)
    fp = re.search(r"^([0-9a-f]{64})$", p.stdout, re.M).group(1)
    assert "NOT VERIFIED" in registry_line(v, "sam")
    p = as_admin(v, "cosign-endorse")
    assert "Proposed to bind the new key of \"sam\" (fingerprint %s)" % fp in p.stdout, p.stdout
    # before the second sysadmin: sam (the attacker's key) acts on nothing
    p = as_admin(v, "account-role", BOB, "--role", "user", who="sam", pw=taken_pw, expect=14)
    assert KEY_REFUSED in p.stderr
    # the second sysadmin confirms the same key: bound, co-signed
    p = as_admin(v, "cosign-endorse", who="tom", pw=tom_pw)
    assert "binds the new key of \"sam\" (fingerprint %s), co-signed" % fp in p.stdout, p.stdout
    assert bound_fp(v, "sam").hex() == fp
    step = roster_parse(param(v, "registry.roster"))
    assert step["attest"] and step["signer"] == account_id(v, "tom")
    assert "NOT VERIFIED" not in registry_line(v, "sam")
    ch = [e for e in H.audit_events(v) if e["op"] == "roster-change" and e["result"] == "ok"]
    assert ch[-1]["account"] == "tom" and "key of sam" in str(ch[-1]), ch[-1]
    assert "sam=sysadmin(key %s)" % fp[:16] in ch[-1]["after"], ch[-1]
    # sam's new key signs again: it takes part in a co-signed change
    p = as_admin(v, "account-role", BOB, "--role", "dataadmin,user", who="sam", pw=taken_pw)
    assert "Proposed" in p.stdout
    as_admin(v, "account-role", BOB, "--role", "dataadmin,user", who="tom", pw=tom_pw)
    assert roles_of(v, BOB)[0] == ROLE_DATAADMIN | ROLE_USER


def test_one_sysadmin_vault_reenrols_as_before(new_vault):
    """Co-signature not needed (one sysadmin): a re-enrolled dataadmin is
    trusted as soon as it enrolled, and the next roster step binds its key."""
    v = new_vault
    alice_pw = passfile(v, "alice2.pass", "a fresh passphrase for data 5")
    assert "1 enabled sysadmin(s)" in roster_line(v) and "format 2" in roster_line(v)
    old = bound_fp(v, H.ACCOUNT)
    code = reenrol_code(v, H.ACCOUNT)
    p = enrol(v, H.ACCOUNT, code, alice_pw)
    assert "is not trusted" not in p.stdout, p.stdout
    assert "NOT VERIFIED" not in registry_line(v, H.ACCOUNT)
    # it acts as a dataadmin at once
    p = v.admin("folder-create", "after-reenrol", v.dir, "--account", H.ACCOUNT,
                "--passfile", alice_pw)
    assert p.returncode == 0, p.stdout + p.stderr
    # the roster still names its old key until a sysadmin's next step
    assert bound_fp(v, H.ACCOUNT) == old != key_fp(v, H.ACCOUNT)
    p = as_admin(v, "cosign-endorse")
    assert "binds the keys the registry names now" in p.stdout, p.stdout
    assert bound_fp(v, H.ACCOUNT) == key_fp(v, H.ACCOUNT)


def test_format_1_roster_of_an_older_build_becomes_format_2(new_vault):
    """A vault whose roster an older build wrote (format 1, no keys; its
    steps signed by the sysadmin, written here with its unsealed key as that
    build would): read and trusted as before; the first step the new build
    writes (cosign-endorse here) is format 2 and binds the registry's keys."""
    v = new_vault
    with open(v.passfile) as f:
        key = unseal_account_key(v, ADMIN, f.read().strip())
    admin_id = account_id(v, ADMIN)
    cur = roster_parse(param(v, "registry.roster"))
    drop_roster(v)
    vault_id = param(v, "vault_id")
    ent = cur["entries"]
    tbs = (b"PFRS" + bytes([1]) + blob(vault_id) + struct.pack(">Q", 1) + bytes(32) +
           struct.pack(">QB", int(time.time()), 1) + struct.pack(">I", len(ent)) +
           b"".join(struct.pack(">QIB", a, ent[a][0], ent[a][1]) for a in sorted(ent)))
    step = blob(tbs) + struct.pack(">Q", admin_id) + blob(sign(key, tbs)) + blob(b"")
    set_param(v, "registry.roster", step)
    set_param(v, "registry.roster.1", step)
    line = roster_line(v)
    assert "step 1, verified" in line and "format 1" in line, line
    assert "NOT VERIFIED" not in registry_line(v, H.ACCOUNT)
    v.mount()
    v.unmount()
    p = as_admin(v, "cosign-endorse")
    assert "Step 2 binds the keys the registry names now (role roster format 2)" in p.stdout, \
        p.stdout
    new = roster_parse(param(v, "registry.roster"))
    assert new["version"] == 2 and new["counter"] == 2 and new["entries"] == ent
    for name in (ADMIN, H.ACCOUNT):
        assert new["keys"][account_id(v, name)] == key_fp(v, name), name
    assert "format 2" in roster_line(v)
    ch = [e for e in H.audit_events(v) if e["op"] == "roster-change" and e["result"] == "ok"]
    assert ch and "format 2" in str(ch[-1]) and "(key " in ch[-1]["after"], ch[-1:]
    v.mount()
    v.unmount()


@pytest.mark.skipif(not os.environ.get("PACTFS_OLD_BUILD"),
                    reason="PACTFS_OLD_BUILD: a build dir of a commit before roster format 2")
def test_vault_of_an_older_build_opens_and_the_older_build_refuses_format_2(tmp_path,
                                                                          monkeypatch):
    """A vault made by an older binary (roster format 1), opened by this
    build; once this build wrote format 2, the older binary refuses the
    roster (it must not read it as format 1) and says so."""
    new = H.build_dir()
    monkeypatch.setenv("PACTFS_BUILD", os.environ["PACTFS_OLD_BUILD"])
    v = H.Vault(tmp_path)
    v.init()
    assert roster_parse(param(v, "registry.roster"))["version"] == 1
    v.mount()
    v.unmount()
    monkeypatch.setenv("PACTFS_BUILD", new)
    assert "format 1" in roster_line(v)
    v.mount()
    v.unmount()
    p = as_admin(v, "cosign-endorse")
    assert "binds the keys the registry names now" in p.stdout, p.stdout
    assert roster_parse(param(v, "registry.roster"))["version"] == 2
    v.mount()
    v.unmount()
    monkeypatch.setenv("PACTFS_BUILD", os.environ["PACTFS_OLD_BUILD"])
    p = v.mount(check=False)
    assert p.returncode != 0 and "unknown version" in p.stderr, p.stdout + p.stderr
    p = v.admin("accounts", v.dir)
    assert p.returncode != 0 and "signed role roster does not verify" in p.stderr and \
        "unknown version" in p.stderr, p.stdout + p.stderr
    monkeypatch.setenv("PACTFS_BUILD", new)
