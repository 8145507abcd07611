"""pactfs with its three storage endpoints on real S3 servers: Ceph radosgw
(tests/s3/start-rgw.sh: one monitor, one memstore OSD, one radosgw per port,
HTTPS with a test CA, SigV4 enforced), mounted through real FUSE.

The cluster is started once per session; if it cannot start, the fixture
fails with the reason (no skip).  Every vault gets its own three buckets.
"""
import errno
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

import pactfs_helpers as H
from test_pg import pg  # noqa: F401  (the session's PostgreSQL)

HERE = os.path.dirname(os.path.abspath(__file__))
S3_SCRIPTS = os.path.join(os.path.dirname(HERE), "s3")
REGION = "us-east-1"
N_ENDPOINTS = 3
START_TIMEOUT_S = 240
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rgw:
    """The running cluster: ports, keys, CA, and radosgw pids by port."""

    def __init__(self, base, env):
        self.base = base
        self.env = env
        self.ports = [int(p) for p in env["S3_PORTS"].split()]
        self.access_key = env["S3_ACCESS_KEY"]
        self.secret_key = env["S3_SECRET_KEY"]
        self.ca = env["S3_CA"]
        self.pids = {p: int(env["RGW_PID_%d" % p]) for p in self.ports}

    def url(self, i):
        return "https://127.0.0.1:%d" % self.ports[i]

    def kill(self, i):
        pid = self.pids[self.ports[i]]
        os.kill(pid, 9)
        assert H.wait_pid_gone(pid, 10), "radosgw pid %d did not die" % pid
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def restart(self, i):
        port = self.ports[i]
        p = H.run([os.path.join(S3_SCRIPTS, "restart-rgw.sh"), self.base, str(port)],
                  timeout=60)
        assert p.returncode == 0, "radosgw on %d did not restart:\n%s" % (port, p.stderr)
        m = re.search(r"RGW_PID_%d=(\d+)" % port, p.stdout)
        self.pids[port] = int(m.group(1))

    def alive(self, i):
        return H.pid_alive(self.pids[self.ports[i]])

    # A plain signed request with the curl command-line tool, independent of
    # pactfs's own S3 code.
    def curl(self, i, method, path, query="", out_bytes=True):
        url = self.url(i) + path + ("?" + query if query else "")
        argv = ["curl", "-sS", "--max-time", "60", "--cacert", self.ca,
                "--aws-sigv4", "aws:amz:%s:s3" % REGION,
                "-u", "%s:%s" % (self.access_key, self.secret_key),
                "-H", "x-amz-content-sha256: " + EMPTY_SHA256,
                "-X", method, "-w", "\n%{http_code}", url]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        assert p.returncode == 0, "curl %s %s failed: %s" % (method, url, p.stderr.decode())
        body, _, code = p.stdout.rpartition(b"\n")
        return int(code), body

    def make_bucket(self, i, bucket):
        code, body = self.curl(i, "PUT", "/" + bucket)
        assert code == 200, "cannot create bucket %s: %d %s" % (bucket, code, body[:300])

    def list_objects(self, i, bucket):
        """Every (key, size) in a bucket, following continuation tokens."""
        out, token = [], None
        while True:
            q = "list-type=2"
            if token:
                q = "continuation-token=%s&%s" % (uri_encode(token), q)
            code, body = self.curl(i, "GET", "/" + bucket, q)
            assert code == 200, "list %s: %d %s" % (bucket, code, body[:300])
            root = ET.fromstring(body)
            for c in root.findall(S3NS + "Contents"):
                out.append((c.find(S3NS + "Key").text, int(c.find(S3NS + "Size").text)))
            if root.findtext(S3NS + "IsTruncated") != "true":
                return out
            token = root.findtext(S3NS + "NextContinuationToken")

    def get_object(self, i, bucket, key):
        code, body = self.curl(i, "GET", "/%s/%s" % (bucket, key))
        assert code == 200, "GET %s/%s: %d" % (bucket, key, code)
        return body


def uri_encode(s):
    from urllib.parse import quote
    return quote(s, safe="-_.~")


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rgw") / "cluster")
    ports = []
    while len(ports) < N_ENDPOINTS:
        p = free_port()
        if p not in ports:
            ports.append(p)
    t0 = time.monotonic()
    try:
        p = subprocess.run([os.path.join(S3_SCRIPTS, "start-rgw.sh"), base] + list(map(str, ports)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        subprocess.run([os.path.join(S3_SCRIPTS, "stop-rgw.sh"), base], timeout=60)
        pytest.fail("radosgw did not start within %ds (tests/s3/start-rgw.sh)" % START_TIMEOUT_S)
    if p.returncode != 0:
        pytest.fail("radosgw could not start (tests/s3/start-rgw.sh exit %d):\n%s"
                    % (p.returncode, p.stderr.decode(errors="replace")[-4000:]))
    env = {}
    for line in p.stdout.decode().splitlines():
        k, _, v = line.partition("=")
        env[k] = shlex.split(v)[0] if v else ""
    print("\nradosgw cluster with %d endpoints started in %.1f s"
          % (N_ENDPOINTS, time.monotonic() - t0))
    r = Rgw(base, env)
    yield r
    subprocess.run([os.path.join(S3_SCRIPTS, "stop-rgw.sh"), base], timeout=60)


def s3_endpoints_conf(rgw, buckets, secret=None, ca=None, bad_index=None):
    entries = []
    for i, b in enumerate(buckets):
        use_secret = secret if (secret and (bad_index is None or bad_index == i)) else rgw.secret_key
        use_ca = ca if (ca and (bad_index is None or bad_index == i)) else rgw.ca
        entries.append('{ type = "s3"; url = "%s"; bucket = "%s"; region = "%s"; '
                       'access_key = "%s"; secret_key = "%s"; ca_file = "%s"; }'
                       % (rgw.url(i), b, REGION, rgw.access_key, use_secret, use_ca))
    return "endpoints = ( " + ",\n    ".join(entries) + " );"


def rewrite_endpoints(vault, text):
    with open(vault.conf) as f:
        conf = f.read()
    new, n = re.subn(r"^endpoints = \(.*?\);", lambda m: text, conf, flags=re.S | re.M)
    assert n == 1, "no endpoints section in %s" % vault.conf
    with open(vault.conf, "w") as f:
        f.write(new)


class S3Vault(H.Vault):
    """A vault made by pactfs-admin init whose endpoints were rewritten to
    three fresh buckets, one per radosgw."""

    def setup_s3(self, rgw):
        self.rgw = rgw
        tag = uuid.uuid4().hex[:12]
        self.buckets = ["pactfs-%s-%d" % (tag, i) for i in range(N_ENDPOINTS)]
        for i, b in enumerate(self.buckets):
            rgw.make_bucket(i, b)
        self.use_endpoints()
        H.rmtree(os.path.join(self.dir, "stores"))   # nothing may be stored there
        self.mark_endpoints()

    def mark_endpoints(self, *extra):
        """New buckets: the sysadmin writes their identity markers."""
        p = self.admin("endpoint-mark", *extra, "--account", H.ACCOUNT + "-admin",
                       "--passfile", self.passfile, self.dir)
        assert p.returncode == 0, p.stdout + p.stderr

    def use_endpoints(self, **kw):
        rewrite_endpoints(self, s3_endpoints_conf(self.rgw, self.buckets, **kw))

    def objects(self, i):
        return self.rgw.list_objects(i, self.buckets[i])


@pytest.fixture
def s3vault(tmp_path, rgw, request):
    for i in range(N_ENDPOINTS):
        if not rgw.alive(i):
            rgw.restart(i)
    v = S3Vault(tmp_path)
    v.init()
    v.setup_s3(rgw)
    yield v
    try:
        if H.is_mounted(v.mnt) or v.daemon_pid or v.fg_proc:
            v.unmount(check=True)
    finally:
        v.emergency_teardown()
    reports = H.sanitizer_reports(v.logdir)
    if reports:
        pytest.fail("sanitizer reports from pactfs processes:\n" + "\n".join(reports))


SIZES = [0, 1, 4095, H.CHUNK - 1, H.CHUNK, 3 * H.CHUNK + 5, 10 * H.CHUNK + 12345]


def populate(v, prefix="f"):
    files = {}
    for i, n in enumerate(SIZES):
        p = v.path("%s%d.bin" % (prefix, i))
        files[p] = H.seeded_bytes(500 + i, n)
        H.write_file(p, files[p])
    return files


def check_all(files):
    for p, data in files.items():
        H.assert_same_bytes(H.read_file(p), data, p)


def test_files_round_trip_through_remount(s3vault):
    s3vault.mount()
    files = populate(s3vault)
    s3vault.remount()
    check_all(files)
    for i in range(N_ENDPOINTS):
        objs = s3vault.objects(i)
        assert (H.ENDPOINT_MARKER, ) == tuple(k for k, _ in objs if k == H.ENDPOINT_MARKER), \
            "bucket %s has no identity marker" % s3vault.buckets[i]
        objs = [(k, sz) for k, sz in objs if k != H.ENDPOINT_MARKER]
        assert objs, "bucket %s on endpoint %d holds no fragments" % (s3vault.buckets[i], i)
        assert all(re.fullmatch(r"[0-9a-f]{32}\.(\d+|p)", k) for k, _ in objs), objs[:5]
    assert not os.path.exists(os.path.join(s3vault.dir, "stores")), "data went to local dirs"


def test_no_plaintext_in_any_bucket(s3vault):
    marker = b"PACTFS-S3-PLAINTEXT-MARKER-7d1e"
    name = "secret-contract-name.txt"
    s3vault.mount()
    body = (marker + b" clause ") * 40000     # ~1.5 MiB: several chunks
    H.write_file(s3vault.path(name), body)
    s3vault.unmount()
    seen = 0
    for i in range(N_ENDPOINTS):
        for key, size in s3vault.objects(i):
            data = s3vault.rgw.get_object(i, s3vault.buckets[i], key)
            assert len(data) == size
            assert marker not in data, "plaintext marker in %s/%s" % (s3vault.buckets[i], key)
            assert name.encode() not in data and name.encode() not in key.encode()
            seen += 1
    assert seen >= N_ENDPOINTS, "only %d objects in the buckets" % seen


def write_errno(path, data):
    """errno of writing and fsyncing and closing a file (None if it worked)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return e.errno
    err = None
    try:
        os.write(fd, data)
        os.fsync(fd)
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    return err


@pytest.mark.timeout_s(400)
def test_one_radosgw_down_reads_with_parity_writes_degrade_then_recover(s3vault):
    rgw = s3vault.rgw
    s3vault.mount()
    files = populate(s3vault)
    s3vault.unmount()
    rgw.kill(1)
    try:
        # Down at mount time: the mount warns and reads rebuild from parity.
        p = s3vault.mount()
        assert "endpoint 1 (" in p.stderr and "is offline" in p.stderr, p.stderr
        check_all(files)
        # Degraded write (coding.min_write_fragments defaults to k): stored
        # on the two live endpoints, the missing fragments left for repair.
        down = H.seeded_bytes(9, 2 * H.CHUNK)
        e = write_errno(s3vault.path("while-down.bin"), down)
        assert e is None, "degraded write with one endpoint down failed: %s" % H.errname(e)
        s3vault.unmount()
    finally:
        rgw.restart(1)
    # Endpoint back: writes succeed and everything reads back.
    s3vault.mount()
    new = H.seeded_bytes(10, 2 * H.CHUNK + 7)
    H.write_file(s3vault.path("after-restart.bin"), new, fsync=True)
    s3vault.remount()
    check_all(files)
    H.assert_same_bytes(H.read_file(s3vault.path("after-restart.bin")), new, "after restart")
    H.assert_same_bytes(H.read_file(s3vault.path("while-down.bin")), down, "degraded write")


@pytest.mark.timeout_s(400)
def test_radosgw_killed_while_mounted(s3vault):
    rgw = s3vault.rgw
    s3vault.mount()
    files = populate(s3vault)
    s3vault.remount()           # nothing left in the read cache
    rgw.kill(2)
    try:
        check_all(files)        # fragments on endpoint 3 now fail: parity rebuilds
        during = H.seeded_bytes(11, H.CHUNK + 1)
        e = write_errno(s3vault.path("during-outage.bin"), during)
        assert e is None, "degraded write during the outage failed: %s" % H.errname(e)
    finally:
        rgw.restart(2)
    time.sleep(6)               # past the endpoint's fail-fast hold
    data = H.seeded_bytes(12, H.CHUNK + 1)
    H.write_file(s3vault.path("after-outage.bin"), data, fsync=True)
    s3vault.remount()
    H.assert_same_bytes(H.read_file(s3vault.path("after-outage.bin")), data, "after outage")
    H.assert_same_bytes(H.read_file(s3vault.path("during-outage.bin")), during, "degraded write")
    check_all(files)


def test_empty_bucket_in_place_of_an_endpoint_is_never_written(s3vault):
    """Endpoint identity on S3: a fresh bucket configured in place of
    endpoint 2 holds no marker: offline, nothing written to it; marking it
    (a replacement) makes it used again and fsck rebuilds it."""
    s3vault.mount()
    files = populate(s3vault)
    s3vault.unmount()
    s3vault.buckets[2] = s3vault.buckets[2] + "-new"
    s3vault.rgw.make_bucket(2, s3vault.buckets[2])
    s3vault.use_endpoints()
    p = s3vault.mount()
    assert "endpoint 2 (" in p.stderr and "no endpoint marker" in p.stderr, p.stderr
    st = json.loads(s3vault.pactfs("status", "--json", s3vault.mnt).stdout)
    assert st["endpoints"][2]["identity"] == "unmarked", st
    data = H.seeded_bytes(13, H.CHUNK + 3)
    H.write_file(s3vault.path("degraded.bin"), data, fsync=True)
    check_all(files)
    s3vault.unmount()
    assert s3vault.objects(2) == [], "pactfs wrote into an unmarked bucket"
    s3vault.mark_endpoints("--endpoint", "2")
    p = H.run([H.binary("pactfs-fsck"), "-q", "--repair", s3vault.dir], env=s3vault.env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(s3vault.objects(2)) > 3
    s3vault.mount()
    check_all(files)
    H.assert_same_bytes(H.read_file(s3vault.path("degraded.bin")), data, "after repair")


def test_wrong_secret_key_is_a_clear_error(s3vault):
    s3vault.use_endpoints(secret="not-the-right-secret-key", bad_index=1)
    p = s3vault.mount(check=False)
    assert p.returncode != 0, "mounted with a wrong secret key"
    assert "secret key for endpoint 1 is wrong" in p.stderr, p.stderr
    assert not H.is_mounted(s3vault.mnt)


def test_wrong_ca_is_refused(s3vault, tmp_path):
    other = tmp_path / "other-ca"
    other.mkdir()
    H.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "1", "-subj", "/CN=not the test CA", "-keyout",
           str(other / "ca.key"), "-out", str(other / "ca.crt")], check=True)
    s3vault.use_endpoints(ca=str(other / "ca.crt"))
    p = s3vault.mount(check=False)
    assert p.returncode != 0, "mounted although no endpoint's certificate can be verified"
    assert "TLS" in p.stderr and "ca_file" in p.stderr, p.stderr
    assert not H.is_mounted(s3vault.mnt)


@pytest.mark.timeout_s(600)
def test_copy_100_mib_throughput(s3vault, tmp_path):
    src = str(tmp_path / "big.src")
    want = H.write_stream(src, 77, 100 * H.CHUNK)
    s3vault.mount()
    t0 = time.monotonic()
    H.run(["cp", src, s3vault.path("big.bin")], check=True, timeout=500)
    fd = os.open(s3vault.path("big.bin"), os.O_RDONLY)
    try:
        os.fsync(fd)            # the copy's fragments are on the endpoints
    finally:
        os.close(fd)
    t_write = time.monotonic() - t0
    s3vault.unmount()
    t_unmount = time.monotonic() - t0 - t_write
    s3vault.mount()
    t0 = time.monotonic()
    got = H.sha256_file(s3vault.path("big.bin"))
    t_read = time.monotonic() - t0
    assert got == want, "100 MiB file read back differently"
    print("\n100 MiB over 3 radosgw endpoints: cp+fsync %.1f s (%.1f MiB/s), then unmount "
          "%.1f s; cold read %.1f s (%.1f MiB/s)"
          % (t_write, 100 / t_write, t_unmount, t_read, 100 / t_read))


# ------------------------------------------- three workstations on one vault

def tree_of(root):
    """{relative path: sha256 of content} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def office_work(w, i, rounds=6):
    """One workstation's share of the day: files in its own directory and
    in a shared one, written, renamed, deleted; one rewrite of a file
    everybody rewrites."""
    own = w.path("ws%d" % i)
    shared = w.path("shared")
    os.makedirs(own, exist_ok=True)
    os.makedirs(shared, exist_ok=True)
    for k in range(rounds):
        H.write_file(os.path.join(own, "f%d" % k), H.seeded_bytes(100 * i + k, 3000 + 997 * k))
        H.write_file(os.path.join(shared, "s%d-%d" % (i, k)), b"ws%d round %d\n" % (i, k))
        if k % 2:
            os.rename(os.path.join(own, "f%d" % (k - 1)), os.path.join(own, "r%d" % (k - 1)))
            os.rename(os.path.join(shared, "s%d-%d" % (i, k)),
                      os.path.join(shared, "t%d-%d" % (i, k)))
        if k % 4 == 3:
            os.unlink(os.path.join(own, "f%d" % k))
            os.unlink(os.path.join(shared, "s%d-%d" % (i, k - 1)))
    H.write_file(os.path.join(shared, "minutes.txt"), b"minutes as ws%d saved them\n" % i)


def test_three_workstations_and_a_backup_on_radosgw(tmp_path, rgw, pg):  # noqa: F811
    """Three independent mounts (own configuration, spool and caches, own
    processes) of one vault on PostgreSQL and three radosgw over TLS work
    at once; every mount then sees the same tree and bytes; inode numbers
    are the store's, the same everywhere and after a remount; a backup
    account's read-only mount reads while the others write."""
    from test_desktop import BOB, add_user
    from test_multi import Workstation, until
    for i in range(N_ENDPOINTS):
        if not rgw.alive(i):
            rgw.restart(i)
    v = S3Vault(tmp_path)
    v.db = pg.create_database()
    v.init("--postgresql", pg.conninfo(v.db))
    v.setup_s3(rgw)
    bob = add_user(v)
    v.admin("grant", H.FOLDER, BOB, "read", v.dir, "--passfile", v.passfile, check=True)
    ws = [v, Workstation(v, "ws2"), Workstation(v, "ws3")]
    mounts = []
    try:
        for w in ws:
            w.mount()
            mounts.append(w)
        errors = []

        def run(w, i):
            try:
                office_work(w, i)
            except Exception as e:   # reported below, with the workstation
                errors.append("ws%d: %r" % (i, e))
        threads = [threading.Thread(target=run, args=(w, i + 1)) for i, w in enumerate(ws)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        work_s = time.monotonic() - t0
        assert not errors, errors
        # every workstation converges on one tree with the same bytes
        trees = {}

        def same_everywhere():
            trees.update({w.mnt: tree_of(w.folder) for w in ws})
            return len({json.dumps(t, sort_keys=True) for t in trees.values()}) == 1
        conv_s = until(same_everywhere, 5.0)
        tree = trees[v.mnt]
        for i in (1, 2, 3):
            assert {"ws%d/%s" % (i, n) for n in ("f1", "f5", "r0", "r2", "r4")} <= set(tree), \
                sorted(tree)
            assert "ws%d/f3" % i not in tree and "ws%d/f0" % i not in tree
            assert {"shared/t%d-1" % i, "shared/s%d-0" % i} <= set(tree)
            assert "shared/s%d-2" % i not in tree and "shared/s%d-1" % i not in tree
        minutes = [p for p in tree if p.startswith("shared/minutes")]
        assert "shared/minutes.txt" in minutes, minutes
        print("3 workstations: %d files, work %.1f s, same tree everywhere after %.2f s"
              % (len(tree), work_s, conv_s))
        # inode numbers come from the store: one file, one number, anywhere
        inos = {os.stat(os.path.join(w.folder, "ws1", "r0")).st_ino for w in ws}
        assert len(inos) == 1, inos
        ws[1].unmount()
        ws[1].mount()
        assert os.stat(os.path.join(ws[1].folder, "ws1", "r0")).st_ino in inos
        assert tree_of(ws[1].folder) == tree

        # the backup account reads everything while alice keeps writing
        bob.mount(extra=["-r"])
        mounts.append(bob)
        stop = threading.Event()
        seen, problems = [], []

        def backup():
            while not stop.is_set():
                try:
                    seen.append(len(tree_of(bob.folder)))
                except FileNotFoundError:
                    pass   # a file renamed between listing and reading
                except OSError as e:
                    problems.append(repr(e))
        th = threading.Thread(target=backup)
        th.start()
        k, t0 = 0, time.monotonic()
        while len(seen) < 3 and time.monotonic() - t0 < 60:   # alice writes meanwhile
            H.write_file(ws[2].path("ws3", "late%d" % k), H.seeded_bytes(900 + k, 50000))
            k += 1
        stop.set()
        th.join(60)
        assert not problems, problems[:5]
        assert len(seen) >= 3 and k >= 1, (seen, k)
        until(lambda: "ws3/late%d" % (k - 1) in tree_of(bob.folder), 5.0)
        assert tree_of(bob.folder) == tree_of(v.folder)
        assert H.errno_of(H.write_file, os.path.join(bob.folder, "x"), b"x") == errno.EROFS
    finally:
        reports = []
        for m in reversed(mounts):
            reports += H.teardown(m)
        assert not reports, reports
