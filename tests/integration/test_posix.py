"""POSIX operations and their error cases on a mounted vault.  These share
one mount per module (each test works in its own directory)."""
import errno
import os
import re
import stat

import pytest

import pactfs_helpers as H
from pactfs_helpers import errno_of

E_REFUSED_NS = {errno.EPERM, errno.EOPNOTSUPP, errno.EACCES}


def put(path, data):
    H.write_file(path, data)
    return path


# ----------------------------------------------------------- directories

def test_mkdir_rmdir_and_enotempty(workdir):
    d = os.path.join(workdir, "d")
    os.mkdir(d, 0o750)
    assert stat.S_ISDIR(os.stat(d).st_mode)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert errno_of(os.mkdir, d) == errno.EEXIST
    put(os.path.join(d, "f"), b"x")
    assert errno_of(os.rmdir, d) == errno.ENOTEMPTY
    assert os.path.exists(d)
    os.unlink(os.path.join(d, "f"))
    os.rmdir(d)
    assert not os.path.exists(d)
    assert errno_of(os.rmdir, d) == errno.ENOENT


def test_directory_nlink_counts_subdirs(workdir):
    d = os.path.join(workdir, "p")
    os.mkdir(d)
    n0 = os.stat(d).st_nlink
    os.mkdir(os.path.join(d, "a"))
    os.mkdir(os.path.join(d, "b"))
    assert os.stat(d).st_nlink == n0 + 2


def test_readdir_many_entries(workdir):
    names = {"entry-%05d" % i for i in range(2500)}
    for n in names:
        os.close(os.open(os.path.join(workdir, n), os.O_CREAT | os.O_WRONLY, 0o644))
    os.mkdir(os.path.join(workdir, "a-dir"))
    os.symlink("entry-00000", os.path.join(workdir, "a-link"))
    got = set(os.listdir(workdir))
    assert got == names | {"a-dir", "a-link"}
    kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(workdir)}
    assert kinds["a-dir"] == (True, False)
    assert kinds["a-link"] == (False, True)
    assert kinds["entry-00042"] == (False, False)


def entry_attrs(path):
    st = os.lstat(path)
    return (st.st_ino, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink,
            st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)


def test_listing_gives_each_entry_the_attributes_a_lookup_gives(vault):
    """A listing (READDIRPLUS) hands the kernel each entry's attributes,
    which lstat then uses with no LOOKUP: they must be the ones a lookup
    gives, also for a file this mount is still writing."""
    d = vault.path("plus")
    os.mkdir(d)
    f1 = put(os.path.join(d, "f1"), b"a" * 5000)
    os.chmod(f1, 0o640)
    os.utime(f1, ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    f2 = put(os.path.join(d, "f2"), b"")
    os.chown(f2, 1234, 5678)
    os.mkdir(os.path.join(d, "sub"), 0o711)
    os.symlink("f1", os.path.join(d, "link"))
    os.link(f1, os.path.join(d, "hard"))
    vault.unmount()
    vault.mount()   # a fresh kernel cache: the first listing is READDIRPLUS
    names = sorted(os.listdir(d))
    assert names == ["f1", "f2", "hard", "link", "sub"]
    listed = {n: entry_attrs(os.path.join(d, n)) for n in names}
    with open("/proc/sys/vm/drop_caches", "w") as f:   # the kernel forgets the entries
        f.write("2\n")
    looked_up = {n: entry_attrs(os.path.join(d, n)) for n in names}
    assert listed == looked_up
    _, kind, mode, nlink, _, _, size, mtime = listed["f1"]
    assert (kind, mode, nlink, size, mtime) == (stat.S_IFREG, 0o640, 2, 5000,
                                                 1_500_000_000_123_456_789)
    assert listed["f2"][4:6] == (1234, 5678)
    assert listed["sub"][1:3] == (stat.S_IFDIR, 0o711)
    assert listed["link"][1] == stat.S_IFLNK
    fd = os.open(os.path.join(d, "w"), os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"x" * 10000)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        assert "w" in os.listdir(d)
        assert os.lstat(os.path.join(d, "w")).st_size == 10000
    finally:
        os.close(fd)
    assert H.read_file(os.path.join(d, "w")) == b"x" * 10000


# ----------------------------------------------------------- create / open flags

def test_create_o_excl_eexist(workdir):
    p = os.path.join(workdir, "excl")
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert errno_of(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600) == errno.EEXIST


def test_o_trunc_empties_file(workdir):
    p = put(os.path.join(workdir, "t"), b"y" * 100000)
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(p).st_size == 0
    assert H.read_file(p) == b""


def test_o_append_always_writes_at_end(workdir):
    p = put(os.path.join(workdir, "a"), b"abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"def")
        os.write(fd, b"ghi")
    finally:
        os.close(fd)
    assert H.read_file(p) == b"abcdefghi"


def test_enoent_enotdir_eisdir(workdir):
    f = put(os.path.join(workdir, "file"), b"data")
    d = os.path.join(workdir, "dir")
    os.mkdir(d)
    missing = os.path.join(workdir, "missing")
    assert errno_of(os.stat, missing) == errno.ENOENT
    assert errno_of(os.open, missing, os.O_RDONLY) == errno.ENOENT
    assert errno_of(os.unlink, missing) == errno.ENOENT
    assert errno_of(os.open, os.path.join(missing, "x"), os.O_CREAT | os.O_WRONLY) == errno.ENOENT
    assert errno_of(os.stat, os.path.join(f, "x")) == errno.ENOTDIR
    assert errno_of(os.mkdir, os.path.join(f, "x")) == errno.ENOTDIR
    assert errno_of(os.rmdir, f) == errno.ENOTDIR
    assert errno_of(os.listdir, f) == errno.ENOTDIR
    assert errno_of(os.open, d, os.O_WRONLY) == errno.EISDIR
    assert errno_of(os.unlink, d) == errno.EISDIR


# ----------------------------------------------------------- truncate

def test_truncate_and_ftruncate_up_and_down(workdir):
    p = put(os.path.join(workdir, "tr"), b"x" * 1000)
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, 10)
        assert os.fstat(fd).st_size == 10
        os.ftruncate(fd, 1000)
        assert os.pread(fd, 2000, 0) == b"x" * 10 + bytes(990)
    finally:
        os.close(fd)
    big = H.seeded_bytes(5, 2 * H.CHUNK + 5)
    put(p, big)
    os.truncate(p, H.CHUNK + 7)
    assert os.stat(p).st_size == H.CHUNK + 7
    os.truncate(p, 3 * H.CHUNK)
    H.assert_same_bytes(H.read_file(p), big[:H.CHUNK + 7] + bytes(2 * H.CHUNK - 7), p)


# ----------------------------------------------------------- unlink / rename

def test_unlinked_open_file_readable_until_closed(workdir):
    data = H.seeded_bytes(11, H.CHUNK + 99)
    p = put(os.path.join(workdir, "ghost"), data)
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        assert errno_of(os.stat, p) == errno.ENOENT
        assert "ghost" not in os.listdir(workdir)
        assert os.fstat(fd).st_size == len(data)
        H.assert_same_bytes(os.pread(fd, len(data) + 10, 0), data, "unlinked open file")
        os.pwrite(fd, b"still-writable", 5)
        assert os.pread(fd, 14, 5) == b"still-writable"
    finally:
        os.close(fd)
    # The name can be reused at once for a new, unrelated file.
    put(p, b"new")
    assert H.read_file(p) == b"new"


def test_rename_over_file_and_directories(workdir):
    a = put(os.path.join(workdir, "a"), b"AAA")
    b = put(os.path.join(workdir, "b"), b"BBBBBB")
    os.rename(a, b)
    assert not os.path.exists(a)
    assert H.read_file(b) == b"AAA"
    d1, d2, d3 = (os.path.join(workdir, n) for n in ("d1", "d2", "d3"))
    os.mkdir(d1)
    put(os.path.join(d1, "inside"), b"in d1")
    os.mkdir(d2)
    os.rename(d1, d2)                      # over an empty directory
    assert not os.path.exists(d1)
    assert H.read_file(os.path.join(d2, "inside")) == b"in d1"
    os.mkdir(d3)
    put(os.path.join(d3, "x"), b"x")
    assert errno_of(os.rename, d3, d2) == errno.ENOTEMPTY
    assert errno_of(os.rename, d3, b) == errno.ENOTDIR
    assert errno_of(os.rename, b, d3) == errno.EISDIR
    # Move into a subdirectory and back under a new name.
    os.rename(b, os.path.join(d3, "moved"))
    assert H.read_file(os.path.join(d3, "moved")) == b"AAA"
    assert errno_of(os.rename, os.path.join(workdir, "nope"), b) == errno.ENOENT


def test_rename_noreplace(workdir):
    a = put(os.path.join(workdir, "a"), b"A")
    b = put(os.path.join(workdir, "b"), b"B")
    e = H.errno_of(H.renameat2, a, b, H.RENAME_NOREPLACE)
    assert e == errno.EEXIST, "RENAME_NOREPLACE over an existing file gave %s" % H.errname(e)
    assert H.read_file(a) == b"A" and H.read_file(b) == b"B"
    c = os.path.join(workdir, "c")
    H.renameat2(a, c, H.RENAME_NOREPLACE)
    assert not os.path.exists(a) and H.read_file(c) == b"A"


def test_rename_exchange(workdir):
    a = put(os.path.join(workdir, "a"), b"AAAA")
    b = put(os.path.join(workdir, "b"), b"BB")
    H.renameat2(a, b, H.RENAME_EXCHANGE)
    assert H.read_file(a) == b"BB" and H.read_file(b) == b"AAAA"
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    put(os.path.join(d, "child"), b"c")
    H.renameat2(a, d, H.RENAME_EXCHANGE)   # a file and a directory swap places
    assert os.path.isdir(a) and H.read_file(os.path.join(a, "child")) == b"c"
    assert H.read_file(d) == b"BB"
    e = H.errno_of(H.renameat2, a, os.path.join(workdir, "none"), H.RENAME_EXCHANGE)
    assert e == errno.ENOENT



def test_size_is_right_while_background_commits_land(workdir):
    """A lookup or getattr that read the inode row just before this mount's
    background commit of the file landed must not report the row's older
    size (the kernel then served b'' for data just written).  Each round
    writes small files, renames them (a fresh lookup) and reads them back
    at once, while the commits of the earlier writes land."""
    wrong = []
    for i in range(200):
        a = put(os.path.join(workdir, "a%d" % i), b"AAAA")
        b = put(os.path.join(workdir, "b%d" % i), b"BB")
        H.renameat2(a, b, H.RENAME_EXCHANGE)
        got = (os.stat(a).st_size, H.read_file(a), H.read_file(b))
        if got != (2, b"BB", b"AAAA"):
            wrong.append((i, got))
    assert not wrong, "stale sizes after rename: %s" % wrong[:5]


# ----------------------------------------------------------- attributes

def test_chmod(workdir):
    p = put(os.path.join(workdir, "m"), b"m")
    for mode in (0o600, 0o755, 0o4711, 0o000):
        os.chmod(p, mode)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode


def test_chown_as_root(workdir):
    p = put(os.path.join(workdir, "o"), b"o")
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(p, -1, 42)
    assert (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 42)


def test_utimens_nanoseconds(workdir):
    p = put(os.path.join(workdir, "u"), b"u")
    at, mt = 1_500_000_000_123_456_789, 1_400_000_000_987_654_321
    os.utime(p, ns=(at, mt))
    st = os.stat(p)
    assert st.st_mtime_ns == mt
    assert st.st_atime_ns == at


def test_write_updates_mtime_and_size(workdir):
    p = put(os.path.join(workdir, "w"), b"")
    os.utime(p, ns=(10**18, 10**18))
    with open(p, "ab") as f:
        f.write(b"12345")
    st = os.stat(p)
    assert st.st_size == 5
    assert st.st_mtime_ns != 10**18, "mtime not updated by a write"


def test_statfs(shared_vault):
    sv = os.statvfs(shared_vault.mnt)
    assert sv.f_bsize > 0
    assert sv.f_namemax > 0
    assert sv.f_blocks >= sv.f_bfree >= sv.f_bavail
    assert sv.f_blocks > 0, "statfs reports a filesystem of zero size"
    sv2 = os.statvfs(shared_vault.folder)
    assert sv2.f_bsize > 0


def test_fsync_and_fdatasync(workdir):
    p = os.path.join(workdir, "s")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"synced" * 1000)
        os.fsync(fd)
        os.write(fd, b"more")
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert H.read_file(p) == b"synced" * 1000 + b"more"
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def test_symlink_readlink(workdir):
    target = put(os.path.join(workdir, "target"), b"through the link")
    ln = os.path.join(workdir, "ln")
    os.symlink("target", ln)
    assert os.readlink(ln) == "target"
    assert stat.S_ISLNK(os.lstat(ln).st_mode)
    assert H.read_file(ln) == b"through the link"
    long_target = "/some/absolute/" + "x" * 900
    ln2 = os.path.join(workdir, "ln2")
    os.symlink(long_target, ln2)
    assert os.readlink(ln2) == long_target
    assert errno_of(os.stat, ln2) == errno.ENOENT        # dangling
    assert errno_of(os.readlink, target) == errno.EINVAL  # not a link


def test_hard_links_share_data_and_count(workdir):
    a = put(os.path.join(workdir, "a"), b"shared")
    b = os.path.join(workdir, "b")
    os.link(a, b)
    sa, sb = os.stat(a), os.stat(b)
    assert sa.st_nlink == 2 and sb.st_nlink == 2
    assert sa.st_ino == sb.st_ino
    with open(b, "r+b") as f:
        f.write(b"SH")
    assert H.read_file(a) == b"SHared"
    os.unlink(a)
    assert os.stat(b).st_nlink == 1
    assert H.read_file(b) == b"SHared"
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    c = os.path.join(d, "c")
    os.link(b, c)                          # a link in another directory
    assert os.stat(c).st_nlink == 2


def test_user_xattrs(workdir):
    p = put(os.path.join(workdir, "x"), b"x")
    os.setxattr(p, "user.comment", b"a value \x00 with nul")
    os.setxattr(p, "user.second", b"")
    assert os.getxattr(p, "user.comment") == b"a value \x00 with nul"
    assert os.getxattr(p, "user.second") == b""
    assert set(os.listxattr(p)) >= {"user.comment", "user.second"}
    assert errno_of(os.setxattr, p, "user.comment", b"v", os.XATTR_CREATE) == errno.EEXIST
    assert errno_of(os.setxattr, p, "user.none", b"v", os.XATTR_REPLACE) == errno.ENODATA
    os.setxattr(p, "user.comment", b"replaced", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.comment") == b"replaced"
    os.removexattr(p, "user.comment")
    assert "user.comment" not in os.listxattr(p)
    assert errno_of(os.getxattr, p, "user.comment") == errno.ENODATA
    assert errno_of(os.removexattr, p, "user.comment") == errno.ENODATA
    d = os.path.join(workdir, "dx")
    os.mkdir(d)
    os.setxattr(d, "user.ondir", b"1")
    assert os.getxattr(d, "user.ondir") == b"1"


@pytest.mark.parametrize("name", ["trusted.pactfs", "security.pactfs"])
def test_non_user_xattr_namespace_refused(workdir, name):
    p = put(os.path.join(workdir, "nx"), b"x")
    e = errno_of(os.setxattr, p, name, b"v")
    assert e in E_REFUSED_NS, "setxattr %s gave %s" % (name, H.errname(e))
    assert name not in os.listxattr(p)


# ----------------------------------------------------------- the top level

def test_top_level_lists_folders_and_refuses_creation(shared_vault):
    mnt = shared_vault.mnt
    assert H.FOLDER in os.listdir(mnt)
    assert errno_of(os.open, os.path.join(mnt, "newfile"), os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    # (a dataadmin's mkdir here makes a contract folder: test_desktop.py)
    assert errno_of(os.symlink, "x", os.path.join(mnt, "newlink")) == errno.EACCES
    assert set(os.listdir(mnt)) == {H.FOLDER}


def test_cross_folder_rename_is_exdev(vault):
    p = vault.admin("folder-create", "Second", vault.dir, "--account", H.ACCOUNT,
                    "--passfile", vault.passfile)
    assert p.returncode == 0, p.stderr
    again = vault.admin("folder-create", "Second", vault.dir, "--account", H.ACCOUNT,
                        "--passfile", vault.passfile)
    assert again.returncode == 11 and "already exists" in again.stderr
    vault.remount()
    second = os.path.join(vault.mnt, "Second")
    assert os.path.isdir(second)
    a = put(vault.path("crossing"), b"c")
    assert errno_of(os.rename, a, os.path.join(second, "crossing")) == errno.EXDEV
    assert os.path.exists(a)
