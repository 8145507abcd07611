"""The durability contract of the audit trail (docs/design-fuse.md, "Crash
safety"): operations no longer wait for their audit event's fdatasync (group
commit within a few ms), but no metadata change may survive a crash without
its audit event.  The daemon is killed (SIGKILL) under a load of small-file
operations -- at random moments, and, in a build configured with
--enable-crash-points, at each named step of the write path -- and then the
surviving vault is compared with the verified audit trail: every file the
mount shows has its create event, every unlink the workload saw succeed has
its unlink event, and meta.db holds no file the trail does not know."""
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

import pactfs_helpers as H

# Runs inside the mount: small files created, written, chmod'ed, touched,
# some renamed and some unlinked, an fsync now and then; every completed
# step printed (flushed) so the test knows what the daemon acknowledged.
WORKLOAD = r"""
import os, sys
d = sys.argv[1]
def say(*a):
    sys.stdout.write(" ".join(a) + "\n"); sys.stdout.flush()
i = 0
try:
    os.makedirs(d, exist_ok=True)
    while i < 100000:
        p = os.path.join(d, "f%05d" % i)
        if i % 2:
            # as tar x does: mode and times set through the descriptor
            # before the close (they ride in the file's first commit);
            # a name left by an earlier round goes first, as tar x does it
            if os.path.lexists(p):
                os.unlink(p)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * (100 + i % 3000))
            os.fchmod(fd, 0o604)
            os.utime(fd, (2000000 + i, 2000000 + i))
            if i % 25 == 24:
                os.fsync(fd)
            os.close(fd)
        else:
            with open(p, "wb") as f:
                f.write(b"x" * (100 + i % 3000))
                if i % 25 == 24:
                    f.flush(); os.fsync(f.fileno())
            os.chmod(p, 0o640)
            os.utime(p, (1000000 + i, 1000000 + i))
        say("create", p)
        if i % 5 == 4:
            q = os.path.join(d, "f%05d" % (i - 1))
            r = os.path.join(d, "r%05d" % (i - 1))
            os.rename(q, r)
            say("rename", q, r)
        if i % 7 == 6:
            q = os.path.join(d, "f%05d" % (i - 2))
            if os.path.exists(q):
                os.unlink(q)
                say("unlink", q)
        i += 1
except OSError as e:
    say("died", str(e.errno))
"""


def read_events(vault):
    with open(vault.audit_log, "rb") as f:
        return [json.loads(ln) for ln in f.read().split(b"\n") if ln]


def rel(vault, path):
    """Mount path -> the path audit events name (/FOLDER/...)."""
    return "/" + os.path.relpath(path, vault.mnt)


def start_workload(vault):
    d = vault.path("load")   # made by the workload: the daemon may be dead already
    return subprocess.Popen([sys.executable, "-c", WORKLOAD, d], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def wait_acknowledged(proc, n, timeout=120):
    """Read the workload's log until n creates were acknowledged."""
    done, lines = 0, []
    deadline = time.monotonic() + timeout
    while done < n and time.monotonic() < deadline:
        ln = proc.stdout.readline()
        if not ln:
            break
        lines.append(ln.split())
        done += ln.startswith("create ")
    return lines


def crashed_teardown(vault):
    if H.is_mounted(vault.mnt) and H.fusermount_u(vault.mnt).returncode != 0:
        H.fusermount_u(vault.mnt, lazy=True)
    assert not H.is_mounted(vault.mnt)
    vault.daemon_pid = None
    H.LIVE_VAULTS.discard(vault)


def check_trail(vault, acked):
    """The vault after the crash against the audit trail and what the
    workload saw acknowledged."""
    p = vault.admin("audit-verify", vault.dir)
    assert p.returncode == 0, "audit trail does not verify after the crash:\n%s%s" % (
        p.stdout, p.stderr)
    events = read_events(vault)
    ok = [e for e in events if e.get("result") == "ok"]
    created = {e["path"] for e in ok if e.get("op") == "create"}
    renamed = {}
    for e in ok:
        if e.get("op") == "rename":
            src, _, dst = e["path"].partition(" -> ")
            renamed[dst] = src
    unlinked = {e["path"] for e in ok if e.get("op") == "unlink"}

    vault.mount()
    d = vault.path("load")
    shown = sorted(os.listdir(d)) if os.path.isdir(d) else []
    for name in shown:
        p = rel(vault, os.path.join(d, name))
        origin = renamed.get(p, p)
        assert p in created or origin in created, (
            "%s survived the crash but the audit trail has no create event for it" % p)
        if p in renamed:
            assert origin in created
    # What the daemon acknowledged before it died is durable enough to
    # survive a process crash (the kernel holds both the WAL and the spool):
    for step in acked:
        if step[0] == "unlink":
            assert rel(vault, step[1]) in unlinked, "acknowledged unlink of %s not audited" % step[1]
            assert os.path.basename(step[1]) not in shown
        elif step[0] == "create" and not any(s[0] in ("rename", "unlink") and s[1] == step[1]
                                             for s in acked):
            # The workload's next step on it (a rename or unlink) may have
            # been in flight when the daemon died: done and audited, never
            # answered.  Then the file is gone under this name, and rightly.
            p = rel(vault, step[1])
            in_flight = (p in unlinked or any(src == p and os.path.basename(dst) in shown
                                              for dst, src in renamed.items()))
            assert os.path.basename(step[1]) in shown or in_flight, \
                "acknowledged %s lost" % step[1]
    vault.unmount()
    # meta.db holds no live file the mount did not show (nothing durable
    # that the trail could not account for).
    db = sqlite3.connect(os.path.join(vault.dir, "meta.db"))
    try:
        live = db.execute("SELECT count(*) FROM inodes WHERE nlink > 0 AND (mode & 61440) = 32768"
                          ).fetchone()[0]
    finally:
        db.close()
    assert live == len(shown), "meta.db has %d live files, the mount showed %d" % (live, len(shown))
    return len(shown)


@pytest.mark.timeout_s(600)
def test_sigkill_under_small_file_load_leaves_no_change_without_its_event(vault):
    for rnd, after in enumerate((40, 137, 260)):
        proc = start_workload(vault)
        try:
            acked = wait_acknowledged(proc, after)
            assert len([s for s in acked if s[0] == "create"]) >= after, "workload stalled"
            vault.kill_daemon()
            proc.wait(timeout=60)
            acked += [ln.split() for ln in proc.stdout.read().splitlines()]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        crashed_teardown(vault)
        shown = check_trail(vault, [s for s in acked if s and s[0] != "died"])
        assert shown > 0
        check_contents(vault)
        vault.mount()


def crash_points_built():
    with open(H.binary("pactfs"), "rb") as f:
        return b"PACTFS_CRASH_AT" in f.read()


# (point, hit): each is reached by the workload within seconds.
CRASH_POINTS = [
    ("op-after-append", 60),            # event written, transaction not committed
    ("op-after-commit", 60),            # committed, event not yet fdatasynced
    ("audit-before-fdatasync", 20),     # the group commit about to sync the spool
    ("audit-after-fdatasync", 20),      # (20: past the syncs of the mount itself)
    ("meta-after-presync", 3),          # metadata sync: spool synced, WAL not yet
    ("meta-after-sync", 3),
    ("batch-before-sync", 20),          # batch commit: puts done, fragments not synced
    ("batch-after-sync", 20),           # fragments of the batch synced, none committed
    ("batch-after-commit", 20),         # the batch's one transaction committed, WAL not synced
    ("put-new-after-create", 40),       # a fragment's file made in place, nothing written yet
    ("setattr-after-keep", 30),         # fchmod/futimens kept for the file's first commit
]


@pytest.mark.timeout_s(900)
@pytest.mark.parametrize("point,hit", CRASH_POINTS)
def test_crash_point(new_vault, point, hit):
    if not crash_points_built():
        pytest.skip("pactfs built without --enable-crash-points")
    v = new_vault
    acked = crash_at(v, point, hit)
    check_trail(v, acked)
    check_contents(v)


def crash_at(v, point, hit):
    """Mount with PACTFS_CRASH_AT=point:hit, run the workload until the
    daemon dies there, tear the dead mount down; the steps it acknowledged."""
    v.env = dict(v.env, PACTFS_CRASH_AT="%s:%d" % (point, hit))
    v.mount()
    proc = start_workload(v)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked = [ln.split() for ln in out.splitlines()]
    assert acked and acked[-1][0] == "died", "the daemon did not die at %s" % point
    H.wait_pid_gone(v.daemon_pid, 30) if v.daemon_pid else None
    crashed_teardown(v)
    v.env = {k: val for k, val in v.env.items() if k != "PACTFS_CRASH_AT"}
    return [s for s in acked if s[0] != "died"]


@pytest.mark.timeout_s(600)
def test_crash_inside_an_in_place_fragment_write_leaves_an_orphan_fsck_deletes(new_vault):
    """A fresh chunk's fragments are written in place (no temp name, no
    rename): a crash in the middle leaves the fragment's own name short or
    empty.  Nothing names it (its record is committed only after the
    batch's sync), so the vault reads back whole or empty files, fsck
    verifies, and fsck --orphans finds the torn fragment; --delete-orphans
    removes it once it is older than 10 minutes, and leaves every live
    fragment."""
    if not crash_points_built():
        pytest.skip("pactfs built without --enable-crash-points")
    v = new_vault
    crash_at(v, "put-new-after-create", 40)
    stores = os.path.join(v.dir, "stores")
    torn = [os.path.join(dp, n) for dp, _, names in os.walk(stores) for n in names
            if not n.startswith(".") and os.path.getsize(os.path.join(dp, n)) == 0]
    assert torn, "the crash left no empty fragment file: the write was not in place"
    check_contents(v)   # files whole or empty, fsck verifies every record

    fsck = [H.binary("pactfs-fsck")]
    p = H.run(fsck + ["--orphans", v.dir], env=v.env)
    assert p.returncode == 0, p.stdout + p.stderr
    for path in torn:
        assert os.path.basename(path) + ", 0 bytes" in p.stdout, p.stdout
    old = time.time() - 3600
    for path in torn:
        os.utime(path, (old, old))
    p = H.run(fsck + ["--delete-orphans", v.dir], env=v.env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not any(os.path.exists(path) for path in torn), p.stdout
    p = H.run([H.binary("pactfs-fsck"), v.dir], env=v.env)
    assert p.returncode == 0, p.stdout + p.stderr
    check_contents(v)   # nothing live was taken with the orphans


def check_contents(vault):
    """Every file the workload wrote reads back whole, or empty if the
    crash came before its data commit (never a record pointing at missing
    fragments: rule 1), and fsck verifies every chunk record.  A file whose
    mode and times were set through its descriptor before the close has
    them exactly when it has its data (they ride in the same commit): never
    the data without them, never them on the empty file as created.  And
    never them without their audit event (folded into one per file,
    appended before the commit that writes them)."""
    chmodded = {e.get("file") for e in read_events(vault) if e.get("result") == "ok" and
                e.get("op") in ("chmod", "setattr") and e.get("mode") == "0604"}
    vault.mount()
    d = vault.path("load")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        i = int(name[1:])   # f00042, or r00042 once renamed
        path = os.path.join(d, name)
        with open(path, "rb") as f:
            data = f.read()
        assert data in (b"", b"x" * (100 + i % 3000)), (
            "%s: %d bytes after the crash, neither its data nor empty" % (name, len(data)))
        if i % 2:
            st = os.stat(path)
            got = (oct(st.st_mode & 0o7777), st.st_mtime == 2000000 + i)
            if data:
                assert got == (oct(0o604), True), (
                    "%s has its data but not the mode and mtime set before its close: %s"
                    % (name, got))
                assert st.st_ino in chmodded, (
                    "%s has the mode set through its descriptor, but the audit trail has "
                    "no event of that change" % name)
            else:
                assert got[0] == oct(0o600), (
                    "%s is empty (its data lost in the crash) but has mode %s: an attribute "
                    "change survived without the data it came with" % (name, got[0]))
    vault.unmount()
    fsck = H.run([H.binary("pactfs-fsck"), vault.dir], env=vault.env)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def writes_status(vault):
    p = vault.pactfs("status", "--json", vault.mnt)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["writes"]


def test_files_closed_one_after_another_share_one_fragment_sync(vault):
    """A release no longer commits its file alone: files closed one
    after another (tar x, cp -r) are committed in batches that share one
    fragment sync (an fdatasync per fragment file and directory, a journal
    commit per endpoint filesystem, before any of their commits: rule 1).
    Measured by the daemon's own counters in `pactfs status`: on the old
    code each of the 200 files paid its own sync.  An fsync still commits
    its file at once and makes it durable."""
    d = vault.path("many")
    os.mkdir(d)
    time.sleep(1.2)   # the status file is rewritten every second
    before = writes_status(vault)
    n = 200
    for i in range(n):
        H.write_file(os.path.join(d, "f%03d" % i), b"s%d" % i * 20)
    deadline = time.monotonic() + 60
    while True:
        time.sleep(1.2)
        now = writes_status(vault)
        commits = now["file_commits"] - before["file_commits"]
        if commits >= n or time.monotonic() > deadline:
            break
    syncs = now["fragment_syncs"] - before["fragment_syncs"]
    print("%d files closed one after another: %d commits, %d fragment syncs"
          % (n, commits, syncs))
    assert commits >= n, "only %d of %d closed files committed after 60 s" % (commits, n)
    assert syncs * 2 <= commits, (
        "%d fragment syncs for %d commits: the files closed together did not share "
        "their syncs" % (syncs, commits))
    # fsync: committed and durable before it returns, even with a batch open
    H.write_file(vault.path("synced.bin"), b"kept" * 1000, fsync=True)
    vault.kill_daemon()
    H.wait_pid_gone(vault.daemon_pid, 30)
    crashed_teardown(vault)
    vault.mount()
    H.assert_same_bytes(H.read_file(vault.path("synced.bin")), b"kept" * 1000, "synced.bin")
    for i in range(n):   # committed before the kill: the counters said so
        H.assert_same_bytes(H.read_file(os.path.join(d, "f%03d" % i)), b"s%d" % i * 20,
                            "f%03d" % i)


def _orphan_rows(vault):
    db = sqlite3.connect(os.path.join(vault.dir, "meta.db"), timeout=30)
    try:
        return db.execute("SELECT count(*) FROM inodes WHERE nlink = 0").fetchone()[0]
    finally:
        db.close()


def test_removed_files_rows_go_in_batches_and_a_crash_leaves_orphans_the_next_mount_deletes(vault):
    """The inode rows of removed files are deleted in batches once the
    kernel forgot them (a full batch at once, the rest by the metadata
    syncer within about a second), not in one transaction each.  A SIGKILL
    before a batch went leaves rows with no link, which the next mount's
    orphan sweep deletes; their fragments go with them."""
    d = vault.path("batch")
    os.mkdir(d)
    for i in range(300):   # more than one batch (128)
        H.write_file(os.path.join(d, "f%03d" % i), b"y" * (100 + i))
    H.rmtree(d)
    assert not os.path.exists(d)
    deadline = time.time() + 20
    while _orphan_rows(vault) and time.time() < deadline:
        time.sleep(0.2)
    assert _orphan_rows(vault) == 0, "rows of removed files still there after 20 s"

    d = vault.path("killed")
    os.mkdir(d)
    for i in range(60):
        H.write_file(os.path.join(d, "g%03d" % i), b"z" * 2000, fsync=(i == 59))
    for i in range(60):
        os.unlink(os.path.join(d, "g%03d" % i))
    vault.kill_daemon()
    H.wait_pid_gone(vault.daemon_pid, 30)
    H.fusermount_u(vault.mnt, lazy=True)
    left = _orphan_rows(vault)
    print("rows without a link left by the SIGKILL: %d" % left)
    vault.mount()
    assert os.listdir(vault.path("killed")) == []
    assert _orphan_rows(vault) == 0, "the next mount did not delete the orphans"
    vault.unmount()
    fsck = H.run([H.binary("pactfs-fsck"), vault.dir], env=vault.env)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
