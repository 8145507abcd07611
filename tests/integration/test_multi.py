"""Several workstations writing one vault on PostgreSQL (issue 10).

Each "workstation" is an independent mount: its own copy of pactfs.conf in
its own directory (so its own lock files, audit spool and caches), its own
pactfs process and database connections, one PostgreSQL (TLS, as in
test_pg.py).  The endpoints are the first workstation's three local store
directories, shared by path: the tests exercise the metadata coordination,
not S3 (test_s3.py covers Ceph RGW).
"""
import json
import os
import re
import shutil
import time

import pytest

import pactfs_helpers as H
from test_pg import finish, pg  # noqa: F401  (the session's PostgreSQL)

BOUND_S = 1.0            # default metadata.poll_ms: changes reach the others within it
SLACK_S = 1.0            # scheduling on a loaded 2-core machine


class Workstation(H.Vault):
    """The vault as mounted on another workstation: a copy of its
    configuration directory (keys and conninfo as the admin handed them
    out), endpoints pointing at the shared stores."""

    def __init__(self, first, name, extra_conf=""):
        super().__init__(first.base, name=name)
        shutil.copytree(first.dir, self.dir, ignore=shutil.ignore_patterns(
            "stores", "audit.log*", "*.lock", "*.mounts", "*.status*", "*.prom"))
        with open(self.conf) as f:
            text = f.read()
        text = re.sub(r'"stores/(\d+)"', lambda m: '"%s"' % first.store_dir(m.group(1)), text)
        if extra_conf:
            text = re.sub(r'(conninfo\s*=\s*"[^"]*";)', r'\1 ' + extra_conf, text)
        with open(self.conf, "w") as f:
            f.write(text)


def until(fn, timeout):
    """Seconds until fn() is true; fails after timeout."""
    t0 = time.monotonic()
    while True:
        if fn():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError("not seen within %.1f s" % timeout)
        time.sleep(0.02)


def read_or_none(path):
    try:
        return H.read_file(path)
    except OSError:
        return None


@pytest.fixture
def office(tmp_path, pg):  # noqa: F811
    """A PostgreSQL vault and two workstations; both mounted."""
    v = H.Vault(tmp_path)
    v.db = pg.create_database()
    v.conninfo = pg.conninfo(v.db)
    v.init("--postgresql", v.conninfo)
    ws = [v, Workstation(v, "ws2")]
    try:
        for w in ws:
            w.mount()
        yield ws
    finally:
        for w in reversed(ws):
            finish(w)


def sessions(pg, db):
    return int(pg.psql("SELECT count(*) FROM sessions WHERE expires >"
                       " extract(epoch FROM clock_timestamp())", db).strip())


def test_changes_reach_the_other_workstation_within_the_bound(pg, office):
    a, b = office
    assert sessions(pg, a.db) == 2
    f_a, f_b = a.path("contract.txt"), b.path("contract.txt")
    H.write_file(f_a, b"version one")
    seen = {}
    seen["create"] = until(lambda: read_or_none(f_b) == b"version one", BOUND_S + SLACK_S)
    # b has it in its caches now (kernel attributes, entry, pages, its own
    # file state); a rewrites it: b's next open and stat see the new one
    assert os.stat(f_b).st_size == len(b"version one")
    H.write_file(f_a, b"version two, longer")
    seen["rewrite"] = until(lambda: os.stat(f_b).st_size == len(b"version two, longer")
                            and read_or_none(f_b) == b"version two, longer", BOUND_S + SLACK_S)
    os.rename(f_a, a.path("renamed.txt"))
    seen["rename"] = until(lambda: not os.path.exists(f_b)
                           and read_or_none(b.path("renamed.txt")) == b"version two, longer",
                           BOUND_S + SLACK_S)
    os.mkdir(b.path("from-b"))
    H.write_file(b.path("from-b", "x"), b"b wrote this")
    seen["mkdir"] = until(lambda: read_or_none(a.path("from-b", "x")) == b"b wrote this",
                          BOUND_S + SLACK_S)
    os.unlink(a.path("renamed.txt"))
    seen["unlink"] = until(lambda: not os.path.exists(b.path("renamed.txt"))
                           and "renamed.txt" not in os.listdir(b.folder), BOUND_S + SLACK_S)
    print("seen on the other workstation after (s):",
          {k: round(t, 3) for k, t in seen.items()})


def test_close_to_open_across_workstations(pg, office):
    """b keeps the file open while a rewrites it; b's next open reads a's
    committed version (no stale size or chunks), and the generation check
    never lets b go back to an older one."""
    a, b = office
    H.write_file(a.path("doc.bin"), H.seeded_bytes(1, 3 * H.CHUNK + 5))
    until(lambda: os.path.exists(b.path("doc.bin")), BOUND_S + SLACK_S)
    with open(b.path("doc.bin"), "rb") as held:
        H.assert_same_bytes(held.read(), H.seeded_bytes(1, 3 * H.CHUNK + 5), "first read")
        H.write_file(a.path("doc.bin"), H.seeded_bytes(2, H.CHUNK + 9))
    H.assert_same_bytes(H.read_file(b.path("doc.bin")), H.seeded_bytes(2, H.CHUNK + 9),
                        "b after a's rewrite")
    assert os.stat(b.path("doc.bin")).st_size == H.CHUNK + 9


def test_session_ends_at_unmount(pg, office):
    a, b = office
    b.unmount()
    assert sessions(pg, a.db) == 1
    b.mount()
    assert sessions(pg, a.db) == 2


def audit_events(v):
    with open(v.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


CONFLICT_RE = re.compile(r"^contract \(conflict %s \d{4}-\d\d-\d\d \d{4}\)\.docx$" % H.ACCOUNT)


def test_concurrent_writers_keep_both_versions(pg, office):
    """a and b open the same version; a saves first and keeps the file; b's
    save finds a newer generation and goes to a conflict copy beside it,
    encrypted like any file of the folder and audited: nothing is lost and
    the file never mixes chunks of both versions."""
    a, b = office
    n = 2 * H.CHUNK + 100
    H.write_file(a.path("contract.docx"), H.seeded_bytes(1, n))
    until(lambda: read_or_none(b.path("contract.docx")) == H.seeded_bytes(1, n),
          BOUND_S + SLACK_S)
    fa = os.open(a.path("contract.docx"), os.O_RDWR)
    fb = os.open(b.path("contract.docx"), os.O_RDWR)
    mine_a, mine_b = H.seeded_bytes(2, H.CHUNK), H.seeded_bytes(3, 50)
    os.pwrite(fa, mine_a, 0)                  # a rewrites chunk 0
    os.pwrite(fb, mine_b, H.CHUNK + 10)       # b changes a few bytes of chunk 1
    os.close(fa)                              # a's version is committed first
    os.close(fb)                              # b's commit finds a's generation
    want_a = mine_a + H.seeded_bytes(1, n)[H.CHUNK:]
    old = H.seeded_bytes(1, n)
    want_b = old[:H.CHUNK + 10] + mine_b + old[H.CHUNK + 60:]
    for w in (a, b):
        until(lambda: len([x for x in os.listdir(w.folder) if CONFLICT_RE.match(x)]) == 1,
              BOUND_S + SLACK_S)
        names = os.listdir(w.folder)
        copy = [x for x in names if CONFLICT_RE.match(x)][0]
        H.assert_same_bytes(H.read_file(w.path("contract.docx")), want_a,
                            "the file keeps the version saved first (%s)" % w.dir)
        H.assert_same_bytes(H.read_file(w.path(copy)), want_b,
                            "the conflict copy holds the other version (%s)" % w.dir)
    # b's own mount also reads a's version in the file now (its caches went)
    assert os.stat(b.path("contract.docx")).st_size == n
    ev = [e for e in audit_events(b) if e["op"] == "conflict"]
    assert len(ev) == 1 and ev[0]["path"].endswith("/contract.docx"), ev
    assert ev[0]["dest"].endswith("/" + copy), ev
    assert not [e for e in audit_events(a) if e["op"] == "conflict"]
    # the copy is a file of the folder like any other: its own inode, DEK
    # and bound, encrypted entry (no plaintext name in the store)
    assert int(pg.psql("SELECT count(*) FROM dirents WHERE position("
                       "convert_to('conflict', 'UTF8') IN name) > 0", a.db).strip()) == 0
    # a second round: each save after a conflict starts from the stored version
    H.write_file(b.path("contract.docx"), b"b after the conflict")
    until(lambda: read_or_none(a.path("contract.docx")) == b"b after the conflict",
          BOUND_S + SLACK_S)
    assert len([x for x in os.listdir(a.folder) if CONFLICT_RE.match(x)]) == 1
