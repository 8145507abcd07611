"""Several workstations writing one vault on PostgreSQL (issue 10).

Each "workstation" is an independent mount: its own copy of pactfs.conf in
its own directory (so its own lock files, audit spool and caches), its own
pactfs process and database connections, one PostgreSQL (TLS, as in
test_pg.py).  The endpoints are the first workstation's three local store
directories, shared by path: the tests exercise the metadata coordination,
not S3 (test_s3.py covers Ceph RGW).
"""
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import threading
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


def add_conf(v, extra_conf):
    with open(v.conf) as f:
        text = f.read()
    text = re.sub(r'(conninfo\s*=\s*"[^"]*";)', r'\1 ' + extra_conf, text)
    with open(v.conf, "w") as f:
        f.write(text)


def workstations(tmp_path, pg, n=2, extra_conf=""):  # noqa: F811
    """A PostgreSQL vault and n workstations (its configuration copied),
    all mounted; unmounted at the end (a SIGKILLed one lazily)."""
    v = H.Vault(tmp_path)
    v.db = pg.create_database()
    v.conninfo = pg.conninfo(v.db)
    v.init("--postgresql", v.conninfo)
    if extra_conf:
        add_conf(v, extra_conf)
    ws = [v] + [Workstation(v, "ws%d" % i) for i in range(2, n + 1)]
    try:
        for w in ws:
            w.mount()
        yield ws
    finally:
        for w in reversed(ws):
            if w.daemon_pid and not os.path.exists("/proc/%d" % w.daemon_pid):
                H.fusermount_u(w.mnt, lazy=True)
                w.daemon_pid = None
            finish(w)


@pytest.fixture
def office(tmp_path, pg):  # noqa: F811
    """A PostgreSQL vault and two workstations; both mounted."""
    yield from workstations(tmp_path, pg)


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


# ------------------------------------------------------------ advisory locks

LEASE_S = 3


@pytest.fixture
def office_short_lease(tmp_path, pg):  # noqa: F811
    """Two workstations with a 3 s session lease (crash tests)."""
    yield from workstations(tmp_path, pg, extra_conf="lease_seconds = %d;" % LEASE_S)


FLOCK_FMT = "hhxxxxqqixxxx"   # struct flock on x86_64 / aarch64 Linux


def getlk(fd, cmd, typ, start, length):
    res = fcntl.fcntl(fd, cmd, struct.pack(FLOCK_FMT, typ, 0, start, length, 0))
    t, _, s, ln, _ = struct.unpack(FLOCK_FMT, res)
    return t, s, ln


def would_block(fn, *args):
    try:
        fn(*args)
        return False
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EACCES), e
        return True


def test_locks_are_shared_across_workstations(pg, office):
    a, b = office
    H.write_file(a.path("contract.odt"), b"x" * 100)
    until(lambda: os.path.exists(b.path("contract.odt")), BOUND_S + SLACK_S)
    fa = os.open(a.path("contract.odt"), os.O_RDWR)
    fb = os.open(b.path("contract.odt"), os.O_RDWR)
    try:
        # flock: a's exclusive lock denies b, shared locks coexist
        fcntl.flock(fa, fcntl.LOCK_EX)
        assert would_block(fcntl.flock, fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert would_block(fcntl.flock, fb, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fa, fcntl.LOCK_SH)                   # downgrade
        fcntl.flock(fb, fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert would_block(fcntl.flock, fa, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fb, fcntl.LOCK_UN)
        fcntl.flock(fa, fcntl.LOCK_UN)
        # a blocking flock on b waits for a's unlock
        fcntl.flock(fa, fcntl.LOCK_EX)
        got = {}

        def wait_b():
            t0 = time.monotonic()
            fcntl.flock(fb, fcntl.LOCK_EX)
            got["after"] = time.monotonic() - t0
        th = threading.Thread(target=wait_b)
        th.start()
        time.sleep(0.6)
        assert "after" not in got
        fcntl.flock(fa, fcntl.LOCK_UN)
        th.join(10)
        assert got.get("after", 0) >= 0.5, got
        fcntl.flock(fb, fcntl.LOCK_UN)

        # fcntl byte ranges: a write-locks bytes 0..9
        fcntl.lockf(fa, fcntl.LOCK_EX, 10, 0)
        assert would_block(fcntl.lockf, fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)
        assert would_block(fcntl.lockf, fb, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 9)
        fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10)   # 10..19 is free
        t, s, ln = getlk(fb, fcntl.F_GETLK, fcntl.F_WRLCK, 0, 0)
        assert (t, s, ln) == (fcntl.F_WRLCK, 0, 10), (t, s, ln)
        # a unlocks the middle: 0..2 and 8..9 stay a's, 3..7 is free
        fcntl.lockf(fa, fcntl.LOCK_UN, 5, 3)
        fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 3)
        assert would_block(fcntl.lockf, fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 8)
        assert would_block(fcntl.lockf, fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 2)
        fcntl.lockf(fb, fcntl.LOCK_UN, 0, 0)
        # POSIX locks go when their process closes any descriptor of the file
        os.close(fa)
        fa = None
        fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        fcntl.lockf(fb, fcntl.LOCK_UN, 0, 0)
        # OFD locks (owned by the open file): held until its last close
        fa = os.open(a.path("contract.odt"), os.O_RDWR)
        fcntl.fcntl(fa, fcntl.F_OFD_SETLK, struct.pack(FLOCK_FMT, fcntl.F_WRLCK, 0, 0, 0, 0))
        assert would_block(fcntl.fcntl, fb, fcntl.F_OFD_SETLK,
                           struct.pack(FLOCK_FMT, fcntl.F_RDLCK, 0, 50, 1, 0))
        t, _, _ = getlk(fb, fcntl.F_OFD_GETLK, fcntl.F_RDLCK, 0, 0)
        assert t == fcntl.F_WRLCK
        os.close(fa)
        fa = None
        until(lambda: not would_block(fcntl.fcntl, fb, fcntl.F_OFD_SETLK,
                                      struct.pack(FLOCK_FMT, fcntl.F_RDLCK, 0, 50, 1, 0)),
              BOUND_S)
    finally:
        for fd in (fa, fb):
            if fd is not None:
                os.close(fd)
    assert int(pg.psql("SELECT count(*) FROM locks", a.db).strip()) == 0


def test_crashed_workstation_locks_go_with_its_lease(pg, office_short_lease):
    a, b = office_short_lease
    H.write_file(a.path("contract.odt"), b"x")
    until(lambda: os.path.exists(b.path("contract.odt")), BOUND_S + SLACK_S)
    fa = os.open(a.path("contract.odt"), os.O_RDWR)
    fcntl.flock(fa, fcntl.LOCK_EX)
    fcntl.lockf(fa, fcntl.LOCK_EX, 0, 0)
    fb = os.open(b.path("contract.odt"), os.O_RDWR)
    try:
        assert would_block(fcntl.flock, fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert would_block(fcntl.lockf, fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        os.kill(a.daemon_pid, signal.SIGKILL)
        # the dead mount's locks still count until its lease runs out (a
        # lease renewed every lease/3: at least a few hundred ms from here)
        assert would_block(fcntl.flock, fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        waited = until(lambda: not would_block(fcntl.flock, fb, fcntl.LOCK_EX | fcntl.LOCK_NB),
                       LEASE_S + 2 * SLACK_S + 2)
        fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        print("lock free %.2f s after the SIGKILL (lease %d s)" % (waited, LEASE_S))
    finally:
        os.close(fb)
        try:
            os.close(fa)
        except OSError:
            pass
    # the dead session, and its locks, are deleted by the live one
    until(lambda: int(pg.psql("SELECT count(*) FROM sessions", a.db).strip()) == 1,
          LEASE_S + 2 * SLACK_S + 2)
    assert int(pg.psql("SELECT count(*) FROM locks", a.db).strip()) == 0


# ------------------------------------------- files unlinked while open elsewhere

def inode_rows(pg, db, ino):
    return int(pg.psql("SELECT count(*) FROM inodes WHERE ino = %d" % ino, db).strip())


def chunk_rows(pg, db, ino):
    return int(pg.psql("SELECT count(*) FROM chunks WHERE ino = %d" % ino, db).strip())


def test_unlinked_file_lives_while_another_workstation_has_it_open(pg, office):
    a, b = office
    data = H.seeded_bytes(5, 2 * H.CHUNK + 3)
    H.write_file(a.path("draft.pdf"), data)
    until(lambda: os.path.exists(b.path("draft.pdf")), BOUND_S + SLACK_S)
    with open(b.path("draft.pdf"), "rb") as held:
        ino = os.fstat(held.fileno()).st_ino
        assert int(pg.psql("SELECT count(*) FROM holds WHERE ino = %d" % ino, a.db)) == 1
        os.unlink(a.path("draft.pdf"))
        until(lambda: not os.path.exists(b.path("draft.pdf")), BOUND_S + SLACK_S)
        # a's kernel forgets the inode now (dentries and inodes dropped), so
        # a's last reference goes and a would delete it
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        time.sleep(0.5)
        # a has deleted nothing: b still reads every byte
        assert inode_rows(pg, a.db, ino) == 1
        H.assert_same_bytes(held.read(), data, "b reads the file a unlinked")
    # b's last close deletes it, and its chunks go to the deletion queue
    until(lambda: inode_rows(pg, a.db, ino) == 0, BOUND_S + SLACK_S)
    assert chunk_rows(pg, a.db, ino) == 0
    assert int(pg.psql("SELECT count(*) FROM holds", a.db).strip()) == 0


def test_orphan_of_a_crashed_workstation_is_deleted_after_its_lease(pg, office_short_lease):
    a, b = office_short_lease
    H.write_file(a.path("draft.pdf"), b"held by b when it crashes")
    until(lambda: os.path.exists(b.path("draft.pdf")), BOUND_S + SLACK_S)
    held = open(b.path("draft.pdf"), "rb")
    ino = os.fstat(held.fileno()).st_ino
    os.unlink(a.path("draft.pdf"))
    time.sleep(0.5)
    assert inode_rows(pg, a.db, ino) == 1
    os.kill(b.daemon_pid, signal.SIGKILL)
    # a reaps b's session at a renewal after the lease, then the orphan
    waited = until(lambda: inode_rows(pg, a.db, ino) == 0, LEASE_S + LEASE_S / 3 + 2 * SLACK_S + 2)
    print("orphan deleted %.2f s after the SIGKILL (lease %d s)" % (waited, LEASE_S))
    assert chunk_rows(pg, a.db, ino) == 0
    try:
        held.close()
    except OSError:
        pass



def test_reader_beside_a_writer_sees_no_tampering(pg, office):
    """A workstation opening a file while another one commits it must not
    take that commit for tampering (it did while the inode row and the
    chunk records were two reads: the reader's opens failed with EIO,
    audited as 'tamper'; they are now one snapshot, meta_inode_get_chunks)."""
    a, b = office
    H.write_file(a.path("hot.txt"), b"0" * 100)
    stop = threading.Event()
    errs = []

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                H.write_file(a.path("hot.txt"), (b"%d" % (i % 10)) * (100 + i % 50))
            except OSError as e:
                errs.append(("writer", e))
    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 8
        reads = 0
        while time.monotonic() < deadline:
            try:
                data = H.read_file(b.path("hot.txt"))
                reads += 1
                assert len(set(data)) <= 1, "a read mixed two versions"
            except OSError as e:
                errs.append(("reader", e))
    finally:
        stop.set()
        t.join(30)
    assert reads > 50, reads
    assert not errs, errs[:3]
    tampers = [e for e in audit_events(b) if e["op"] == "tamper"]
    assert not tampers, json.dumps(tampers[:3])


def test_a_handle_sees_the_size_of_the_version_it_reads(pg, office):
    """A handle open on b reads the version its open attached (close-to-
    open) while a commits a longer one.  b's fstat through that handle must
    give that version's size: it gave the newer, longer one, so the kernel
    padded the handle's reads with zeros up to it (a reader saw '5' * 145
    + NUL).  After the close, b's next open reads the new version."""
    a, b = office
    H.write_file(a.path("pinned.txt"), b"1" * 100)
    until(lambda: read_or_none(b.path("pinned.txt")) == b"1" * 100, BOUND_S + SLACK_S)
    fd = os.open(b.path("pinned.txt"), os.O_RDONLY)
    try:
        H.write_file(a.path("pinned.txt"), b"2" * 150)
        # b hears of the commit (its kernel drops the attributes) ...
        until(lambda: os.stat(b.path("pinned.txt")).st_mtime_ns
              == os.stat(a.path("pinned.txt")).st_mtime_ns, BOUND_S + SLACK_S)
        size = os.fstat(fd).st_size
        data = os.pread(fd, 4096, 0)
        # ... and the handle still reads one whole version, of that size
        assert data == b"1" * 100, data
        assert size == len(data), (size, len(data))
    finally:
        os.close(fd)
    until(lambda: read_or_none(b.path("pinned.txt")) == b"2" * 150, BOUND_S + SLACK_S)
    assert os.stat(b.path("pinned.txt")).st_size == 150


def test_a_handle_never_reads_another_workstations_newer_save(pg, office):
    """b opens a file and reads none of it; a saves new content over it and
    a's deletion queue removes the fragments of the version b's handle
    attached.  b's reads through that handle fail (EIO) every time rather
    than serve a's newer chunks under the old version's size (a retry must
    not mix versions either); b's next open reads a's version whole."""
    a, b = office
    old = H.seeded_bytes(41, 3 * H.CHUNK)
    new = H.seeded_bytes(42, 3 * H.CHUNK + 500)
    H.write_file(a.path("swapped.pdf"), old, fsync=True)
    until(lambda: os.path.exists(b.path("swapped.pdf")), BOUND_S + SLACK_S)
    ino = os.stat(a.path("swapped.pdf")).st_ino
    old_ids = pg.psql("SELECT encode(chunk_id, 'hex') FROM chunks WHERE ino = %d" % ino,
                      a.db).split()
    assert len(old_ids) == 3, old_ids
    fd = os.open(b.path("swapped.pdf"), os.O_RDONLY)
    try:
        H.write_file(a.path("swapped.pdf"), new, fsync=True)
        H.await_chunks_deleted(a, old_ids)
        for _ in range(2):
            try:
                got = os.pread(fd, H.CHUNK, H.CHUNK)
            except OSError as e:
                assert e.errno == errno.EIO, e
            else:
                raise AssertionError("read %d bytes of a version the handle never opened: "
                                     "old %s, new %s" % (len(got), got == old[H.CHUNK:2 * H.CHUNK],
                                                         got == new[H.CHUNK:2 * H.CHUNK]))
    finally:
        os.close(fd)
    H.assert_same_bytes(H.read_file(b.path("swapped.pdf")), new, "b after reopening")


def test_open_o_creat_racing_another_workstation_opens_its_file(pg, office):
    """open(O_CREAT) without O_EXCL on two workstations at once: the one
    whose create finds the name taken opens that file (was EEXIST)."""
    a, b = office
    errs = []

    def create(w, n, data):
        try:
            with open(w.path(n), "ab") as f:
                f.write(data)
        except OSError as e:
            errs.append((w.mnt, n, e))
    for k in range(15):
        ts = [threading.Thread(target=create, args=(w, "log%d.txt" % k, b"%d\n" % i))
              for i, w in enumerate((a, b))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert not errs, errs[:3]
    with pytest.raises(FileExistsError):
        os.open(b.path("log0.txt"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def test_running_workstation_takes_newer_file_floors(pg, office):
    """Issue 7: b was mounted before a saved v2 of a contract and never
    opened it.  a's mount signs the file head covering v2 within seconds;
    b re-reads it while running.  The operator then puts v1's rows and
    fragments back: b's first open fails (EIO, audited `tamper`), it never
    reads v1 -- b did not see v2 itself, it learned the floor from a."""
    from test_pg import put_fragments_back, save_fragments
    a, b = office
    v1 = b"v1: payment within 90 days.\n" * 50000
    v2 = b"v2: payment within 30 days.\n" * 50000
    os.makedirs(a.folder, exist_ok=True)
    H.write_file(a.path("terms.txt"), v1, fsync=True)
    ino = os.stat(a.path("terms.txt")).st_ino
    time.sleep(6)                                   # a's file head covers v1
    pg.psql("CREATE TABLE kept_inode AS SELECT * FROM inodes WHERE ino = %d;"
            "CREATE TABLE kept_chunks AS SELECT * FROM chunks WHERE ino = %d;" % (ino, ino),
            a.db)
    ids = pg.psql("SELECT encode(chunk_id, 'hex') FROM kept_chunks", a.db).split()
    saved = save_fragments(a, ids)
    assert ids and len(saved) == 3 * len(ids)
    H.write_file(a.path("terms.txt"), v2, fsync=True)
    time.sleep(12)               # a signs the head covering v2, b re-reads it
    put_fragments_back(saved)
    pg.psql("UPDATE inodes i SET size = k.size, mtime_ns = k.mtime_ns, ctime_ns = k.ctime_ns,"
            " commitment = k.commitment FROM kept_inode k WHERE i.ino = k.ino;"
            "DELETE FROM chunks WHERE ino = %d;"
            "INSERT INTO chunks SELECT * FROM kept_chunks;" % ino, a.db)
    e = H.errno_of(H.read_file, b.path("terms.txt"))
    assert e == errno.EIO, "b read the rolled-back file: %s" % H.errname(e)
    tampers = [ev for ev in audit_events(b) if ev["op"] == "tamper"]
    assert any(ev.get("path", "").endswith("terms.txt") for ev in tampers), tampers
