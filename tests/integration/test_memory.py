"""What a mounted pactfs daemon keeps in memory, and what it locks.

- An idle mount locks its keys (VmLck > 0) but not the whole process: the
  old mlockall() pinned 500 MB to 1 GB (every thread stack) on the demo vault.
- A mount by an ordinary user under RLIMIT_MEMLOCK 8 MiB (setpriv to
  nobody + prlimit) still locks its keys, and says in its log that
  plaintext past the limit is not locked.
- After unlock no copy of the password nor of any value derived from it
  (Argon2id output, key half, authenticator, unlock key) is left anywhere
  in the daemon's memory: every writable mapping is read through
  /proc/PID/mem and searched, with the file content the test wrote as the
  positive control that the dump sees the daemon's data.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

import pactfs_helpers as H
from test_keyd import hkdf, password_parts, spellings
# pactfs-keyd fixtures, for the mount whose share comes from the key service
from test_keyd import keyd, keyd_factory, kvault, pki, vault_factory  # noqa: F401

OLD_MLOCKALL_KIB = 980 * 1024          # measured with mlockall on the demo vault
IDLE_LOCK_MAX_KIB = 16 * 1024          # keys, OpenSSL's secure heap, a few spares
LOW_LIMIT = 8 << 20                    # an ordinary user's usual RLIMIT_MEMLOCK
NOBODY = 65534
# test.sh runs the suite again on the ASan build, where mlock() is a no-op
# (the sanitizer cannot lock its shadow memory): VmLck says nothing there.
needs_real_mlock = pytest.mark.skipif(
    os.environ.get("PACTFS_SANITIZED") == "1",
    reason="AddressSanitizer makes mlock() a no-op; the release run checks VmLck")
# Its shadow memory and heap are terabyte-sized reservations: a dump of the
# writable mappings cannot be read whole, so the search runs on release.
needs_plain_heap = pytest.mark.skipif(
    os.environ.get("PACTFS_SANITIZED") == "1",
    reason="ASan's heap and shadow are terabyte reservations; the release run searches")


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M)
    assert m, "no %s in /proc/%d/status" % (field, pid)
    return int(m.group(1))


def write_and_read(path, size=4 << 20):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    with open(path, "rb") as f:
        assert f.read() == data
    return data


@needs_real_mlock
def test_idle_mount_locks_keys_not_the_process(tmp_path):
    v = H.Vault(tmp_path)
    v.init()
    p = v.mount()
    try:
        pid = v.daemon_pid
        assert pid, "no daemon pid for %s" % v.mnt
        time.sleep(0.5)
        lck, rss = status_kib(pid, "VmLck"), status_kib(pid, "VmRSS")
        print("idle mount: VmLck %d kB, VmRSS %d kB" % (lck, rss))
        assert 0 < lck <= IDLE_LOCK_MAX_KIB, \
            "idle VmLck %d kB: keys must be locked, the process must not (old: %d kB)" \
            % (lck, OLD_MLOCKALL_KIB)
        assert re.search(r"memory \(.*\): keys locked", p.stderr), p.stderr
        write_and_read(v.path("big.bin"))
        busy = status_kib(pid, "VmLck")
        print("after a 4 MiB write and read: VmLck %d kB" % busy)
        assert busy > lck, "plaintext buffers of the cache are not locked"
        assert busy < OLD_MLOCKALL_KIB // 10
    finally:
        v.unmount()


STREAM_MIB = 96
STREAM_GROWTH_MAX_KIB = 40 * 1024   # measured: about 21 MiB after 512 MiB


@pytest.mark.skipif(os.environ.get("PACTFS_SANITIZED") == "1",
                    reason="ASan's quarantine keeps 256 MiB of freed heap: VmRSS says "
                    "nothing there; the release run checks it")
def test_a_streamed_write_reuses_its_buffers_instead_of_filling_the_cache(tmp_path):
    """A file written front to back in whole chunks goes out chunk by
    chunk, and each chunk's buffer goes back to the pool for the next one
    instead of into the read cache.  Before, every written chunk stayed
    cached, so the daemon grew by the file's size (up to the 256 MiB cache
    budget) and touched fresh memory for every chunk; now its memory does
    not grow with the file.  The file still reads back whole, from the
    stores, both before and after a remount."""
    v = H.Vault(tmp_path)
    v.init()
    v.mount()
    try:
        pid = v.daemon_pid
        assert pid, "no daemon pid for %s" % v.mnt
        write_and_read(v.path("warm.bin"), 2 << 20)   # pools and threads started
        before = status_kib(pid, "VmRSS")
        data = os.urandom(STREAM_MIB << 20)
        with open(v.path("stream.bin"), "wb") as f:
            for off in range(0, len(data), 1 << 20):
                f.write(data[off:off + (1 << 20)])
            f.flush()
            os.fsync(f.fileno())
        after = status_kib(pid, "VmRSS")
        print("VmRSS %d kB before, %d kB after a %d MiB streamed write"
              % (before, after, STREAM_MIB))
        assert after - before < STREAM_GROWTH_MAX_KIB, \
            "the daemon grew by %d kB writing %d MiB: written chunks are kept" \
            % (after - before, STREAM_MIB)
        with open(v.path("stream.bin"), "rb") as f:
            assert f.read() == data
    finally:
        v.unmount()
    v.mount()
    try:
        with open(v.path("stream.bin"), "rb") as f:
            assert f.read() == data
    finally:
        v.unmount()


# ---------------------------------------------------------------- ordinary user

def as_nobody(argv, timeout=60):
    return subprocess.run(["prlimit", "--memlock=%d" % LOW_LIMIT, "setpriv",
                           "--reuid", str(NOBODY), "--regid", str(NOBODY),
                           "--clear-groups"] + argv, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


@pytest.fixture
def dev_fuse_for_users():
    """Debian makes /dev/fuse 0666; some containers leave it 0600 (root
    only), which keeps libfuse from mounting for an ordinary user."""
    mode = os.stat("/dev/fuse").st_mode & 0o777
    if mode != 0o666:
        os.chmod("/dev/fuse", 0o666)
    yield
    if mode != 0o666:
        os.chmod("/dev/fuse", mode)


@needs_real_mlock
def test_ordinary_user_with_8mib_limit_still_locks_keys(dev_fuse_for_users):
    if not shutil.which("setpriv") or not shutil.which("prlimit"):
        pytest.skip("setpriv and prlimit (util-linux) are needed")
    base = tempfile.mkdtemp(prefix="pactfs-memlock-")
    os.chmod(base, 0o755)
    os.chown(base, NOBODY, NOBODY)
    vault, mnt, pw = (os.path.join(base, n) for n in ("vault", "mnt", "pw"))
    pid = None
    try:
        os.mkdir(mnt)
        os.chown(mnt, NOBODY, NOBODY)
        with open(pw, "w") as f:
            f.write(H.PASSWORD + "\n")
        os.chmod(pw, 0o600)
        os.chown(pw, NOBODY, NOBODY)
        p = as_nobody([H.binary("pactfs-admin"), "init", vault, "--name", "itest",
                       "--account", H.ACCOUNT, "--passfile", pw, "--kdf-time", "1",
                       "--kdf-memory", "8192"])
        assert p.returncode == 0, p.stderr
        p = as_nobody([H.binary("pactfs"), "mount", vault, mnt, "--account", H.ACCOUNT,
                       "--passfile", pw])
        assert p.returncode == 0, p.stderr
        assert H.wait_mounted(mnt), "no mount at %s" % mnt
        [pid] = H.find_daemon_pids(mnt)
        with open("/proc/%d/status" % pid) as f:
            uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
        assert int(uid) == NOBODY
        with open("/proc/%d/limits" % pid) as f:
            assert re.search(r"Max locked memory\s+%d\s+%d" % (LOW_LIMIT, LOW_LIMIT), f.read())
        lck = status_kib(pid, "VmLck")
        print("ordinary user, RLIMIT_MEMLOCK 8 MiB, idle: VmLck %d kB" % lck)
        assert lck > 0, "an ordinary user's mount locks no key at all"
        assert "RLIMIT_MEMLOCK 8192 KiB" in p.stderr and "NOT locked" in p.stderr, p.stderr
        r = as_nobody(["sh", "-c", "head -c 12582912 /dev/urandom > %s/%s/big && cat %s/%s/big"
                       " > /dev/null" % (mnt, H.FOLDER, mnt, H.FOLDER)])
        assert r.returncode == 0, r.stderr
        busy = status_kib(pid, "VmLck")
        print("ordinary user after 12 MiB written and read: VmLck %d kB" % busy)
        assert lck < busy <= LOW_LIMIT >> 10
        r = as_nobody([H.binary("pactfs"), "umount", mnt])
        assert r.returncode == 0, r.stderr
        pid = None
    finally:
        if pid:
            H.fusermount_u(mnt, lazy=True)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- no password left

def local_shares(v):
    """Every share in the vault's local key directory (docs/format-keys.md)."""
    keys = os.path.join(v.dir, "keys")
    out = []
    for n in os.listdir(keys):
        data = H.read_file(os.path.join(keys, n))
        if data[:4] == b"PFSS" and len(data) == 85:
            out.append(data[5:37])
    assert out, "no share file in %s" % keys
    return out


def writable_memory(pid):
    """The bytes of every writable mapping of pid, as root reads them."""
    chunks = []
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if "w" not in fields[1] or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            try:
                chunks.append(os.pread(mem.fileno(), hi - lo, lo))
            except OSError:
                continue
    return chunks


def password_secrets(v, shares):
    """The password and every value derived from it (docs/format-keys.md)."""
    pwkey, half, auth = password_parts(H.PASSWORD, v.dir)
    secrets = {"password": H.PASSWORD.encode(), "argon2id output": pwkey,
               "key half": half, "authenticator": auth}
    for i, share in enumerate(shares):
        secrets["unlock key %d" % i] = hkdf(half + share, "pactfs v1 unlock key")
    return secrets


def assert_no_secret_in_daemon(v, secrets):
    content = write_and_read(v.path("contract.bin"), 256 << 10)
    time.sleep(0.5)
    memory = writable_memory(v.daemon_pid)
    total = sum(len(c) for c in memory)
    print("searched %d MiB of writable mappings of pid %d" % (total >> 20, v.daemon_pid))
    # The dump sees the daemon's data: the plaintext just read is there.
    assert any(content[:4096] in c for c in memory), \
        "the dump does not show the file content the daemon holds"
    found = sorted(name for name, s in secrets.items()
                   if any(form in c for c in memory for form in spellings(s)))
    assert not found, "the mounted daemon's memory still holds: %s" % ", ".join(found)


@needs_plain_heap
def test_keyd_mount_memory_holds_no_password_nor_authenticator(kvault, keyd):
    """The authenticator travels to the key service in a JSON body over TLS:
    no copy of it, nor of the password, is left once the mount is live."""
    v = kvault
    shares = [share for _, _, share, _, _ in keyd.accounts()]
    v.mount()
    try:
        assert_no_secret_in_daemon(v, password_secrets(v, shares))
    finally:
        v.unmount()


@needs_plain_heap
@pytest.mark.parametrize("how", ["passfile", "extpass"])
def test_daemon_memory_holds_no_password_nor_derived_value(tmp_path, how):
    v = H.Vault(tmp_path)
    v.init()
    secrets = password_secrets(v, local_shares(v))
    if how == "extpass":
        v.pactfs("mount", v.dir, v.mnt, "--account", H.ACCOUNT,
                 "--extpass", "cat %s" % v.passfile, check=True)
        assert H.wait_mounted(v.mnt)
        H.LIVE_VAULTS.add(v)
        [v.daemon_pid] = H.find_daemon_pids(v.mnt)
    else:
        v.mount()
    try:
        assert_no_secret_in_daemon(v, secrets)
    finally:
        v.unmount()


@needs_plain_heap
def test_removed_files_plaintext_leaves_the_daemon(tmp_path):
    """Small files read into the chunk cache and then removed: once the
    kernel forgot them their plaintext is wiped from the daemon (the cache
    drops an inode's entries through an index by inode, not a walk of the
    whole cache; a small file's write buffer is wiped as far as it was
    written).  Written in one mount, read in the next, so libfuse's request
    buffers (not locked, not wiped: docs/threat-model.md) never held it."""
    v = H.Vault(tmp_path)
    v.init()
    v.mount()
    try:
        d = v.path("gone")
        os.mkdir(d)
        keep = os.urandom(3000)
        H.write_file(v.path("kept.bin"), keep)
        contents = [os.urandom(1000 + 97 * i) for i in range(40)]
        for i, c in enumerate(contents):
            H.write_file(os.path.join(d, "f%02d" % i), c)
        v.remount()
        for i, c in enumerate(contents):
            assert H.read_file(os.path.join(d, "f%02d" % i)) == c
        assert H.read_file(v.path("kept.bin")) == keep
        memory = writable_memory(v.daemon_pid)
        # positive control: the dump sees the cache
        assert sum(any(c[:512] in m for m in memory) for c in contents) == len(contents), \
            "the dump does not show the cached plaintext"
        H.rmtree(d)
        assert not os.path.exists(d)
        time.sleep(1.5)   # the forgets, then a syncer pass
        memory = writable_memory(v.daemon_pid)
        left = [i for i, c in enumerate(contents) if any(c[:512] in m for m in memory)]
        assert not left, "plaintext of removed files still in the daemon: %s" % left
        assert any(keep[:512] in m for m in memory), "a file not removed lost its cache entry"
    finally:
        v.unmount()
