"""The audit shipper in a real mount against a real pactfs-auditd over TLS:
every event of the spool reaches the receiver, in order, with a chain that
verifies; with the receiver down the mount keeps working on the spool and
the events arrive once the receiver is back."""
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import pactfs_helpers as H

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARRIVAL_WAIT_S = 90          # shipper backoff tops out at 15 s; sanitized builds are slow


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_pki(d):
    subprocess.run(["sh", os.path.join(SRC, "tests", "keyd", "mkca.sh"), d], check=True,
                   timeout=H.CMD_TIMEOUT_S)
    # An auditor's certificate, signed by the same CA.
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", "auditor.key", "-out", "auditor.csr",
                    "-subj", "/CN=pactfs test auditor"], cwd=d, check=True,
                   capture_output=True, timeout=H.CMD_TIMEOUT_S)
    with open(os.path.join(d, "auditor.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    subprocess.run(["openssl", "x509", "-req", "-in", "auditor.csr", "-CA", "ca.pem",
                    "-CAkey", "ca.key", "-CAcreateserial", "-out", "auditor.pem", "-days", "2",
                    "-extfile", "auditor.ext"], cwd=d, check=True, capture_output=True,
                   timeout=H.CMD_TIMEOUT_S)


class Receiver:
    """pactfs-auditd -f on 127.0.0.1 with its store under base."""

    def __init__(self, base):
        self.base = str(base)
        self.pki = os.path.join(self.base, "pki")
        self.logdir = os.path.join(self.base, "auditd-logs")
        os.makedirs(self.logdir, exist_ok=True)
        make_pki(self.pki)
        self.port = free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.base, "auditd.conf")
        self.vaults = []
        self.write_conf()
        self.proc = None
        self.starts = 0

    def write_conf(self):
        vaults = ",\n".join('  { id = "%s"; root_fingerprint = "%s"; }' % v for v in self.vaults)
        with open(self.conf, "w") as f:
            f.write('listen_address = "127.0.0.1";\nport = %d;\n'
                    'cert_file = "pki/server.pem";\nkey_file = "pki/server.key";\n'
                    'client_ca_file = "pki/ca.pem";\nstore_dir = "store";\n'
                    'auditors = [ "pactfs test auditor" ];\n' % self.port)
            if vaults:
                f.write("vaults = (\n%s\n);\n" % vaults)

    def add_vault(self, vault_id, root_fp):
        """Pin a vault's root (from its pactfs.conf): the receiver learns every
        account key from the registry proofs the sessions carry."""
        self.vaults.append((vault_id, root_fp))
        self.write_conf()
        if self.proc:
            assert self.stop() == 0
            self.start()

    def start(self):
        log = open(os.path.join(self.logdir, "stderr-%d.log" % self.starts), "wb")
        self.starts += 1
        self.proc = subprocess.Popen([H.binary("pactfs-auditd"), "-f", "-c", self.conf],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env=H.sanitizer_env(self.logdir))
        log.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, "pactfs-auditd exited early (see %s)" % self.logdir
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("pactfs-auditd does not listen after 20 s")

    def stop(self):
        if not self.proc:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=30)
        self.proc = None
        return rc

    def get(self, path):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        ctx.load_cert_chain(os.path.join(self.pki, "auditor.pem"),
                            os.path.join(self.pki, "auditor.key"))
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def events(self, vault_id):
        status, body = self.get("/v1/events?vault=%s&since=0" % vault_id)
        assert status == 200, "GET /v1/events -> %d %r" % (status, body[:300])
        return body

    def verify(self, vault_id):
        status, body = self.get("/v1/verify?vault=%s" % vault_id)
        assert status == 200, "GET /v1/verify -> %d %r" % (status, body[:300])
        return json.loads(body)


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path / "auditd")
    r.start()
    yield r
    rc = r.stop()
    reports = H.sanitizer_reports(r.logdir)
    assert not reports, "sanitizer reports from pactfs-auditd:\n" + "\n".join(reports)
    assert rc == 0, "pactfs-auditd exited with %s on SIGTERM" % rc


def ship_to(vault, r):
    """Point the vault's audit section at the receiver and pin the vault's
    root fingerprint there (no account keys are installed)."""
    with open(vault.conf) as f:
        text = f.read()
    block = ('audit = {\n    spool = "audit.log";\n    url = "%s";\n    ca_file = "%s";\n'
             '    cert_file = "%s";\n    key_file = "%s";\n};'
             % (r.url, os.path.join(r.pki, "ca.pem"), os.path.join(r.pki, "client.pem"),
                os.path.join(r.pki, "client.key")))
    text, n = re.subn(r"audit\s*=\s*\{.*?\};", block, text, count=1, flags=re.S)
    assert n == 1, "no audit section in %s" % vault.conf
    with open(vault.conf, "w") as f:
        f.write(text)
    vid = re.search(r'\bid\s*=\s*"([0-9a-f]{32})"', text).group(1)
    fp = re.search(r'root_fingerprint\s*=\s*"([0-9a-f]{64})"', text).group(1)
    r.add_vault(vid, fp)


def spool_bytes(vault):
    with open(vault.audit_log, "rb") as f:
        return f.read()


def vault_id(vault):
    first = spool_bytes(vault).split(b"\n", 1)[0]
    return json.loads(first)["vault"]


def wait_receiver_has_spool(vault, r, timeout=ARRIVAL_WAIT_S):
    vid = vault_id(vault)
    deadline = time.time() + timeout
    got = b""
    while time.time() < deadline:
        want = spool_bytes(vault)
        got = r.events(vid)
        if got == want:
            return got
        time.sleep(0.5)
    want = spool_bytes(vault)
    raise AssertionError("after %ss the receiver holds %d of the spool's %d bytes (%d vs %d "
                         "lines)" % (timeout, len(got), len(want), got.count(b"\n"),
                                     want.count(b"\n")))


def file_operations(vault, tag):
    d = vault.path("dir-" + tag)
    os.mkdir(d)
    p = os.path.join(d, "contract.txt")
    H.write_file(p, b"terms and conditions\n" * 500)
    assert H.read_file(p) == b"terms and conditions\n" * 500
    os.rename(p, os.path.join(d, "renamed.txt"))
    os.truncate(os.path.join(d, "renamed.txt"), 10)
    os.unlink(os.path.join(d, "renamed.txt"))
    os.rmdir(d)


@pytest.mark.timeout_s(600)
def test_every_event_reaches_the_receiver_in_order(new_vault, receiver):
    ship_to(new_vault, receiver)
    new_vault.mount()
    file_operations(new_vault, "a")
    new_vault.unmount()
    got = wait_receiver_has_spool(new_vault, receiver)
    events = [json.loads(ln) for ln in got.split(b"\n")[:-1]]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    ops = {e["op"] for e in events}
    for op in ("mount", "mkdir", "create", "rename", "unlink", "rmdir", "unmount", "checkpoint"):
        assert op in ops, "no %s event at the receiver (ops: %s)" % (op, sorted(ops))
    v = receiver.verify(vault_id(new_vault))
    assert v["ok"] is True, v
    assert v["streams"][0]["events"] == len(events), v
    # The shipper's cursor sits at the end of the spool.
    with open(new_vault.audit_log + ".cursor") as f:
        cur = json.load(f)
    assert cur["offset"] == len(spool_bytes(new_vault))
    assert cur["seq"] == len(events)


@pytest.mark.timeout_s(600)
def test_receiver_down_during_mount_events_arrive_later(new_vault, receiver):
    ship_to(new_vault, receiver)
    assert receiver.stop() == 0
    new_vault.mount()
    file_operations(new_vault, "b")          # works: the spool is the record
    spooled = spool_bytes(new_vault)
    assert b'"op":"rmdir"' in spooled
    receiver.start()
    got = wait_receiver_has_spool(new_vault, receiver)   # shipped while still mounted
    assert b'"op":"rmdir"' in got
    file_operations(new_vault, "c")
    new_vault.unmount()
    wait_receiver_has_spool(new_vault, receiver)
    assert receiver.verify(vault_id(new_vault))["ok"] is True


@pytest.mark.timeout_s(600)
def test_receiver_down_at_unmount_resumes_at_next_mount(new_vault, receiver):
    ship_to(new_vault, receiver)
    new_vault.mount()
    file_operations(new_vault, "d")
    assert receiver.stop() == 0
    file_operations(new_vault, "e")
    t0 = time.time()
    new_vault.unmount()                       # the final drain is bounded
    assert time.time() - t0 < 60
    receiver.start()
    vid = vault_id(new_vault)
    assert receiver.events(vid) != spool_bytes(new_vault)   # the tail is still local
    new_vault.mount()
    wait_receiver_has_spool(new_vault, receiver)
    new_vault.unmount()
    wait_receiver_has_spool(new_vault, receiver)
    assert receiver.verify(vid)["ok"] is True


@pytest.mark.timeout_s(600)
def test_admin_and_fsck_events_reach_the_receiver_with_nothing_mounted(new_vault, receiver):
    """pactfs-admin and pactfs-fsck ship at exit (the spool is the buffer);
    `pactfs-admin audit-ship` catches up after the receiver was down."""
    v = new_vault
    ship_to(v, receiver)
    vid = vault_id(v)
    p = v.admin("folder-create", "Shipped", v.dir, "--account", H.ACCOUNT,
                "--passfile", v.passfile)
    assert p.returncode == 0, p.stderr
    got = receiver.events(vid)
    assert got == spool_bytes(v), "the admin's events did not reach the receiver at exit"
    assert b'"op":"folder-create"' in got
    p = H.run([H.binary("pactfs-fsck"), v.dir])
    assert p.returncode == 0, p.stdout + p.stderr
    got = receiver.events(vid)
    assert got == spool_bytes(v) and b'"op":"fsck-verify"' in got

    assert receiver.stop() == 0
    p = v.admin("folder-create", "WhileDown", v.dir, "--account", H.ACCOUNT,
                "--passfile", v.passfile)
    assert p.returncode == 0 and "not shipped yet" in p.stderr, p.stderr
    receiver.start()
    assert receiver.events(vid) != spool_bytes(v)
    p = v.admin("audit-ship", v.dir)
    assert p.returncode == 0, p.stderr
    assert receiver.events(vid) == spool_bytes(v)
    assert receiver.verify(vid)["ok"] is True


@pytest.mark.timeout_s(600)
def test_init_sets_up_shipping(tmp_path, receiver):
    """pactfs-admin init --audit-url/--audit-ca/--audit-cert/--audit-key writes
    the audit section; once the receiver pins the vault's root, the init's own
    sessions (sysadmin, then the data account) arrive with nothing mounted."""
    v = H.Vault(tmp_path / "shipped")
    v.init("--audit-url", receiver.url, "--audit-ca", os.path.join(receiver.pki, "ca.pem"),
           "--audit-cert", os.path.join(receiver.pki, "client.pem"),
           "--audit-key", os.path.join(receiver.pki, "client.key"))
    try:
        with open(v.conf) as f:
            text = f.read()
        assert receiver.url in text, text
        vid = re.search(r'\bid\s*=\s*"([0-9a-f]{32})"', text).group(1)
        fp = re.search(r'root_fingerprint\s*=\s*"([0-9a-f]{64})"', text).group(1)
        receiver.add_vault(vid, fp)
        p = v.admin("audit-ship", v.dir)
        assert p.returncode == 0, p.stderr
        got = receiver.events(vid)
        assert got == spool_bytes(v)
        assert b'"op":"vault-init"' in got and b'"op":"grant"' in got
        assert receiver.verify(vid)["ok"] is True
    finally:
        v.emergency_teardown()


@pytest.mark.timeout_s(600)
def test_shipping_lag_is_visible_in_status_and_metrics(new_vault, receiver):
    """pactfs status and the Prometheus textfile show the spool size, the
    unshipped bytes, the age of the oldest unshipped event and the last
    acknowledgement; the lag grows while the receiver is down and clears
    once it is back."""
    from test_degraded import status, wait_status
    v = new_vault
    ship_to(v, receiver)
    v.mount()
    st = wait_status(v, lambda s: s["audit"]["unshipped_bytes"] == 0 and
                     s["audit"]["last_ack_time"] > 0, ARRIVAL_WAIT_S)
    assert st["audit"]["unshipped_bytes"] == 0 and st["audit"]["last_ack_time"] > 0, st
    first_ack = st["audit"]["last_ack_time"]
    assert st["audit"]["oldest_unshipped_age_seconds"] == 0
    assert receiver.stop() == 0
    file_operations(v, "lag")
    time.sleep(4)
    st = wait_status(v, lambda s: s["audit"]["oldest_unshipped_age_seconds"] >= 3 and
                     s["audit"]["consecutive_failures"] > 0, 30)
    a = st["audit"]
    assert a["oldest_unshipped_age_seconds"] >= 3 and a["consecutive_failures"] > 0, a
    assert 0 < a["unshipped_bytes"] < a["spool_bytes"] <= len(spool_bytes(v)), a
    assert a["last_ack_time"] >= first_ack, a
    with open(st["metrics_file"]) as f:
        prom = f.read()
    metrics = dict(ln.split(" ", 1) for ln in prom.splitlines() if ln.startswith("pactfs_audit"))
    assert int(metrics["pactfs_audit_unshipped_bytes"]) > 0, prom
    assert int(metrics["pactfs_audit_oldest_unshipped_age_seconds"]) >= 3, prom
    assert int(metrics["pactfs_audit_last_ack_time_seconds"]) >= first_ack, prom
    assert int(metrics["pactfs_audit_ship_failures"]) > 0, prom
    p = v.pactfs("status", v.mnt)
    assert "not yet acknowledged (oldest" in p.stdout and "last acknowledgement 20" in p.stdout, \
        p.stdout
    receiver.start()
    t_back = time.time()
    st = wait_status(v, lambda s: s["audit"]["unshipped_bytes"] == 0, ARRIVAL_WAIT_S)
    assert st["audit"]["unshipped_bytes"] == 0, st
    assert st["audit"]["oldest_unshipped_age_seconds"] == 0
    assert st["audit"]["last_ack_time"] >= int(t_back) - 1
    assert st["audit"]["consecutive_failures"] == 0
    v.unmount()
