"""Every documented exit code, walked: docs/exit-codes.md and
src/exitcodes.h agree, and each program named in the table's last column
really exits with each of its codes in a situation an administrator meets
(a scenario per (code, program) below; a documented pair without one
fails).  The message must say what is wrong, never "(null)"."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import pactfs_helpers as H
from test_keyd import (Keyd, keyd, keyd_factory, pki, vault_factory,  # noqa: F401 (fixtures)
                       passfile, MAX_FAILURES, OTHER_PASSWORD, free_port)
from test_auditd import Receiver

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ALL = ["pactfs", "pactfs-admin", "pactfs-fsck", "pactfs-keyd", "pactfs-auditd"]


def doc_table():
    """[(code, NAME, [programs])] from docs/exit-codes.md."""
    rows = []
    with open(os.path.join(SRC, "docs", "exit-codes.md")) as f:
        for line in f:
            m = re.match(r"\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|[^|]*\|\s*([^|]+?)\s*\|\s*$", line)
            if m:
                progs = m.group(3)
                progs = ALL if progs == "all" else [
                    re.sub(r"\s*\(.*\)", "", p).strip() for p in progs.split(",")]
                rows.append((int(m.group(1)), m.group(2), progs))
    return rows


def header_table():
    with open(os.path.join(SRC, "src", "exitcodes.h")) as f:
        return {int(n): name for name, n in re.findall(r"EXIT_([A-Z_]+)\s*=\s*(\d+)", f.read())}


def test_doc_and_header_agree():
    doc = {code: name for code, name, _ in doc_table()}
    assert doc, "no table found in docs/exit-codes.md"
    assert doc == header_table(), "docs/exit-codes.md and src/exitcodes.h differ"


# ------------------------------------------------------------ scenarios

class Ctx:
    def __init__(self, request, tmp_path):
        self.request = request
        self.tmp = tmp_path
        self._vault = None

    @property
    def vault(self):
        """An initialised, unmounted vault (made on first use)."""
        if self._vault is None:
            self._vault = self.request.getfixturevalue("new_vault")
        return self._vault

    def file(self, name, text):
        p = os.path.join(str(self.tmp), name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o600)
        return p

    def admin_as(self, *args, account=H.ACCOUNT, passfile=None):
        v = self.vault
        return v.admin(*args, v.dir, "--account", account, "--passfile", passfile or v.passfile)


def mount(ctx, **kw):
    v = ctx.vault
    p = v.pactfs(*v.mount_args(**kw))
    if p.returncode == 0:
        H.LIVE_VAULTS.add(v)
        H.wait_mounted(v.mnt)
    return p


def fsck(ctx, *args):
    return H.run([H.binary("pactfs-fsck"), "-q", *args, ctx.vault.dir], env=ctx.vault.env)


def run_server(prog, conf, timeout=20, then_term=False, listen_timeout=180):
    """A server in the foreground; with then_term, SIGTERM it once it listens
    (port in conf's first 'port = N;').  Listening may take long: a first
    start makes its keys (RSA-3072 under ASan on a loaded machine took over
    20 s in the CI trial of 9f942ef, and the SIGTERM then came before the
    server listened and had blocked it)."""
    argv = [H.binary(prog), "-f", "-c", conf]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if then_term:
        port = int(re.search(r"port = (\d+);", open(conf).read()).group(1))
        deadline = time.monotonic() + listen_timeout
        while time.monotonic() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return subprocess.CompletedProcess(argv, p.returncode, out.decode(errors="replace"), "")


def keyd_conf(ctx):
    k = ctx.request.getfixturevalue("keyd_factory")(start=False)
    k.write_conf()
    return k, k.file("keyd.conf")


def auditd_conf(ctx):
    return Receiver(os.path.join(str(ctx.tmp), "auditd")).conf


def busy_port(conf):
    """Hold conf's port so the server cannot listen."""
    port = int(re.search(r"port = (\d+);", open(conf).read()).group(1))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def keyd_vault(ctx):
    k = ctx.request.getfixturevalue("keyd")
    v = ctx.request.getfixturevalue("vault_factory")(k, name="kv")
    ctx._vault = v
    return k, v


def keyd_lock_out(ctx):
    k, v = keyd_vault(ctx)
    bad = passfile(v, "bad.pass", OTHER_PASSWORD)
    for _ in range(MAX_FAILURES):
        v.pactfs(*v.mount_args(passfile=bad))
    return v


def keyd_down(ctx):
    k, v = keyd_vault(ctx)
    k.stop()
    return v


def immutable_audit_spool(ctx):
    v = ctx.vault
    p = H.run(["chattr", "+i", v.audit_log])
    if p.returncode != 0:
        pytest.skip("chattr +i is not supported here: %s" % p.stderr.strip())
    ctx.request.addfinalizer(lambda: H.run(["chattr", "-i", v.audit_log]))
    return v


def lose_endpoints(ctx, n):
    for i in range(n):
        shutil.rmtree(ctx.vault.store_dir(i))


def corrupt_meta(ctx):
    with open(os.path.join(ctx.vault.dir, "meta.db"), "r+b") as f:
        f.write(os.urandom(4096))


def no_fuse_mount(ctx):
    """/dev/fuse replaced by /dev/null in a private mount namespace."""
    v = ctx.vault
    inner = "mount --bind /dev/null /dev/fuse && exec %s %s" % (
        H.binary("pactfs"), " ".join("'%s'" % a for a in v.mount_args()))
    p = H.run(["unshare", "-m", "sh", "-c", inner], env=v.env)
    if "unshare failed" in p.stderr or "Operation not permitted" in p.stderr[:200]:
        pytest.skip("cannot make a private mount namespace here")
    return p


def fsck_unrepairable(ctx):
    v = ctx.vault
    v.mount()
    H.write_file(v.path("doc"), b"x" * 5000)
    v.unmount()
    for i in range(2):
        for f in H.fragment_files(v.store_dir(i)):
            os.unlink(f)
    return fsck(ctx, "--repair")


def edited_audit_spool(ctx):
    v = ctx.vault
    with open(v.audit_log) as f:
        lines = f.readlines()
    lines[0] = lines[0].replace('"init"', '"inix"', 1) if '"init"' in lines[0] else \
        lines[0].replace('"seq":1', '"seq":7', 1)
    with open(v.audit_log, "w") as f:
        f.writelines(lines)
    return v.admin("audit-verify", v.dir)


def mounted_then(ctx, fn):
    ctx.vault.mount()
    return fn()


def add_bob(ctx):
    """The sysadmin registers bob, bob enrols with the code (docs/accounts.md)."""
    v = ctx.vault
    pw = ctx.file("bob.pass", "an enrolment passphrase, long enough\n")
    p = v.admin("account-add", "bob", v.dir, "--role", "user",
                "--account", H.ACCOUNT + "-admin", "--passfile", v.passfile)
    assert p.returncode == 0, p.stderr
    code = re.search(r"^([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})$", p.stdout, re.M).group(1)
    p = v.admin("enroll", "bob", v.dir, "--code-file", ctx.file("bob.code", code + "\n"),
                "--new-passfile", pw)
    assert p.returncode == 0, p.stderr
    return pw


def disabled_mount(ctx):
    v = ctx.vault
    add_bob(ctx)
    p = v.admin("account-disable", "bob", v.dir, "--account", H.ACCOUNT + "-admin",
                "--passfile", v.passfile)
    assert p.returncode == 0, p.stderr
    return v.pactfs("mount", v.dir, v.mnt, "--account", "bob", "--passfile", v.passfile)


def few_fds(prog_argv, n=5):
    return H.run(["sh", "-c", "ulimit -n %d && exec \"$@\"" % n, "sh"] + prog_argv)


def older_metadata(c):
    """The database operator restores a copy of meta.db older than a change
    (the workstation's key directory has anchored the newer vault head)."""
    v = c.vault
    db = os.path.join(v.dir, "meta.db")
    shutil.copyfile(db, db + ".old")
    c.admin_as("folder-create", "HR")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    shutil.copyfile(db + ".old", db)


SCENARIOS = {
    (0, "pactfs"): lambda c: mount(c),
    (0, "pactfs-admin"): lambda c: c.vault.admin("accounts", c.vault.dir),
    (0, "pactfs-fsck"): lambda c: fsck(c),
    (0, "pactfs-keyd"): lambda c: run_server("pactfs-keyd", keyd_conf(c)[1], then_term=True),
    (0, "pactfs-auditd"): lambda c: run_server("pactfs-auditd", auditd_conf(c), then_term=True),

    (1, "pactfs"): lambda c: few_fds([H.binary("pactfs")] + c.vault.mount_args()),
    (1, "pactfs-admin"): lambda c: c.vault.admin("init", c.file("plain-file", "") + "/vault",
                                                 "--account", "a", "--passfile", c.vault.passfile,
                                                 "--kdf-time", "1", "--kdf-memory", "8192"),
    (1, "pactfs-keyd"): lambda c: (lambda conf: (busy_port(conf), run_server(
        "pactfs-keyd", conf))[1])(keyd_conf(c)[1]),
    (1, "pactfs-auditd"): lambda c: (lambda conf: (busy_port(conf), run_server(
        "pactfs-auditd", conf))[1])(auditd_conf(c)),

    **{(2, p): (lambda prog: lambda c: H.run([H.binary(prog), "--no-such-option"]))(p)
       for p in ALL},
    (3, "pactfs"): lambda c: c.vault.pactfs("mount", str(c.tmp), c.vault.mnt,
                                            "--passfile", c.vault.passfile),
    (3, "pactfs-admin"): lambda c: c.vault.admin("accounts", str(c.tmp)),
    (3, "pactfs-fsck"): lambda c: H.run([H.binary("pactfs-fsck"), str(c.tmp)]),
    (3, "pactfs-keyd"): lambda c: H.run([H.binary("pactfs-keyd"), "-f", "-c",
                                         c.file("keyd.conf", "port = ;\n")]),
    (3, "pactfs-auditd"): lambda c: H.run([H.binary("pactfs-auditd"), "-f", "-c",
                                           c.file("auditd.conf", "nonsense = 1;\n")]),

    (4, "pactfs"): lambda c: mount(c, passfile=c.file("bad", "wrong password\n")),
    (4, "pactfs-admin"): lambda c: c.admin_as("folder-create", "HR",
                                              passfile=c.file("bad", "wrong password\n")),
    (5, "pactfs"): lambda c: (lambda v: v.pactfs(*v.mount_args()))(keyd_lock_out(c)),
    (5, "pactfs-admin"): lambda c: (lambda v: v.admin("folder-create", "HR", v.dir,
                                                      "--passfile", v.passfile))(keyd_lock_out(c)),
    (6, "pactfs"): lambda c: (lambda v: v.pactfs(*v.mount_args()))(keyd_down(c)),
    (6, "pactfs-admin"): lambda c: (lambda v: v.admin("folder-create", "HR", v.dir,
                                                      "--passfile", v.passfile))(keyd_down(c)),
    (7, "pactfs"): lambda c: (lose_endpoints(c, 2), mount(c))[1],
    (7, "pactfs-admin"): lambda c: (lose_endpoints(c, 2), c.admin_as("folder-create", "HR"))[1],
    (7, "pactfs-fsck"): lambda c: (corrupt_meta(c), fsck(c))[1],
    (8, "pactfs"): lambda c: mount(c, mnt=os.path.join(str(c.tmp), "no-such-dir")),
    # A second mount of the vault elsewhere is allowed (several mounts per
    # machine); the same mountpoint twice is not.
    (9, "pactfs"): lambda c: mounted_then(c, lambda: c.vault.pactfs(*c.vault.mount_args())),
    (9, "pactfs-fsck"): lambda c: mounted_then(c, lambda: fsck(c, "--repair")),
    (10, "pactfs"): no_fuse_mount,
    (11, "pactfs-admin"): lambda c: c.vault.init(check=False),
    (12, "pactfs"): lambda c: mount(c, passfile=c.file("empty", "")),
    (12, "pactfs-admin"): lambda c: c.admin_as("folder-create", "HR",
                                               passfile=c.file("empty", "")),
    (13, "pactfs"): disabled_mount,
    (13, "pactfs-admin"): lambda c: c.admin_as("folder-create", "HR",
                                               account=H.ACCOUNT + "-admin"),
    (14, "pactfs-fsck"): fsck_unrepairable,
    (14, "pactfs-admin"): edited_audit_spool,
    (15, "pactfs"): lambda c: (immutable_audit_spool(c), mount(c))[1],
    (15, "pactfs-admin"): lambda c: (immutable_audit_spool(c),
                                     c.admin_as("folder-create", "HR"))[1],
    (15, "pactfs-fsck"): lambda c: (immutable_audit_spool(c), fsck(c))[1],
    (16, "pactfs-admin"): lambda c: c.admin_as("grant", H.FOLDER, "nobody", "read"),
    (17, "pactfs"): lambda c: (older_metadata(c), mount(c))[1],
    (17, "pactfs-admin"): lambda c: (older_metadata(c), c.admin_as("folder-create", "Legal"))[1],
    (18, "pactfs-admin"): lambda c: c.admin_as("passwd", "--new-passfile",
                                               c.file("weak.pass", "a\n")),
    # The last enabled dataadmin (alice, made by init) is not demoted.
    (19, "pactfs-admin"): lambda c: c.admin_as("account-role", H.ACCOUNT, "--role", "user",
                                               account=H.ACCOUNT + "-admin"),
}

# Documented but not reproducible by a test without breaking the machine.
CANNOT_PROVOKE = {
    (1, "pactfs-fsck"): "pactfs-fsck exits 1 only when out of memory; a memory limit low "
                        "enough to hit it stops the dynamic loader or the I/O threads first",
}

DOCUMENTED = [(code, prog) for code, _, progs in doc_table() for prog in progs]


def test_every_scenario_is_documented():
    extra = sorted(set(SCENARIOS) - set(DOCUMENTED))
    assert not extra, "exit codes produced but not documented in docs/exit-codes.md: %s" % extra


@pytest.mark.parametrize("code,prog", DOCUMENTED, ids=["%d-%s" % cp for cp in DOCUMENTED])
def test_documented_exit_code(code, prog, request, tmp_path):
    if (code, prog) in CANNOT_PROVOKE:
        pytest.skip(CANNOT_PROVOKE[(code, prog)])
    scenario = SCENARIOS.get((code, prog))
    assert scenario, "docs/exit-codes.md says %s exits %d, but no scenario here shows it" % (
        prog, code)
    ctx = Ctx(request, tmp_path)
    p = scenario(ctx)
    out = (p.stdout or "") + (p.stderr or "")
    assert p.returncode == code, "%s: exit %d, documented %d\n%s" % (prog, p.returncode, code,
                                                                     out[-3000:])
    assert "(null)" not in out, out
    if code not in (0,):
        assert out.strip(), "%s exited %d without a word" % (prog, code)


def test_keyd_admin_token_inline_is_not_echoed_and_wrong_one_is_named(request, tmp_path):
    """--keyd-admin-token takes a FILE: a token pasted there is refused
    without landing in the message (and so in logs); a wrong token file is
    exit 13 with a message, not "(null)"."""
    ctx = Ctx(request, tmp_path)
    k, v = keyd_vault(ctx)
    secret = "s3cr3t-admin-token-" + os.urandom(6).hex()
    p = v.admin("keyd", "unlock", H.ACCOUNT, v.dir, "--keyd-admin-token", secret)
    out = p.stdout + p.stderr
    assert p.returncode == 3, out
    assert secret not in out and "file" in out.lower(), out
    wrong = ctx.file("wrong.token", os.urandom(24).hex() + "\n")
    p = v.admin("keyd", "unlock", H.ACCOUNT, v.dir, "--keyd-admin-token", wrong)
    out = p.stdout + p.stderr
    assert p.returncode == 13, out
    assert "(null)" not in out and "admin token" in out, out
