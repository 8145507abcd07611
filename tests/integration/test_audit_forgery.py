"""The audit trail cannot be re-signed by another account (docs/format-audit.md,
format 3).  A plain user who can write the spool and holds its own account key
(unsealed here exactly as pactfs does, from its password and its key share)
rewrites the spool: drops its own events, edits the dataadmin's grant event,
recomputes every chain and re-signs every checkpoint with its own key.
`pactfs-admin audit-verify` must fail and name the line.  Renaming an account
(and renaming it back) leaves the trail verifiable."""
import hashlib
import json
import os
import sqlite3
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import pactfs_helpers as H
from test_accounts import (ADMIN, BOB, BOB_PASSWORD, EXIT_INTEGRITY, accounts,  # noqa: F401
                           admin, with_mount)
from test_keyd import argon2id

CHECKPOINT_LABEL = b"pactfs audit session checkpoint v3\n"
CHECKPOINT_LABEL_V5 = b"pactfs audit session checkpoint v5\n"
STRUCTURAL = ("session-start", "checkpoint", "session-end")


def hkdf(ikm, label):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=label.encode()).derive(ikm)


def unseal_account_key(v, account, password):
    """The account's RSA private key, as keyring.c opens it (docs/format-keys.md):
    what the account's owner can always do on their own workstation."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(v.dir, "meta.db"), uri=True)
    try:
        (sealed,) = db.execute("SELECT sealed_key FROM accounts WHERE name = ?",
                               (account,)).fetchone()
        (vault_id,) = db.execute("SELECT value FROM params WHERE key = 'vault_id'").fetchone()
    finally:
        db.close()
    sealed, vault_id = bytes(sealed), bytes(vault_id)
    assert sealed[:4] == b"PFSK" and sealed[4] == 1
    (n,) = struct.unpack(">I", sealed[5:9])
    key_name = sealed[9:9 + n]
    pos = 9 + n
    t, m, p = struct.unpack(">III", sealed[pos + 1:pos + 13])
    salt = sealed[pos + 13:pos + 29]
    head_end = pos + 29 + 4                      # + u32 rsa_bits
    (boxlen,) = struct.unpack(">I", sealed[head_end:head_end + 4])
    box = sealed[head_end + 4:head_end + 4 + boxlen]
    pwkey = argon2id(password.encode(), salt, t, m, p)
    share_file = hashlib.sha256(vault_id + b"/" + key_name).hexdigest()
    with open(os.path.join(v.dir, "keys", share_file), "rb") as f:
        rec = f.read()
    assert rec[:4] == b"PFSS"
    share = rec[5:37]
    unlock = hkdf(hkdf(pwkey, "pactfs v1 unlock half") + share, "pactfs v1 unlock key")
    ad = (b"pactfs v1 sealed account key" + struct.pack(">I", len(vault_id)) + vault_id +
          sealed[:head_end])
    der = AESGCM(unlock).decrypt(box[:12], box[12:], ad)
    return serialization.load_der_private_key(der, password=None)


def sign_checkpoint(key, vault, session, hash_hex, signed_sseq=None):
    """Format 5 (signed_sseq) names the line signed; format 3 and 4 sign the
    line before the checkpoint."""
    if signed_sseq is None:
        msg = CHECKPOINT_LABEL + ("%s\n%s\n%s" % (vault, session, hash_hex)).encode()
    else:
        msg = CHECKPOINT_LABEL_V5 + ("%s\n%s\n%d\n%s" % (vault, session, signed_sseq,
                                                        hash_hex)).encode()
    return key.sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=32), hashes.SHA256()).hex()


def dumps(e):
    return json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()


def rechain(events, key):
    """Renumber and re-hash both chains; every checkpoint re-signed with key.
    A format 5 checkpoint keeps signing the line it signed if that line is
    still there (else the line before it)."""
    lines, prev, sess = [], "0" * 64, {}
    for seq, e in enumerate(events, 1):
        st = sess.setdefault(e["session"], {"sseq": 0, "prev": "0" * 64, "moved": {}})
        st["sseq"] += 1
        old_sseq = e["sseq"]
        e["seq"], e["prev"], e["sseq"], e["sprev"] = seq, prev, st["sseq"], st["prev"]
        if e["op"] == "checkpoint" and "signed_sseq" in e:
            e["signed_sseq"], e["signed_hash"] = st["moved"].get(
                e["signed_sseq"], (st["sseq"] - 1, st["prev"]))
            e["sig"] = sign_checkpoint(key, e["vault"], e["session"], e["signed_hash"],
                                       e["signed_sseq"])
        elif e["op"] == "checkpoint":
            e["signed_hash"] = st["prev"]
            e["sig"] = sign_checkpoint(key, e["vault"], e["session"], st["prev"])
        line = dumps(e)
        prev = st["prev"] = hashlib.sha256(line).hexdigest()
        st["moved"][old_sseq] = (st["sseq"], prev)
        lines.append(line)
    return lines


def read_spool(v):
    with open(v.audit_log, "rb") as f:
        return [json.loads(x) for x in f.read().splitlines()]


def write_spool(v, lines):
    with open(v.audit_log, "wb") as f:
        f.write(b"".join(x + b"\n" for x in lines))


def make_history(v, mounts):
    """alice (dataadmin) grants bob read; bob reads the folder."""
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    bob = mounts[BOB]
    with_mount(bob, lambda: os.listdir(bob.folder))
    assert v.admin("audit-verify", v.dir).returncode == 0


def test_user_cannot_resign_another_accounts_events(accounts):
    v, mounts = accounts
    make_history(v, mounts)
    original = read_spool(v)
    bob_key = unseal_account_key(v, BOB, BOB_PASSWORD)
    grants = [i for i, e in enumerate(original)
              if e["op"] == "grant" and e["account"] == H.ACCOUNT and BOB in e["path"]]
    assert grants, "no grant event for bob by %s" % H.ACCOUNT
    mine = [e for e in original if e["account"] == BOB and e["op"] not in STRUCTURAL]
    assert mine, "bob's mount left no events of its own"

    # Control: bob may rewrite his own sessions (dropping his events) and re-sign
    # them: the file alone cannot tell (the receiver's copy can; see
    # test_auditd.py).  This shows the re-signing below is done right.
    # Only bob's last session (his mount): his enrolment session comes before
    # alice's grant, and dropping lines there would renumber the spool-wide
    # seq/prev of alice's later lines, which bob cannot re-sign.
    bob_sessions = {[e["session"] for e in original
                     if e["op"] == "session-start" and e["account"] == BOB][-1]}
    own = [e for e in original
           if not (e["session"] in bob_sessions and e["op"] not in STRUCTURAL)]
    write_spool(v, rechain([dict(e) for e in own], Resigner(original, bob_key)))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, "control rewrite of bob's own session fails: " + p.stderr

    # The attack: also edit alice's grant, re-sign everything with bob's key.
    forged = [dict(e) for e in own]
    target = next(i for i, e in enumerate(forged)
                  if e["op"] == "grant" and e["account"] == H.ACCOUNT and BOB in e["path"])
    forged[target]["path"] = forged[target]["path"].replace(BOB, "mallory")
    write_spool(v, rechain(forged, Resigner(original, bob_key)))
    # The first checkpoint of alice's session that signs the edit (a format 5
    # checkpoint may sign a line before it) is the line that fails.
    sess = forged[target]["session"]
    bad = next(i for i in range(target, len(forged))
               if forged[i]["session"] == sess and forged[i]["op"] == "checkpoint"
               and forged[i].get("signed_sseq", forged[i]["sseq"] - 1) >= forged[target]["sseq"]
               ) + 1
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    assert "line %d:" % bad in p.stderr and "does not verify" in p.stderr, p.stderr
    assert H.ACCOUNT in p.stderr, p.stderr

    # Claiming alice's session as bob's own: its lines name alice.
    forged = [dict(e) for e in own]
    start = next(e for e in forged if e["session"] == sess and e["op"] == "session-start")
    bobs = next(e for e in forged if e["account"] == BOB and e["op"] == "session-start")
    start.update(account=BOB, account_id=bobs["account_id"], proof=bobs["proof"])
    write_spool(v, rechain(forged, Resigner(original, bob_key)))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    first_alice = next(i for i, e in enumerate(forged)
                       if e["session"] == sess and e["op"] != "session-start") + 1
    assert "line %d:" % first_alice in p.stderr, p.stderr


class Resigner:
    """The attacker's signer: a checkpoint whose session chain is unchanged keeps
    its original signature; every other one is signed with the attacker's key."""

    def __init__(self, events, key):
        self.key = key
        self.orig = {(e["session"], e.get("signed_hash")): e.get("sig")
                     for e in events if e["op"] == "checkpoint"}

    def sign(self, msg, pad, alg):
        fields = msg.decode().split("\n")
        session, hash_hex = fields[2], fields[-1]
        if (session, hash_hex) in self.orig:
            return bytes.fromhex(self.orig[(session, hash_hex)])
        return self.key.sign(msg, pad, alg)


def test_renamed_and_renamed_back_account_keeps_trail_verifiable(accounts):
    v, mounts = accounts
    make_history(v, mounts)
    bob = mounts[BOB]
    admin("account-rename", BOB, "robert", v.dir, "--account", ADMIN, vault=v)
    bob.account = "robert"
    with_mount(bob, lambda: os.listdir(bob.folder))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    admin("account-rename", "robert", BOB, v.dir, "--account", ADMIN, vault=v)
    bob.account = BOB
    with_mount(bob, lambda: os.listdir(bob.folder))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    names = {e["account"] for e in read_spool(v) if e["op"] == "session-start"}
    assert {BOB, "robert", ADMIN, H.ACCOUNT} <= names, names
