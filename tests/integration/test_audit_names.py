"""Names in the audit trail are sealed to the auditors (docs/format-audit.md,
"Sealed names"): once an auditor made the vault's audit names key, a marker
used in folder and file names appears nowhere in the spool or in the
receiver's store (the raw bytes are searched), the chains and signatures
still verify without the key, and an auditor holding the key reads the
names with pactfs-admin audit query, locally and through the receiver.
An auditor without an envelope sees "(sealed)"; removing the key from the
metadata afterwards makes sessions refuse to open rather than write names
in plaintext."""
import json
import os
import sqlite3

import pytest

import pactfs_helpers as H
from test_accounts import BOB, add_and_enrol, admin
from test_auditd import receiver, ship_to, vault_id  # noqa: F401

MARK = "ZQXMARKER"
CAROL, DAVE = "carol", "dave"
EXIT_ACCESS, EXIT_EXISTS, EXIT_AUDIT = 13, 11, 15


def passfile(v, name, pw):
    p = os.path.join(v.base, name + ".pass")
    with open(p, "w") as f:
        f.write(pw + "\n")
    return p


def raw_files_with(root, needle):
    hits = []
    for d, _, files in os.walk(root):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                if needle in f.read():
                    hits.append(os.path.join(d, n))
    return hits


def audit(v, who, pw, *args, expect=0):
    p = v.admin(*args, "--account", who, "--passfile", pw, v.dir)
    assert p.returncode == expect, "%s -> exit %d (want %d)\n%s%s" % (
        " ".join(args), p.returncode, expect, p.stdout, p.stderr)
    return p


@pytest.mark.timeout_s(900)
def test_names_sealed_to_auditors(new_vault, receiver):
    v = new_vault
    carol_pw = passfile(v, CAROL, "auditing is my quiet profession 9")
    dave_pw = passfile(v, DAVE, "another auditor with a long phrase 3")
    bob_pw = passfile(v, BOB, "my own long passphrase 7, kept")
    add_and_enrol(v, CAROL, carol_pw, role="auditor")
    add_and_enrol(v, DAVE, dave_pw, role="auditor")
    add_and_enrol(v, BOB, bob_pw)
    ship_to(v, receiver)

    # Only an auditor makes the key, once.
    audit(v, H.ACCOUNT, v.passfile, "audit-key", "create", expect=EXIT_ACCESS)
    p = audit(v, CAROL, carol_pw, "audit-key", "create")
    assert "audit names key" in p.stdout
    audit(v, CAROL, carol_pw, "audit-key", "create", expect=EXIT_EXISTS)
    before = os.path.getsize(v.audit_log)

    # Contract names with the marker: a folder (made at the mount's root),
    # a directory, a file, a rename; a grant naming the folder.
    v.mount()
    os.mkdir(os.path.join(v.mnt, MARK + "-Deals"))
    d = v.path("Dir-" + MARK)
    os.mkdir(d)
    H.write_file(os.path.join(d, MARK + "-terms.pdf"), b"%PDF terms\n" * 100)
    os.rename(os.path.join(d, MARK + "-terms.pdf"), os.path.join(d, "final-" + MARK + ".pdf"))
    assert H.read_file(os.path.join(d, "final-" + MARK + ".pdf")).startswith(b"%PDF")
    v.unmount()
    admin("grant", MARK + "-Deals", BOB, "read", v.dir, vault=v)
    assert v.admin("audit-ship", v.dir).returncode == 0

    # Nowhere in plaintext: the spool, the receiver's store, its answers.
    with open(v.audit_log, "rb") as f:
        spool = f.read()
    assert MARK.encode() not in spool[before:], "marker in the spool"
    assert b'"names":"' in spool[before:] and b'"names_key":"' in spool[before:]
    assert raw_files_with(os.path.join(receiver.base, "store"), MARK.encode()) == []
    vid = vault_id(v)
    assert MARK.encode() not in receiver.events(vid)
    # The chains and signatures verify without the key.
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert receiver.verify(vid)["ok"] is True

    # carol reads the names, locally and through the receiver.
    pki = receiver.pki
    remote = ["--receiver", receiver.url, "--ca", os.path.join(pki, "ca.pem"),
              "--cert", os.path.join(pki, "auditor.pem"), "--key", os.path.join(pki, "auditor.key")]
    want_ops = {"folder-create", "mkdir", "create", "write", "rename", "read", "grant"}
    results = []
    for extra in ([], remote):
        p = audit(v, CAROL, carol_pw, "audit", "query", "--path", "*" + MARK + "*",
                  "--format", "json", *extra)
        evs = [json.loads(ln) for ln in p.stdout.splitlines()]
        assert want_ops <= {e["op"] for e in evs}, (extra, sorted({e["op"] for e in evs}))
        assert all(MARK in e["path"] + e.get("dest", "") for e in evs)
        assert all("names" not in e for e in evs)
        results.append([e["seq"] for e in evs])
    assert results[0] == results[1]
    # Following the file through its rename, by id, on opened names.
    p = audit(v, CAROL, carol_pw, "audit", "query", "--path",
              "/%s/Dir-%s/%s-terms.pdf" % (H.FOLDER, MARK, MARK), "--follow-renames",
              "--op", "read", "--format", "json", *remote)
    reads = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [e["path"] for e in reads] == ["/%s/Dir-%s/final-%s.pdf" % (H.FOLDER, MARK, MARK)]

    # dave is an auditor without an envelope: the names stay sealed for him.
    p = audit(v, DAVE, dave_pw, "audit", "query", "--op", "create", "--format", "json")
    evs = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert evs and MARK not in p.stdout and "sealed" in p.stderr
    p = audit(v, DAVE, dave_pw, "audit", "query", "--path", "*" + MARK + "*")
    assert MARK not in p.stdout and len(p.stdout.splitlines()) == 1   # the header only
    # bob cannot be given the key; carol gives it to dave, who then reads.
    audit(v, CAROL, carol_pw, "audit-key", "grant", BOB, expect=EXIT_ACCESS)
    audit(v, CAROL, carol_pw, "audit-key", "grant", DAVE)
    p = audit(v, DAVE, dave_pw, "audit", "query", "--path", "*" + MARK + "*", "--op", "create")
    assert MARK + "-terms.pdf" in p.stdout, p.stdout

    # The database operator removes the key to get plaintext names: this
    # machine used it, so sessions refuse to open instead.
    with sqlite3.connect(os.path.join(v.dir, "meta.db")) as c:
        row = c.execute("SELECT value FROM params WHERE key = 'audit.names'").fetchone()
        c.execute("DELETE FROM params WHERE key = 'audit.names'")
    p = v.admin("folder-create", MARK + "-Leak", v.dir, "--account", H.ACCOUNT,
                "--passfile", v.passfile)
    assert p.returncode == EXIT_AUDIT, p.stdout + p.stderr
    assert "names key" in p.stderr, p.stderr
    with open(v.audit_log, "rb") as f:
        assert MARK.encode() not in f.read()[before:]
    with sqlite3.connect(os.path.join(v.dir, "meta.db")) as c:
        c.execute("INSERT INTO params (key, value) VALUES ('audit.names', ?)", (row[0],))
    admin("folder-create", "After-Restore", v.dir, "--account", H.ACCOUNT, vault=v)
