"""Several workstations writing one vault on PostgreSQL (issue 10).

Each "workstation" is an independent mount: its own copy of pactfs.conf in
its own directory (so its own lock files, audit spool and caches), its own
pactfs process and database connections, one PostgreSQL (TLS, as in
test_pg.py).  The endpoints are the first workstation's three local store
directories, shared by path: the tests exercise the metadata coordination,
not S3 (test_s3.py covers Ceph RGW).
"""
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
