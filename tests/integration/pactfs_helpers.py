"""Helpers for the pactfs integration suite: run the real binaries, mount and
unmount real vaults, and never wait without a time limit.

Everything a test starts is registered here so that the watchdog (conftest)
and fixture teardown can always unmount and kill it, even when a test fails
or a FUSE call hangs.
"""
import ctypes
import errno
import glob
import hashlib
import json
import os
import re
import random
import shutil
import signal
import subprocess
import sys
import time

CHUNK = 1 << 20                 # default chunk size (pactfs-admin init)
MOUNT_WAIT_S = 20               # bound on waiting for a mount to appear
CMD_TIMEOUT_S = 120             # bound on any one command (sanitized builds are slow)
DAEMON_EXIT_S = 120             # bound on the daemon flushing and exiting after unmount
FOLDER = "Contracts"            # the first contract folder pactfs-admin init creates
ACCOUNT = "alice"
PASSWORD = "correct horse battery staple 42"

# Every mounted vault, so the watchdog can tear it down from another thread.
LIVE_VAULTS = set()


class CmdFailed(AssertionError):
    pass


def build_dir():
    return os.environ.get("PACTFS_BUILD", "")


def binary(name):
    return os.path.join(build_dir(), name)


def sanitizer_env(log_dir):
    """Environment for every pactfs process: sanitizer reports go to files
    in log_dir (the daemon's stderr is gone once it is in the background),
    so teardown can fail the test on any report."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:log_path=%s/asan" % log_dir
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=%s/ubsan" % log_dir
    env["LSAN_OPTIONS"] = "log_path=%s/lsan" % log_dir
    return env


def sanitizer_reports(log_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*san.*"))):
        with open(path, errors="replace") as f:
            out.append("%s:\n%s" % (path, f.read()[-4000:]))
    return out


# ---------------------------------------------------------------- hangs

HANG_PROGRAMS = ("pactfs", "lt-pactfs", "pactfs-admin", "pactfs-keyd", "pactfs-auditd",
                 "pactfs-fsck", "fusermount3")


def _read(path, limit=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError as e:
        return "(%s)" % e.strerror


def _process_tree(root):
    """root and every descendant, from /proc (children files need no walk)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        for tid in os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d/task" % pid) else ():
            todo += [int(c) for c in _read("/proc/%d/task/%s/children" % (pid, tid)).split()
                     if c.isdigit()]
    return out


def hang_report(extra_pids=()):
    """What every pactfs process and FUSE connection is waiting on, for a
    test that timed out: each thread's state, kernel wait channel and kernel
    stack, gdb's user-space backtraces of the daemons, and the requests each
    FUSE connection has outstanding.  Written to stderr (pytest shows it
    with the failure) and returned."""
    pids = set(p for root in extra_pids for p in _process_tree(root))
    for d in os.listdir("/proc"):
        if d.isdigit() and os.path.basename(_read("/proc/%s/comm" % d).strip()) in HANG_PROGRAMS:
            pids.add(int(d))
    lines = ["==== hang report (%s) ====" % time.strftime("%H:%M:%S")]
    for conn in sorted(glob.glob("/sys/fs/fuse/connections/*")):
        lines.append("fuse connection %s: waiting=%s" % (os.path.basename(conn),
                                                         _read(conn + "/waiting").strip()))
    for pid in sorted(pids):
        cmd = _read("/proc/%d/cmdline" % pid).replace("\0", " ").strip()
        lines.append("-- pid %d: %s" % (pid, cmd[:300]))
        for tid in sorted(os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d/task" % pid) else ()):
            stat = _read("/proc/%d/task/%s/stat" % (pid, tid))
            state = stat.rsplit(")", 1)[-1].split()[:1]
            lines.append("   tid %s %s %s wchan=%s" % (
                tid, _read("/proc/%d/task/%s/comm" % (pid, tid)).strip(), state,
                _read("/proc/%d/task/%s/wchan" % (pid, tid)).strip()))
            kstack = _read("/proc/%d/task/%s/stack" % (pid, tid)).strip()
            if state == ["D"] or "fuse" in kstack:   # not the idle futex waits
                lines += ["      " + l for l in kstack.splitlines()[:12]]
        if os.path.basename(cmd.split(" ")[0]) in ("pactfs", "lt-pactfs") and shutil.which("gdb"):
            try:
                g = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                                    "-ex", "thread apply all bt 25"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                bt = [l for l in g.stdout.decode(errors="replace").splitlines()
                      if l.startswith(("#", "Thread"))]
                lines += ["      " + l[:200] for l in bt[:400]]
            except (subprocess.TimeoutExpired, OSError) as e:
                lines.append("   gdb: %s" % e)
    lines.append("==== end of hang report ====")
    text = "\n".join(lines)
    sys.stderr.write(text + "\n")
    return text


def run(argv, timeout=CMD_TIMEOUT_S, env=None, check=False, input_bytes=None):
    """Run a command with a time limit; returns CompletedProcess (text).  On
    a timeout, the hang report (hang_report) is taken before the command is
    killed."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input_bytes is not None else None,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(input=input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        hang_report([p.pid])
        p.kill()
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        raise CmdFailed("timed out after %ss: %s" % (timeout, " ".join(map(str, argv)))) from e
    p = subprocess.CompletedProcess(argv, p.returncode, out, err)
    p.stdout = p.stdout.decode(errors="replace")
    p.stderr = p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        raise CmdFailed("%s -> exit %d\nstdout: %s\nstderr: %s"
                        % (" ".join(map(str, argv)), p.returncode, p.stdout, p.stderr))
    return p


# ---------------------------------------------------------------- mount table

def _unescape_mountinfo(s):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def fuse_mount_entry(path):
    """(fstype, source) of a FUSE mount at path, or None.  Reads
    /proc/self/mountinfo instead of stat()ing the path, so a hung daemon can
    never block the check (os.path.ismount would lstat into FUSE)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) < 5 or _unescape_mountinfo(fields[4]) != path:
                continue
            rfields = right.split()
            if rfields and rfields[0].startswith("fuse"):
                return rfields[0], (rfields[1] if len(rfields) > 1 else "")
    return None


def is_mounted(path):
    return fuse_mount_entry(path) is not None


def wait_mounted(path, timeout=MOUNT_WAIT_S, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return is_mounted(path)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_pid_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def find_daemon_pids(mountpoint):
    """pids of pactfs processes whose command line names this mountpoint."""
    mnt = os.path.realpath(mountpoint)
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not args or os.path.basename(args[0]) not in ("pactfs", "lt-pactfs"):
            continue
        if "mount" in args and any(os.path.realpath(a) == mnt for a in args[1:] if a.startswith("/")):
            pids.append(int(d))
    return pids


def fusermount_u(mnt, lazy=False, timeout=30):
    argv = ["fusermount3", "-uz" if lazy else "-u", str(mnt)]
    return run(argv, timeout=timeout)


# ---------------------------------------------------------------- the vault

class Vault:
    """A vault directory made by pactfs-admin init and its mountpoint."""

    def __init__(self, base, name="vault"):
        self.base = str(base)
        self.dir = os.path.join(self.base, name)
        self.mnt = os.path.join(self.base, name + "-mnt")
        self.logdir = os.path.join(self.base, name + "-logs")
        self.passfile = os.path.join(self.base, name + ".pass")
        os.makedirs(self.mnt, exist_ok=True)
        os.makedirs(self.logdir, exist_ok=True)
        with open(self.passfile, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(self.passfile, 0o600)
        self.env = sanitizer_env(self.logdir)
        self.daemon_pid = None
        self.fg_proc = None       # Popen of a foreground (-f) mount
        self.fg_log = None
        self.mount_count = 0

    # paths
    @property
    def conf(self):
        return os.path.join(self.dir, "pactfs.conf")

    @property
    def folder(self):
        return os.path.join(self.mnt, FOLDER)

    @property
    def audit_log(self):
        return os.path.join(self.dir, "audit.log")

    def store_dir(self, i):
        return os.path.join(self.dir, "stores", str(i))

    def path(self, *parts):
        return os.path.join(self.folder, *parts)

    # commands
    def admin(self, *args, **kw):
        return run([binary("pactfs-admin")] + [str(a) for a in args], env=self.env, **kw)

    def pactfs(self, *args, **kw):
        return run([binary("pactfs")] + [str(a) for a in args], env=self.env, **kw)

    def init(self, *extra, check=True):
        p = self.admin("init", self.dir, "--name", "itest", "--account", ACCOUNT,
                       "--passfile", self.passfile, "--kdf-time", "1",
                       "--kdf-memory", "8192", *extra)
        if check and p.returncode != 0:
            raise CmdFailed("pactfs-admin init -> exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr))
        return p

    def set_coding(self, **settings):
        """Set (or replace) settings of the coding group of pactfs.conf,
        e.g. set_coding(pack_max=0) for a test that edits fragment files."""
        with open(self.conf) as f:
            text = f.read()
        m = re.search(r"coding = \{(.*?)\};", text, re.S)
        assert m, "no coding group in " + self.conf
        body = m.group(1)
        for key, value in settings.items():
            body = re.sub(r"\s*%s = [^;]*;" % key, "", body)
            body = body.rstrip() + "\n    %s = %s;\n" % (key, value)
        with open(self.conf, "w") as f:
            f.write(text[:m.start(1)] + body + text[m.end(1):])

    def mount_args(self, mnt=None, passfile=None, extra=()):
        return ["mount", self.dir, mnt or self.mnt, "--account", ACCOUNT,
                "--passfile", passfile or self.passfile] + list(extra)

    def mount(self, extra=(), check=True):
        """Background mount: the command returns once the mount is live."""
        p = self.pactfs(*self.mount_args(extra=extra))
        if p.returncode != 0:
            if check:
                raise CmdFailed("pactfs mount -> exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr))
            return p
        LIVE_VAULTS.add(self)
        if not wait_mounted(self.mnt):
            raise CmdFailed("pactfs mount returned 0 but %s is not a FUSE mount after %ss"
                            % (self.mnt, MOUNT_WAIT_S))
        pids = find_daemon_pids(self.mnt)
        self.daemon_pid = pids[0] if len(pids) == 1 else None
        self.mount_count += 1
        return p

    def mount_foreground(self, extra=()):
        """pactfs mount -f in a background Popen, stderr to a log file."""
        self.fg_log = os.path.join(self.logdir, "daemon-%d.log" % self.mount_count)
        logf = open(self.fg_log, "wb")
        argv = [binary("pactfs")] + self.mount_args(extra=["-f"] + list(extra))
        self.fg_proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                        env=self.env)
        logf.close()
        LIVE_VAULTS.add(self)
        if not wait_mounted(self.mnt, proc=self.fg_proc):
            rc = self.fg_proc.poll()
            raise CmdFailed("pactfs mount -f did not mount within %ss (exit %s)\n%s"
                            % (MOUNT_WAIT_S, rc, self.read_fg_log()))
        self.daemon_pid = self.fg_proc.pid
        self.mount_count += 1

    def read_fg_log(self):
        if not self.fg_log or not os.path.exists(self.fg_log):
            return ""
        with open(self.fg_log, errors="replace") as f:
            return f.read()

    def _daemon_pids(self):
        pids = set(find_daemon_pids(self.mnt))
        if self.daemon_pid:
            pids.add(self.daemon_pid)
        return [p for p in pids if pid_alive(p)]

    def unmount(self, check=True):
        """fusermount3 -u (retrying while busy), then wait for the daemon to
        flush and exit, so a following mount sees everything."""
        pids = self._daemon_pids()
        err = ""
        for _ in range(20):
            if not is_mounted(self.mnt):
                break
            p = fusermount_u(self.mnt)
            if p.returncode == 0:
                break
            err = p.stderr
            time.sleep(0.25)
        if is_mounted(self.mnt):
            fusermount_u(self.mnt, lazy=True)
            if check:
                raise CmdFailed("fusermount3 -u %s kept failing: %s" % (self.mnt, err))
        stuck = [pid for pid in pids if not wait_pid_gone(pid, DAEMON_EXIT_S)]
        if self.fg_proc is not None:
            try:
                self.fg_proc.wait(timeout=5 if stuck else DAEMON_EXIT_S)
            except subprocess.TimeoutExpired:
                stuck.append(self.fg_proc.pid)
        for pid in stuck:
            kill_quietly(pid)
        self.daemon_pid = None
        LIVE_VAULTS.discard(self)
        if stuck and check:
            raise CmdFailed("the pactfs daemon (pid %s) did not exit within %ss of the unmount"
                            % (stuck, DAEMON_EXIT_S))
        if self.fg_proc is not None:
            self.fg_rc = self.fg_proc.returncode
            self.fg_proc = None

    def remount(self, foreground=False):
        self.unmount()
        if foreground:
            self.mount_foreground()
        else:
            self.mount()

    def kill_daemon(self, sig=signal.SIGKILL):
        pids = self._daemon_pids()
        assert pids, "no pactfs daemon found for %s" % self.mnt
        for pid in pids:
            os.kill(pid, sig)
        return pids

    def emergency_teardown(self):
        """Used by the watchdog and by teardown after a failure: kill the
        daemon (pending FUSE calls then fail with ENOTCONN) and lazily
        unmount.  Never blocks for long."""
        for pid in self._daemon_pids():
            kill_quietly(pid)
        if self.fg_proc is not None:
            kill_quietly(self.fg_proc.pid)
            try:
                self.fg_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.fg_proc = None
        if is_mounted(self.mnt):
            fusermount_u(self.mnt, lazy=True)
        LIVE_VAULTS.discard(self)


class AccountMount(Vault):
    """The same vault mounted as another account, on its own mountpoint."""

    def __init__(self, vault, account, passfile):
        super().__init__(vault.base, name="as-" + account)
        self.dir = vault.dir
        self.account = account
        self.account_pass = passfile

    def mount_args(self, mnt=None, passfile=None, extra=()):
        return ["mount", self.dir, mnt or self.mnt, "--account", self.account,
                "--passfile", passfile or self.account_pass] + list(extra)


def teardown(v):
    """Unmount v (cleanly if possible, else by force); its sanitizer reports."""
    try:
        if is_mounted(v.mnt) or v.daemon_pid or v.fg_proc:
            v.unmount(check=True)
    finally:
        v.emergency_teardown()
    return sanitizer_reports(v.logdir)


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_pid_gone(pid, 10)


# ---------------------------------------------------------------- data helpers

def seeded_bytes(seed, n):
    return random.Random(seed).randbytes(n)


def write_file(path, data, fsync=False):
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path, bufsize=CHUNK):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_stream(path, seed, total, piece=CHUNK, fsync=False):
    """Write `total` seeded random bytes in pieces; returns their SHA-256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = total
        while left:
            b = rng.randbytes(min(piece, left))
            f.write(b)
            h.update(b)
            left -= len(b)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return h.hexdigest()


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b)) if len(a) != len(b) else None


def assert_same_bytes(got, want, what):
    if got != want:
        raise AssertionError("%s: %d bytes read, %d expected, first difference at offset %s"
                             % (what, len(got), len(want), first_difference(got, want)))


def audit_events(v):
    """The events of a vault's audit spool (JSON lines with an "op")."""
    out = []
    with open(v.audit_log) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("op"):
                out.append(ev)
    return out


ENDPOINT_MARKER = "pactfs-endpoint"   # the endpoint's signed identity marker


def fragment_files(store_dir):
    """Every regular file below a store directory but its identity marker
    (the fragments)."""
    out = []
    for root, _, files in os.walk(store_dir):
        for n in files:
            if n != ENDPOINT_MARKER:
                out.append(os.path.join(root, n))
    return sorted(out)


def await_chunks_deleted(v, chunk_ids, timeout=20):
    """Kick the deletion queue of v's mount (it runs after an unlink) and
    wait until no fragment of the chunks named (hex ids) is left in v's
    stores."""
    write_file(v.path("gc-kick"), b"x", fsync=True)
    os.unlink(v.path("gc-kick"))
    stores = os.path.join(v.dir, "stores")

    def left():
        return [p for p in fragment_files(stores)
                if os.path.basename(p).split(".")[0] in chunk_ids]
    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left(), "the replaced fragments were not deleted within %ss: %s" % (timeout, left())


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- renameat2

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    """renameat2(2) via glibc; raises OSError with the errno."""
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s -> %s" % (os.strerror(e), old, new))


def errno_of(fn, *args, **kw):
    """Call fn, return the errno it failed with (None if it succeeded)."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None


def errname(e):
    return errno.errorcode.get(e, str(e)) if e is not None else "success"
