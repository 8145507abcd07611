"""pactfs-admin audit query / summary / denied (docs/auditor-guide.md): the
filters return exactly the events a plain reading of the trail selects, on
the local spool and against a real pactfs-auditd over TLS (which filters on
its side and refuses unknown parameters); only auditors may ask; "who read
contract X" follows the file through its renames by file id."""
import csv
import fnmatch
import io
import json
import os

import pytest

import pactfs_helpers as H
from test_accounts import ADMIN, BOB, add_and_enrol, admin, finish
from test_auditd import receiver, ship_to, vault_id  # noqa: F401

AUDITOR = "carol"
AUDITOR_PASSWORD = "auditing is my quiet profession 9"
EXIT_USAGE, EXIT_ACCESS = 2, 13


def spool_events(v):
    with open(v.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def trail(new_vault):
    """A vault with bob (user) and carol (auditor); alice writes contracts,
    bob reads one, alice renames it, bob reads it under its new name; bob is
    refused a folder of his own."""
    v = new_vault
    bob_pw = os.path.join(v.base, "bob.pass")
    carol_pw = os.path.join(v.base, "carol.pass")
    for p, pw in ((bob_pw, "my own long passphrase 7, kept"), (carol_pw, AUDITOR_PASSWORD)):
        with open(p, "w") as f:
            f.write(pw + "\n")
    add_and_enrol(v, BOB, bob_pw)
    add_and_enrol(v, AUDITOR, carol_pw, role="auditor")
    admin("grant", H.FOLDER, BOB, "read,write", v.dir, vault=v)
    v.mount()
    os.mkdir(v.path("Deals"))
    H.write_file(v.path("Deals", "deal-acme.pdf"), b"%PDF acme terms\n" * 200)
    H.write_file(v.path("Deals", "deal-zeta.pdf"), b"%PDF zeta terms\n" * 50)
    os.mkdir(v.path("Signed"))
    v.unmount()
    bob = H.AccountMount(v, BOB, bob_pw)
    try:
        bob.mount()
        assert H.read_file(bob.path("Deals", "deal-acme.pdf")).startswith(b"%PDF acme")
        # Only a dataadmin makes folders: refused (EACCES), audited as denied.
        assert H.errno_of(os.mkdir, os.path.join(bob.mnt, "BobsOwn")) == 13
        bob.unmount()
        v.mount()   # the contract is renamed, then bob reads it under its new name
        os.rename(v.path("Deals", "deal-acme.pdf"), v.path("Signed", "acme-final.pdf"))
        v.unmount()
        bob.mount()
        assert H.read_file(bob.path("Signed", "acme-final.pdf")).startswith(b"%PDF acme")
        H.read_file(bob.path("Deals", "deal-zeta.pdf"))
        bob.unmount()
    finally:
        finish(bob)
    yield v, carol_pw


def query(v, carol_pw, *args, expect=0, account=AUDITOR):
    p = v.admin("audit", *args, "--account", account, "--passfile", carol_pw, v.dir)
    assert p.returncode == expect, "audit %s -> exit %d (want %d)\n%s%s" % (
        " ".join(args), p.returncode, expect, p.stdout, p.stderr)
    return p


def seqs_of_json(out):
    return [json.loads(ln)["seq"] for ln in out.splitlines() if ln.strip()]


def sel(evs, **want):
    """The plain reading: events whose fields satisfy every predicate."""
    out = []
    for e in evs:
        if e["op"] == "checkpoint" and "op" not in want:
            continue
        if all(pred(e) for pred in want.values()):
            out.append(e)
    return sorted(out, key=lambda e: (e["time"], e["seq"]))


def under(prefix):
    def names(e):
        p = e.get("path", "")
        yield from (p.split(" -> ") if " -> " in p else [p])
        if e.get("dest"):
            yield e["dest"]
    return lambda e: any(n == prefix or n.startswith(prefix + "/") for n in names(e))


@pytest.mark.timeout_s(900)
def test_local_filters_return_exactly_the_expected_events(trail):
    v, carol_pw = trail
    evs = spool_events(v)
    acme = [e for e in evs if e["op"] == "create" and e["path"].endswith("/deal-acme.pdf")]
    assert len(acme) == 1, acme
    acme_id = acme[0]["file"]
    root = "/" + H.FOLDER

    cases = [
        (["--by", BOB, "--op", "read"],
         dict(a=lambda e: e["account"] == BOB, o=lambda e: e["op"] == "read")),
        (["--result", "denied"], dict(r=lambda e: e["result"] == "denied")),
        (["--file", str(acme_id)], dict(f=lambda e: e.get("file") == acme_id)),
        (["--path", root + "/Deals"], dict(p=under(root + "/Deals"))),
        (["--path", "*/deal-*.pdf", "--op", "create,read"],
         dict(p=lambda e: fnmatch.fnmatchcase(e.get("path", ""), "*/deal-*.pdf"),
              o=lambda e: e["op"] in ("create", "read"))),
        (["--op", "grant,account-add"],
         dict(o=lambda e: e["op"] in ("grant", "account-add"))),
    ]
    for args, preds in cases:
        want = [e["seq"] for e in sel(evs, **preds)]
        assert want, "the scenario made no event for %s" % args
        got = seqs_of_json(query(v, carol_pw, "query", *args, "--format", "json").stdout)
        assert got == want, "audit query %s:\n got %s\nwant %s" % (args, got, want)

    # A time range: from inclusive, until exclusive.
    reads = sel(evs, o=lambda e: e["op"] == "read")
    t0, t1 = reads[0]["time"], reads[-1]["time"]
    got = seqs_of_json(query(v, carol_pw, "query", "--op", "read", "--from", t0, "--until", t1,
                             "--format", "json").stdout)
    assert got == [e["seq"] for e in reads if t0 <= e["time"] < t1]
    got = seqs_of_json(query(v, carol_pw, "query", "--from", "2200-01-01",
                             "--format", "json").stdout)
    assert got == []

    # Who read contract X, through its rename, in one command.
    p = query(v, carol_pw, "query", "--path", root + "/Deals/deal-acme.pdf", "--follow-renames",
              "--op", "read", "--format", "json")
    got = [json.loads(ln) for ln in p.stdout.splitlines()]
    want = sel(evs, o=lambda e: e["op"] == "read", f=lambda e: e.get("file") == acme_id)
    assert [e["seq"] for e in got] == [e["seq"] for e in want]
    assert {e["path"] for e in got} == {root + "/Deals/deal-acme.pdf",
                                        root + "/Signed/acme-final.pdf"}, got
    assert {e["account"] for e in got} == {BOB}
    # Without --follow-renames the read under the new name is not found.
    p = query(v, carol_pw, "query", "--path", root + "/Deals/deal-acme.pdf", "--op", "read",
              "--format", "json")
    assert len(p.stdout.splitlines()) == 1

    # Table and CSV say the same.
    p = query(v, carol_pw, "query", "--by", BOB, "--op", "read", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    want = sel(evs, a=lambda e: e["account"] == BOB, o=lambda e: e["op"] == "read")
    assert [r["time"] for r in rows] == [e["time"] for e in want]
    assert [r["path"] for r in rows] == [e["path"] for e in want]
    assert all(r["bytes"] == str(e["bytes"]) for r, e in zip(rows, want))
    p = query(v, carol_pw, "query", "--by", BOB, "--op", "read")
    lines = p.stdout.splitlines()
    assert lines[0].startswith("TIME (UTC)") and len(lines) == 1 + len(want), p.stdout
    assert "/Signed/acme-final.pdf" in p.stdout


@pytest.mark.timeout_s(900)
def test_reports_and_who_may_ask(trail):
    v, carol_pw = trail
    evs = spool_events(v)
    p = query(v, carol_pw, "summary", "--format", "json")
    rows = {r["account"]: r for r in map(json.loads, p.stdout.splitlines())}
    mine = [e for e in evs if e["account"] == BOB and e["op"] != "checkpoint"]
    assert rows[BOB]["events"] == len(mine)
    assert rows[BOB]["reads"] == sum(e["op"] == "read" for e in mine) >= 2
    assert rows[BOB]["read_bytes"] == sum(e["bytes"] for e in mine if e["op"] == "read")
    assert rows[BOB]["denied"] == sum(e["result"] == "denied" for e in mine) >= 1
    assert rows[BOB]["sessions"] == sum(e["op"] == "session-start" for e in mine)
    assert rows[ADMIN]["admin_actions"] >= 3      # account-add x2, ...

    # A wrong password is a failed unlock: in the denied report with bob's refusal.
    bad = os.path.join(v.base, "wrong.pass")
    with open(bad, "w") as f:
        f.write("not the password at all, 12\n")
    assert v.pactfs(*H.AccountMount(v, BOB, bad).mount_args()).returncode != 0
    p = query(v, carol_pw, "denied", "--format", "json")
    got = [json.loads(ln) for ln in p.stdout.splitlines()]
    evs = spool_events(v)
    want = [e["seq"] for e in evs if e["result"] == "denied" or
            (e["op"] == "unlock" and e["result"] != "ok")]
    assert sorted(e["seq"] for e in got) == sorted(want)
    assert any(e["op"] == "unlock" and e["account"] == BOB for e in got)
    p = query(v, carol_pw, "denied", "--by", BOB)
    assert "denied access" in p.stdout.splitlines()[-1]

    # Only auditors ask; the refusal is audited.  Each question is audited.
    p = query(v, v.passfile, "query", expect=EXIT_ACCESS, account=H.ACCOUNT)
    assert "not an auditor" in p.stderr
    evs = spool_events(v)
    assert any(e["op"] == "audit-query" and e["account"] == H.ACCOUNT and
               e["result"] == "denied" for e in evs)
    asked = [e for e in evs if e["op"] == "audit-query" and e["account"] == AUDITOR]
    assert asked and all(e["path"] == "" for e in asked)
    # Mistakes are refused, not widened.
    for args in (["query", "--result", "maybe"], ["query", "--from", "last week"],
                 ["query", "--file", "x"], ["query", "--follow-renames"], ["report"],
                 ["query", "--format", "xml"]):
        p = query(v, carol_pw, *args, expect=EXIT_USAGE)
        assert "Usage" in p.stderr, p.stderr


@pytest.mark.timeout_s(900)
def test_receiver_filters_server_side_and_refuses_unknown_parameters(trail, receiver):
    v, carol_pw = trail
    ship_to(v, receiver)
    p = v.admin("audit-ship", v.dir)
    assert p.returncode == 0, p.stderr
    vid = vault_id(v)
    evs = [json.loads(ln) for ln in receiver.events(vid).splitlines()]
    assert len(evs) == len(spool_events(v))

    # The API itself: filtered on the receiver's side.
    status, body = receiver.get("/v1/events?vault=%s&account=%s&op=read" % (vid, BOB))
    assert status == 200, body
    got = [json.loads(ln)["seq"] for ln in body.splitlines()]
    assert got == [e["seq"] for e in evs if e["account"] == BOB and e["op"] == "read"]
    for bad, word in (("acount=bob", "acount"), ("result=maybe", "maybe"),
                      ("from=yesterday", "yesterday"), ("file=-1", "file")):
        status, body = receiver.get("/v1/events?vault=%s&%s" % (vid, bad))
        assert status == 400 and word.encode() in body, (bad, status, body)
    status, body = receiver.get("/v1/verify?vault=%s&since=3" % vid)
    assert status == 400 and b"since" in body, body

    # The same questions through audit query --receiver.
    pki = receiver.pki
    remote = ["--receiver", receiver.url, "--ca", os.path.join(pki, "ca.pem"),
              "--cert", os.path.join(pki, "auditor.pem"), "--key", os.path.join(pki, "auditor.key")]
    acme_id = next(e["file"] for e in evs if e["op"] == "create" and
                   e["path"].endswith("/deal-acme.pdf"))
    root = "/" + H.FOLDER
    cases = [
        (["--by", BOB, "--op", "read"],
         dict(a=lambda e: e["account"] == BOB, o=lambda e: e["op"] == "read")),
        (["--result", "denied"], dict(r=lambda e: e["result"] == "denied")),
        (["--path", root + "/Signed"], dict(p=under(root + "/Signed"))),
        (["--path", root + "/Deals/deal-acme.pdf", "--follow-renames", "--op", "read"],
         dict(o=lambda e: e["op"] == "read", f=lambda e: e.get("file") == acme_id)),
    ]
    for args, preds in cases:
        want = [e["seq"] for e in sel(evs, **preds)]
        assert want, args
        got = seqs_of_json(query(v, carol_pw, "query", *args, *remote, "--format",
                                 "json").stdout)
        assert got == want, "remote audit query %s:\n got %s\nwant %s" % (args, got, want)
    # A sender's certificate is not an auditor's: refused by the receiver.
    p = query(v, carol_pw, "query", "--receiver", receiver.url, "--ca",
              os.path.join(pki, "ca.pem"), "--cert", os.path.join(pki, "client.pem"),
              "--key", os.path.join(pki, "client.key"), expect=EXIT_ACCESS)
    assert "403" in p.stderr and "auditors" in p.stderr, p.stderr
