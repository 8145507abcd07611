"""Nothing readable leaves memory: a unique marker written as file content,
file and directory names, an xattr value and a symlink target appears in no
file of the vault directory (stores, meta.db and its WAL, keys, config)."""
import os
import secrets

import pytest

import pactfs_helpers as H


def needles(marker):
    m = marker.encode()
    return [m, m.hex().encode(), m.hex().upper().encode(), marker.encode("utf-16-le")]


def scan(vault, marker, skip_audit):
    """Files under the vault dir that contain the marker in any encoding."""
    hits = []
    for root, _, files in os.walk(vault.dir):
        for n in files:
            p = os.path.join(root, n)
            if skip_audit and os.path.abspath(p) == os.path.abspath(vault.audit_log):
                continue
            with open(p, "rb") as f:
                data = f.read()
            for nd in needles(marker):
                if nd in data:
                    hits.append("%s (as %r...)" % (p, nd[:16]))
    return hits


def listed_vault_files(vault):
    out = []
    for root, _, files in os.walk(vault.dir):
        out += [os.path.relpath(os.path.join(root, n), vault.dir) for n in files]
    return sorted(out)


@pytest.mark.timeout_s(600)
def test_no_plaintext_marker_anywhere_in_vault(vault):
    name_marker = "pfsname" + secrets.token_hex(10)
    data_marker = "pfsdata" + secrets.token_hex(10)
    content = ((data_marker + " confidential clause\n") * 60000).encode()   # ~2.5 MiB
    d = vault.path(name_marker + "-dir")
    os.mkdir(d)
    f = os.path.join(d, name_marker + ".txt")
    H.write_file(f, content, fsync=True)
    small = os.path.join(d, "small-" + name_marker)
    H.write_file(small, data_marker.encode(), fsync=True)
    os.setxattr(f, "user.note", data_marker.encode())
    os.symlink("target-" + data_marker, os.path.join(d, "link-" + name_marker))
    os.rename(small, small + "-renamed")

    # While mounted (metadata WAL still live), after the data was fsynced.
    # The audit log holds paths in plaintext by design (it is the trail of
    # who touched which contract): it is excluded for the NAME marker only.
    hits = scan(vault, name_marker, skip_audit=True) + scan(vault, data_marker, skip_audit=False)
    assert not hits, "plaintext found while mounted:\n" + "\n".join(hits)

    vault.unmount()
    files = listed_vault_files(vault)
    assert any(p.startswith("stores/") for p in files), "no fragments written at all: %s" % files[:20]
    assert any(p.startswith("keys") for p in files), "keys dir is empty"
    hits = scan(vault, name_marker, skip_audit=True) + scan(vault, data_marker, skip_audit=False)
    assert not hits, "plaintext found after unmount:\n" + "\n".join(hits)
    # And the audit log really does record the path (so the exclusion above
    # hides nothing else): it names the file we wrote.
    with open(vault.audit_log, "rb") as fh:
        assert name_marker.encode() in fh.read(), "audit log lacks the file's path"

    vault.mount()
    H.assert_same_bytes(H.read_file(f), content, "marker file after remount")
    assert os.getxattr(f, "user.note") == data_marker.encode()


@pytest.mark.timeout_s(600)
def test_no_plaintext_name_even_in_the_audit_spool_once_names_are_sealed(new_vault):
    """With the vault's audit names key made by an auditor, the audit spool
    joins the scan: names reach it only sealed (docs/format-audit.md)."""
    from test_accounts import add_and_enrol
    v = new_vault
    pw = os.path.join(v.base, "carol.pass")
    with open(pw, "w") as fh:
        fh.write("auditing is my quiet profession 9\n")
    add_and_enrol(v, "carol", pw, role="auditor")
    p = v.admin("audit-key", "create", v.dir, "--account", "carol", "--passfile", pw)
    assert p.returncode == 0, p.stdout + p.stderr
    name_marker = "pfsname" + secrets.token_hex(10)
    v.mount()
    d = v.path(name_marker + "-dir")
    os.mkdir(d)
    f = os.path.join(d, name_marker + ".txt")
    H.write_file(f, b"terms\n", fsync=True)
    os.setxattr(f, "user.note", b"x")
    os.symlink("target", os.path.join(d, "link-" + name_marker))
    os.rename(f, f + "-renamed")
    os.listdir(d)
    v.unmount()
    hits = scan(v, name_marker, skip_audit=False)
    assert not hits, "plaintext name found:\n" + "\n".join(hits)
    p = v.admin("audit", "query", "--path", "*" + name_marker + "*", "--account", "carol",
                "--passfile", pw, v.dir)
    assert p.returncode == 0 and name_marker + ".txt-renamed" in p.stdout, p.stdout + p.stderr
