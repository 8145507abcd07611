#!/usr/bin/python3
"""Several workstations on one PostgreSQL vault: metadata operations per
second and `tar x` with 1, 2 and 4 concurrent mounts (issue 10).

    PACTFS_BUILD=$PWD/build/release sudo -E bench/multi_pg.py [--files N] [--mounts 1,2,4]

Starts a throwaway PostgreSQL with TLS on 127.0.0.1 (tests/pg/pg_tls.py),
makes one vault on it (three local-directory endpoints) and, for each
count N, mounts N independent "workstations" (each its own copy of the
configuration, spool and caches, its own pactfs process, as in
tests/integration/test_multi.py).  Every mount works in its own directory
of the folder, all at once:

  create   N x FILES empty files (open O_CREAT, close)
  stat     every one of them, from the mount that made it
  rename   every one, within its directory
  unlink   every one
  tar x    a tar of 40 directories x 10 files of 4 KiB, extracted by each
           mount into its own directory

Figures are aggregates over all mounts (ops/s summed, tar: files/s), with
the ratio to one mount.  Prints a markdown table; everything is removed at
the end (mounts unmounted, the daemons and PostgreSQL this script started
stopped).  Root is needed for the mounts and for PostgreSQL.
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "pg"))

import pactfs_helpers as H  # noqa: E402
from pg_tls import PgTls  # noqa: E402
from test_multi import Workstation  # noqa: E402


def make_tar(path):
    with tarfile.open(path, "w") as t:
        for d in range(40):
            for f in range(10):
                data = H.seeded_bytes(d * 10 + f, 4096)
                ti = tarfile.TarInfo("tree/d%02d/f%02d" % (d, f))
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return 400


def parallel(fns):
    """Run fns at once; wall seconds."""
    errs = []

    def wrap(fn):
        try:
            fn()
        except Exception as e:  # reported after the phase
            errs.append(repr(e))
    ts = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise RuntimeError("; ".join(errs[:3]))
    return time.monotonic() - t0


def phases(mounts, nfiles, tarball, ntar):
    dirs = []
    for i, w in enumerate(mounts):
        d = w.path("bench-ws%d" % i)
        os.makedirs(d)
        dirs.append(d)

    def create(d):
        for k in range(nfiles):
            os.close(os.open(os.path.join(d, "f%d" % k), os.O_CREAT | os.O_WRONLY, 0o644))

    def stat(d):
        for k in range(nfiles):
            os.stat(os.path.join(d, "f%d" % k))

    def rename(d):
        for k in range(nfiles):
            os.rename(os.path.join(d, "f%d" % k), os.path.join(d, "g%d" % k))

    def unlink(d):
        for k in range(nfiles):
            os.unlink(os.path.join(d, "g%d" % k))

    def untar(d):
        subprocess.run(["tar", "xf", tarball, "-C", d], check=True)

    out = {}
    total = nfiles * len(mounts)
    for name, fn in (("create", create), ("stat", stat), ("rename", rename),
                     ("unlink", unlink)):
        out[name] = total / parallel([lambda d=d, fn=fn: fn(d) for d in dirs])
    out["tar x"] = ntar * len(mounts) / parallel([lambda d=d: untar(d) for d in dirs])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300, help="files per mount and phase")
    ap.add_argument("--mounts", default="1,2,4", help="mount counts, comma-separated")
    a = ap.parse_args()
    counts = [int(x) for x in a.mounts.split(",")]
    base = tempfile.mkdtemp(prefix="pactfs-multi-bench.")
    pg = PgTls.start()
    mounted = []
    results = {}
    try:
        tarball = os.path.join(base, "tree.tar")
        ntar = make_tar(tarball)
        for n in counts:
            v = H.Vault(os.path.join(base, "n%d" % n))
            v.db = pg.create_database()
            v.init("--postgresql", pg.conninfo(v.db))
            ws = [v] + [Workstation(v, "ws%d" % i) for i in range(2, n + 1)]
            for w in ws:
                w.mount()
                mounted.append(w)
            results[n] = phases(ws, a.files, tarball, ntar)
            for w in ws:
                w.unmount()
                mounted.remove(w)
            print("%d mount(s): %s" % (n, ", ".join("%s %.0f/s" % kv
                                                     for kv in results[n].items())),
                  file=sys.stderr)
    finally:
        for w in mounted:
            H.teardown(w)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    one = results.get(counts[0])
    print("| operation (aggregate) | " + " | ".join("%d mount%s" % (n, "s" if n > 1 else "")
                                                   for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for op in ("create", "stat", "rename", "unlink", "tar x"):
        unit = "files/s" if op == "tar x" else "ops/s"
        cells = ["%.0f %s (%.2fx)" % (results[n][op], unit, results[n][op] / one[op])
                 for n in counts]
        print("| %s | %s |" % (op, " | ".join(cells)))
    print("\n%d files per mount and phase; tar: %d files of 4 KiB per mount; "
          "load average at the end %.1f %.1f %.1f (%d cores)"
          % (a.files, ntar, load[0], load[1], load[2], os.cpu_count()))


if __name__ == "__main__":
    main()
