"""A mount by an ordinary user (not root) goes through fusermount3.

libfuse starts fusermount3 with fork() and calls setenv() in the child; the
daemon has threads by then, and a child forked while one of them held an
allocator lock never got to exec (the mount hung for good: seen in the
ASan+UBSan CI run, 1 user mount in about 10).  pactfs starts fusermount3
with posix_spawn instead (src/fuse_mount.c).  These tests mount as nobody:
the mount works, the daemon never forks a copy of itself once it has
threads, and a daemon told to stop by a signal leaves no mount behind."""
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import pactfs_helpers as H
from test_desktop import finish

NOBODY = 65534

pytestmark = pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is needed")


def as_nobody(argv, env):
    return H.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
                 + argv, env=env)


@pytest.fixture
def user_vault():
    """A vault that nobody owns and can reach (pytest's tmp_path is inside
    root's 0700 directory), written once as root."""
    base = tempfile.mkdtemp(prefix="pactfs-user-")
    os.chmod(base, 0o755)
    v = H.Vault(base)
    v.init()
    v.mount()
    H.write_file(v.path("a.txt"), b"written by root")
    os.chown(v.folder, NOBODY, NOBODY)       # the files inside the vault
    os.chown(v.path("a.txt"), NOBODY, NOBODY)
    v.unmount()
    home = os.path.join(base, "home")
    os.mkdir(home)
    for root, dirs, names in os.walk(base):
        for n in dirs + names:
            os.lchown(os.path.join(root, n), NOBODY, NOBODY)
    os.chown(base, NOBODY, NOBODY)
    v.user_env = dict(v.env, HOME=home, XDG_RUNTIME_DIR=home)
    yield v
    try:
        if H.is_mounted(v.mnt):
            as_nobody(["fusermount3", "-u", v.mnt], v.user_env)
        for pid in H.find_daemon_pids(v.mnt):
            H.wait_pid_gone(pid, 30)
        finish(v)
    finally:
        for pid in H.find_daemon_pids(v.mnt):
            H.kill_quietly(pid)
        if H.is_mounted(v.mnt):
            H.fusermount_u(v.mnt, lazy=True)
        H.rmtree(base)


def forks_of_a_threaded_process(strace_log):
    """Process-creating clones made by a process that already had threads,
    other than those sharing its memory (posix_spawn's CLONE_VM|CLONE_VFORK
    child only execs; a sanitizer's CLONE_VM helper has no copy of a lock
    to find taken).  strace -f lines: 'PID clone3({flags=...}, ...) = NEWPID'."""
    group = {}           # tid -> thread group id
    threads = {}         # thread group -> number of threads seen
    bad = []
    call = re.compile(r"^(\d+)\s+(clone3?|fork|vfork)\((.*)\)\s+=\s+(\d+)")
    with open(strace_log, errors="replace") as f:
        for line in f:
            m = call.match(line)
            if not m:
                continue
            tid, name, args, new = int(m.group(1)), m.group(2), m.group(3), int(m.group(4))
            tgid = group.setdefault(tid, tid)
            if "CLONE_THREAD" in args:
                group[new] = tgid
                threads[tgid] = threads.get(tgid, 1) + 1
                continue
            group[new] = new
            if threads.get(tgid, 1) > 1 and not (name == "vfork" or "CLONE_VM" in args):
                bad.append(line.strip())
    return bad


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is needed")
def test_user_mount_spawns_fusermount3_without_forking_the_threaded_daemon(user_vault, tmp_path):
    v = user_vault
    log = str(tmp_path / "strace.log")
    os.chmod(str(tmp_path), 0o755)
    # strace follows the daemon until it exits, so it runs beside the test.
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", log, "-e", "trace=clone,clone3,fork,vfork",
         "setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
         H.binary("pactfs")] + v.mount_args(),
        env=dict(v.user_env,   # LeakSanitizer refuses to run under ptrace
                 ASAN_OPTIONS=v.user_env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert H.wait_mounted(v.mnt, timeout=H.CMD_TIMEOUT_S)
        q = as_nobody(["cat", v.path("a.txt")], v.user_env)
        assert q.returncode == 0 and q.stdout == "written by root", q
        assert as_nobody(["fusermount3", "-u", v.mnt], v.user_env).returncode == 0
        tracer.wait(timeout=H.DAEMON_EXIT_S)
    finally:
        if tracer.poll() is None:
            H.hang_report([tracer.pid])
            tracer.kill()
            tracer.wait()
    with open(log, errors="replace") as f:
        text = f.read()
    # The daemon had threads and started fusermount3 (else the check below
    # would pass for want of anything to check).
    assert "CLONE_THREAD" in text and "CLONE_VFORK" in text, text[-3000:]
    assert forks_of_a_threaded_process(log) == []


def test_user_mount_stopped_by_a_signal_leaves_no_mount(user_vault):
    v = user_vault
    p = as_nobody([H.binary("pactfs")] + v.mount_args(), v.user_env)
    assert p.returncode == 0, p.stderr
    assert H.wait_mounted(v.mnt)
    q = as_nobody(["sh", "-c", "echo user > %s" % v.path("b.txt")], v.user_env)
    assert q.returncode == 0, q.stderr
    pids = H.find_daemon_pids(v.mnt)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGTERM)
    assert H.wait_pid_gone(pids[0], 60)
    # The daemon wrote back, then unmounted through fusermount3 itself.
    assert not H.is_mounted(v.mnt)
    p = as_nobody([H.binary("pactfs")] + v.mount_args(), v.user_env)
    assert p.returncode == 0, p.stderr
    assert H.wait_mounted(v.mnt)
    q = as_nobody(["cat", v.path("b.txt")], v.user_env)
    assert q.returncode == 0 and q.stdout == "user\n", q
