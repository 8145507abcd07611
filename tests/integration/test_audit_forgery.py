"""The audit trail cannot be re-signed by another account (docs/format-audit.md,
format 3).  A plain user who can write the spool and holds its own account key
(unsealed here exactly as pactfs does, from its password and its key share)
rewrites the spool: drops its own events, edits the dataadmin's grant event,
recomputes every chain and re-signs every checkpoint with its own key.
`pactfs-admin audit-verify` must fail and name the line.  Format 6: a
session's checkpoints after its first are signed by the Ed25519 session key
its session-start names; the attacker brings a session key of its own, which
its account key can certify for its own sessions only.  Renaming an account
(and renaming it back) leaves the trail verifiable."""
import hashlib
import json
import os
import sqlite3
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import pactfs_helpers as H
from test_accounts import (ADMIN, BOB, BOB_PASSWORD, EXIT_INTEGRITY, accounts,  # noqa: F401
                           admin, with_mount)
from test_keyd import argon2id

CHECKPOINT_LABEL = b"pactfs audit session checkpoint v3\n"
CHECKPOINT_LABEL_V5 = b"pactfs audit session checkpoint v5\n"
CHECKPOINT_LABEL_V6 = b"pactfs audit session checkpoint v6\n"
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


PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def checkpoint_message(e):
    """Format 5 and 6 (signed_sseq) name the line signed, format 6 under a
    label of its own; format 3 and 4 sign the line before the checkpoint."""
    if "signed_sseq" not in e:
        return CHECKPOINT_LABEL + ("%s\n%s\n%s" % (e["vault"], e["session"],
                                                   e["signed_hash"])).encode()
    label = CHECKPOINT_LABEL_V6 if e["v"] >= 6 else CHECKPOINT_LABEL_V5
    return label + ("%s\n%s\n%d\n%s" % (e["vault"], e["session"], e["signed_sseq"],
                                         e["signed_hash"])).encode()


def dumps(e):
    return json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()


def rechain(events, signer):
    """Renumber and re-hash both chains; every checkpoint re-signed by
    signer (a Resigner), which may also put its own session key into the
    session-starts it rewrites.  A format 5 or 6 checkpoint keeps signing
    the line it signed if that line is still there (else the line before)."""
    lines, prev, sess = [], "0" * 64, {}
    for seq, e in enumerate(events, 1):
        st = sess.setdefault(e["session"], {"sseq": 0, "prev": "0" * 64, "moved": {},
                                            "checkpoints": 0})
        st["sseq"] += 1
        old_sseq = e["sseq"]
        e["seq"], e["prev"], e["sseq"], e["sprev"] = seq, prev, st["sseq"], st["prev"]
        if e["op"] == "session-start":
            signer.start(e)
        if e["op"] == "checkpoint":
            if "signed_sseq" in e:
                e["signed_sseq"], e["signed_hash"] = st["moved"].get(
                    e["signed_sseq"], (st["sseq"] - 1, st["prev"]))
            else:
                e["signed_hash"] = st["prev"]
            e["sig"] = signer.sign(e, checkpoint_message(e), st["checkpoints"] == 0)
            st["checkpoints"] += 1
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
    write_spool(v, rechain([dict(e) for e in own], Resigner(original, bob_key, bob_sessions)))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, "control rewrite of bob's own session fails: " + p.stderr

    # The attack: also edit alice's grant, re-sign everything with bob's key.
    forged = [dict(e) for e in own]
    target = next(i for i, e in enumerate(forged)
                  if e["op"] == "grant" and e["account"] == H.ACCOUNT and BOB in e["path"])
    forged[target]["path"] = forged[target]["path"].replace(BOB, "mallory")
    write_spool(v, rechain(forged, Resigner(original, bob_key, bob_sessions)))
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
    write_spool(v, rechain(forged, Resigner(original, bob_key, bob_sessions)))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    first_alice = next(i for i, e in enumerate(forged)
                       if e["session"] == sess and e["op"] != "session-start") + 1
    assert "line %d:" % first_alice in p.stderr, p.stderr


class Resigner:
    """The attacker's signer: a checkpoint whose session chain is unchanged keeps
    its original signature; every other one is signed with the attacker's keys:
    a session's first checkpoint with its account key, the later ones with a
    session key of its own, which it puts into the session-starts of the
    sessions it takes over (adopt: its own, or another account's)."""

    def __init__(self, events, key, adopt):
        self.key, self.adopt = key, adopt
        self.session_key = Ed25519PrivateKey.generate()
        self.orig = {(e["session"], e.get("signed_hash")): e.get("sig")
                     for e in events if e["op"] == "checkpoint"}

    def start(self, e):
        if "ckey" in e and e["session"] in self.adopt:
            e["ckey"] = self.session_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def sign(self, e, msg, first):
        if (e["session"], e["signed_hash"]) in self.orig:
            return self.orig[(e["session"], e["signed_hash"])]
        if first or e["v"] < 6:
            return self.key.sign(msg, PSS, hashes.SHA256()).hex()
        return self.session_key.sign(msg).hex()


def test_substituted_session_key_is_refused(accounts):
    """bob puts a session key of his own into alice's session-start, edits
    her grant and signs her later checkpoints with that key (format 6): the
    first checkpoint of her session, her account's signature over the
    session-start and so over its key, no longer verifies, and bob's account
    key cannot remake it."""
    v, mounts = accounts
    make_history(v, mounts)
    original = read_spool(v)
    bob_key = unseal_account_key(v, BOB, BOB_PASSWORD)
    bob_sessions = {[e["session"] for e in original
                     if e["op"] == "session-start" and e["account"] == BOB][-1]}
    forged = [dict(e) for e in original]
    target = next(i for i, e in enumerate(forged)
                  if e["op"] == "grant" and e["account"] == H.ACCOUNT and BOB in e["path"])
    sess = forged[target]["session"]
    start = next(e for e in forged if e["session"] == sess and e["op"] == "session-start")
    assert start["v"] == 6 and len(start["ckey"]) == 64, start
    genuine_key = start["ckey"]
    # Control: with the session key left alone, bob's signatures fail at the
    # first checkpoint after the edit, under alice's session key.
    forged[target]["path"] = forged[target]["path"].replace(BOB, "mallory")
    write_spool(v, rechain([dict(e) for e in forged], Resigner(original, bob_key, bob_sessions)))
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    assert "does not verify under the session key that account \"%s\"" % H.ACCOUNT \
        in p.stderr, p.stderr
    # The attack: bob's own session key in alice's session-start.
    write_spool(v, rechain(forged, Resigner(original, bob_key, bob_sessions | {sess})))
    assert next(e for e in read_spool(v) if e["session"] == sess)["ckey"] != genuine_key
    first_cp = next(i for i, e in enumerate(forged)
                    if e["session"] == sess and e["op"] == "checkpoint") + 1
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    assert "line %d: checkpoint signature does not verify under the key of account \"%s\"" \
        % (first_cp, H.ACCOUNT) in p.stderr, p.stderr


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
