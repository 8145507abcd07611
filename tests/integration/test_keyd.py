"""pactfs with its second key share in a real pactfs-keyd over TLS.

Each test starts its own pactfs-keyd (from $PACTFS_BUILD, -f) on a free port
of 127.0.0.1 with a throw-away PKI made by tests/keyd/mkca.sh, makes a vault
with `pactfs-admin init --keyd-url ...` and drives it only through the real
command line and real FUSE mounts.  The service is stopped by pid at
teardown (SIGTERM, then SIGKILL), and every wait has a time limit.

The test knows the key service's master key (it wrote it), so it can open
the service's database and list every share and verifier, and it recomputes
the password-derived halves (Argon2id + HKDF, docs/format-keys.md) from the
sealed key's header, so "no secret in any log" is checked against the real
values, not guesses.
"""
import ctypes
import ctypes.util
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import pactfs_helpers as H

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MKCA = os.path.join(SRC_ROOT, "tests", "keyd", "mkca.sh")
KEYD_START_S = 15               # bound on pactfs-keyd starting to listen
KEYD_STOP_S = 15                # bound on pactfs-keyd exiting after SIGTERM
MAX_FAILURES = 3
SHORT_LOCKOUT_S = 3
LONG_LOCKOUT_S = 600
OTHER_PASSWORD = "Tr0ub4dor&3 is not the password"
NEW_PASSWORD = "a brand new passphrase 77"

EXIT_BAD_PASSWORD = 4
EXIT_LOCKED_OUT = 5
EXIT_KEYD_UNREACHABLE = 6
EXIT_ACCESS = 13


def _keyd_binary():
    return H.binary("pactfs-keyd")


pytestmark = pytest.mark.skipif(
    not H.build_dir() or not os.access(_keyd_binary(), os.X_OK),
    reason="pactfs-keyd is not built in $PACTFS_BUILD")


# ---------------------------------------------------------------- the service

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_secret(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class Keyd:
    """One pactfs-keyd process with its own directory, database, master key,
    admin token, audit log, stderr log and debug capture of request bodies."""

    def __init__(self, base, pki, name="keyd", lockout_s=SHORT_LOCKOUT_S):
        self.dir = os.path.join(str(base), name)
        self.pki = pki
        self.lockout_s = lockout_s
        os.makedirs(self.dir, mode=0o700)
        self.port = free_port()
        self.master_key = os.urandom(32)
        self.token = os.urandom(24).hex()
        write_secret(self.file("master.key"), self.master_key.hex() + "\n")
        write_secret(self.file("admin.token"), self.token + "\n")
        self.proc = None
        self.cert = "server"
        self.stderr_logs = []
        self.extra_conf = ""

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def file(self, name):
        return os.path.join(self.dir, name)

    @property
    def token_file(self):
        return self.file("admin.token")

    @property
    def ca_file(self):
        return os.path.join(self.pki, "ca.pem")

    def write_conf(self):
        conf = (
            'listen_address = "127.0.0.1";\nport = %d;\n'
            'cert_file = "%s/%s.pem";\nkey_file = "%s/%s.key";\n'
            'database = "keyd.db";\nmaster_key_file = "master.key";\n'
            'admin_token_file = "admin.token";\naudit_log = "audit.log";\n'
            'debug_capture = "capture.log";\n'
            'lockout: { max_failures = %d; lockout_seconds = %d; failure_window_seconds = 900;'
            ' source_max_failures = 1000; source_lockout_seconds = %d; };\n'
            % (self.port, self.pki, self.cert, self.pki, self.cert,
               MAX_FAILURES, self.lockout_s, self.lockout_s)) + self.extra_conf
        write_secret(self.file("keyd.conf"), conf)

    def start(self, cert="server"):
        assert self.proc is None, "pactfs-keyd is already running"
        self.cert = cert
        self.write_conf()
        log = self.file("stderr-%d.log" % len(self.stderr_logs))
        self.stderr_logs.append(log)
        env = H.sanitizer_env(self.dir)
        with open(log, "wb") as logf:
            self.proc = subprocess.Popen([_keyd_binary(), "-f", "-c", self.file("keyd.conf")],
                                         stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + KEYD_START_S
        while time.monotonic() < deadline:
            if port_open(self.port):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        rc = self.stop()
        raise AssertionError("pactfs-keyd did not listen on %s within %ss (exit %s):\n%s"
                             % (self.url, KEYD_START_S, rc, self.read_stderr()))

    def stop(self):
        """SIGTERM, bounded wait, SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=KEYD_STOP_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    def restart(self, cert="server"):
        rc = self.stop()
        assert rc == 0, "pactfs-keyd exited with %s on SIGTERM" % rc
        self.start(cert=cert)

    def wipe_database(self):
        """Forget every share: the service loses its database."""
        rc = self.stop()
        assert rc == 0, "pactfs-keyd exited with %s on SIGTERM" % rc
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(self.file("keyd.db" + suffix)):
                os.unlink(self.file("keyd.db" + suffix))
        self.start()

    def read(self, name):
        path = self.file(name)
        if not os.path.exists(path):
            return b""
        with open(path, "rb") as f:
            return f.read()

    def read_stderr(self):
        return b"".join(open(p, "rb").read() for p in self.stderr_logs
                        if os.path.exists(p)).decode(errors="replace")

    def audit_events(self):
        """The requests in keyd's own audit log: its events in the project's
        audit format carry the request in a "keyd" object; as flat dicts
        (op, vault, account, status, result, ..., and before and after of an
        account change)."""
        out = []
        for line in self.read("audit.log").decode().splitlines():
            e = json.loads(line)
            if "keyd" in e:
                out.append(dict(e["keyd"], op=e["op"],
                                **{k: e[k] for k in ("before", "after") if k in e}))
        return out

    def captured_requests(self):
        """(url, body dict) of every request the service received."""
        out = []
        for line in self.read("capture.log").decode().splitlines():
            if line.strip():
                rec = json.loads(line)
                out.append((rec["url"], json.loads(rec["body"])))
        return out

    def accounts(self):
        """(vault, account, share, salt, verifier) of every account, the share
        opened with the master key exactly as pactfs-keyd seals it."""
        db = sqlite3.connect("file:%s?mode=ro" % self.file("keyd.db"), uri=True)
        try:
            rows = db.execute("SELECT vault, account, salt, verifier, sealed_share"
                              " FROM accounts").fetchall()
        finally:
            db.close()
        out = []
        for vault, account, salt, verifier, sealed in rows:
            ad = blob(b"pactfs-keyd v1 share") + blob(vault.encode()) + blob(account.encode())
            share = AESGCM(self.master_key).decrypt(sealed[:12], sealed[12:], ad)
            out.append((vault, account, share, bytes(salt), bytes(verifier)))
        return out

    def data_account(self):
        """The share record of the data account (init also enrolls the vault's
        sysadmin account)."""
        [rec] = [a for a in self.accounts() if a[1] == H.ACCOUNT]
        return rec

    def failures(self, account=H.ACCOUNT):
        """The failure count the service keeps for an account (drives lockout)."""
        db = sqlite3.connect("file:%s?mode=ro" % self.file("keyd.db"), uri=True)
        try:
            (n,) = db.execute("SELECT failures FROM accounts WHERE account = ?",
                              (account,)).fetchone()
        finally:
            db.close()
        return n

    def sanitizer_reports(self):
        return H.sanitizer_reports(self.dir)


def blob(b):
    return struct.pack(">I", len(b)) + b


class RecordingProxy:
    """A TLS-terminating proxy on 127.0.0.1: presents the test CA's server
    certificate to pactfs, forwards to pactfs-keyd over verified TLS, and
    records every byte in both directions (headers included)."""

    def __init__(self, pki, upstream_port):
        self.upstream_port = upstream_port
        self.sent = bytearray()       # client -> service
        self.answered = bytearray()   # service -> client
        self.lock = threading.Lock()
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(os.path.join(pki, "server.pem"),
                                        os.path.join(pki, "server.key"))
        self.client_ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            down = self.server_ctx.wrap_socket(conn, server_side=True)
            up = self.client_ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10),
                server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            conn.close()
            return
        t = threading.Thread(target=self._pump, args=(up, down, self.answered), daemon=True)
        t.start()
        self._pump(down, up, self.sent)
        t.join(timeout=10)
        for s in (up, down):
            s.close()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    record.extend(data)
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for t in self.threads:
            t.join(timeout=10)


# ---------------------------------------------------------------- password parts

def sealed_key_params(vault_dir, account=H.ACCOUNT):
    """(t_cost, m_cost_kib, parallelism, salt) from the account's sealed key
    header in meta.db (docs/format-keys.md, "Sealed account key")."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(vault_dir, "meta.db"), uri=True)
    try:
        (sealed,) = db.execute("SELECT sealed_key FROM accounts WHERE name = ?",
                               (account,)).fetchone()
    finally:
        db.close()
    sealed = bytes(sealed)
    assert sealed[:4] == b"PFSK" and sealed[4] == 1, "unexpected sealed key header"
    (n,) = struct.unpack(">I", sealed[5:9])
    pos = 9 + n
    alg = sealed[pos]
    assert alg == 1, "sealed key uses KDF %d, not Argon2id" % alg
    t, m, p = struct.unpack(">III", sealed[pos + 1:pos + 13])
    salt = sealed[pos + 13:pos + 29]
    return t, m, p, salt


def argon2id(password, salt, t, m, p):
    """Argon2id through libargon2, the library pactfs itself uses."""
    lib = ctypes.CDLL(ctypes.util.find_library("argon2") or "libargon2.so.1")
    fn = lib.argon2id_hash_raw
    fn.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p,
                   ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                   ctypes.c_size_t]
    fn.restype = ctypes.c_int
    out = ctypes.create_string_buffer(32)
    rc = fn(t, m, p, password, len(password), salt, len(salt), out, 32)
    assert rc == 0, "argon2id_hash_raw failed: %d" % rc
    return out.raw


def hkdf(ikm, label):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=label.encode()).derive(ikm)


def password_parts(password, vault_dir):
    """(pwkey, key_half, auth) exactly as keyring.c derives them."""
    t, m, p, salt = sealed_key_params(vault_dir)
    pwkey = argon2id(password.encode(), salt, t, m, p)
    return pwkey, hkdf(pwkey, "pactfs v1 unlock half"), hkdf(pwkey, "pactfs v1 share auth")


def spellings(secret):
    """Every way a secret could show up in a text or binary file."""
    if isinstance(secret, str):
        secret = secret.encode()
    return [secret, secret.hex().encode(), secret.hex().upper().encode()]


def find_secrets(data, secrets):
    """Names of the secrets (dict name -> bytes/str) found in data."""
    return sorted(name for name, s in secrets.items()
                  if any(form in data for form in spellings(s)))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    H.run(["sh", MKCA, d], check=True, timeout=60)
    return d


def _stop_keyds(keyds):
    problems = []
    for k in keyds:
        rc = k.stop()
        if rc not in (0, None):
            problems.append("pactfs-keyd %s exited with %s on SIGTERM:\n%s"
                            % (k.url, rc, k.read_stderr()[-2000:]))
        problems += k.sanitizer_reports()
    return problems


@pytest.fixture
def keyd_factory(tmp_path, pki):
    """Start pactfs-keyd processes; all are stopped (by pid) at teardown and
    the test fails if one crashed or reported to a sanitizer."""
    keyds = []

    def make(name="keyd", lockout_s=SHORT_LOCKOUT_S, start=True):
        k = Keyd(tmp_path, pki, name=name, lockout_s=lockout_s)
        keyds.append(k)
        if start:
            k.start()
        return k

    yield make
    problems = _stop_keyds(keyds)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def keyd(keyd_factory):
    return keyd_factory()


def finish_vault(v):
    """Unmount (cleanly if possible) and fail on any sanitizer report."""
    try:
        if H.is_mounted(v.mnt) or v.daemon_pid or v.fg_proc:
            v.unmount(check=True)
    except Exception:
        v.emergency_teardown()
        raise
    finally:
        if v in H.LIVE_VAULTS:
            v.emergency_teardown()
    reports = H.sanitizer_reports(v.logdir)
    if reports:
        pytest.fail("sanitizer reports from pactfs processes:\n" + "\n".join(reports))


@pytest.fixture
def vault_factory(tmp_path):
    vaults = []

    def make(k, name="vault"):
        v = H.Vault(tmp_path, name=name)
        vaults.append(v)
        v.init("--keyd-url", k.url, "--keyd-ca", k.ca_file, "--keyd-admin-token", k.token_file)
        return v

    yield make
    for v in vaults:
        finish_vault(v)


@pytest.fixture
def kvault(keyd, vault_factory):
    """A vault whose shares live in `keyd`, not mounted."""
    return vault_factory(keyd)


# ---------------------------------------------------------------- helpers

def passfile(v, name, password):
    path = os.path.join(v.base, name)
    write_secret(path, password + "\n")
    return path


def mount_refused(v, pw_file, want_codes, what):
    """Run pactfs mount that must fail with one of want_codes; never leaves
    a mount behind (if it mounted after all, it is unmounted and the test
    fails).  Returns stderr."""
    if isinstance(want_codes, int):
        want_codes = (want_codes,)
    p = v.pactfs(*v.mount_args(passfile=pw_file))
    if p.returncode == 0 or H.is_mounted(v.mnt):
        H.LIVE_VAULTS.add(v)
        H.wait_mounted(v.mnt, timeout=5)
        v.unmount(check=False)
        pytest.fail("%s: pactfs mount succeeded (exit %d); it must be refused"
                    % (what, p.returncode))
    assert p.returncode in want_codes, (
        "%s: pactfs mount exit %d, expected %s\nstderr: %s"
        % (what, p.returncode, want_codes, p.stderr))
    assert not H.is_mounted(v.mnt)
    return p.stderr


def admin_keyd(v, k, op, token_file=None):
    return v.admin("keyd", op, H.ACCOUNT, v.dir, "--keyd-admin-token",
                   token_file or k.token_file)


def logins(k, result=None):
    return [e for e in k.audit_events()
            if e.get("op") == "login" and (result is None or e.get("result") == result)]


def set_keyd_url(v, url):
    """Point a vault's configuration at another key service URL."""
    with open(v.conf) as f:
        text = f.read()
    new, n = re.subn(r'url = "https://127\.0\.0\.1:\d+";', 'url = "%s";' % url, text)
    assert n == 1, "no keyd url line in %s" % v.conf
    with open(v.conf, "w") as f:
        f.write(new)


def write_sample_files(v):
    """A few files of awkward sizes (empty, small, across chunk borders)."""
    want = {}
    for i, size in enumerate((0, 1, 4097, H.CHUNK + 13, 2 * H.CHUNK)):
        data = H.seeded_bytes(1000 + i, size)
        H.write_file(v.path("file%d.bin" % i), data, fsync=True)
        want["file%d.bin" % i] = data
    return want


def check_sample_files(v, want):
    assert sorted(os.listdir(v.folder)) == sorted(want)
    for name, data in want.items():
        H.assert_same_bytes(H.read_file(v.path(name)), data, name)


def clone_vault(v, tmp_path, name):
    """A copy of the vault directory (sealed keys, metadata, fragments) as
    someone who stole the metadata store and the disks would have it."""
    c = H.Vault(tmp_path, name=name)
    shutil.copytree(v.dir, c.dir)
    for stale in ("pactfs.conf.lock",):
        if os.path.exists(os.path.join(c.dir, stale)):
            os.unlink(os.path.join(c.dir, stale))
    return c


# ---------------------------------------------------------------- tests

def test_mount_roundtrip_through_keyd(kvault, keyd):
    v = kvault
    with open(v.conf) as f:
        conf = f.read()
    keys = re.search(r"keys\s*=\s*\{(.*?)\};", conf, re.S)
    assert keys, "no keys section in %s" % v.conf
    assert re.search(r'provider\s*=\s*"keyd"', keys.group(1)), keys.group(1)
    assert ('url = "%s"' % keyd.url) in keys.group(1), keys.group(1)
    # No local share store: nothing named keys/ or *share* in the vault dir.
    for root, dirs, files in os.walk(v.dir):
        for n in dirs + files:
            assert n != "keys" and "share" not in n.lower(), \
                "local key material %s in a keyd vault" % os.path.join(root, n)
    enrolled = [e for e in keyd.audit_events() if e["op"] == "enroll"]
    assert [e["result"] for e in enrolled if e.get("account") == H.ACCOUNT] == ["enrolled"], \
        enrolled
    assert all(e["result"] == "enrolled" for e in enrolled), enrolled

    v.mount()
    want = write_sample_files(v)
    v.unmount()
    v.mount()
    check_sample_files(v, want)
    assert len(logins(keyd, "released")) == 2, keyd.audit_events()


def test_wrong_password_counted_then_lockout_expires(kvault, keyd):
    v = kvault
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    for i in range(MAX_FAILURES - 1):
        err = mount_refused(v, bad, EXIT_BAD_PASSWORD, "wrong password #%d" % (i + 1))
        assert "wrong password" in err, err
        assert len(logins(keyd, "rejected")) == i + 1, "failure %d not in the audit log" % (i + 1)
        assert keyd.failures() == i + 1, "the service did not count failure %d" % (i + 1)
    # The failure that reaches the limit already locks the account ...
    err = mount_refused(v, bad, EXIT_LOCKED_OUT, "failure reaching the limit")
    # ... and while locked even the right password is refused, with the wait.
    err = mount_refused(v, v.passfile, EXIT_LOCKED_OUT, "right password while locked out")
    m = re.search(r"locked out .*?(\d+) more seconds", err)
    assert m, "the lockout message gives no seconds to wait: %s" % err
    wait = int(m.group(1))
    assert 1 <= wait <= SHORT_LOCKOUT_S, err
    assert logins(keyd, "locked") and logins(keyd, "locked")[-1].get("retry_after", 0) >= 1
    time.sleep(wait + 1.0)
    v.mount()
    assert os.path.isdir(v.folder)


@pytest.mark.parametrize("lockout_s", [LONG_LOCKOUT_S])
def test_lockout_lifted_by_admin_unlock(keyd_factory, vault_factory, lockout_s):
    k = keyd_factory(lockout_s=lockout_s)
    v = vault_factory(k)
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    for _ in range(MAX_FAILURES):
        mount_refused(v, bad, (EXIT_BAD_PASSWORD, EXIT_LOCKED_OUT), "wrong password")
    err = mount_refused(v, v.passfile, EXIT_LOCKED_OUT, "right password while locked out")
    m = re.search(r"(\d+) more seconds", err)
    assert m and int(m.group(1)) > 60, err

    # A wrong admin token lifts nothing.
    wrong_token = passfile(v, "wrong.token", os.urandom(24).hex())
    p = admin_keyd(v, k, "unlock", token_file=wrong_token)
    assert p.returncode != 0, "unlock with a wrong admin token succeeded"
    mount_refused(v, v.passfile, EXIT_LOCKED_OUT, "after unlock with a wrong token")

    p = admin_keyd(v, k, "unlock")
    assert p.returncode == 0, p.stderr
    v.mount()
    assert os.path.isdir(v.folder)


def test_password_change_old_one_fails_at_once(kvault, keyd):
    v = kvault
    v.mount()
    want = write_sample_files(v)
    v.unmount()
    new = passfile(v, "new.pass", NEW_PASSWORD)
    p = v.admin("passwd", v.dir, "--passfile", v.passfile, "--new-passfile", new)
    assert p.returncode == 0, p.stderr
    err = mount_refused(v, v.passfile, EXIT_BAD_PASSWORD, "old password after passwd")
    assert "wrong password" in err, err
    assert [e["result"] for e in keyd.audit_events() if e["op"] == "change-auth"] == ["auth-changed"]
    p = v.pactfs(*v.mount_args(passfile=new))
    assert p.returncode == 0, p.stderr
    H.LIVE_VAULTS.add(v)
    assert H.wait_mounted(v.mnt)
    check_sample_files(v, want)


def test_rotate_share_keeps_data_readable(kvault, keyd, tmp_path):
    v = kvault
    v.mount()
    want = write_sample_files(v)
    v.unmount()
    before = clone_vault(v, tmp_path, "before-rotation")
    (_, _, share_before, _, _) = keyd.data_account()

    p = v.admin("rotate-share", v.dir, "--passfile", v.passfile)
    assert p.returncode == 0, p.stderr
    (_, _, share_after, _, _) = keyd.data_account()
    assert share_after != share_before, "rotate-share left the same share at the service"

    v.mount()
    check_sample_files(v, want)
    v.unmount()
    # The key sealed with the old share no longer opens with the new one.
    mount_refused(before, before.passfile, EXIT_BAD_PASSWORD, "pre-rotation sealed key")


def test_disable_refuses_then_enable_restores(kvault, keyd):
    v = kvault
    p = admin_keyd(v, keyd, "disable")
    assert p.returncode == 0, p.stderr
    err = mount_refused(v, v.passfile, EXIT_ACCESS, "disabled account")
    assert "disabled" in err, err
    p = admin_keyd(v, keyd, "enable")
    assert p.returncode == 0, p.stderr
    v.mount()
    assert os.path.isdir(v.folder)


def test_keyd_down_at_mount_time(kvault, keyd):
    v = kvault
    assert keyd.stop() == 0
    err = mount_refused(v, v.passfile, EXIT_KEYD_UNREACHABLE, "key service stopped")
    assert keyd.url in err, "the message does not name the URL: %s" % err
    assert "not reachable" in err, err


def test_server_certificate_from_another_ca_refused(kvault, keyd):
    v = kvault
    keyd.restart(cert="other-server")
    err = mount_refused(v, v.passfile, EXIT_KEYD_UNREACHABLE, "certificate from another CA")
    assert "certificate" in err and keyd.ca_file in err, \
        "the message does not say the certificate is not from the CA file: %s" % err
    assert not logins(keyd), "a login reached the impostor service"
    keyd.restart(cert="server")
    v.mount()
    assert os.path.isdir(v.folder)


def test_unlock_needs_the_share(kvault, keyd, keyd_factory, tmp_path):
    v = kvault
    v.mount()
    want = write_sample_files(v)
    v.unmount()
    stolen = clone_vault(v, tmp_path, "stolen")
    # The copy is complete: with the real service it opens.
    stolen.mount()
    check_sample_files(stolen, want)
    stolen.unmount()

    # A different key service, which never saw the share.
    other = keyd_factory(name="other-keyd")
    set_keyd_url(stolen, other.url)
    mount_refused(stolen, stolen.passfile, (EXIT_BAD_PASSWORD, EXIT_KEYD_UNREACHABLE),
                  "stolen metadata, unknown share (other keyd)")
    assert [e["result"] for e in logins(other)] == ["rejected"]

    # The real service after losing its database.
    keyd.wipe_database()
    for w in (v, stolen):
        set_keyd_url(w, keyd.url)
        mount_refused(w, w.passfile, (EXIT_BAD_PASSWORD, EXIT_KEYD_UNREACHABLE),
                      "share forgotten by the service")


def test_no_secret_in_any_log(kvault, keyd):
    v = kvault
    outputs = []
    secrets = {"password": H.PASSWORD, "new password": NEW_PASSWORD,
               "admin token": keyd.token}

    def remember_state(tag):
        for _, _, share, salt, verifier in keyd.accounts():
            secrets["share " + tag] = share
            secrets["verifier " + tag] = verifier
        pwkey, half, auth = password_parts(
            H.PASSWORD if tag == "before" else NEW_PASSWORD, v.dir)
        secrets.update({"pwkey " + tag: pwkey, "key half " + tag: half, "auth " + tag: auth})

    remember_state("before")
    v.mount_foreground()
    want = write_sample_files(v)
    v.unmount()
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    outputs.append(mount_refused(v, bad, EXIT_BAD_PASSWORD, "wrong password"))
    new = passfile(v, "new.pass", NEW_PASSWORD)
    p = v.admin("passwd", v.dir, "--passfile", v.passfile, "--new-passfile", new)
    assert p.returncode == 0, p.stderr
    outputs += [p.stdout, p.stderr]
    p = v.admin("rotate-share", v.dir, "--passfile", new)
    assert p.returncode == 0, p.stderr
    outputs += [p.stdout, p.stderr]
    remember_state("after")
    write_secret(v.passfile, NEW_PASSWORD + "\n")
    v.mount_foreground()
    check_sample_files(v, want)
    v.unmount()
    keyd.restart()      # flush and close everything the service writes

    assert len({secrets["share before"], secrets["share after"]}) == 2
    fg_files = sorted(glob.glob(os.path.join(v.logdir, "daemon-*.log")))
    assert len(fg_files) == 2, "stderr of the two pactfs -f daemons not captured: %s" % fg_files
    fg_logs = b"".join(H.read_file(f) for f in fg_files)
    sources = {
        "keyd stderr": keyd.read_stderr().encode(),
        "keyd audit log": keyd.read("audit.log"),
        "pactfs -f stderr": fg_logs,
        "vault audit.log": H.read_file(v.audit_log),
        "command output": "".join(outputs).encode(),
    }
    assert sources["keyd audit log"] and sources["vault audit.log"]
    # The search itself works: the capture of raw bodies does hold the auth.
    assert "auth before" in find_secrets(keyd.read("capture.log"), secrets)
    for where, data in sources.items():
        found = find_secrets(data, secrets)
        assert not found, "%s holds %s" % (where, ", ".join(found))
    # The database keeps the share only sealed and the authenticator only as
    # a salted verifier.
    db = b"".join(keyd.read(n) for n in ("keyd.db", "keyd.db-wal"))
    found = find_secrets(db, {n: s for n, s in secrets.items() if not n.startswith("verifier")})
    assert not found, "keyd.db holds %s" % ", ".join(found)


def test_login_traffic_has_no_password_nor_key_half(kvault, keyd):
    """What the service receives (its test-only capture of raw request
    bodies) carries the authenticator and nothing password-derived besides."""
    v = kvault
    v.mount()
    v.unmount()
    pwkey, half, auth = password_parts(H.PASSWORD, v.dir)
    new = passfile(v, "new.pass", NEW_PASSWORD)
    p = v.admin("passwd", v.dir, "--passfile", v.passfile, "--new-passfile", new)
    assert p.returncode == 0, p.stderr
    new_pwkey, new_half, new_auth = password_parts(NEW_PASSWORD, v.dir)

    reqs = keyd.captured_requests()
    login_bodies = [b for url, b in reqs if url == "/v1/login"]
    assert login_bodies, "no login captured: %s" % reqs
    for b in login_bodies:
        assert set(b) == {"vault", "account", "auth"}, b
        # Positive control: the capture really holds what the client sent.
        assert b["auth"] == auth.hex(), "the login did not carry auth = HKDF(pwkey, share auth)"
    [change] = [b for url, b in reqs if url == "/v1/change-auth"]
    assert change["old_auth"] == auth.hex() and change["new_auth"] == new_auth.hex(), change

    raw = keyd.read("capture.log")
    never = {"password": H.PASSWORD, "new password": NEW_PASSWORD,
             "pwkey": pwkey, "key half": half,
             "new pwkey": new_pwkey, "new key half": new_half}
    found = find_secrets(raw, never)
    assert not found, "the service received %s" % ", ".join(found)


def test_login_through_recording_proxy_has_no_password_nor_key_half(kvault, keyd, pki):
    """The same check on the wire: every byte of the TLS-decrypted traffic
    (request line, headers, body) of a real mount's login."""
    v = kvault
    pwkey, half, auth = password_parts(H.PASSWORD, v.dir)
    proxy = RecordingProxy(pki, keyd.port)
    try:
        set_keyd_url(v, proxy.url)
        v.mount()
        v.unmount()
    finally:
        proxy.stop()
    sent, answered = bytes(proxy.sent), bytes(proxy.answered)
    assert b"POST /v1/login" in sent, "the proxy saw no login: %r" % sent[:500]
    # Positive controls: the proxy sees the plaintext protocol.
    assert auth.hex().encode() in sent, "the login did not carry the authenticator"
    (_, _, share, _, _) = keyd.data_account()
    assert share.hex().encode() in answered, "the share was not in the service's answer"
    found = find_secrets(sent, {"password": H.PASSWORD, "pwkey": pwkey, "key half": half,
                                "share": share})
    assert not found, "the workstation sent %s to the key service" % ", ".join(found)


# ---------------------------------------------------------------- keyed verifiers

VERIFIER_KEY_LABEL = "pactfs-keyd v2 verifier key"
VERIFIER_LABEL = b"pactfs-keyd v2 verifier"


def auth_of(password, vault_dir, account):
    """The login authenticator of account, recomputed as keyring.c does."""
    t, m, p, salt = sealed_key_params(vault_dir, account)
    return hkdf(argon2id(password.encode(), salt, t, m, p), "pactfs v1 share auth")


def unkeyed_verifier(salt, auth):
    """Schema 1: what a thief of keyd.db can recompute from a guess."""
    return hashlib.sha256(salt + auth).digest()


def keyed_verifier(master_key, vault, account, inner):
    """Schema 2 (docs/keyd.md): needs the master key, which is not in keyd.db."""
    key = hkdf(master_key, VERIFIER_KEY_LABEL)
    msg = blob(VERIFIER_LABEL) + blob(vault.encode()) + blob(account.encode()) + inner
    return hmac.new(key, msg, hashlib.sha256).digest()


KEYD_SCHEMA_VERSION = 4        # tools/keyd_store.h: 2 keyed verifiers, 3 anchors, 4 codes


def keyd_schema(k):
    db = sqlite3.connect("file:%s?mode=ro" % k.file("keyd.db"), uri=True)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_stolen_keyd_db_and_metadata_allow_no_offline_guessing(kvault, keyd):
    """The attack: a thief holds keyd.db and meta.db (not the master key
    file) and tries passwords offline, the true one among them."""
    v = kvault
    keyd.restart()      # the database file as a backup would copy it
    assert keyd_schema(keyd) == KEYD_SCHEMA_VERSION
    stolen = os.path.join(v.base, "stolen-keyd.db")
    shutil.copy(keyd.file("keyd.db"), stolen)
    db = sqlite3.connect(stolen)
    try:
        rows = db.execute("SELECT vault, account, salt, verifier FROM accounts").fetchall()
    finally:
        db.close()
    assert {r[1] for r in rows} >= {H.ACCOUNT}, rows
    guesses = [OTHER_PASSWORD, NEW_PASSWORD, H.PASSWORD]
    for vault, account, salt, verifier in rows:
        salt, verifier = bytes(salt), bytes(verifier)
        for guess in guesses:
            auth = auth_of(guess, v.dir, account)
            assert unkeyed_verifier(salt, auth) != verifier, \
                "the stored verifier of %s confirms the guess %r offline" % (account, guess)
        # With the master key (kept outside the database) the true password
        # does match: the verifier is keyed, not random.
        inner = unkeyed_verifier(salt, auth_of(H.PASSWORD, v.dir, account))
        assert keyed_verifier(keyd.master_key, vault, account, inner) == verifier
        assert keyed_verifier(os.urandom(32), vault, account, inner) != verifier
    v.mount()
    v.unmount()
    assert len(logins(keyd, "released")) == 1, keyd.audit_events()


def test_schema1_database_rekeyed_at_start(kvault, keyd):
    """A keyd.db written by the previous pactfs-keyd (verifier =
    SHA-256(salt || auth), user_version 0) is re-keyed in one step at start:
    no unkeyed verifier is left, and logins work as before."""
    v = kvault
    rc = keyd.stop()
    assert rc == 0
    db = sqlite3.connect(keyd.file("keyd.db"))
    try:
        rows = db.execute("SELECT vault, account, salt FROM accounts").fetchall()
        old = {}
        for vault, account, salt in rows:
            old[account] = unkeyed_verifier(bytes(salt), auth_of(H.PASSWORD, v.dir, account))
            db.execute("UPDATE accounts SET verifier = ? WHERE vault = ? AND account = ?",
                       (old[account], vault, account))
        db.execute("PRAGMA user_version = 0")
        db.commit()
    finally:
        db.close()
    assert H.ACCOUNT in old
    keyd.start()
    assert keyd_schema(keyd) == KEYD_SCHEMA_VERSION
    assert "re-keyed under the master key" in keyd.read_stderr(), keyd.read_stderr()
    data = keyd.read("keyd.db")
    for account, verifier in old.items():
        assert verifier not in data, "the unkeyed verifier of %s is still in keyd.db" % account
    for vault, account, _, salt, verifier in keyd.accounts():
        assert verifier == keyed_verifier(keyd.master_key, vault, account, old[account])
    v.mount()
    v.unmount()
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    mount_refused(v, bad, EXIT_BAD_PASSWORD, "wrong password after the migration")
    # A restart does not re-key twice.
    keyd.restart()
    v.mount()
    v.unmount()


def test_schema1_migration_refuses_a_wrong_master_key(kvault, keyd):
    """Re-keying under a wrong master key would lock every account out for
    good: the service refuses to start and changes nothing."""
    rc = keyd.stop()
    assert rc == 0
    db = sqlite3.connect(keyd.file("keyd.db"))
    try:
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()
    before = keyd.read("keyd.db")
    right = keyd.master_key
    write_secret(keyd.file("master.key"), os.urandom(32).hex() + "\n")
    with pytest.raises(AssertionError):
        keyd.start()
    keyd.proc = None
    assert "wrong master_key_file" in keyd.read_stderr(), keyd.read_stderr()
    assert keyd.read("keyd.db") == before
    write_secret(keyd.file("master.key"), right.hex() + "\n")


def keyd_query(k, sql):
    db = sqlite3.connect("file:%s?mode=ro" % k.file("keyd.db"), uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def keyd_stopped_write(k, *statements):
    """Stop the service and run statements on keyd.db as an operator would."""
    assert k.stop() == 0
    db = sqlite3.connect(k.file("keyd.db"))
    try:
        for sql in statements:
            db.execute(sql)
        db.commit()
    finally:
        db.close()


def test_schema2_database_migrated_to_schema3(kvault, keyd):
    """keyd.db of schema 2 comes in two kinds: written before the vault head
    anchors (no table anchors) and after (table anchors, schema still 2).
    Both are brought to schema 3 at start with their rows kept; a database
    of a newer schema is refused unchanged."""
    v = kvault
    tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
    anchors = keyd_query(keyd, "SELECT vault, counter, hash FROM anchors")
    assert anchors, "init did not anchor the vault head"
    accounts = keyd.accounts()
    keyd_stopped_write(keyd, "PRAGMA user_version = 2")
    keyd.start()
    assert keyd_schema(keyd) == KEYD_SCHEMA_VERSION
    assert keyd.accounts() == accounts
    assert keyd_query(keyd, "SELECT vault, counter, hash FROM anchors") == anchors
    v.mount()
    v.unmount()

    # Before the anchors: no table, schema 2.
    keyd_stopped_write(keyd, "DROP TABLE anchors", "PRAGMA user_version = 2")
    assert ("anchors",) not in keyd_query(keyd, tables)
    keyd.start()
    assert keyd_schema(keyd) == KEYD_SCHEMA_VERSION
    assert ("anchors",) in keyd_query(keyd, tables)
    assert keyd.accounts() == accounts
    v.mount()       # the login works; the mount anchors its head (and role roster) again
    v.unmount()
    slots = sorted(r[0] for r in keyd_query(keyd, "SELECT vault FROM anchors"))
    assert len([x for x in slots if "#" not in x]) == 1, slots
    assert [x for x in slots if x.endswith("#roster")], slots

    # A newer schema than this pactfs-keyd knows: refused, nothing changed.
    keyd_stopped_write(keyd, "PRAGMA user_version = %d" % (KEYD_SCHEMA_VERSION + 1))
    before = keyd.read("keyd.db")
    with pytest.raises(AssertionError):
        keyd.start()
    keyd.proc = None
    assert ("has schema %d; this pactfs-keyd reads up to schema %d"
            % (KEYD_SCHEMA_VERSION + 1, KEYD_SCHEMA_VERSION)) in keyd.read_stderr()
    assert keyd.read("keyd.db") == before


@pytest.mark.timeout_s(600)
def test_admin_actions_on_the_vault_trail_and_at_the_receiver(kvault, keyd, tmp_path):
    """enroll, unlock, disable and enable are written in the project's audit format
    (a spool per vault, each action an unsigned session naming the officer)
    before they take effect, shipped to pactfs-auditd (which verifies the
    chain), and refused when the trail cannot be written."""
    from test_auditd import Receiver
    v = kvault
    vid = re.search(r'\bid\s*=\s*"([0-9a-f]{32})"', open(v.conf).read()).group(1)
    r = Receiver(tmp_path / "auditd")
    r.start()
    try:
        keyd.extra_conf = ('audit_url = "%s";\naudit_ca_file = "%s";\naudit_cert_file = "%s";\n'
                           'audit_key_file = "%s";\n'
                           % (r.url, os.path.join(r.pki, "ca.pem"),
                              os.path.join(r.pki, "client.pem"),
                              os.path.join(r.pki, "client.key")))
        keyd.restart()
        for op in ("unlock", "disable", "enable"):
            p = admin_keyd(v, keyd, op)
            assert p.returncode == 0, p.stderr
        bad = os.path.join(v.base, "bad.token")
        write_secret(bad, "not-the-token\n")
        assert admin_keyd(v, keyd, "disable", token_file=bad).returncode != 0
        trail = keyd.file(os.path.join("trail", vid + ".log"))
        evs = [json.loads(ln) for ln in open(trail)]
        acts = [(e["op"], e["path"], e["result"], e["account"]) for e in evs
                if e["op"].startswith("keyd-")]
        # init: the admin token registers each code, the code enrols
        assert acts == [("keyd-enrol-code", H.ACCOUNT + "-admin", "ok", "keyd:admin-token"),
                        ("keyd-enroll", H.ACCOUNT + "-admin", "ok", "keyd:enrolment-code"),
                        ("keyd-enrol-code", H.ACCOUNT, "ok", "keyd:admin-token"),
                        ("keyd-enroll", H.ACCOUNT, "ok", "keyd:enrolment-code"),
                        ("keyd-unlock", H.ACCOUNT, "ok", "keyd:admin-token"),
                        ("keyd-disable", H.ACCOUNT, "ok", "keyd:admin-token"),
                        ("keyd-enable", H.ACCOUNT, "ok", "keyd:admin-token"),
                        ("keyd-disable", H.ACCOUNT, "denied", "keyd:admin-token")], acts
        assert all(e["v"] == 6 and e["vault"] == vid for e in evs)
        # At the receiver: the same bytes, a chain that verifies, filters work.
        deadline = time.time() + 60
        while time.time() < deadline and r.events(vid) != open(trail, "rb").read():
            time.sleep(0.5)
        assert r.events(vid) == open(trail, "rb").read()
        assert r.verify(vid)["ok"] is True
        status, body = r.get("/v1/events?vault=%s&op=keyd-disable&result=ok" % vid)
        assert status == 200 and len(body.splitlines()) == 1, body

        # Fail-closed: the trail cannot be written, so nothing is done.
        H.run(["chattr", "+i", trail], check=True)
        try:
            p = admin_keyd(v, keyd, "disable")
            assert p.returncode != 0 and "audit trail" in p.stderr, p.stderr
            v.mount()                 # still enabled: the refused disable did nothing
            v.unmount()
        finally:
            H.run(["chattr", "-i", trail], check=True)
        p = admin_keyd(v, keyd, "disable")
        assert p.returncode == 0, p.stderr
        assert [json.loads(ln)["op"] for ln in open(trail)][-2] == "keyd-disable"
        assert admin_keyd(v, keyd, "enable").returncode == 0
    finally:
        assert r.stop() == 0


@pytest.mark.timeout_s(600)
def test_officers_act_by_client_certificate(kvault, keyd):
    """A key officer acts with their own client certificate (keyd officers,
    client_ca_file), without the shared admin token: the officer's name is in
    keyd's log and on the vault's trail; a certificate of someone who is not
    an officer, without the token, is refused (and on the trail too)."""
    v = kvault
    vid = re.search(r'\bid\s*=\s*"([0-9a-f]{32})"', open(v.conf).read()).group(1)
    keyd.stop()
    keyd.extra_conf = ('client_ca_file = "%s";\nofficers = [ "pactfs test client" ];\n'
                       % keyd.ca_file)
    keyd.start()
    with open(v.conf) as f:
        text = f.read()
    text, n = re.subn(r'(url = "https://127\.0\.0\.1:\d+";)',
                      r'\1\n    cert_file = "%s";\n    key_file = "%s";'
                      % (os.path.join(keyd.pki, "client.pem"),
                         os.path.join(keyd.pki, "client.key")), text)
    assert n == 1
    with open(v.conf, "w") as f:
        f.write(text)
    env_token = os.environ.pop("PACTFS_KEYD_ADMIN_TOKEN_FILE", None)
    try:
        for op in ("disable", "enable"):
            p = v.admin("keyd", op, H.ACCOUNT, v.dir)
            assert p.returncode == 0, p.stdout + p.stderr
        assert 'of "%s" by keyd:pactfs test client: 200' % H.ACCOUNT in keyd.read_stderr()
        # the same certificate when it is not an officer: refused without the token
        keyd.stop()
        keyd.extra_conf = ('client_ca_file = "%s";\nofficers = [ "Jane Officer" ];\n'
                           % keyd.ca_file)
        keyd.start()
        p = v.admin("keyd", "disable", H.ACCOUNT, v.dir)
        assert p.returncode != 0, p.stdout + p.stderr
    finally:
        if env_token is not None:
            os.environ["PACTFS_KEYD_ADMIN_TOKEN_FILE"] = env_token
    trail = keyd.file(os.path.join("trail", vid + ".log"))
    acts = [(e["op"], e["result"], e["account"]) for e in map(json.loads, open(trail))
            if e["op"] in ("keyd-disable", "keyd-enable")]
    assert acts == [("keyd-disable", "ok", "keyd:pactfs test client"),
                    ("keyd-enable", "ok", "keyd:pactfs test client"),
                    ("keyd-disable", "denied", "keyd:pactfs test client")], acts


# ------------------------------------------------------ enrolment by code

def keyd_post(k, path, body, token=None):
    """One request to pactfs-keyd as any client could send it: (status, body)."""
    ctx = ssl.create_default_context(cafile=k.ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", k.port, context=ctx, timeout=20)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        c.request("POST", path, json.dumps(body), headers)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


def enroll_message(vault, account, auth):
    """What the enrolment code's key signs (docs/keyd.md, "Enrolment by code")."""
    return (b"pactfs-keyd v1 enroll" + struct.pack(">I", len(vault)) + vault.encode() +
            struct.pack(">I", len(account)) + account.encode() + auth)


def code_keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    k = Ed25519PrivateKey.generate()
    pub = k.public_key().public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    return k, pub


def register_code(k, vault, account, pub, expires, token):
    return keyd_post(k, "/v1/enrol-code", {"vault": vault, "account": account,
                                           "code_pub": pub.hex(), "expires": expires},
                     token=token)


def enroll_signed(k, vault, account, key, auth=None, token=None):
    auth = auth or os.urandom(32)
    body = {"vault": vault, "account": account, "auth": auth.hex()}
    if key is not None:
        body["code_sig"] = key.sign(enroll_message(vault, account, auth)).hex()
    return keyd_post(k, "/v1/enroll", body, token=token)


def short_id(blob):
    """How the trails name a sealed share or a code's public key."""
    return hashlib.sha256(blob).hexdigest()[:16]


def test_keyd_enrolment_is_an_account_change_on_the_trail(kvault, keyd):
    """An enrolment at the key service is an account change on the vault's
    trail (the project's audit format): keyd-enroll carries the share before
    and after (by the id of its sealed form, which opens nothing), who did
    it (the holder of which code, from where) and the code's registration
    (keyd-enrol-code) its code before and after; a refused enrolment says
    nothing changed; a re-enrolment names the share it destroyed.  The
    vault's own account-enrol event names the same code."""
    v = kvault
    vid = re.search(r'\bid\s*=\s*"([0-9a-f]{32})"', open(v.conf).read()).group(1)
    trail = keyd.file(os.path.join("trail", vid + ".log"))

    def changes(op, account):
        evs = [json.loads(ln) for ln in open(trail)]
        return [e for e in evs if e["op"] == op and e["path"] == account]

    def code_of(account):
        rows = keyd_query(keyd, "SELECT code_pub FROM enrol_codes WHERE account = '%s'"
                          % account)
        assert len(rows) == 1, rows
        return short_id(rows[0][0])

    def share_of(account):
        (row,) = keyd_query(keyd, "SELECT sealed_share FROM accounts WHERE account = '%s'"
                            % account)
        return short_id(row[0])

    def add_code(cmd):
        p = v.admin(cmd, "carol", v.dir, *(("--role", "user") if cmd == "account-add" else ()),
                    "--account", H.ACCOUNT + "-admin", "--passfile", v.passfile,
                    "--keyd-admin-token", keyd.token_file)
        assert p.returncode == 0, p.stdout + p.stderr
        return re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)

    def enrol(code, password):
        codefile = os.path.join(v.base, "carol.code")
        write_secret(codefile, code + "\n")
        env = dict(v.env)
        env.pop("PACTFS_KEYD_ADMIN_TOKEN_FILE", None)
        return subprocess.run([H.binary("pactfs-admin"), "enroll", "carol", v.dir,
                               "--code-file", codefile, "--new-passfile",
                               passfile(v, "carol.pass", password)],
                              env=env, capture_output=True, text=True, timeout=300)

    code = add_code("account-add")
    cid = code_of("carol")
    (reg,) = changes("keyd-enrol-code", "carol")
    assert reg["before"] == "no code" and reg["after"].startswith("code %s, expires " % cid), reg
    assert reg["account"] == "keyd:admin-token" and reg["result"] == "ok", reg

    # a wrong code: refused, on the trail, nothing changed
    vault = [a[0] for a in keyd.accounts()][0]
    k_wrong, _ = code_keys()
    st, body = enroll_signed(keyd, vault, "carol", k_wrong)
    assert (st, body.get("error")) == (403, "code-rejected"), (st, body)
    (bad,) = changes("keyd-enroll", "carol")
    assert bad["result"] == "denied" and bad["account"] == "keyd:enrolment-code", bad
    assert bad["before"] == "no share; code " + cid and bad["after"] == "unchanged", bad

    p = enrol(code, "a violet harbour lamp 9 kept")
    assert p.returncode == 0, p.stdout + p.stderr
    first = share_of("carol")
    ok = changes("keyd-enroll", "carol")[-1]
    assert ok["result"] == "ok" and ok["account"] == "keyd:enrolment-code", ok
    assert ok["before"] == "no share; code " + cid, ok
    assert re.fullmatch(r"share %s set \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ by the holder of "
                        r"code %s from 127\.0\.0\.1; code %s spent" % (first, cid, cid),
                        ok["after"]), ok
    en = [e for e in H.audit_events(v) if e["op"] == "account-enrol" and e["result"] == "ok"
          and e["account"] == "carol"]
    assert en and en[-1]["before"] == "pending (code %s)" % cid, en

    # an officer's change (disable, enable) carries the share's state too
    for op in ("disable", "enable"):
        p = v.admin("keyd", op, "carol", v.dir, "--keyd-admin-token", keyd.token_file)
        assert p.returncode == 0, p.stdout + p.stderr
    dis, ena = changes("keyd-disable", "carol")[-1], changes("keyd-enable", "carol")[-1]
    assert dis["before"].startswith("share %s set " % first), dis
    assert "disabled" not in dis["before"] and dis["after"].endswith(", disabled"), dis
    assert ena["before"] == dis["after"] and ena["after"] == dis["before"], ena

    # a re-enrolment: the old share removed (keyd-remove names it), a new
    # code, a new share
    code2 = add_code("account-reenrol")
    rm = changes("keyd-remove", "carol")[-1]
    assert rm["before"].startswith("share %s set " % first) and rm["after"] == "no share", rm
    cid2 = code_of("carol")
    assert cid2 != cid
    reg2 = changes("keyd-enrol-code", "carol")[-1]
    assert reg2["before"] == "no code" and reg2["after"].startswith("code %s" % cid2), reg2
    p = enrol(code2, "a copper lantern river 7 folded")
    assert p.returncode == 0, p.stdout + p.stderr
    second = share_of("carol")
    assert second != first
    again = changes("keyd-enroll", "carol")[-1]
    assert again["before"] == "no share; code " + cid2, again
    assert again["after"].startswith("share %s set " % second), again
    assert "by the holder of code %s " % cid2 in again["after"], again
    # keyd's own audit log carries the same
    log = [e for e in keyd.audit_events() if e["op"] == "enroll" and e.get("account") == "carol"]
    assert log[-1]["before"] == again["before"] and log[-1]["after"] == again["after"], log
    # the vault's own trail still verifies
    p = v.admin("audit-verify", v.dir)
    assert p.returncode == 0, p.stdout + p.stderr


def test_enrolment_at_keyd_needs_the_persons_code(kvault, keyd):
    """pactfs-admin account-add registers the code's public key at the key
    service (admin call); the person's pactfs-admin enroll, with no admin
    token, enrols the share with the code.  At the service: a used code, an
    expired one, another account's and the admin token alone are refused
    (audited); keyd.db keeps only the code's public key."""
    v = kvault
    p = v.admin("account-add", "carol", v.dir, "--role", "user", "--account",
                H.ACCOUNT + "-admin", "--passfile", v.passfile, "--keyd-admin-token",
                keyd.token_file)
    assert p.returncode == 0, p.stdout + p.stderr
    code = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)
    rows = keyd_query(keyd, "SELECT account, code_pub FROM enrol_codes")
    assert [r[0] for r in rows] == ["carol"] and len(rows[0][1]) == 32, rows
    assert code.replace("-", "").encode() not in keyd.read("keyd.db")
    reg = [e for e in keyd.audit_events() if e["op"] == "enrol-code"]
    assert reg and reg[-1]["result"] == "code-registered", reg

    codefile = os.path.join(v.base, "carol.code")
    write_secret(codefile, code + "\n")
    pw = passfile(v, "carol.pass", "a violet harbour lamp 9 kept")
    env = dict(v.env)
    env.pop("PACTFS_KEYD_ADMIN_TOKEN_FILE", None)
    p = subprocess.run([H.binary("pactfs-admin"), "enroll", "carol", v.dir, "--code-file",
                        codefile, "--new-passfile", pw], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert [a[1] for a in keyd.accounts()].count("carol") == 1
    assert keyd_query(keyd, "SELECT account FROM enrol_codes") == []
    ev = [e for e in keyd.audit_events() if e["op"] == "enroll" and e.get("account") == "carol"]
    assert [e["result"] for e in ev] == ["enrolled"], ev

    vault = [a[0] for a in keyd.accounts()][0]
    # the admin token alone enrols nobody
    st, body = enroll_signed(keyd, vault, "dave", None, token=keyd.token)
    assert (st, body.get("error")) == (401, "code-required"), (st, body)
    # a code used once: gone
    k1, pub1 = code_keys()
    assert register_code(keyd, vault, "dave", pub1, int(time.time()) + 600, keyd.token)[0] == 200
    assert enroll_signed(keyd, vault, "dave", k1)[0] == 200
    st, body = enroll_signed(keyd, vault, "dave", k1)
    assert (st, body.get("error")) == (403, "no-code"), (st, body)
    # another account's code
    k2, pub2 = code_keys()
    register_code(keyd, vault, "erin", pub2, int(time.time()) + 600, keyd.token)
    st, body = enroll_signed(keyd, vault, "erin", k1)
    assert (st, body.get("error")) == (403, "code-rejected"), (st, body)
    st, body = enroll_signed(keyd, vault, "frank", k2)
    assert (st, body.get("error")) == (403, "no-code"), (st, body)
    assert enroll_signed(keyd, vault, "erin", k2)[0] == 200     # its own still works
    # an expired code
    k3, pub3 = code_keys()
    register_code(keyd, vault, "gus", pub3, int(time.time()) - 1, keyd.token)
    st, body = enroll_signed(keyd, vault, "gus", k3)
    assert (st, body.get("error")) == (403, "code-expired"), (st, body)
    assert "gus" not in [a[1] for a in keyd.accounts()]
    # registering a code is an admin call
    st, _ = register_code(keyd, vault, "hal", pub3, int(time.time()) + 600, None)
    assert st == 401
    results = [(e.get("account"), e["result"]) for e in keyd.audit_events()
               if e["op"] == "enroll"]
    for want in [("dave", "code-required"), ("dave", "no-code"), ("erin", "code-rejected"),
                 ("gus", "code-expired"), ("erin", "enrolled")]:
        assert want in results, (want, results)

    # carol mounts with the share her code enrolled
    carol = H.AccountMount(v, "carol", pw)
    try:
        p = carol.mount(check=False)
        # carol holds no folder yet: the mount itself proves the login
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        finish_vault(carol)


def test_schema3_database_migrated_to_schema4(kvault, keyd):
    """keyd.db of schema 3 (no enrol_codes) is brought to 4 at start, rows kept."""
    v = kvault
    accounts = keyd.accounts()
    keyd_stopped_write(keyd, "DROP TABLE enrol_codes", "PRAGMA user_version = 3")
    keyd.start()
    assert keyd_schema(keyd) == KEYD_SCHEMA_VERSION == 4
    assert keyd.accounts() == accounts
    vault = accounts[0][0]
    k, pub = code_keys()
    assert register_code(keyd, vault, "ivy", pub, int(time.time()) + 600, keyd.token)[0] == 200
    assert enroll_signed(keyd, vault, "ivy", k)[0] == 200
    v.mount()
    v.unmount()


# ------------------------------------------------ keyd's own log: the project's audit format

EXIT_INTEGRITY = 14


def keyd_log_verify(log, fingerprint=None):
    args = [H.binary("pactfs-admin"), "keyd-audit-verify", log]
    if fingerprint:
        args[2:2] = ["--fingerprint", fingerprint]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def keyd_fingerprint(k):
    m = re.search(r"fingerprint ([0-9a-f]{64})", k.read_stderr())
    assert m, "pactfs-keyd printed no audit key fingerprint:\n" + k.read_stderr()
    return m.group(1)


def rechain(lines):
    """What someone who can edit the log but not sign does after an edit:
    recompute every line's prev, sprev and checkpoint signed_hash so that
    the hash chains hold again (the signatures cannot be remade)."""
    out, last, sess, by_sseq = [], None, {}, {}
    for line in lines:
        e = json.loads(line)
        if last is not None:
            line = re.sub(r'"prev":"[0-9a-f]{64}"', '"prev":"%s"' % last, line, count=1)
        s = e.get("session")
        if s in sess:
            line = re.sub(r'"sprev":"[0-9a-f]{64}"', '"sprev":"%s"' % sess[s], line, count=1)
            # format 5 names the line it signs, older formats the line before
            signed = by_sseq[(s, e["signed_sseq"])] if "signed_sseq" in e else sess[s]
            line = re.sub(r'"signed_hash":"[0-9a-f]{64}"', '"signed_hash":"%s"' % signed,
                          line, count=1)
        h = hashlib.sha256(line.encode()).hexdigest()
        last = sess[s] = by_sseq[(s, e.get("sseq"))] = h
        out.append(line)
    return out


def test_keyd_log_is_signed_and_tampering_one_line_is_detected(kvault, keyd, tmp_path):
    """keyd's per-request log is an audit log in the project's format, signed
    with keyd's own audit key: the verifier accepts it as written and
    refuses it after one line is edited, after the chains are recomputed
    around the edit, and under another fingerprint."""
    v = kvault
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    mount_refused(v, bad, EXIT_BAD_PASSWORD, "wrong password")
    v.mount()
    v.unmount()
    keyd.restart()          # a second session: sessions end and begin signed
    fp = keyd_fingerprint(keyd)
    assert keyd.file("audit-signing.key") and os.path.exists(keyd.file("audit-signing.key"))
    assert keyd_fingerprint(keyd) == fp
    log = keyd.file("audit.log")
    p = keyd_log_verify(log, fp)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "signatures intact" in p.stdout and fp in p.stdout, p.stdout
    assert re.search(r"in [2-9]\d* sessions", p.stdout), p.stdout
    assert logins(keyd, "rejected") and logins(keyd, "released"), keyd.audit_events()
    # the key file is sealed: it holds no RSA key in the clear
    assert b"PRIVATE KEY" not in keyd.read("audit-signing.key")

    lines = keyd.read("audit.log").decode().splitlines()
    i = next(n for n, line in enumerate(lines)
             if '"op":"login"' in line and '"result":"rejected"' in line)
    forged = list(lines)
    forged[i] = forged[i].replace('"result":"rejected"', '"result":"released"')
    forged[i] = forged[i].replace('"result":"denied"', '"result":"ok"')
    assert forged[i] != lines[i]
    edited = str(tmp_path / "edited.log")
    with open(edited, "w") as f:
        f.write("\n".join(forged) + "\n")
    p = keyd_log_verify(edited, fp)
    assert p.returncode == EXIT_INTEGRITY, (p.returncode, p.stdout, p.stderr)
    # named: the edited line, or the next one, whose prev no longer matches
    m = re.search(r"line (\d+)", p.stderr)
    assert m and int(m.group(1)) in (i + 1, i + 2), (i + 1, p.stderr)

    rechained = str(tmp_path / "rechained.log")
    with open(rechained, "w") as f:
        f.write("\n".join(rechain(forged)) + "\n")
    with open(str(tmp_path / "control.log"), "w") as f:
        f.write("\n".join(rechain(lines)) + "\n")
    # control: re-chaining the untouched lines changes nothing, so the
    # refusal below is the signature's
    assert keyd_log_verify(str(tmp_path / "control.log"), fp).returncode == 0
    p = keyd_log_verify(rechained, fp)
    assert p.returncode == EXIT_INTEGRITY, (p.returncode, p.stdout, p.stderr)
    assert "signature" in p.stderr, p.stderr

    # the whole log taken for another key's
    p = keyd_log_verify(log, "0" * 64)
    assert p.returncode == EXIT_INTEGRITY and fp in p.stderr, (p.returncode, p.stderr)


def test_keyd_json_lines_log_of_an_earlier_version_is_kept_aside(keyd_factory):
    """An audit_log of an earlier version (JSON lines) is renamed, byte for
    byte, and the new log begins in the project's format; a log signed with
    another key (the key file replaced) is kept aside the same way."""
    k = keyd_factory(start=False)
    old = (b'{"time":1795892771,"remote":"10.1.2.3","op":"login","vault":"' + b"a" * 32 +
           b'","account":"alice","status":403,"result":"rejected"}\n')
    with open(k.file("audit.log"), "wb") as f:
        f.write(old)
    k.start()
    kept = glob.glob(k.file("audit.log.*.jsonl"))
    assert len(kept) == 1 and H.read_file(kept[0]) == old, kept
    assert "JSON-lines" in k.read_stderr() and kept[0] in k.read_stderr(), k.read_stderr()
    first_fp = keyd_fingerprint(k)
    k.stop()
    assert keyd_log_verify(k.file("audit.log"), first_fp).returncode == 0

    # a new key (the old one moved away): the old log is kept, a new one begins
    os.rename(k.file("audit-signing.key"), k.file("audit-signing.key.old"))
    k.start()
    k.stop()
    fps = re.findall(r"fingerprint ([0-9a-f]{64})", k.read_stderr())
    assert len(set(fps)) == 2 and fps[0] == first_fp, fps
    aside = [p for p in glob.glob(k.file("audit.log.*")) if not p.endswith(".jsonl")]
    assert len(aside) == 1, aside
    assert keyd_log_verify(aside[0], first_fp).returncode == 0
    p = keyd_log_verify(k.file("audit.log"), fps[-1])
    assert p.returncode == 0, p.stdout + p.stderr
    assert keyd_log_verify(k.file("audit.log"), first_fp).returncode == EXIT_INTEGRITY
