"""Every user and administrator operation leaves its audit event with the right
fields (docs/format-audit.md): a result (ok, denied, error with errno), the
file id beside the path, and for setattr the changed fields; listing once per
directory handle; readlink, getxattr/listxattr, EROFS on read-only mounts, a
denied rename with its destination, a failed read as an error; pactfs-fsck's
verify, --repair and --gc; a failed passwd; a refused folder-create; init
recorded as done by the sysadmin."""
import errno
import json
import os
import re

import pytest

import pactfs_helpers as H
from test_accounts import ADMIN, BOB, accounts, add_account, admin, enrol, passfile  # noqa: F401

EXIT_ACCESS = 13


def events(v):
    with open(v.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


def find(evs, op, path_suffix=None, **fields):
    hits = [e for e in evs if e["op"] == op and
            (path_suffix is None or e["path"].endswith(path_suffix)) and
            all(e.get(k) == want for k, want in fields.items())]
    assert hits, "no %s event%s with %s; events with that op: %s" % (
        op, " for *" + path_suffix if path_suffix else "", fields,
        [e for e in evs if e["op"] == op][-5:])
    return hits[-1]


def fsck(v, *args):
    return H.run([H.binary("pactfs-fsck")] + list(args) + [v.dir])


@pytest.mark.timeout_s(900)
def test_every_operation_is_audited_with_its_fields(accounts):
    v, mounts = accounts
    admin("grant", H.FOLDER, BOB, "read", v.dir, vault=v)
    v.mount()
    d = v.path("cov-dir")
    os.mkdir(d)
    p = os.path.join(d, "contract.txt")
    H.write_file(p, b"terms\n" * 100)
    ino = os.stat(p).st_ino
    dino = os.stat(d).st_ino
    assert H.read_file(p) == b"terms\n" * 100
    os.listdir(d)
    os.symlink("contract.txt", os.path.join(d, "link"))
    assert os.readlink(os.path.join(d, "link")) == "contract.txt"
    os.setxattr(p, "user.note", b"confidential")
    assert os.getxattr(p, "user.note") == b"confidential"
    assert "user.note" in os.listxattr(p)
    os.chmod(p, 0o600)
    os.chown(p, 1234, 5678)
    os.utime(p, (1000000000, 1500000000))
    os.truncate(p, 10)
    assert H.errno_of(os.rename, p, os.path.join(v.mnt, "escaped.txt")) == errno.EACCES
    v.unmount()

    evs = events(v)
    for e in evs:
        assert e["result"] in ("ok", "denied", "error"), e
        assert (e["result"] == "ok") == ("errno" not in e), e
    rel = "/%s/cov-dir/contract.txt" % H.FOLDER
    assert find(evs, "readdir", "/cov-dir")["file"] == dino
    assert find(evs, "readlink", "/cov-dir/link", result="ok")["file"] > 0
    assert find(evs, "getxattr", rel, result="ok")["file"] == ino
    assert find(evs, "listxattr", rel, result="ok")["file"] == ino
    ch = find(evs, "chmod", rel, result="ok")
    assert ch["mode"] == "0600" and ch["file"] == ino, ch
    assert find(evs, "chown", rel, result="ok")["owner"] == "1234:5678"
    ut = find(evs, "utimens", rel, result="ok")
    assert ut["atime"].startswith("2001-09-09T01:46:40") and \
        ut["mtime"].startswith("2017-07-14T02:40:00"), ut
    tr = find(evs, "truncate", rel, result="ok")
    assert tr["size"] == 10 and tr["file"] == ino
    assert find(evs, "open", rel)["file"] == ino
    assert find(evs, "read", rel, result="ok")["file"] == ino
    ren = find(evs, "rename", result="denied")
    assert ren["errno"] == "EACCES" and ren["dest"] == "/escaped.txt", ren
    # the listing is one event per directory handle, not one per entry
    assert len([e for e in evs if e["op"] == "readdir" and e.get("file") == dino]) == 1

    # EROFS on a read-only mount.
    bob = mounts[BOB]
    bob.mount(extra=["-r"])
    try:
        assert H.errno_of(H.write_file, os.path.join(bob.folder, "ro.txt"), b"x") == errno.EROFS
    finally:
        bob.unmount()
    e = find(events(v), "create", "/ro.txt", account=BOB)
    assert e["result"] == "error" and e["errno"] == "EROFS", e

    # A failed read is an error with its errno, not "read ok bytes 0".
    for i in range(2):                   # fewer than k=2 endpoints left
        for f in H.fragment_files(v.store_dir(i)):
            os.unlink(f)
    v.mount()
    try:
        assert H.errno_of(H.read_file, p) == errno.EIO
    finally:
        v.unmount()
    e = find(events(v), "read", rel, result="error")
    assert e["errno"] == "EIO" and e["file"] == ino, e

    # pactfs-fsck: verify, --repair, --gc (an unsigned session: no account key).
    fsck(v)
    fsck(v, "--repair")
    fsck(v, "--gc")
    evs = events(v)
    for op in ("fsck-verify", "fsck-repair", "fsck-gc"):
        find(evs, op)
    assert find(evs, "fsck-verify")["result"] == "error"      # damage remains

    # A failed passwd and a refused folder-create.
    wrong = os.path.join(v.base, "wrong.pass")
    with open(wrong, "w") as f:
        f.write("not the password\n")
    p2 = v.admin("passwd", v.dir, "--account", H.ACCOUNT, "--passfile", wrong,
                 "--new-passfile", wrong)
    assert p2.returncode != 0
    e = find(events(v), "password-change", account=H.ACCOUNT)
    assert e["result"] != "ok" and "errno" in e, e
    p3 = v.admin("folder-create", "Forbidden", v.dir, "--account", BOB, "--passfile",
                 bob.account_pass)
    assert p3.returncode == EXIT_ACCESS, p3.stderr
    e = find(events(v), "folder-create", "Forbidden", account=BOB)
    assert e["result"] == "denied", e

    # init: the sysadmin made the vault and the accounts.
    evs = events(v)
    assert find(evs, "vault-init")["account"] == ADMIN
    assert {e["account"] for e in evs if e["op"] == "account-create"} == {ADMIN}
    assert v.admin("audit-verify", v.dir).returncode == 0


def test_every_account_change_is_audited_with_before_and_after(accounts):
    """create, enrol, rename, details, roles, disable, enable, expiry, re-enrol:
    each event names who (the acting sysadmin, or the person enrolling), what
    (op and account) and the account's state before and after."""
    v, _ = accounts
    pw = passfile(v, "erin.pass", "a quiet orange lantern 9")
    code = add_account(v, "erin", "--full-name", "Erin Example", "--department", "Sales")
    p = enrol(v, "erin", code, pw)
    admin("account-rename", "erin", "erin2", v.dir, "--account", ADMIN, vault=v)
    admin("account-details", "erin2", v.dir, "--email", "erin@example.com", "--department",
          "Legal", "--account", ADMIN, vault=v)
    admin("account-details", "erin2", v.dir, "--expires", "2099-12-31", "--account", ADMIN,
          vault=v)
    admin("account-role", "erin2", v.dir, "--role", "auditor,user", "--account", ADMIN, vault=v)
    admin("account-disable", "erin2", v.dir, "--account", ADMIN, vault=v)
    admin("account-enable", "erin2", v.dir, "--account", ADMIN, vault=v)
    admin("account-reenrol", "erin2", v.dir, "--account", ADMIN, vault=v)
    # a refused change is audited too, with the state it would have made
    admin("account-details", "nobody", v.dir, "--email", "x@example.com", "--account", ADMIN,
          vault=v, expect=16)

    evs = events(v)
    cr = find(evs, "account-create", "erin roles=user", account=ADMIN, result="ok")
    assert "before" not in cr and 'full_name="Erin Example"' in cr["after"], cr
    assert 'department="Sales"' in cr["after"] and "status=enabled" in cr["after"], cr
    en = find(evs, "account-enrol", account="erin", result="ok")
    fp = en["path"].split()[-1]
    # the code's id as pactfs-keyd's trail names it (first 8 bytes of the
    # SHA-256 of the code's public key, hex)
    assert re.fullmatch(r"pending \(code [0-9a-f]{16}\)", en["before"]), en
    assert en["after"] == "enrolled key " + fp, en
    assert fp in p.stdout
    rn = find(evs, "account-rename", "erin -> erin2", account=ADMIN, result="ok")
    assert "name=erin " in rn["before"] and "name=erin2 " in rn["after"], rn
    dt = [e for e in evs if e["op"] == "account-details" and e["result"] == "ok"]
    assert len(dt) == 2 and all(e["account"] == ADMIN for e in dt), dt
    assert 'email=""' in dt[0]["before"] and 'email="erin@example.com"' in dt[0]["after"]
    assert 'department="Sales"' in dt[0]["before"] and 'department="Legal"' in dt[0]["after"]
    assert "expires=never" in dt[1]["before"] and "expires=2099-12-31" in dt[1]["after"], dt
    rl = find(evs, "role-change", "erin2 roles=auditor,user", account=ADMIN, result="ok")
    assert "roles=user " in rl["before"] and "roles=auditor,user " in rl["after"], rl
    ds = find(evs, "account-disable", "erin2", account=ADMIN, result="ok")
    assert "status=enabled" in ds["before"] and "status=disabled" in ds["after"], ds
    eb = find(evs, "account-enable", "erin2", account=ADMIN, result="ok")
    assert "status=disabled" in eb["before"] and "status=enabled" in eb["after"], eb
    re_ = find(evs, "account-reenrol", "erin2", account=ADMIN, result="ok")
    assert re_["before"] == "enrolled key " + fp and re_["after"].startswith("pending"), re_
    find(evs, "account-details", "nobody", account=ADMIN, result="error")
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
