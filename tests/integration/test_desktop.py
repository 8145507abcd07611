"""What desktop clients and backup tools rely on (docs/desktop.md): stable
inode numbers and ctime across unmount and remount, an honest mount root,
several mounts of one vault at once."""
import errno
import json
import os
import re
import shutil
import stat
import time
import zipfile

import pactfs_helpers as H


def stat_triple(path):
    st = os.lstat(path)
    return (st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)


def tree_stats(top):
    out = {}
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, top)] = stat_triple(p)
    return out


def write_with_clients(src, dst):
    """Files written the ways desktop tools write them."""
    os.makedirs(src)
    for i in range(6):
        H.write_file(os.path.join(src, "doc-%d.txt" % i), H.seeded_bytes(i, 3000 + i * 70000))
    # cp -a keeps times (utimensat after the data is written and closed)
    H.run(["cp", "-a", src, os.path.join(dst, "by-cp")], check=True)
    # rsync: temporary name, write, close, utimes, rename over
    H.run(["rsync", "-a", src + "/", os.path.join(dst, "by-rsync")], check=True)
    # an editor's save: write a temporary file, fsync, rename over the original
    ed = os.path.join(dst, "by-editor")
    os.mkdir(ed)
    target = os.path.join(ed, "letter.txt")
    H.write_file(target, b"first draft\n")
    tmp = os.path.join(ed, ".letter.txt.swp")
    with open(tmp, "wb") as f:
        f.write(b"second draft\n" * 1000)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, target)
    # an archive unpacked in place (unzip sets times after writing)
    z = os.path.join(os.path.dirname(src), "a.zip")
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(4):
            zf.writestr("zipped/part-%d.bin" % i, H.seeded_bytes(100 + i, 50000))
    if shutil.which("unzip"):
        H.run(["unzip", "-q", z, "-d", os.path.join(dst, "by-unzip")], check=True)
    # plain appends without any close-time metadata call
    with open(os.path.join(dst, "appended.log"), "ab") as f:
        for i in range(50):
            f.write(b"line %d\n" % i)


def test_inode_ctime_mtime_stable_across_remount(new_vault, tmp_path):
    v = new_vault
    v.mount()
    write_with_clients(str(tmp_path / "src"), v.folder)
    before = tree_stats(v.folder)
    assert len(before) > 20
    # The stats above were taken before most write-backs were committed
    # (release runs after close returns) and the last ones at unmount: a
    # commit must record the ctime of the write, never its own time.
    v.remount()
    after = tree_stats(v.folder)
    assert set(after) == set(before)
    changed = {p: (before[p], after[p]) for p in before if before[p] != after[p]}
    assert not changed, "inode/ctime/mtime/size changed across unmount and remount " \
        "(path: (ino, ctime, mtime, size) before, after): %s" % changed


# ------------------------------------------------------------ the mount root

BOB = "bob"
BOB_PASSWORD = "a long passphrase of the second account 7"   # passes the policy
ADMIN = H.ACCOUNT + "-admin"


def add_user(v, name=BOB, password=BOB_PASSWORD):
    """A user account registered by the sysadmin (init made both)."""
    pw = os.path.join(v.base, name + ".pass")
    with open(pw, "w") as f:
        f.write(password + "\n")
    # The sysadmin registers the account; its person enrols with the code.
    p = v.admin("account-add", name, v.dir, "--role", "user",
                "--account", ADMIN, "--passfile", v.passfile, check=True)
    code = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)
    cf = os.path.join(v.base, name + ".code")
    with open(cf, "w") as f:
        f.write(code + "\n")
    v.admin("enroll", name, v.dir, "--code-file", cf, "--new-passfile", pw, check=True)
    return H.AccountMount(v, name, pw)


def audit_events(v):
    with open(v.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


def finish(m):
    reports = H.teardown(m)
    assert not reports, "sanitizer reports:\n" + "\n".join(reports)


def test_root_is_honest_and_dataadmin_mkdir_creates_a_folder(new_vault):
    v = new_vault
    bob = add_user(v)
    try:
        # alice is a dataadmin: the top is writable for her, and her mkdir
        # there makes a contract folder (key, envelope, signed grant).
        v.mount_foreground()
        assert stat.S_IMODE(os.stat(v.mnt).st_mode) == 0o755
        os.mkdir(os.path.join(v.mnt, "Sales"))
        assert sorted(os.listdir(v.mnt)) == [H.FOLDER, "Sales"]
        H.write_file(os.path.join(v.mnt, "Sales", "offer.txt"), b"offer", fsync=True)
        assert H.errno_of(os.mkdir, os.path.join(v.mnt, "Sales")) == errno.EEXIST
        # anything else at the top is refused, with a reason in the log
        assert H.errno_of(H.write_file, os.path.join(v.mnt, "loose.txt"), b"x") == errno.EACCES
        v.unmount()
        log = v.read_fg_log()
        assert "at the top of the mount refused" in log and "inside a contract folder" in log, log
        ev = [e for e in audit_events(v) if e["op"] == "folder-create"]
        assert ev and ev[-1]["path"] == "/Sales" and ev[-1]["result"] == "ok", ev
        # the folder is a real one: grantable by the admin tool, there after remount
        v.admin("grant", "Sales", BOB, "read,write", v.dir, "--passfile", v.passfile, check=True)
        v.mount()
        assert H.read_file(os.path.join(v.mnt, "Sales", "offer.txt")) == b"offer"
        v.unmount()

        # bob is a user who may write in Sales: the top still says it is not
        # writable (0555), and his mkdir there is EACCES (root bypasses the
        # mode bits, the daemon does not), audited as denied and explained in
        # the log.  (A read-only mount answers EROFS before that.)
        bob.mount_foreground()
        assert stat.S_IMODE(os.stat(bob.mnt).st_mode) == 0o555
        assert os.listdir(bob.mnt) == ["Sales"]
        assert H.errno_of(os.mkdir, os.path.join(bob.mnt, "Mine")) == errno.EACCES
        bob.unmount()
        log = bob.read_fg_log()
        assert 'mkdir "Mine" at the top of the mount refused for account "bob"' in log, log
        assert "needs the dataadmin role" in log, log
        denied = [e for e in audit_events(v) if e["account"] == BOB and e["op"] == "mkdir"]
        assert denied and denied[-1]["result"] == "denied", denied
    finally:
        finish(bob)


# ------------------------------------------- several mounts of one vault

class SecondMount(H.AccountMount):
    """The same account's vault at another mountpoint."""

    def __init__(self, vault, tag):
        super().__init__(vault, H.ACCOUNT, vault.passfile)
        self.mnt = os.path.join(vault.base, "second-%s-mnt" % tag)
        os.makedirs(self.mnt, exist_ok=True)


def wait_until(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("after %ss: %s" % (timeout, what))


def test_user_rw_and_backup_ro_mounts_at_once(new_vault):
    v = new_vault
    bob = add_user(v)      # the backup account: read on the folder, mounts -r
    v.admin("grant", H.FOLDER, BOB, "read", v.dir, "--passfile", v.passfile, check=True)
    second = SecondMount(v, "alice")
    try:
        v.mount()
        files = {"a.txt": H.seeded_bytes(1, 5000), "b.bin": H.seeded_bytes(2, 2 * H.CHUNK + 7),
                 "c.txt": b"to be deleted"}
        for n, data in files.items():
            H.write_file(v.path(n), data)
        # A file unlinked while open: no later mount may take it for a
        # crash's orphan while this one still reads it.
        held = open(v.path("c.txt"), "rb")
        os.unlink(v.path("c.txt"))
        del files["c.txt"]

        bob.mount(extra=["-r"])            # was exit 9: "already mounted"
        second.mount()                     # the same account elsewhere, read-write
        assert held.read() == b"to be deleted"
        held.close()
        for m in (bob, second):
            assert sorted(os.listdir(m.folder)) == sorted(files)
            for n, data in files.items():
                H.assert_same_bytes(H.read_file(os.path.join(m.folder, n)), data, n)
        # one mountpoint stays one mount, and no repair runs beside a mount
        p = v.pactfs(*v.mount_args())
        assert p.returncode == 9, (p.returncode, p.stderr)
        p = H.run([H.binary("pactfs-fsck"), v.dir, "--repair"], env=v.env)
        assert p.returncode == 9, (p.returncode, p.stdout, p.stderr)

        # Changes by the read-write mount reach the others within the
        # short cache time (close-to-open for contents).
        new_a = H.seeded_bytes(3, 3 * H.CHUNK + 11)
        H.write_file(v.path("a.txt"), new_a)
        H.write_file(v.path("d.txt"), b"new")
        os.unlink(v.path("b.bin"))
        files.update({"a.txt": new_a, "d.txt": b"new"})
        del files["b.bin"]
        for m in (bob, second):
            wait_until(lambda: sorted(os.listdir(m.folder)) == sorted(files),
                       "%s lists %s" % (m.mnt, sorted(os.listdir(m.folder))))
            wait_until(lambda: os.stat(os.path.join(m.folder, "a.txt")).st_size == len(new_a),
                       "%s: a.txt has the new size" % m.mnt)
            H.assert_same_bytes(H.read_file(os.path.join(m.folder, "a.txt")), new_a, m.mnt)
        # ... and the same the other way round, between the two writers
        H.write_file(os.path.join(second.folder, "e.txt"), b"from the second mount")
        wait_until(lambda: os.path.exists(v.path("e.txt")), "e.txt reaches the first mount")
        assert H.read_file(v.path("e.txt")) == b"from the second mount"
        # the backup mount stays read-only
        assert H.errno_of(H.write_file, os.path.join(bob.folder, "x"), b"x") == errno.EROFS
    finally:
        finish(second)
        finish(bob)
    v.unmount()
    # Every session's events are in the spool, each chain verifies.
    accounts = {e["account"] for e in audit_events(v) if e["op"] == "read"}
    assert {H.ACCOUNT, BOB} <= accounts, accounts
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr
