"""pactfs with its metadata in a real PostgreSQL 15, reached over TLS.

One throwaway cluster per test session (tests/pg/pg_tls.py): a test CA, a
server certificate for 127.0.0.1, initdb run as `postgres`, TCP only with
TLS + SCRAM (hostssl), a `pactfs` role.  Each test gets its own empty
database and a vault made by `pactfs-admin init --postgresql CONNINFO`; the
conninfo uses sslmode=verify-full with the test CA and takes the role's
password from a libpq passfile (0600), so the password is never written
into pactfs.conf.  If the cluster cannot start the tests fail with the
reason; they never skip.
"""
import errno
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

import pactfs_helpers as H

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC_ROOT, "tests", "pg"))
import pg_tls  # noqa: E402

EXIT_CONFIG = 3
EXIT_STORE = 7
EXIT_EXISTS = 11


# ---------------------------------------------------------------- fixtures

def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="session")
def pg():
    # postgres daemonizes: if the run is ended by SIGTERM (test.sh's
    # `timeout`), turn it into an interrupt so this teardown still stops it.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        server = pg_tls.PgTls.start()
    except (pg_tls.PgTlsError, OSError, KeyError) as e:
        pytest.fail("the test PostgreSQL (TLS on 127.0.0.1) could not start: %s" % e,
                    pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def finish(v):
    """Unmount (cleanly if possible) and fail on any sanitizer report."""
    try:
        if H.is_mounted(v.mnt) or v.daemon_pid or v.fg_proc:
            v.unmount(check=True)
    finally:
        if v in H.LIVE_VAULTS:
            v.emergency_teardown()
    reports = H.sanitizer_reports(v.logdir)
    if reports:
        pytest.fail("sanitizer reports from pactfs processes:\n" + "\n".join(reports))


@pytest.fixture
def pg_vault(tmp_path, pg):
    """A vault whose metadata is in a fresh database; not mounted."""
    v = H.Vault(tmp_path)
    v.db = pg.create_database()
    v.conninfo = pg.conninfo(v.db)
    v.init("--postgresql", v.conninfo)
    yield v
    finish(v)


# ---------------------------------------------------------------- helpers

def set_conninfo(v, conninfo):
    """Replace metadata.conninfo in the vault's pactfs.conf."""
    with open(v.conf) as f:
        text = f.read()
    new, n = re.subn(r'(\n\s*conninfo\s*=\s*)"[^"]*";', lambda m: m.group(1) + '"%s";' % conninfo,
                     text)
    assert n == 1, "pactfs.conf has no metadata.conninfo line:\n" + text
    with open(v.conf, "w") as f:
        f.write(new)


def sql_count(pg, db, table):
    return int(pg.psql("SELECT count(*) FROM %s" % table, db).strip())


def needles(marker):
    m = marker.encode()
    return [m, m.hex().encode(), m.hex().upper().encode(), marker.encode("utf-16-le")]


def hits_in(blob, marker, where):
    return ["%s (as %r...)" % (where, n[:16]) for n in needles(marker) if n in blob]


def scan_vault_dir(v, marker, skip_audit):
    hits = []
    for root, _, files in os.walk(v.dir):
        for n in files:
            p = os.path.join(root, n)
            if skip_audit and os.path.abspath(p) == os.path.abspath(v.audit_log):
                continue
            with open(p, "rb") as f:
                hits += hits_in(f.read(), marker, p)
    return hits


SIZES = (0, 1, 4095, 65536 + 7, H.CHUNK, H.CHUNK + 1, 3 * H.CHUNK + 12345)


def write_sample_tree(root):
    """Files of several sizes and a small tree; returns {relpath: bytes}."""
    want = {}
    for size in SIZES:
        want["size-%d.bin" % size] = H.seeded_bytes(size, size)
    for d in ("tree", "tree/a", "tree/a/b", "tree/c"):
        os.mkdir(os.path.join(root, d))
    for i, rel in enumerate(("tree/top.txt", "tree/a/one.txt", "tree/a/b/deep.bin",
                             "tree/c/two.txt")):
        want[rel] = H.seeded_bytes(1000 + i, 300 + 70000 * i)
    for rel, data in want.items():
        H.write_file(os.path.join(root, rel), data)
    return want


def check_tree(root, want):
    for rel, data in want.items():
        H.assert_same_bytes(H.read_file(os.path.join(root, rel)), data, rel)


# ---------------------------------------------------------------- tests

@pytest.mark.timeout_s(600)
def test_pg_vault_round_trip_through_remount(pg, pg_vault):
    v = pg_vault
    assert not os.path.exists(os.path.join(v.dir, "meta.db")), "init made a SQLite store too"
    with open(v.conf) as f:
        conf = f.read()
    assert 'backend = "postgresql"' in conf
    assert pg.role_password not in conf, "the database password was written into pactfs.conf"

    v.mount()
    want = write_sample_tree(v.folder)
    # metadata operations
    os.mkdir(v.path("made"))
    os.rename(v.path("tree/c/two.txt"), v.path("made/two-renamed.txt"))
    want["made/two-renamed.txt"] = want.pop("tree/c/two.txt")
    os.rename(v.path("tree/a"), v.path("tree/a-moved"))
    for rel in [r for r in want if r.startswith("tree/a/")]:
        want[rel.replace("tree/a/", "tree/a-moved/", 1)] = want.pop(rel)
    H.write_file(v.path("doomed.txt"), b"to be removed")
    os.unlink(v.path("doomed.txt"))
    os.rmdir(v.path("tree/c"))
    os.setxattr(v.path("size-1.bin"), "user.contract", b"signed 2026-11-28")
    os.setxattr(v.path("size-1.bin"), "user.gone", b"x")
    os.removexattr(v.path("size-1.bin"), "user.gone")
    check_tree(v.folder, want)

    # The tree really lives in PostgreSQL, not somewhere local.
    n_inodes = sql_count(pg, v.db, "inodes")
    assert n_inodes >= len(want) + 5, "only %d inodes in PostgreSQL" % n_inodes
    assert sql_count(pg, v.db, "chunks") > 0

    v.remount()
    check_tree(v.folder, want)
    assert not os.path.exists(v.path("doomed.txt"))
    assert not os.path.exists(v.path("tree/a")) and not os.path.exists(v.path("tree/c"))
    assert sorted(os.listdir(v.path("tree"))) == ["a-moved", "top.txt"]
    assert os.getxattr(v.path("size-1.bin"), "user.contract") == b"signed 2026-11-28"
    assert "user.gone" not in os.listxattr(v.path("size-1.bin"))
    for size in SIZES:
        assert os.stat(v.path("size-%d.bin" % size)).st_size == size


@pytest.mark.timeout_s(600)
def test_no_plaintext_in_pg_dump_or_stores(pg, pg_vault):
    v = pg_vault
    name_marker = "pfsname" + secrets.token_hex(10)
    data_marker = "pfsdata" + secrets.token_hex(10)
    v.mount()
    d = v.path(name_marker + "-dir")
    os.mkdir(d)
    f = os.path.join(d, name_marker + ".txt")
    content = ((data_marker + " confidential clause\n") * 60000).encode()    # ~2.5 MiB
    H.write_file(f, content, fsync=True)
    H.write_file(os.path.join(d, "small-" + name_marker), data_marker.encode(), fsync=True)
    os.setxattr(f, "user.note", data_marker.encode())
    os.symlink("target-" + data_marker, os.path.join(d, "link-" + name_marker))

    def scan_all(when):
        dump = pg.dump(v.db)
        # Positive control: the dump holds the vault's rows (bytea as hex),
        # so a clean scan means something.
        assert b"COPY public.dirents" in dump and b"COPY public.chunks" in dump, \
            "pg_dump did not dump the pactfs tables"
        hits = []
        for m in (name_marker, data_marker):
            hits += hits_in(dump, m, "pg_dump of %s" % v.db)
        hits += scan_vault_dir(v, name_marker, skip_audit=True)
        hits += scan_vault_dir(v, data_marker, skip_audit=False)
        hits += hits_in(dump, pg.role_password, "pg_dump (role password)")
        assert not hits, "plaintext found %s:\n%s" % (when, "\n".join(hits))

    scan_all("while mounted")
    assert sql_count(pg, v.db, "xattrs") >= 1 and sql_count(pg, v.db, "symlinks") >= 1
    v.unmount()
    scan_all("after unmount")
    with open(v.audit_log, "rb") as fh:
        assert name_marker.encode() in fh.read(), "the audit log lacks the file's path"
    v.mount()
    H.assert_same_bytes(H.read_file(f), content, "marker file after remount")


def test_init_into_database_holding_a_vault_exits_11(tmp_path, pg, pg_vault):
    other = H.Vault(tmp_path, name="second")
    p = other.init("--postgresql", pg_vault.conninfo, check=False)
    assert p.returncode == EXIT_EXISTS, "exit %d, want %d\n%s" % (p.returncode, EXIT_EXISTS,
                                                                  p.stderr)
    assert "already holds a vault" in p.stderr, p.stderr
    left = os.listdir(other.dir) if os.path.isdir(other.dir) else []
    assert left == [], "the refused init left files in %s: %s" % (other.dir, left)
    # The vault already there is untouched and still mounts.
    pg_vault.mount()
    assert os.listdir(pg_vault.mnt) == [H.FOLDER]
    pg_vault.unmount()
    finish(other)


@pytest.mark.timeout_s(300)
def test_postgresql_down_at_mount_exits_7_naming_the_connection(pg, pg_vault):
    pg.stop_server()
    try:
        p = pg_vault.mount(check=False)
    finally:
        pg.start_server()
    assert p.returncode == EXIT_STORE, "exit %d, want %d\n%s" % (p.returncode, EXIT_STORE,
                                                                 p.stderr)
    assert "PostgreSQL" in p.stderr and "127.0.0.1" in p.stderr and str(pg.port) in p.stderr, \
        "the message does not name the connection: " + p.stderr
    assert not H.is_mounted(pg_vault.mnt)
    pg_vault.mount()         # back up: the same configuration mounts again
    assert os.path.isdir(pg_vault.folder)


def test_server_certificate_from_another_ca_is_refused(pg, pg_vault):
    # The workstation trusts only the foreign CA, so the server's real
    # certificate is, from its point of view, issued by an unknown CA.
    set_conninfo(pg_vault, pg.conninfo(pg_vault.db, ca_file=pg.foreign_ca_file))
    p = pg_vault.mount(check=False)
    assert p.returncode == EXIT_STORE, "exit %d, want %d\n%s" % (p.returncode, EXIT_STORE,
                                                                 p.stderr)
    assert "certificate verify failed" in p.stderr or "SSL" in p.stderr, \
        "no TLS reason in: " + p.stderr
    assert not H.is_mounted(pg_vault.mnt)
    set_conninfo(pg_vault, pg_vault.conninfo)      # positive control
    pg_vault.mount()


@pytest.mark.parametrize("sslmode", [None, "require", "prefer", "disable", "verify-ca"])
def test_network_conninfo_without_verification_exits_3(pg, pg_vault, sslmode):
    ci = pg.conninfo(pg_vault.db, sslmode=None)
    if sslmode:
        ci += " sslmode=" + sslmode
    set_conninfo(pg_vault, ci)
    p = pg_vault.mount(check=False)
    assert p.returncode == EXIT_CONFIG, "exit %d, want %d\n%s" % (p.returncode, EXIT_CONFIG,
                                                                  p.stderr)
    assert "sslmode" in p.stderr and "verify-full" in p.stderr, p.stderr
    assert not H.is_mounted(pg_vault.mnt)


def test_verify_ca_refused_before_any_byte_is_sent(tmp_path):
    """verify-ca accepts any certificate of the CA for any host: refused, and
    before libpq connects (a listener sees no connection, so no password)."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    v = H.Vault(tmp_path)
    try:
        p = v.init("--postgresql", "host=127.0.0.1 port=%d dbname=x user=pactfs password=secret "
                   "sslmode=verify-ca sslrootcert=/nonexistent" % port, check=False)
        assert p.returncode == EXIT_CONFIG, "exit %d\n%s" % (p.returncode, p.stderr)
        assert "verify-full" in p.stderr and "verify-ca" in p.stderr, p.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_init_with_unverified_network_conninfo_exits_3(tmp_path, pg):
    v = H.Vault(tmp_path)
    p = v.init("--postgresql", pg.conninfo(pg.create_database(), sslmode=None), check=False)
    assert p.returncode == EXIT_CONFIG, "exit %d\n%s" % (p.returncode, p.stderr)
    assert "sslmode" in p.stderr


def test_workstation_role_with_table_rights_only_mounts_and_writes(tmp_path, pg, pg_vault):
    """docs/operations-postgresql.md: the owner role inits (DDL), the
    workstations use a role with DML rights only."""
    v, role = pg_vault, "ws_%s" % secrets.token_hex(3)
    passfile = str(tmp_path / "ws.pgpass")
    pg.create_login_role(role, passfile)
    pg.psql('GRANT CONNECT ON DATABASE "%s" TO %s' % (v.db, role))
    pg.psql("GRANT USAGE ON SCHEMA public TO {0};"
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {0};"
            "GRANT USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {0}".format(role), v.db)
    ws = pg.conninfo(v.db, role=role, passfile=passfile)
    # The role really is restricted: it may not change the schema.
    p = subprocess.run([os.path.join(pg.bin, "psql"), ws, "-c", "DROP TABLE chunks"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "must be owner" in p.stderr, (p.returncode, p.stderr)

    set_conninfo(v, ws)
    v.mount()
    os.mkdir(v.path("by-ws"))
    data = H.seeded_bytes(7, 2 * H.CHUNK + 5)
    H.write_file(v.path("by-ws", "f.bin"), data, fsync=True)
    os.rename(v.path("by-ws", "f.bin"), v.path("by-ws", "g.bin"))
    os.setxattr(v.path("by-ws", "g.bin"), "user.k", b"v")
    H.write_file(v.path("by-ws", "gone"), b"x")
    os.unlink(v.path("by-ws", "gone"))
    v.remount()
    H.assert_same_bytes(H.read_file(v.path("by-ws", "g.bin")), data,
                        "g.bin written by the DML-only role")
    assert os.listdir(v.path("by-ws")) == ["g.bin"]
    assert os.getxattr(v.path("by-ws", "g.bin"), "user.k") == b"v"


def churn_files(d, stop, done):
    """Create small files, each fsynced then renamed, until stop is set;
    record in done the numbers whose fsync and rename returned."""
    i = 0
    while not stop.is_set():
        p = os.path.join(d, "f-%d" % i)
        try:
            H.write_file(p, H.seeded_bytes(i, 100 + i), fsync=True)
            os.rename(p, os.path.join(d, "g-%d" % i))
        except OSError:
            return
        done.append(i)
        i += 1


@pytest.mark.timeout_s(900)
def test_sigkill_during_writes_keeps_fsynced_files(pg, pg_vault):
    v = pg_vault
    v.mount()
    safe = {}
    for name, size in (("before-1.bin", 3 * H.CHUNK + 3), ("before-2.bin", 1000)):
        safe[name] = H.seeded_bytes(size, size)
        H.write_file(v.path(name), safe[name], fsync=True)
    churn = v.path("churn")
    os.mkdir(churn)
    stop, done = threading.Event(), []
    t = threading.Thread(target=churn_files, args=(churn, stop, done), daemon=True)
    t.start()
    big = v.path("in-flight.bin")
    writer = subprocess.Popen(["dd", "if=/dev/urandom", "of=" + big, "bs=1M", "count=2000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.path.exists(big) and os.stat(big).st_size >= 8 * H.CHUNK and len(done) >= 5:
                break
            time.sleep(0.1)
        assert writer.poll() is None, "dd finished before the kill; make it larger"
        assert len(done) >= 5, "the small-file writer made only %d files in 60 s" % len(done)
        v.kill_daemon()
        writer.wait(timeout=60)
    finally:
        stop.set()
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
        t.join(timeout=60)
    assert not t.is_alive(), "the small-file writer hung after the kill"
    synced = list(done)

    if H.fusermount_u(v.mnt).returncode != 0:
        assert H.fusermount_u(v.mnt, lazy=True).returncode == 0
    v.daemon_pid = None
    H.LIVE_VAULTS.discard(v)

    v.mount()        # must mount again after the crash
    for name, data in safe.items():
        H.assert_same_bytes(H.read_file(v.path(name)), data, name + " (fsynced before the kill)")
    for i in synced:
        H.assert_same_bytes(H.read_file(os.path.join(churn, "g-%d" % i)),
                            H.seeded_bytes(i, 100 + i), "churn/g-%d (fsynced and renamed)" % i)
    # Files caught mid-way: the commit is one transaction, so each is either
    # empty (created, data not committed) or complete, never torn.
    for n in os.listdir(churn):
        i = int(n.split("-")[1])
        got = H.read_file(os.path.join(churn, n))
        assert got in (b"", H.seeded_bytes(i, 100 + i)), \
            "churn/%s is torn (%d bytes)" % (n, len(got))
    size = os.stat(big).st_size
    assert len(H.read_file(big)) == size, "in-flight file: not every byte of it reads"
    H.write_file(v.path("after.bin"), b"after the crash", fsync=True)
    v.remount()
    assert H.read_file(v.path("after.bin")) == b"after the crash"


def save_fragments(v, chunk_ids):
    """The fragments of these chunks (hex ids), as the operator keeps them by
    not running the deletion queue: {path: bytes}."""
    saved = {}
    for i in range(3):
        for p in H.fragment_files(v.store_dir(i)):
            if any(os.path.basename(p).startswith(c) for c in chunk_ids):
                with open(p, "rb") as f:
                    saved[p] = f.read()
    return saved


def put_fragments_back(saved):
    for p, b in saved.items():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b)


def test_pg_chunk_tampering_is_eio_with_tamper_event(pg, pg_vault):
    """Issue 7 attack 4 by the PostgreSQL operator (psql as the superuser):
    a deleted chunk row, an older chunk row put back with its old
    fragments, a changed size, a truncated chunk list.  Each file then
    fails with EIO, a daemon line naming it and the check, and an audit
    event `tamper` -- never zeros or old data."""
    v = pg_vault
    C = H.CHUNK
    data = H.seeded_bytes(11, 3 * C + 999)
    names = ["deleted.bin", "older.bin", "size.bin", "truncated.bin"]
    v.mount()
    for n in names:
        H.write_file(v.path(n), data, fsync=True)
    inos = {n: os.stat(v.path(n)).st_ino for n in names}
    old_row = pg.psql("SELECT version, encode(chunk_id, 'hex'), plain_len, sealed_len, k, m,"
                      " rotation, encode(sums, 'hex') FROM chunks WHERE ino = %d AND idx = 1"
                      % inos["older.bin"], v.db).strip().split("|")
    saved = save_fragments(v, [old_row[1]])
    assert len(saved) == 3, saved.keys()
    with open(v.path("older.bin"), "r+b") as f:   # chunk 1 -> version 2
        f.seek(C)
        f.write(b"NEWER")
    v.unmount()
    put_fragments_back(saved)
    pg.psql("DELETE FROM chunks WHERE ino = %d AND idx = 1;"
            "UPDATE chunks SET version = %s, chunk_id = decode('%s', 'hex'), plain_len = %s,"
            " sealed_len = %s, k = %s, m = %s, rotation = %s, sums = decode('%s', 'hex')"
            " WHERE ino = %d AND idx = 1;"
            "UPDATE inodes SET size = size - 999 WHERE ino = %d;"
            "DELETE FROM chunks WHERE ino = %d AND idx >= 1;"
            "UPDATE inodes SET size = %d WHERE ino = %d;"
            % ((inos["deleted.bin"],) + tuple(old_row) + (inos["older.bin"], inos["size.bin"],
                                                         inos["truncated.bin"], C,
                                                         inos["truncated.bin"])), v.db)
    v.mount_foreground()
    for n in names:
        e = H.errno_of(H.read_file, v.path(n))
        assert e == errno.EIO, "%s: %s" % (n, H.errname(e))
    log = v.read_fg_log()
    checks = {"deleted.bin": "chunk count", "older.bin": "commitment MAC",
              "size.bin": "commitment MAC", "truncated.bin": "chunk count"}
    for n, check in checks.items():
        assert any("TAMPERING DETECTED" in ln and n in ln and check in ln
                   for ln in log.splitlines()), "%s / %s not in:\n%s" % (n, check, log[-3000:])
    with open(v.audit_log, "rb") as f:
        events = [json.loads(ln) for ln in f.read().split(b"\n") if ln.strip()]
    for n in names:
        assert any(ev.get("op") == "tamper" and ev.get("path", "").endswith(n)
                   for ev in events), "no tamper event for %s" % n


def head_counter(pg, db):
    """The counter of the signed vault head stored in the database."""
    hexblob = pg.psql("SELECT encode(value, 'hex') FROM params WHERE key = 'vault_head'",
                      db).strip()
    blob = bytes.fromhex(hexblob)
    tbs = blob[4:4 + int.from_bytes(blob[0:4], "big")]   # blob(tbs) | blob(sig)
    assert tbs[:4] == b"PFSH"
    off = 9 + int.from_bytes(tbs[5:9], "big")            # magic, version, str(vault id)
    return int.from_bytes(tbs[off:off + 8], "big")


def test_two_admins_at_once_do_not_fork_the_head(pg, pg_vault):
    """Two pactfs-admin processes change the signed state at the same time
    (each creates a folder: a new signed folder state and a new vault head,
    in one transaction on its own connection).  Without serialising the
    head advance both read head N and write N+1, the second overwriting
    the first: a head that does not list the other's folder, so every
    client refuses the metadata.  With it every change gets its own
    counter and the head covers all of them."""
    v = pg_vault
    start = head_counter(pg, v.db)
    names = []
    for rnd in range(4):
        procs = []
        for i in range(2):
            name = "Parallel%d%s" % (rnd, "ab"[i])
            names.append(name)
            procs.append(subprocess.Popen(
                [H.binary("pactfs-admin"), "folder-create", name, v.dir, "--passfile",
                 v.passfile], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=v.env))
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, "concurrent folder-create -> %d\n%s" % (
                p.returncode, err.decode())
    assert head_counter(pg, v.db) == start + len(names), "the head counter forked"
    v.mount()
    try:
        got = os.listdir(v.mnt)
    finally:
        v.unmount()
    assert sorted(set(names) & set(got)) == sorted(names), got
    with open(v.audit_log) as f:
        tampers = [e for e in map(json.loads, filter(str.strip, f)) if e["op"] == "tamper"]
    assert not tampers, tampers


def test_pg_one_file_rolled_back_is_eio(pg, pg_vault):
    """Issue 7: the PostgreSQL operator keeps a copy of one file's rows (in
    tables of its own) and its fragments, lets the owner save a new version,
    then puts the older rows and fragments back.  The signed file head
    (generation floors, anchored in the key directory) makes the file fail:
    EIO, the daemon names it and the check "file head", audit `tamper` --
    never the older text."""
    v = pg_vault
    v1 = b"v1: the supplier may terminate at any time.\n" * 40000
    v2 = b"v2: the supplier may NOT terminate before 2030.\n" * 40000
    v.mount()
    os.makedirs(v.folder, exist_ok=True)
    H.write_file(v.path("contract.txt"), v1, fsync=True)
    ino = os.stat(v.path("contract.txt")).st_ino
    v.unmount()
    pg.psql("CREATE TABLE kept_inode AS SELECT * FROM inodes WHERE ino = %d;"
            "CREATE TABLE kept_chunks AS SELECT * FROM chunks WHERE ino = %d;" % (ino, ino),
            v.db)
    ids = pg.psql("SELECT encode(chunk_id, 'hex') FROM kept_chunks", v.db).split()
    saved = save_fragments(v, ids)
    assert ids and len(saved) == 3 * len(ids), (ids, saved.keys())
    v.mount()
    H.write_file(v.path("contract.txt"), v2, fsync=True)
    v.unmount()
    put_fragments_back(saved)
    pg.psql("UPDATE inodes i SET size = k.size, mtime_ns = k.mtime_ns, ctime_ns = k.ctime_ns,"
            " commitment = k.commitment FROM kept_inode k WHERE i.ino = k.ino;"
            "DELETE FROM chunks WHERE ino = %d;"
            "INSERT INTO chunks SELECT * FROM kept_chunks;" % ino, v.db)
    v.mount_foreground()
    e = H.errno_of(H.read_file, v.path("contract.txt"))
    assert e == errno.EIO, "the rolled-back file gave %s" % H.errname(e)
    log = v.read_fg_log()
    assert any("TAMPERING DETECTED" in ln and "contract.txt" in ln and "file head" in ln
               for ln in log.splitlines()), log[-3000:]
    with open(v.audit_log, "rb") as f:
        events = [json.loads(ln) for ln in f.read().split(b"\n") if ln.strip()]
    assert any(ev.get("op") == "tamper" and ev.get("path", "").endswith("contract.txt")
               for ev in events)
