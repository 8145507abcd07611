"""cp -a and rsync -a of a generated tree of a few thousand files into the
vault; after a remount the copy equals the source: contents (diff -r),
modes, owners, mtimes and symlinks."""
import os
import random
import stat

import pytest

import pactfs_helpers as H

NDIRS = 30
FILES_PER_DIR = 100          # 3000 files, plus symlinks and empty dirs
MODES = [0o644, 0o600, 0o755, 0o640, 0o444, 0o700]
BASE_TIME_NS = 1_600_000_000 * 10**9


def make_tree(root, seed=42):
    rng = random.Random(seed)
    os.mkdir(root)
    for d in range(NDIRS):
        sub = os.path.join(root, "dir%02d" % d, "sub%d" % (d % 3))
        os.makedirs(sub)
        for i in range(FILES_PER_DIR):
            p = os.path.join(sub if i % 2 else os.path.dirname(sub), "file %03d.txt" % i)
            n = rng.choice([0, 1, 100, 4096, rng.randrange(0, 20000)])
            with open(p, "wb") as f:
                f.write(rng.randbytes(n))
            os.chmod(p, MODES[i % len(MODES)])
            if i % 17 == 0:
                os.chown(p, 1000 + d, 2000 + d)
            t = BASE_TIME_NS + rng.randrange(0, 10**8) * 10**9 + rng.randrange(0, 10**9)
            os.utime(p, ns=(t, t))
        os.symlink("file 001.txt", os.path.join(sub, "link-rel"))
        os.symlink("../no/such/target", os.path.join(sub, "link-dangling"))
        os.mkdir(os.path.join(sub, "empty"))
    big = os.path.join(root, "big.bin")
    with open(big, "wb") as f:
        f.write(rng.randbytes(3 * H.CHUNK + 11))
    # Directory times last, deepest first, so creating entries does not move them.
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        t = BASE_TIME_NS + rng.randrange(0, 10**8) * 10**9
        os.utime(dirpath, ns=(t, t))


def walk_meta(root):
    """relative path -> (type, mode, uid, gid, size, mtime_ns, link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            mtime = None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                        st.st_uid, st.st_gid, size, mtime, target)
    return out


def compare_trees(src, dst, mtime_precision_ns):
    a, b = walk_meta(src), walk_meta(dst)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    assert not missing and not extra, "missing %s... extra %s..." % (missing[:5], extra[:5])
    bad = []
    for rel, want in a.items():
        got = b[rel]
        if want[5] is not None:
            want = want[:5] + (want[5] // mtime_precision_ns,) + want[6:]
            got = got[:5] + (got[5] // mtime_precision_ns,) + got[6:]
        if got != want:
            bad.append("%s: got %s want %s" % (rel, got, want))
    assert not bad, "%d entries differ, e.g.\n%s" % (len(bad), "\n".join(bad[:10]))
    p = H.run(["diff", "-r", "--no-dereference", src, dst], timeout=600)
    assert p.returncode == 0, "diff -r found differences:\n" + p.stdout[:3000] + p.stderr[:1000]


@pytest.fixture
def source_tree(tmp_path):
    src = str(tmp_path / "src")
    make_tree(src)
    return src


@pytest.mark.timeout_s(1500)
def test_cp_a_tree_survives_remount(vault, source_tree):
    dst = vault.path("cp-copy")
    p = H.run(["cp", "-a", source_tree, dst], timeout=1200)
    assert p.returncode == 0, "cp -a failed: " + p.stderr[:3000]
    compare_trees(source_tree, dst, 1)      # cp -a keeps nanoseconds
    vault.remount()
    compare_trees(source_tree, dst, 1)


@pytest.mark.timeout_s(1500)
def test_rsync_a_tree_survives_remount(vault, source_tree):
    dst = vault.path("rsync-copy")
    p = H.run(["rsync", "-a", source_tree + "/", dst + "/"], timeout=1200)
    assert p.returncode == 0, "rsync -a failed (%d): %s" % (p.returncode, p.stderr[:3000])
    vault.remount()
    compare_trees(source_tree, dst, 1)      # rsync 3.2 keeps nanoseconds too
    # A second rsync finds nothing to transfer if metadata really stuck.
    p = H.run(["rsync", "-a", "--itemize-changes", source_tree + "/", dst + "/"], timeout=1200)
    assert p.returncode == 0, p.stderr[:2000]
    changed = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert not changed, "rsync saw changes after remount:\n" + "\n".join(changed[:20])
