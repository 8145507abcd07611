"""The vault head anchored in pactfs-keyd (issue 7): with a key service, the
newest signed vault head a client has seen is kept by the service, not on
one workstation, so a restored older copy of the metadata is refused even on
a workstation that never mounted the vault (no local anchor).

Run against the real pactfs-keyd over TLS (the fixtures of test_keyd.py).
"""
import json
import os
import shutil
import sqlite3

import pactfs_helpers as H
from test_keyd import (Keyd, clone_vault, keyd, keyd_factory, keyd_post, kvault,  # noqa: F401
                       pki, vault_factory)

EXIT_ROLLBACK = 17


def anchor(k, v):
    """(counter, hash) the service keeps for the vault, or None."""
    db = sqlite3.connect("file:%s?mode=ro" % k.file("keyd.db"), uri=True)
    try:
        rows = db.execute("SELECT counter, hash FROM anchors"     # not VAULT#files,
                          " WHERE vault NOT LIKE '%#%'").fetchall()    # VAULT#roster
    finally:
        db.close()
    return rows[0] if rows else None


def head_counter(vdir):
    with sqlite3.connect(os.path.join(vdir, "meta.db")) as c:
        (blob,) = c.execute("SELECT value FROM params WHERE key = 'vault_head'").fetchone()
    # blob(tbs) | blob(sig); tbs = "PFSH" u8 str(vault_id) u64 counter ...
    tbs_len = int.from_bytes(blob[0:4], "big")
    tbs = blob[4:4 + tbs_len]
    assert tbs[:4] == b"PFSH"
    vid_len = int.from_bytes(tbs[5:9], "big")
    off = 9 + vid_len
    return int.from_bytes(tbs[off:off + 8], "big")


post = keyd_post


def events(v, op):
    with open(v.audit_log) as f:
        return [e for e in map(json.loads, filter(str.strip, f)) if e["op"] == op]


def test_restored_metadata_refused_on_a_new_workstation(kvault, keyd, tmp_path):
    v, k = kvault, keyd
    first = anchor(k, v)
    assert first is not None, "init did not anchor the vault head at the key service"
    assert first[0] == head_counter(v.dir)
    v.mount()
    H.write_file(v.path("before.txt"), b"before the backup", fsync=True)
    v.unmount()
    backup = os.path.join(v.base, "meta.db.backup")
    with sqlite3.connect(os.path.join(v.dir, "meta.db")) as src, \
            sqlite3.connect(backup) as dst:
        src.backup(dst)                  # with what the WAL holds

    # a change after the copy advances the head, and the service's anchor
    p = v.admin("folder-create", "Sales", v.dir, "--passfile", v.passfile)
    assert p.returncode == 0, p.stderr
    now = head_counter(v.dir)
    assert now > first[0] and anchor(k, v)[0] == now, (first, now, anchor(k, v))
    assert [e for e in k.audit_events() if e["op"] == "anchor-put" and
            e["result"] == "anchored" and e.get("account") == H.ACCOUNT]

    # A workstation that never mounted the vault (a copy of its directory:
    # no local state at all) is handed the older metadata by the operator.
    w = clone_vault(v, tmp_path, "workstation2")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(os.path.join(w.dir, "meta.db" + suffix)):
            os.unlink(os.path.join(w.dir, "meta.db" + suffix))
    shutil.copyfile(backup, os.path.join(w.dir, "meta.db"))
    assert head_counter(w.dir) < now
    p = w.pactfs(*w.mount_args())
    try:
        assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stdout, p.stderr)
        assert "keyd" in p.stderr and "older than" in p.stderr, p.stderr
        assert "accept-metadata-rollback" in p.stderr, p.stderr
        assert not H.is_mounted(w.mnt)
        assert events(w, "rollback"), "no rollback audit event"
        # the admin tools too
        p = w.admin("grant", H.FOLDER, H.ACCOUNT + "-admin", "read", w.dir, "--passfile",
                    v.passfile)
        assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stderr)
        assert anchor(k, v)[0] == now, "a refused client moved the anchor"

        # the explicit override mounts it, audited here and at the service
        w.mount(extra=["--accept-metadata-rollback"])
        assert H.read_file(w.path("before.txt")) == b"before the backup"
        w.unmount()
        accepted = events(w, "rollback-accepted")
        assert accepted and "older than" in accepted[-1]["path"], accepted
        forced = [e for e in k.audit_events() if e["op"] == "anchor-put" and e.get("force")]
        assert forced and forced[-1]["result"] == "forced", forced
        assert anchor(k, v)[0] == head_counter(w.dir)
        w.mount()
        w.unmount()
    finally:
        H.teardown(w)

    # the first workstation's newer metadata is now a different head with
    # a higher counter: newer is accepted
    v.mount()
    v.unmount()


def test_anchor_put_needs_a_login_or_the_admin_token(kvault, keyd):
    v, k = kvault, keyd
    counter, h = anchor(k, v)
    vault_id = [a[0] for a in k.accounts()][0]
    body = {"vault": vault_id, "counter": counter + 100, "hash": "00" * 32}
    st, ans = post(k, "/v1/anchor-put", body)
    assert st == 401, (st, ans)
    st, ans = post(k, "/v1/anchor-put", dict(body, account=H.ACCOUNT, token="00" * 40))
    assert st == 401, (st, ans)
    assert anchor(k, v)[0] == counter
    # older or forked heads are refused even with the admin token
    st, ans = post(k, "/v1/anchor-put", dict(body, counter=counter - 1), token=k.token)
    assert st == 409 and ans["error"] == "stale" and ans["counter"] == counter, (st, ans)
    st, ans = post(k, "/v1/anchor-put", dict(body, counter=counter), token=k.token)
    assert st == 409 and ans["error"] == "fork", (st, ans)
    st, ans = post(k, "/v1/anchor-get", {"vault": vault_id})
    assert st == 200 and ans["counter"] == counter and bytes.fromhex(ans["hash"]) == bytes(h)
    st, ans = post(k, "/v1/anchor-get", {"vault": "no-such-vault"})
    assert st == 404 and ans["error"] == "no-anchor", (st, ans)


def roster_counter(k):
    db = sqlite3.connect("file:%s?mode=ro" % k.file("keyd.db"), uri=True)
    try:
        rows = db.execute("SELECT counter FROM anchors WHERE vault LIKE '%#roster'").fetchall()
    finally:
        db.close()
    return rows[0][0] if rows else None


def test_older_role_roster_refused_on_a_new_workstation(kvault, keyd, tmp_path):
    """The role roster's anchor lives at the key service too (slot
    VAULT#roster, docs/accounts.md "The role roster"): a workstation that
    never mounted the vault refuses an older roster step put back in the
    metadata, while the vault head (which does not cover the roster) is
    current."""
    v, k = kvault, keyd
    assert roster_counter(k) == 1, "init did not anchor the role roster at the key service"
    with sqlite3.connect(os.path.join(v.dir, "meta.db")) as c:
        (first,) = c.execute("SELECT value FROM params WHERE key = 'registry.roster'").fetchone()
    # a roster change (the co-signature setting) moves the service's anchor
    p = v.admin("cosign-policy", v.dir, "--required", "no", "--account", H.ACCOUNT + "-admin",
                "--passfile", v.passfile)
    assert p.returncode == 0, p.stdout + p.stderr
    assert roster_counter(k) == 2, roster_counter(k)

    w = clone_vault(v, tmp_path, "workstation2")
    try:
        w.mount()                         # the current roster: fine
        w.unmount()
        # the operator puts step 1 back and removes step 2 from the history
        with sqlite3.connect(os.path.join(w.dir, "meta.db")) as c:
            c.execute("UPDATE params SET value = ? WHERE key = 'registry.roster'", (first,))
            c.execute("DELETE FROM params WHERE key = 'registry.roster.2'")
        # no local anchor of the roster on this workstation: only keyd knows
        p = w.pactfs(*w.mount_args())
        assert p.returncode == EXIT_ROLLBACK, (p.returncode, p.stdout, p.stderr)
        assert "older roster was put back" in p.stderr and "keyd" in p.stderr, p.stderr
        assert not H.is_mounted(w.mnt)
        assert events(w, "rollback"), "no rollback audit event"
        assert roster_counter(k) == 2, "a refused client moved the anchor"
    finally:
        H.teardown(w)
