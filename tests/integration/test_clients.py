"""Real desktop and backup clients on a mount, the way people use them
(docs/desktop.md): what Nautilus does on drag and drop (through GIO),
an office suite's save, and backups with restic and borg from a read-only
backup mount beside the user's read-write one."""
import hashlib
import json
import os
import shutil
import stat
import subprocess

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
