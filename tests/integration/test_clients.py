"""Real desktop and backup clients on a mount, the way people use them
(docs/desktop.md): what Nautilus does on drag and drop (through GIO),
an office suite's save, and backups with restic and borg from a read-only
backup mount beside the user's read-write one."""
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

import pactfs_helpers as H
from test_desktop import BOB, add_user, audit_events, finish
from test_trash import desktop_env, gio, trash_list  # noqa: F401 (fixture)


def tree(top):
    """{relative path: (type, mode, mtime in µs, sha256 or None, user xattrs)}."""
    out = {}
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(H.read_file(p)).hexdigest()
            xattrs = {a: os.getxattr(p, a) for a in os.listxattr(p) if a.startswith("user.")}
            # a folder's time to the second: `gio set` cannot give it µs
            mtime = st.st_mtime_ns // 10**9 * 10**6 if stat.S_ISDIR(st.st_mode) \
                else st.st_mtime_ns // 1000
            out[os.path.relpath(p, top)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                            mtime, digest, xattrs)
    return out


def make_source(top):
    """Files as a user has them: nested folders, odd names, a big file, a
    read-only one, old dates, a user xattr (a tag)."""
    os.makedirs(os.path.join(top, "Acme Corp", "2024 – annexes"))
    files = {
        "Acme Corp/contract final (v3).pdf": H.seeded_bytes(1, 700000),
        "Acme Corp/2024 – annexes/annex A.odt": H.seeded_bytes(2, 20000),
        "Acme Corp/2024 – annexes/prices €.ods": H.seeded_bytes(3, 2 * H.CHUNK + 99),
        "notes.txt": b"call Bob about clause 7\n",
        "empty.txt": b"",
    }
    for rel, data in files.items():
        H.write_file(os.path.join(top, rel), data)
    os.chmod(os.path.join(top, "notes.txt"), 0o440)
    os.setxattr(os.path.join(top, "notes.txt"), "user.xdg.tags", b"legal")
    for i, rel in enumerate(sorted(files)):
        t = 1500000000 + i * 86400
        os.utime(os.path.join(top, rel), ns=(t * 10**9 + 123456000, t * 10**9 + 654321000))
    os.utime(os.path.join(top, "Acme Corp"), ns=(1400000000 * 10**9, 1400000000 * 10**9))
    return files


def gio_copy_tree(env, src, dst):
    """Nautilus's copy job on a drop: folders made, then each file copied
    with all its metadata (g_file_copy with G_FILE_COPY_ALL_METADATA, which
    is what `gio copy --preserve` asks), folder times set last."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.normpath(os.path.join(dst, rel))
        if rel != ".":
            gio(env, "mkdir", target)
        for n in files:
            gio(env, "copy", "--preserve", os.path.join(root, n), os.path.join(target, n))
    for root, dirs, _ in os.walk(src, topdown=False):
        for n in dirs:
            s = os.path.join(root, n)
            d = os.path.join(dst, os.path.relpath(s, src))
            gio(env, "set", "-t", "uint64", d, "time::modified",
                str(os.stat(s).st_mtime_ns // 10**9))


def test_gio_drag_and_drop(new_vault, desktop_env, tmp_path):  # noqa: F811
    v = new_vault
    env = desktop_env
    src = str(tmp_path / "Desktop")
    make_source(src)
    want = tree(src)
    v.mount()
    sales = os.path.join(v.mnt, "Sales")
    os.mkdir(sales)

    # drop a folder from the desktop into the mount: everything arrives,
    # with modes, times (to the µs GIO carries) and tags
    gio_copy_tree(env, src, v.folder)
    got = tree(v.folder)
    assert got == want, {k: (got.get(k), want.get(k)) for k in set(got) | set(want)
                         if got.get(k) != want.get(k)}

    # move within a folder: a rename, the same file
    a = v.path("notes.txt")
    ino = os.stat(a).st_ino
    gio(env, "move", a, v.path("Acme Corp", "notes.txt"))
    assert os.stat(v.path("Acme Corp", "notes.txt")).st_ino == ino
    # rename (F2 in Nautilus)
    gio(env, "rename", v.path("Acme Corp", "notes.txt"), "call notes.txt")
    moved = v.path("Acme Corp", "call notes.txt")
    assert os.stat(moved).st_ino == ino
    assert os.getxattr(moved, "user.xdg.tags") == b"legal"
    # move to another contract folder: folders do not share keys, so GIO
    # falls back to copy and delete (EXDEV), keeping the metadata
    pdf = v.path("Acme Corp", "contract final (v3).pdf")
    before = tree(os.path.dirname(pdf))["contract final (v3).pdf"]
    gio(env, "move", pdf, os.path.join(sales, "contract final (v3).pdf"))
    assert not os.path.exists(pdf)
    assert tree(sales)["contract final (v3).pdf"] == before
    # across the mount boundary: out to the desktop and back in
    out = str(tmp_path / "out.pdf")
    gio(env, "move", os.path.join(sales, "contract final (v3).pdf"), out)
    assert os.listdir(sales) == []
    assert hashlib.sha256(H.read_file(out)).hexdigest() == before[3]
    gio(env, "move", out, os.path.join(sales, "back.pdf"))
    assert tree(sales)["back.pdf"][1:] == before[1:]
    assert not os.path.exists(out)

    # Delete key, Restore, Empty Trash
    gio(env, "trash", os.path.join(sales, "back.pdf"))
    gio(env, "trash", v.path("empty.txt"))
    listed = trash_list(env)
    assert set(listed) == {os.path.join(sales, "back.pdf"), v.path("empty.txt")}
    gio(env, "trash", "--restore", listed[os.path.join(sales, "back.pdf")])
    gio(env, "trash", "--empty")
    assert trash_list(env) == {}
    assert os.listdir(sales) == ["back.pdf"] and not os.path.exists(v.path("empty.txt"))

    # and it all survives a remount
    now = tree(v.mnt)
    v.remount()
    assert tree(v.mnt) == now
    v.unmount()
    ops = {e["op"] for e in audit_events(v)}
    assert {"create", "mkdir", "rename", "unlink", "trash", "restore", "trash-empty"} <= ops


# ------------------------------------------------- backups beside a writer

def contents(top):
    """{relative path: sha256} of every regular file below top."""
    return {rel: meta[3] for rel, meta in tree(top).items() if meta[0] == stat.S_IFREG}


def inode_ctime(top):
    out = {}
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            out[os.path.relpath(os.path.join(root, n), top)] = (st.st_ino, st.st_ctime_ns,
                                                                st.st_mtime_ns)
    return out


class Restic:
    def __init__(self, base):
        self.repo = os.path.join(base, "restic-repo")
        self.env = dict(os.environ, RESTIC_PASSWORD="backup repo pass",
                        RESTIC_CACHE_DIR=os.path.join(base, "restic-cache"),
                        HOME=base)

    def run(self, *args):
        p = H.run(["restic", "-r", self.repo] + list(args), env=self.env, timeout=300)
        assert p.returncode == 0, "restic %s -> %d\n%s" % (args, p.returncode, p.stderr)
        return p

    def init(self):
        self.run("init")

    def backup(self, top):
        """{'new': n, 'changed': n, 'unmodified': n} of the files."""
        p = self.run("backup", "--json", top)
        summary = [json.loads(line) for line in p.stdout.splitlines()
                   if '"message_type":"summary"' in line.replace(" ", "")][-1]
        return {k: summary["files_" + k] for k in ("new", "changed", "unmodified")}

    def restore(self, top, target):
        self.run("restore", "latest", "--target", target)
        return os.path.join(target, top.lstrip("/"))


class Borg:
    def __init__(self, base):
        self.repo = os.path.join(base, "borg-repo")
        self.n = 0
        self.env = dict(os.environ, HOME=base, BORG_BASE_DIR=base, BORG_PASSPHRASE="",
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def run(self, *args, cwd=None):
        p = subprocess.run(["borg"] + list(args), env=self.env, cwd=cwd, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, "borg %s -> %d\n%s" % (args, p.returncode, p.stderr)
        return p

    def init(self):
        self.run("init", "-e", "none", self.repo)

    def backup(self, top):
        """Counts of the files borg read (A added, M modified) and of the
        unchanged ones it took from its files cache (inode, size, ctime)."""
        self.n += 1
        p = self.run("create", "--list", "--filter=AMEU", "%s::run%d" % (self.repo, self.n), ".",
                     cwd=top)
        self.listed = [line for line in p.stderr.splitlines() if line[1:2] == " "]
        flags = [line[0] for line in self.listed]
        assert "E" not in flags, p.stderr
        return {"new": flags.count("A"), "changed": flags.count("M"),
                "unmodified": flags.count("U")}

    def restore(self, top, target):
        os.makedirs(target)
        self.run("extract", "%s::run%d" % (self.repo, self.n), cwd=target)
        return target


def files_read(v, since, account):
    """Files whose contents account read (audit: a handle's read summary
    with bytes; borg opens every file to fstat it, reading only changed ones)."""
    return sorted({e["path"] for e in audit_events(v)[since:]
                   if e["account"] == account and e["op"] == "read" and e["bytes"] > 0})


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("tool", ["restic", "borg"])
def test_backup_from_read_only_mount_beside_a_writer(new_vault, tmp_path, tool):
    """A backup account's read-only mount, with the user's read-write mount
    up the whole time: back up, restore, compare; change one file and add
    one, remount the backup mount (inode and ctime of every file identical),
    and the second run reads exactly those two files again (the tool's own
    counters, and the audit trail's opens)."""
    if not shutil.which(tool):
        pytest.skip("%s is not installed" % tool)
    v = new_vault
    bob = add_user(v)                     # the backup account: read grant, mounts -r
    v.admin("grant", H.FOLDER, BOB, "read", v.dir, "--passfile", v.passfile, check=True)
    b = Restic(str(tmp_path)) if tool == "restic" else Borg(str(tmp_path))
    b.init()
    try:
        v.mount()
        src = str(tmp_path / "src")
        files = make_source(src)
        H.run(["cp", "-a", src + "/.", v.folder], check=True)
        for i in range(20):
            H.write_file(v.path("Acme Corp", "letter-%02d.txt" % i), b"letter %d\n" % i * 50)
        bob.mount(extra=["-r"])
        assert H.errno_of(H.write_file, os.path.join(bob.folder, "x"), b"x") == errno.EROFS
        nfiles = len(files) + 20

        first = b.backup(bob.folder)
        assert first == {"new": nfiles, "changed": 0, "unmodified": 0}, first
        at_first = {k: st for k, st in inode_ctime(bob.folder).items()
                    if os.path.isfile(os.path.join(bob.folder, k))}
        restored = b.restore(bob.folder, str(tmp_path / "restore1"))
        assert contents(restored) == contents(v.folder)

        # the user works on: one file changed, one added
        with open(v.path("notes.txt"), "ab") as f:
            f.write(b"and clause 9\n")
        H.write_file(v.path("Acme Corp", "new offer.txt"), b"new")
        want = contents(v.folder)
        deadline = time.monotonic() + 5
        while contents(bob.folder) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert contents(bob.folder) == want
        before = inode_ctime(bob.folder)
        bob.unmount()
        bob.mount(extra=["-r"])
        after = inode_ctime(bob.folder)
        assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                 if before.get(k) != after.get(k)}

        mark = len(audit_events(v))
        second = b.backup(bob.folder)
        reread = {"Acme Corp/new offer.txt", "notes.txt"}
        if tool == "borg":
            # borg keeps no files-cache entry for the files with the newest
            # ctime of a run (cmtime granularity, borg/cache.py): it reads
            # that one again, pactfs or not
            newest = max(at_first.values(), key=lambda st: st[1])[1]
            reread |= {k for k, st in at_first.items() if st[1] == newest}
        assert second == {"new": 1 + len(reread) - 2 if tool == "borg" else 1, "changed": 1,
                          "unmodified": nfiles + 1 - len(reread)}, \
            (second, [f for f in getattr(b, "listed", []) if f[0] != "U"])
        got = files_read(v, mark, BOB)
        assert got == sorted("/%s/%s" % (H.FOLDER, r) for r in reread), got
        restored = b.restore(bob.folder, str(tmp_path / "restore2"))
        assert contents(restored) == want
    finally:
        finish(bob)


# ------------------------------------------------------- an office suite

def uno_or_skip():
    if not shutil.which("soffice"):
        pytest.skip("LibreOffice is not installed (libreoffice-writer-nogui)")
    try:
        import uno  # noqa: F401
    except ImportError:
        pytest.skip("python3-uno is not installed")


class Office:
    """A headless LibreOffice driven over UNO, as a person's clicks would."""

    def __init__(self, tmp):
        import uno
        self.uno = uno
        self.profile = os.path.join(tmp, "lo-profile")
        pipe = "pactfs_test_%d" % os.getpid()
        self.proc = subprocess.Popen(
            ["soffice", "--headless", "--invisible", "--norestore", "--nologo",
             "-env:UserInstallation=" + uno.systemPathToFileUrl(self.profile),
             "--accept=pipe,name=%s;urp;" % pipe],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext(
            "com.sun.star.bridge.UnoUrlResolver", local)
        deadline = time.monotonic() + 90
        while True:
            try:
                ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.5)
        self.desktop = ctx.ServiceManager.createInstanceWithContext(
            "com.sun.star.frame.Desktop", ctx)

    def _props(self, **kw):
        from com.sun.star.beans import PropertyValue
        out = []
        for k, val in kw.items():
            p = PropertyValue()
            p.Name, p.Value = k, val
            out.append(p)
        return tuple(out)

    def open(self, path):
        return self.desktop.loadComponentFromURL(self.uno.systemPathToFileUrl(path), "_blank", 0,
                                                 self._props(Hidden=True))

    def new_text(self, path, text):
        d = self.desktop.loadComponentFromURL("private:factory/swriter", "_blank", 0,
                                              self._props(Hidden=True))
        d.getText().setString(text)
        d.storeAsURL(self.uno.systemPathToFileUrl(path),
                     self._props(FilterName="writer8"))
        d.close(True)

    def quit(self):
        try:
            self.desktop.terminate()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.timeout_s(300)
def test_libreoffice_open_edit_save(vault, tmp_path):
    """Writer makes a document on the mount, opens it (its lock file
    .~lock.NAME# beside it while open), edits, saves, closes; the edit is
    there after a remount and nothing is left behind."""
    uno_or_skip()
    v = vault
    doc = v.path("offer.odt")
    lock = v.path(".~lock.offer.odt#")
    office = Office(str(tmp_path))
    try:
        office.new_text(doc, "Offer for Acme Corp.")
        assert os.path.getsize(doc) > 0
        d = office.open(doc)
        assert os.path.exists(lock), os.listdir(v.folder)   # "who has it open"
        assert b"," in H.read_file(lock)
        text = d.getText()
        text.insertString(text.getEnd(), "\nAccepted and signed by Bob.", False)
        d.store()
        d.close(True)
        assert not os.path.exists(lock)
        assert sorted(os.listdir(v.folder)) == ["offer.odt"]
    finally:
        office.quit()
    ino = os.stat(doc).st_ino
    v.remount()
    assert os.stat(doc).st_ino == ino
    office = Office(str(tmp_path))
    try:
        d = office.open(doc)
        assert d.getText().getString() == "Offer for Acme Corp.\nAccepted and signed by Bob."
        d.close(True)
    finally:
        office.quit()
    ops = [e["op"] for e in audit_events(v) if e["path"].startswith("/%s/.~lock" % H.FOLDER)]
    assert "create" in ops and "unlink" in ops, ops


# ------------------------------------------- what the desktop keeps outside

def test_gvfs_metadata_keeps_names_outside_the_vault(vault, desktop_env):  # noqa: F811
    """docs/desktop.md: GVFS's metadata store (icon positions, emblems,
    stars) lives in ~/.local/share/gvfs-metadata, outside the vault, with
    the file names in plaintext; with GIO_USE_VFS=local a program does not
    use it (metadata:: attributes are refused)."""
    env = desktop_env
    f = vault.path("acme-secret-offer.txt")
    H.write_file(f, b"x")
    gio(env, "set", f, "metadata::nautilus-icon-position", "10,20")
    store = os.path.join(env["HOME"], ".local", "share", "gvfs-metadata")
    deadline = time.monotonic() + 10
    leaked = []
    while not leaked and time.monotonic() < deadline:
        for root, _, names in os.walk(store):
            leaked += [n for n in names if b"acme-secret-offer" in
                       H.read_file(os.path.join(root, n))]
        time.sleep(0.2)
    assert leaked, "the name is not in %s (GVFS changed? update docs/desktop.md)" % store
    local = dict(env, GIO_USE_VFS="local")
    p = gio(local, "set", vault.path("acme-secret-offer.txt"), "metadata::emblems", "x",
            check=False)
    assert p.returncode != 0 and "not supported" in p.stderr, p.stderr
