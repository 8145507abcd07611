"""What desktop clients and backup tools rely on (docs/desktop.md): stable
inode numbers and ctime across unmount and remount, an honest mount root,
several mounts of one vault at once."""
import os
import shutil
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
