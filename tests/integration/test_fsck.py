"""pactfs-fsck: keyless verify, repair, gc and orphan scan against vaults
written through a real mount.

fsck runs here without a password, without the key-share directory and with
stdin at EOF, so any attempt to unlock would fail; its output must never
show a plaintext file name."""
import hashlib
import os
import pty
import re
import subprocess
import time

import pactfs_helpers as H

FRAG_RE = re.compile(r"^([0-9a-f]{32})\.(\d+)$")
MARKERS = ("FsckMarkerAlpha.pdf", "FsckMarkerBravo.txt")
EXIT_USAGE, EXIT_CONFIG, EXIT_ALREADY_MOUNTED, EXIT_INTEGRITY = 2, 3, 9, 14


def fsck(vault, *args, hide_keys=True):
    """Run pactfs-fsck on the vault with the key shares moved out of reach."""
    keys = os.path.join(vault.dir, "keys")
    hidden = keys + ".hidden-from-fsck"
    moved = hide_keys and os.path.isdir(keys)
    if moved:
        os.rename(keys, hidden)
    try:
        p = H.run([H.binary("pactfs-fsck")] + [str(a) for a in args] + [vault.dir],
                  env=vault.env, input_bytes=b"")
    finally:
        if moved:
            os.rename(hidden, keys)
    assert_no_names(p)
    return p


def assert_no_names(p):
    for marker in MARKERS + (H.FOLDER,):
        stem = marker.split(".")[0]
        assert stem not in p.stdout and stem not in p.stderr, (
            "fsck printed the plaintext name %r:\n%s%s" % (marker, p.stdout, p.stderr))


def fragments(vault):
    """{(chunk id, frag index): path} over every store."""
    out = {}
    for i in range(3):
        for path in H.fragment_files(vault.store_dir(i)):
            m = FRAG_RE.match(os.path.basename(path))
            if m:
                out[(m.group(1), int(m.group(2)))] = path
    return out


def by_chunk(frags):
    chunks = {}
    for (cid, idx), path in frags.items():
        chunks.setdefault(cid, {})[idx] = path
    return chunks


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.fstat(f.fileno()).st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x5A]))


def populate(vault):
    files = {
        vault.path(MARKERS[0]): H.seeded_bytes(901, 3 * H.CHUNK + 17),   # four chunks
        vault.path(MARKERS[1]): H.seeded_bytes(902, 5000),
    }
    for p, data in files.items():
        H.write_file(p, data)
    return files


def check_files(files):
    for p, data in files.items():
        H.assert_same_bytes(H.read_file(p), data, p)


def summary_counts(out):
    m = re.search(r"(\d+) chunks checked .*: (\d+) healthy, (\d+) repairable, "
                  r"(\d+) unrecoverable", out)
    assert m, "no summary line in fsck output:\n" + out
    return tuple(int(x) for x in m.groups())


def test_healthy_vault_exits_0_without_password_or_names(vault):
    populate(vault)
    vault.unmount()
    p = fsck(vault)
    assert p.returncode == 0, p.stdout + p.stderr
    checked, healthy, repairable, lost = summary_counts(p.stdout)
    assert checked == healthy == 5 and repairable == lost == 0, p.stdout


def test_verify_runs_while_mounted_but_repair_is_refused(vault):
    populate(vault)
    os.sync()
    p = fsck(vault)
    assert p.returncode == 0, p.stdout + p.stderr
    for mode in ("--repair", "--gc", "--delete-orphans"):
        p = fsck(vault, mode)
        assert p.returncode == EXIT_ALREADY_MOUNTED, (mode, p.stdout, p.stderr)
        assert "mounted" in p.stderr, p.stderr


def test_missing_and_corrupt_fragments_reported_then_repaired(vault):
    files = populate(vault)
    vault.unmount()
    frags = fragments(vault)
    chunks = sorted(cid for cid, parts in by_chunk(frags).items() if len(parts) == 3)
    assert len(chunks) >= 2, "expected at least two chunks with three fragments"
    gone_id, bad_id = chunks[0], chunks[1]
    gone, bad = frags[(gone_id, 0)], frags[(bad_id, 2)]
    want = {gone: sha256_of(gone), bad: sha256_of(bad)}
    os.unlink(gone)
    flip_byte(bad)

    p = fsck(vault)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    gone_line = [ln for ln in lines if gone_id in ln]
    bad_line = [ln for ln in lines if bad_id in ln]
    assert gone_line and "fragment 0" in gone_line[0] and "missing" in gone_line[0], p.stdout
    assert bad_line and "fragment 2" in bad_line[0] and "corrupt" in bad_line[0], p.stdout
    assert summary_counts(p.stdout)[2:] == (2, 0), p.stdout

    p = fsck(vault, "--repair")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "repaired 2 of 2" in p.stdout, p.stdout
    for path, digest in want.items():
        assert os.path.exists(path), "repair did not bring back " + path
        assert sha256_of(path) == digest, "repaired fragment %s differs from the original" % path

    p = fsck(vault)
    assert p.returncode == 0, p.stdout + p.stderr
    vault.mount()
    check_files(files)


def test_two_of_three_fragments_lost_is_unrecoverable(vault):
    files = populate(vault)
    vault.unmount()
    frags = fragments(vault)
    victim = sorted(cid for cid, parts in by_chunk(frags).items() if len(parts) == 3)[0]
    os.unlink(frags[(victim, 0)])
    os.unlink(frags[(victim, 1)])

    for args in ((), ("--repair",)):
        p = fsck(vault, *args)
        assert p.returncode == EXIT_INTEGRITY, (args, p.stdout, p.stderr)
        line = [ln for ln in p.stdout.splitlines() if victim in ln]
        assert line and line[0].startswith("unrecoverable"), p.stdout
        assert summary_counts(p.stdout)[3] == 1, p.stdout
    # A file whose chunk is lost reads as EIO, never as wrong bytes; the other reads back.
    vault.mount()
    failed = 0
    for path, data in files.items():
        try:
            got = H.read_file(path)
        except OSError as e:
            assert e.errno == 5, "%s: %s" % (path, e)
            failed += 1
            continue
        H.assert_same_bytes(got, data, path)
    assert failed == 1, "expected exactly one file to lose a chunk"


def test_missing_endpoint_directory_rebuilt_by_repair(vault):
    files = populate(vault)
    vault.unmount()
    before = {k: sha256_of(v) for k, v in fragments(vault).items() if v.startswith(vault.store_dir(1))}
    assert before, "endpoint 1 holds no fragments"
    H.rmtree(vault.store_dir(1))

    p = fsck(vault)
    assert p.returncode == EXIT_INTEGRITY, p.stdout + p.stderr
    assert "missing" in p.stdout and not os.path.exists(vault.store_dir(1))

    # A replacement is not rebuilt before a sysadmin has marked it (endpoint
    # identity): fsck never writes into an endpoint it cannot identify.
    p = fsck(vault, "--repair")
    assert p.returncode != 0 and "endpoint-mark" in p.stderr, p.stdout + p.stderr
    assert not os.path.exists(vault.store_dir(1))
    p = vault.admin("endpoint-mark", "--endpoint", "1", "--account", H.ACCOUNT + "-admin",
                    "--passfile", vault.passfile, vault.dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "endpoint 1 (" in p.stdout and "marked" in p.stdout, p.stdout

    p = fsck(vault, "--repair")
    assert p.returncode == 0, p.stdout + p.stderr
    after = {k: sha256_of(v) for k, v in fragments(vault).items() if v.startswith(vault.store_dir(1))}
    # standalone fragments come back byte for byte; fragments that were in
    # a pack (small chunks) come back standalone (repair never writes packs)
    assert set(before.items()) <= set(after.items()), "endpoint 1 was not rebuilt"
    assert len(after) > len(before), "the packed small file's fragment was not rebuilt"
    vault.mount()
    check_files(files)


def plant(vault, store, name, age_s=0):
    d = os.path.join(vault.store_dir(store), name[:2])
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(b"not a fragment of this vault")
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_orphans_listed_and_only_old_ones_deleted(vault):
    populate(vault)
    vault.unmount()
    real = fragments(vault)
    old = plant(vault, 2, "ab" * 16 + ".0", age_s=3600)
    young = plant(vault, 0, "cd" * 16 + ".1")
    # A real chunk id with a fragment index the record does not place here.
    cid = sorted(by_chunk(real))[0]
    misplaced = plant(vault, 0, cid + ".9", age_s=3600)

    p = fsck(vault, "--orphans")
    assert p.returncode == 0, p.stdout + p.stderr
    for path in (old, young, misplaced):
        assert os.path.basename(path) in p.stdout, p.stdout
    assert "orphans: 3 found" in p.stdout, p.stdout
    for key, path in real.items():
        assert os.path.basename(path) not in p.stdout, "a live fragment was called an orphan"

    p = fsck(vault, "--delete-orphans")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not os.path.exists(old) and not os.path.exists(misplaced)
    assert os.path.exists(young), "an orphan younger than 10 minutes was deleted"
    assert all(os.path.exists(path) for path in real.values()), "a live fragment was deleted"
    assert fsck(vault).returncode == 0


def test_gc_deletes_fragments_of_removed_files(vault):
    keep = vault.path(MARKERS[1])
    H.write_file(keep, H.seeded_bytes(903, 200000))
    vault.unmount()
    kept = set(fragments(vault))
    vault.mount()
    doomed = vault.path(MARKERS[0])
    H.write_file(doomed, H.seeded_bytes(904, 2 * H.CHUNK))
    vault.unmount()
    doomed_frags = set(fragments(vault)) - kept
    assert doomed_frags, "writing a file made no fragments"
    vault.mount()
    os.unlink(doomed)
    vault.unmount()

    p = fsck(vault, "--gc")
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"^gc: \d+ queued chunks? deleted", p.stdout, re.M), p.stdout
    left = set(fragments(vault))
    assert not (doomed_frags & left), "fragments of the removed file survived --gc"
    assert kept <= left, "--gc deleted a live fragment"
    p = fsck(vault, "--orphans")
    assert p.returncode == 0 and "orphans: 0 found" in p.stdout, p.stdout
    vault.mount()
    H.assert_same_bytes(H.read_file(keep), H.seeded_bytes(903, 200000), keep)


def test_progress_bar_on_a_terminal(vault):
    populate(vault)
    vault.unmount()
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([H.binary("pactfs-fsck"), vault.dir], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, env=vault.env)
        os.close(slave)
        slave = None
        out, _ = proc.communicate(timeout=H.CMD_TIMEOUT_S)
        bar = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            bar += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0, out
    assert b"5/5 chunks 100%" in bar and b"MiB/s" in bar, bar

    p = fsck(vault, "--quiet")
    assert p.returncode == 0 and "chunks 100%" not in p.stderr, p.stderr


def test_usage_and_config_errors(new_vault, tmp_path):
    p = H.run([H.binary("pactfs-fsck")], env=new_vault.env)
    assert p.returncode == EXIT_USAGE, p.stderr
    p = H.run([H.binary("pactfs-fsck"), "--bogus", new_vault.dir], env=new_vault.env)
    assert p.returncode == EXIT_USAGE, p.stderr
    p = H.run([H.binary("pactfs-fsck"), str(tmp_path / "no-such-vault")], env=new_vault.env)
    assert p.returncode == EXIT_CONFIG, p.stderr
    assert "pactfs.conf" in p.stderr, p.stderr
    p = H.run([H.binary("pactfs-fsck"), "--help"], env=new_vault.env)
    assert p.returncode == 0 and "--repair" in p.stdout
    p = fsck(new_vault)
    assert p.returncode == 0 and summary_counts(p.stdout)[0] == 0, p.stdout
