"""The freedesktop.org trash at the top of a mount (docs/desktop.md
"Trash"): GIO's `gio trash`, and GVFS's trash:/// (what Nautilus shows)
for list, restore and empty, against real mounts.  Entries stay inside
their own folder: another account never sees them."""
import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time

import pytest

import pactfs_helpers as H
from test_desktop import BOB, add_user, audit_events, finish

pytestmark = [
    pytest.mark.skipif(not shutil.which("gio"), reason="gio (libglib2.0-bin) is not installed"),
    pytest.mark.skipif(not os.path.exists("/usr/libexec/gvfsd-trash"),
                       reason="gvfsd-trash (gvfs-daemons, gvfs) is not installed"),
]

UID = os.getuid()


@pytest.fixture
def desktop_env(tmp_path):
    """A session bus of our own, as a desktop session has: GIO reaches
    GVFS's trash:/// through it (gvfsd and gvfsd-trash start on demand
    and end with the bus)."""
    rt = tmp_path / "xdg-runtime"
    rt.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.mkdir()
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                            "--address=unix:path=%s/bus" % rt],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    addr = bus.stdout.readline().decode().strip()
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=addr, XDG_RUNTIME_DIR=str(rt),
               HOME=str(home))
    yield env
    bus.terminate()
    bus.wait(timeout=10)


def gio(env, *args, check=True):
    p = H.run(["gio"] + list(args), env=env)
    if check:
        assert p.returncode == 0, "gio %s -> %d\n%s%s" % (" ".join(args), p.returncode,
                                                           p.stdout, p.stderr)
    return p


def trash_list(env):
    """{original path: trash:/// URI} as `gio trash --list` prints them."""
    out = {}
    for line in gio(env, "trash", "--list").stdout.splitlines():
        uri, orig = line.split("\t")
        out[orig] = uri
    return out


def trash_dir(m):
    return os.path.join(m.mnt, ".Trash-%d" % UID)


def store_bytes(v):
    """Every byte of the metadata store (SQLite file and its WAL)."""
    data = b""
    for n in os.listdir(v.dir):
        if n.startswith("meta.db"):
            data += H.read_file(os.path.join(v.dir, n))
    return data


def test_gio_trash_list_restore_empty_across_two_folders(new_vault, desktop_env):
    v = new_vault
    env = desktop_env
    v.mount()
    os.mkdir(os.path.join(v.mnt, "Sales"))       # alice is a dataadmin: a second folder
    sales = os.path.join(v.mnt, "Sales")
    files = {
        v.path("offer-acme.txt"): H.seeded_bytes(1, 5000),
        v.path("same-name.txt"): b"in Contracts",
        os.path.join(sales, "same-name.txt"): b"in Sales",
        os.path.join(sales, "q3-forecast.ods"): H.seeded_bytes(2, 3 * H.CHUNK + 5),
    }
    for p, data in files.items():
        H.write_file(p, data)
    os.makedirs(v.path("old-deal", "annex"))
    H.write_file(v.path("old-deal", "annex", "a.pdf"), b"annex")
    inodes = {p: os.stat(p).st_ino for p in files}

    # Move to Trash, as the file manager's Delete key does
    for p in list(files) + [v.path("old-deal")]:
        gio(env, "trash", p)
        assert not os.path.lexists(p)
    td = trash_dir(v)
    assert stat.S_IMODE(os.lstat(td).st_mode) == 0o700 and os.lstat(td).st_uid == UID
    assert ".Trash-%d" % UID not in os.listdir(v.mnt)      # found by name, not listed
    assert sorted(os.listdir(v.mnt)) == [H.FOLDER, "Sales"]
    assert os.listdir(v.folder) == [] and os.listdir(sales) == []   # the hidden trash too
    names = sorted(os.listdir(os.path.join(td, "files")))
    # one namespace over both folders: GIO picked a free name for the second
    assert names == ["offer-acme.txt", "old-deal", "q3-forecast.ods", "same-name.2.txt",
                     "same-name.txt"], names
    assert sorted(os.listdir(os.path.join(td, "info"))) == [n + ".trashinfo" for n in names]
    info = H.read_file(os.path.join(td, "info", "offer-acme.txt.trashinfo")).decode()
    assert info.startswith("[Trash Info]\nPath=%s/offer-acme.txt\nDeletionDate=" % H.FOLDER), info
    # the entry is the same file, still readable through the trash
    assert os.stat(os.path.join(td, "files", "offer-acme.txt")).st_ino == \
        inodes[v.path("offer-acme.txt")]
    assert H.read_file(os.path.join(td, "files", "old-deal", "annex", "a.pdf")) == b"annex"

    # The trash outlives the mount: it is in the vault, not in memory.
    v.remount()
    listed = trash_list(env)
    assert set(listed) == set(files) | {v.path("old-deal")}, listed

    # Restore (Nautilus's "Restore" is the same move back)
    q3 = os.path.join(sales, "q3-forecast.ods")
    gio(env, "trash", "--restore", listed[q3])
    H.assert_same_bytes(H.read_file(q3), files[q3], q3)
    assert os.stat(q3).st_ino == inodes[q3]
    gio(env, "trash", "--restore", listed[v.path("old-deal")])
    assert H.read_file(v.path("old-deal", "annex", "a.pdf")) == b"annex"
    assert set(trash_list(env)) == set(files) - {q3}
    assert "q3-forecast.ods.trashinfo" not in os.listdir(os.path.join(td, "info"))

    # Empty trash: gone for good, the folders keep what was restored
    gio(env, "trash", "--empty")
    deadline = time.monotonic() + 10           # gvfsd-trash expunges in the background
    while time.monotonic() < deadline and os.listdir(os.path.join(td, "expunged")):
        time.sleep(0.2)
    assert trash_list(env) == {}
    for sub in ("files", "info", "expunged"):
        assert os.listdir(os.path.join(td, sub)) == [], sub
    assert sorted(os.listdir(sales)) == ["q3-forecast.ods"]
    assert sorted(os.listdir(v.folder)) == ["old-deal"]
    v.unmount()

    ops = [(e["op"], e["path"], e["result"]) for e in audit_events(v)
           if e["op"] in ("trash", "restore", "trash-empty")]
    trash_dst = "/.Trash-%d/files/" % UID
    assert ("trash", "/Sales/same-name.txt -> %ssame-name.2.txt" % trash_dst, "ok") in ops, ops
    assert ("restore", "%sq3-forecast.ods -> /Sales/q3-forecast.ods" % trash_dst, "ok") in ops
    assert sum(1 for o in ops if o[0] == "trash") == 5, ops
    assert sum(1 for o in ops if o[0] == "restore") == 2, ops
    assert sum(1 for o in ops if o[0] == "trash-empty") == 3, ops
    assert v.admin("audit-verify", v.dir).returncode == 0
    # names and original paths stay encrypted in the store
    raw = store_bytes(v)
    for secret in (b"offer-acme", b"same-name", b"Path=", b"Trash Info", b"pactfs-trash"):
        assert secret not in raw, secret


def test_trash_entry_stays_inside_its_folder(new_vault, desktop_env):
    """alice trashes in both folders; bob holds an envelope for Sales only.
    bob sees none of her entries (not even Sales's: the trash is per
    account), none of the hidden directories, and his own trash works."""
    v = new_vault
    env = desktop_env
    v.mount()
    sales = os.path.join(v.mnt, "Sales")
    os.mkdir(sales)
    H.write_file(v.path("secret.txt"), b"contracts only")
    H.write_file(os.path.join(sales, "shared.txt"), b"sales")
    H.write_file(os.path.join(sales, "keep.txt"), b"keep")
    gio(env, "trash", v.path("secret.txt"))
    gio(env, "trash", os.path.join(sales, "shared.txt"))
    v.unmount()
    bob = add_user(v)
    v.admin("grant", "Sales", BOB, "read,write", v.dir, "--passfile", v.passfile, check=True)
    try:
        bob.mount()
        assert os.listdir(bob.mnt) == ["Sales"]
        bsales = os.path.join(bob.mnt, "Sales")
        assert os.listdir(bsales) == ["keep.txt"]
        for account_id in range(1, 6):      # the hidden directories (any account's)
            n = os.path.join(bsales, ".pactfs-trash.%d" % account_id)
            assert H.errno_of(os.lstat, n) == errno.ENOENT
            assert H.errno_of(os.mkdir, n) == errno.EPERM
        btd = trash_dir(bob)
        assert os.listdir(os.path.join(btd, "files")) == []
        assert os.listdir(os.path.join(btd, "info")) == []
        assert trash_list(env) == {}
        gio(env, "trash", os.path.join(bsales, "keep.txt"))
        assert os.listdir(os.path.join(btd, "files")) == ["keep.txt"]
        bob.unmount()
        v.mount()
        assert sorted(os.listdir(os.path.join(trash_dir(v), "files"))) == ["secret.txt",
                                                                          "shared.txt"]
        assert os.listdir(sales) == []
    finally:
        finish(bob)


def test_trash_refusals(vault):
    """What the trash refuses, and that a contract folder is never made of it."""
    v = vault
    td = trash_dir(v)
    assert H.errno_of(os.mkdir, td) == errno.EEXIST
    assert H.errno_of(os.mkdir, os.path.join(td, "files")) == errno.EEXIST
    assert H.errno_of(os.mkdir, os.path.join(td, "other")) == errno.EPERM
    assert H.errno_of(H.write_file, os.path.join(td, "files", "x"), b"x") == errno.EPERM
    assert H.errno_of(os.rmdir, os.path.join(td, "files")) == errno.EPERM
    # a contract folder itself is not trashed (the top is not writable)
    assert H.errno_of(os.rename, v.folder, os.path.join(td, "files", H.FOLDER)) == errno.EACCES
    # a file put into files/ by a plain rename is trashed all the same
    H.write_file(v.path("plain.txt"), b"p")
    os.rename(v.path("plain.txt"), os.path.join(td, "files", "plain.txt"))
    info = H.read_file(os.path.join(td, "info", "plain.txt.trashinfo")).decode()
    assert "\nPath=%s/plain.txt\n" % H.FOLDER in info, info
    assert H.errno_of(os.unlink, os.path.join(td, "info", "plain.txt.trashinfo")) == errno.EPERM
    # deleting from files/ is final (and audited as emptying that entry)
    os.unlink(os.path.join(td, "files", "plain.txt"))
    assert os.listdir(os.path.join(td, "info")) == []
    assert os.listdir(v.mnt) == [H.FOLDER]
    ev = [e for e in audit_events(v) if e["op"] in ("trash", "trash-empty")]
    assert [(e["op"], e["result"]) for e in ev] == [("trash", "denied"), ("trash", "ok"),
                                                   ("trash-empty", "ok")], ev
    assert not [e for e in audit_events(v) if e["op"] == "folder-create" and
                e["path"].startswith("/.")]
    # what a client writes into info/ stays in memory until its rename, so
    # it is bounded
    info = os.path.join(td, "info")
    made = 0
    for i in range(300):
        if H.errno_of(lambda: open(os.path.join(info, "x%d.trashinfo" % i), "x").close()):
            break
        made += 1
    assert made == 256
    assert H.errno_of(open, os.path.join(info, "one-more.trashinfo"), "x") == errno.ENOSPC
    for i in range(made):
        os.unlink(os.path.join(info, "x%d.trashinfo" % i))
    assert os.listdir(info) == []


NOBODY = 65534


def as_nobody(argv, env):
    return H.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
                 + argv, env=env)


@pytest.fixture
def nobody_vault():
    """A vault an ordinary user (nobody) can reach: pytest's tmp_path is
    inside root's 0700 directory."""
    base = tempfile.mkdtemp(prefix="pactfs-nobody-")
    os.chmod(base, 0o755)
    v = H.Vault(base)
    v.init()
    yield v
    try:
        if H.is_mounted(v.mnt):
            as_nobody(["fusermount3", "-u", v.mnt], v.env)
        finish(v)
    finally:
        H.rmtree(base)


def test_read_only_mount_reports_can_trash_false(nobody_vault):
    """GIO's can-trash: the parent is writable (access W_OK) and a trash
    directory is usable at the top (.Trash-UID owned by the user, or the top
    writable).  A read-only mount has no .Trash-UID and a 0555 top, so it is
    FALSE there; a writable mount has one, so it is TRUE.  Run as an
    ordinary user who mounts the vault: root passes every access check."""
    v = nobody_vault
    v.mount()
    H.write_file(v.path("a.txt"), b"a")
    os.chown(v.folder, NOBODY, NOBODY)
    os.chown(v.path("a.txt"), NOBODY, NOBODY)
    v.unmount()
    home = os.path.join(v.base, "nobody-home")
    os.mkdir(home)
    for root, dirs, names in os.walk(v.base):
        for n in dirs + names:
            os.lchown(os.path.join(root, n), NOBODY, NOBODY)
    os.chown(v.base, NOBODY, NOBODY)
    env = dict(v.env, HOME=home, XDG_RUNTIME_DIR=home)
    seen = {}
    for extra in ([], ["-r"]):
        p = as_nobody([H.binary("pactfs")] + v.mount_args(extra=extra), env)
        assert p.returncode == 0, p.stderr
        try:
            assert H.wait_mounted(v.mnt)
            q = as_nobody(["gio", "info", "-a", "access::can-trash,access::can-delete",
                           v.path("a.txt")], env)
            assert q.returncode == 0, q.stderr
            seen[tuple(extra)] = q.stdout
            t = as_nobody(["stat", "-c", "%U %a", os.path.join(v.mnt, ".Trash-%d" % NOBODY)],
                          env)
            seen[tuple(extra) + ("stat",)] = (t.returncode, t.stdout.strip())
            if not extra:     # and trashing works for that user
                t = as_nobody(["gio", "trash", v.path("a.txt")], env)
                assert t.returncode == 0, t.stderr
                t = as_nobody(["mv", os.path.join(v.mnt, ".Trash-%d" % NOBODY, "files", "a.txt"),
                               v.path("a.txt")], env)
                assert t.returncode == 0, t.stderr
        finally:
            pids = H.find_daemon_pids(v.mnt)
            as_nobody(["fusermount3", "-u", v.mnt], env)
            for pid in pids:       # the daemon writes back, then exits
                H.wait_pid_gone(pid, 30)
    assert "access::can-trash: TRUE" in seen[()], seen
    assert seen[("stat",)] == (0, "nobody 700"), seen
    assert "access::can-trash: FALSE" in seen[("-r",)], seen
    assert "access::can-delete: TRUE" in seen[("-r",)], seen    # GIO cannot know (no "ro")
    assert seen[("-r", "stat")][0] != 0, seen
