"""Set-user-ID and set-group-ID bits on write, truncate and chown
(docs/design-fuse.md, "Who clears set-user-ID and set-group-ID").  Linux
clears S_ISUID, and S_ISGID when group-execute is set, when a process
without CAP_FSETID writes or truncates a regular file, and on every chown of
a non-directory (root's too); a set-group-ID bit without group-execute
survives a chown.  With FUSE_HANDLE_KILLPRIV_V2 negotiated the kernel leaves
all of that to pactfs, so these pass only if pactfs clears the bits itself.
Writers are root (CAP_FSETID) or nobody, through a mount with allow_other."""
import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

import pactfs_helpers as H

NOBODY = 65534

pytestmark = pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is needed")


def as_nobody(code, *args):
    """Run python code as nobody (no capabilities, no groups but 65534)."""
    p = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", "/usr/bin/python3", "-c",
                        "import os, sys\n" + code] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "as nobody: %s" % p.stderr


@pytest.fixture(scope="module")
def suid_vault():
    """A vault mounted with --allow-other in a directory nobody can reach
    (pytest's tmp_path is inside root's 0700 directory), with a folder
    everybody may write in, and the debug log of the mount (-d)."""
    base = tempfile.mkdtemp(prefix="pactfs-suid-")
    os.chmod(base, 0o755)
    v = H.Vault(base)
    try:
        v.init()
        v.mount_foreground(extra=["-d", "--allow-other"])
        os.chmod(v.folder, 0o777)
        yield v
        reports = H.teardown(v)
        assert not reports, "sanitizer reports:\n" + "\n".join(reports)
    finally:
        H.teardown(v)
        H.rmtree(base)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def new_file(v, name, mode, owner=None):
    p = v.path(name)
    H.write_file(p, b"0123456789")
    if owner is not None:
        os.chown(p, *owner)
    os.chmod(p, mode)
    assert mode_of(p) == mode
    return p


def test_killpriv_v2_is_negotiated(suid_vault):
    """The kernel offers FUSE_HANDLE_KILLPRIV_V2 (Linux >= 5.11); pactfs
    must take it, or the tests below exercise the kernel's clearing and not
    pactfs's."""
    with open(suid_vault.fg_log, errors="replace") as f:
        log = f.read()
    m = re.search(r"^INIT: 7\.\d+\nflags=0x([0-9a-f]+)", log, re.M)
    assert m, "no INIT in the debug log"
    if not int(m.group(1), 16) & (1 << 28):
        pytest.skip("this kernel does not offer FUSE_HANDLE_KILLPRIV_V2")
    assert "FUSE_HANDLE_KILLPRIV_V2 negotiated" in log


@pytest.mark.parametrize("before,after", [(0o4777, 0o0777), (0o6777, 0o0777), (0o6767, 0o2767)])
def test_write_by_another_user_clears_suid_and_executable_sgid(suid_vault, before, after):
    p = new_file(suid_vault, "w-other-%o" % before, before)
    as_nobody("fd = os.open(sys.argv[1], os.O_WRONLY)\nos.pwrite(fd, b'x', 3)\nos.close(fd)", p)
    assert mode_of(p) == after
    assert H.read_file(p) == b"012x456789"


def test_write_by_the_unprivileged_owner_clears_suid(suid_vault):
    p = new_file(suid_vault, "w-owner", 0o6755, owner=(NOBODY, NOBODY))
    as_nobody("fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\nos.write(fd, b'more')\n"
              "os.write(fd, b'again')\nos.close(fd)", p)
    assert mode_of(p) == 0o0755
    assert H.read_file(p) == b"0123456789moreagain"


def test_write_by_root_keeps_both(suid_vault):
    p = new_file(suid_vault, "w-root", 0o6777)
    with open(p, "r+b") as f:
        f.write(b"root")
    assert mode_of(p) == 0o6777


def test_cleared_bits_are_stored(suid_vault):
    """The cleared mode is in the inode row, not only in the kernel's view."""
    v = suid_vault
    p = new_file(v, "w-stored", 0o4777)
    os.stat(p)
    as_nobody("fd = os.open(sys.argv[1], os.O_WRONLY)\nos.write(fd, b'x')\n"
              "assert os.fstat(fd).st_mode & 0o7777 == 0o777\nos.close(fd)", p)
    assert mode_of(p) == 0o0777
    v.unmount()
    v.mount_foreground(extra=["-d", "--allow-other"])
    assert mode_of(p) == 0o0777


def test_truncate_by_another_user_clears_them(suid_vault):
    p = new_file(suid_vault, "t-path", 0o6777)
    as_nobody("os.truncate(sys.argv[1], 4)", p)
    assert mode_of(p) == 0o0777 and os.stat(p).st_size == 4
    q = new_file(suid_vault, "t-fd", 0o6777)
    as_nobody("fd = os.open(sys.argv[1], os.O_WRONLY)\nos.ftruncate(fd, 2)\nos.close(fd)", q)
    assert mode_of(q) == 0o0777 and os.stat(q).st_size == 2


def test_open_o_trunc_by_another_user_clears_them(suid_vault):
    p = new_file(suid_vault, "t-open", 0o6777)
    as_nobody("os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC))", p)
    assert os.stat(p).st_size == 0
    assert mode_of(p) == 0o0777


def test_truncate_by_root_keeps_both(suid_vault):
    p = new_file(suid_vault, "t-root", 0o6777)
    os.truncate(p, 3)
    assert mode_of(p) == 0o6777
    os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
    assert mode_of(p) == 0o6777


@pytest.mark.parametrize("before,after", [(0o6755, 0o0755), (0o4755, 0o0755), (0o2745, 0o2745)])
def test_chown_by_root_clears_suid_and_executable_sgid(suid_vault, before, after):
    p = new_file(suid_vault, "c-root-%o" % before, before)
    os.chown(p, 1, 1)
    assert mode_of(p) == after
    assert (os.stat(p).st_uid, os.stat(p).st_gid) == (1, 1)


@pytest.mark.parametrize("before,after", [(0o6775, 0o0775), (0o2765, 0o2765)])
def test_chgrp_by_the_owner_clears_suid_and_executable_sgid_only(suid_vault, before, after):
    p = new_file(suid_vault, "c-owner-%o" % before, before, owner=(NOBODY, 0))
    as_nobody("os.chown(sys.argv[1], -1, %d)" % NOBODY, p)
    assert os.stat(p).st_gid == NOBODY
    assert mode_of(p) == after


def test_directories_keep_their_sgid_on_chown(suid_vault):
    d = suid_vault.path("c-dir")
    os.mkdir(d)
    os.chmod(d, 0o2775)
    os.chown(d, 1, 1)
    assert mode_of(d) == 0o2775
