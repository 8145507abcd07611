"""The audit spool DIR/audit.log: JSON lines, chained, written before the
operation returns, with events for mount, create, write, unlink and denied
operations naming the right paths."""
import errno
import hashlib
import json
import os
import secrets

import pytest

import pactfs_helpers as H

REQUIRED = ("seq", "time", "account", "op", "path", "result", "prev")


def read_events(vault):
    with open(vault.audit_log, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    assert lines[-1] == b"", "audit log does not end with a newline"
    events = []
    for i, ln in enumerate(lines[:-1]):
        try:
            events.append(json.loads(ln))
        except ValueError as e:
            raise AssertionError("audit line %d is not JSON (%s): %r" % (i + 1, e, ln[:200]))
    return lines[:-1], events


def find(events, op, path_suffix):
    return [e for e in events
            if e.get("op") == op and str(e.get("path", "")).endswith(path_suffix)]


def test_audit_events_for_mount_create_write_unlink(vault):
    name = "audit-%s.txt" % secrets.token_hex(4)
    p = vault.path(name)
    data = b"audited bytes\n" * 1000
    H.write_file(p, data)
    rel = "%s/%s" % (H.FOLDER, name)

    # Spooled durably before the operation returned: visible while mounted.
    _, events = read_events(vault)
    assert find(events, "create", rel), "no create event for %s while mounted" % rel

    os.unlink(p)
    vault.unmount()
    lines, events = read_events(vault)
    for e in events:
        missing = [k for k in REQUIRED if k not in e]
        assert not missing, "event lacks %s: %s" % (missing, e)

    mounts = [e for e in events if e.get("op") == "mount"]
    assert mounts and mounts[-1].get("result") == "ok", "no successful mount event"
    assert all(e.get("account") == H.ACCOUNT for e in mounts)
    creates = find(events, "create", rel)
    assert creates and creates[0]["result"] == "ok"
    writes = find(events, "write", rel)
    assert writes, "no write event for %s" % rel
    assert sum(int(e.get("bytes", 0)) for e in writes) >= len(data), \
        "write events account for fewer bytes than written: %s" % writes
    unlinks = find(events, "unlink", rel)
    assert unlinks and unlinks[0]["result"] == "ok", "no unlink event for %s" % rel
    assert creates[0]["seq"] < unlinks[-1]["seq"] and writes[0]["seq"] < unlinks[-1]["seq"], \
        "events out of order: create %s write %s unlink %s" % (
            creates[0]["seq"], writes[0]["seq"], unlinks[-1]["seq"])


def test_audit_chain_links_every_line(vault):
    H.write_file(vault.path("chain.txt"), b"c")
    vault.unmount()
    lines, events = read_events(vault)
    assert len(events) >= 2
    seqs = [e["seq"] for e in events]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "seq not increasing: %s" % seqs[:50]
    assert set(events[0]["prev"]) == {"0"}, "first event's prev is not all zeros"
    for i in range(1, len(lines)):
        want = {hashlib.sha256(lines[i - 1]).hexdigest(),
                hashlib.sha256(lines[i - 1] + b"\n").hexdigest()}
        assert events[i]["prev"] in want, "line %d does not chain to line %d" % (i + 1, i)


def test_denied_top_level_create_is_audited(vault):
    name = "denied-%s" % secrets.token_hex(4)
    assert H.errno_of(os.open, os.path.join(vault.mnt, name),
                      os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    _, events = read_events(vault)
    hits = [e for e in events if name in str(e.get("path", ""))]
    assert hits, "the refused create of /%s left no audit event" % name
    assert hits[-1]["result"] == "denied", hits[-1]


def test_audit_survives_remount_and_keeps_chaining(vault):
    vault.remount()
    H.write_file(vault.path("second-session.txt"), b"s")
    vault.unmount()
    lines, events = read_events(vault)
    assert len([e for e in events if e.get("op") == "mount"]) >= 2
    for i in range(1, len(lines)):
        want = {hashlib.sha256(lines[i - 1]).hexdigest(),
                hashlib.sha256(lines[i - 1] + b"\n").hexdigest()}
        assert events[i]["prev"] in want, "chain broken at line %d across remount" % (i + 1)
