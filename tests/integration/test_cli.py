"""The command line: exit codes (src/exitcodes.h) and messages for the
usual mistakes, and the mount variants (umount, --extpass, --read-only,
SIGTERM)."""
import errno
import os
import re
import signal

import pytest

import pactfs_helpers as H


def assert_exit(p, code, words):
    assert p.returncode == code, "exit %d, expected %d\nstdout: %s\nstderr: %s" % (
        p.returncode, code, p.stdout, p.stderr)
    msg = (p.stderr + p.stdout).lower()
    assert re.search(words, msg), "message %r does not mention /%s/" % (msg[:500], words)


def test_wrong_password_exit_4(new_vault, tmp_path):
    bad = tmp_path / "bad.pass"
    bad.write_text("not the password\n")
    p = new_vault.pactfs(*new_vault.mount_args(passfile=str(bad)))
    assert_exit(p, 4, r"password")
    assert not H.is_mounted(new_vault.mnt)
    new_vault.mount()          # the right password still works afterwards
    assert os.path.isdir(new_vault.folder)


def test_nonempty_mountpoint_exit_8(new_vault):
    with open(os.path.join(new_vault.mnt, "occupant"), "w") as f:
        f.write("x")
    p = new_vault.pactfs(*new_vault.mount_args())
    assert_exit(p, 8, r"empty|mount ?point")
    assert not H.is_mounted(new_vault.mnt)


def test_missing_mountpoint_exit_8(new_vault, tmp_path):
    p = new_vault.pactfs(*new_vault.mount_args(mnt=str(tmp_path / "does-not-exist")))
    assert_exit(p, 8, r"mount ?point|exist|no such")


def test_missing_config_exit_3(new_vault, tmp_path):
    p = new_vault.pactfs("mount", "--config", str(tmp_path / "nope" / "pactfs.conf"),
                         new_vault.mnt, "--passfile", new_vault.passfile)
    assert_exit(p, 3, r"conf")
    empty = tmp_path / "not-a-vault"
    empty.mkdir()
    p = new_vault.pactfs("mount", str(empty), new_vault.mnt, "--passfile", new_vault.passfile)
    assert_exit(p, 3, r"conf")


def test_malformed_config_exit_3(new_vault, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("this is { not libconfig ;;\n")
    p = new_vault.pactfs("mount", "--config", str(bad), new_vault.mnt,
                         "--passfile", new_vault.passfile)
    assert_exit(p, 3, r"bad\.conf|conf")


def test_mount_with_config_option(new_vault):
    p = new_vault.pactfs("mount", "--config", new_vault.conf, new_vault.mnt,
                         "--account", H.ACCOUNT, "--passfile", new_vault.passfile)
    assert p.returncode == 0, p.stderr
    H.LIVE_VAULTS.add(new_vault)
    assert H.wait_mounted(new_vault.mnt)
    assert os.path.isdir(new_vault.folder)


def test_already_mounted_exit_9(vault):
    # A mountpoint is mounted once; another mountpoint of the same vault is
    # a second mount (test_desktop.py), and a repair refuses to run.
    p = vault.pactfs(*vault.mount_args())
    assert_exit(p, 9, r"already|mounted|in use")
    p = H.run([H.binary("pactfs-fsck"), vault.dir, "--repair"], env=vault.env)
    assert_exit(p, 9, r"mounted")


def test_init_over_existing_vault_exit_11(new_vault):
    with open(os.path.join(new_vault.dir, "meta.db"), "rb") as f:
        before = f.read()
    p = new_vault.init(check=False)
    assert_exit(p, 11, r"exist")
    with open(os.path.join(new_vault.dir, "meta.db"), "rb") as f:
        assert f.read() == before, "init over an existing vault modified meta.db"
    new_vault.mount()


def test_init_creates_the_documented_layout(new_vault):
    d = new_vault.dir
    for rel in ("pactfs.conf", "meta.db", "stores/0", "stores/1", "stores/2", "keys", "audit.log"):
        assert os.path.exists(os.path.join(d, rel)), rel + " missing after init"
    assert os.stat(os.path.join(d, "keys")).st_mode & 0o077 == 0, "keys dir is not 0700"


def test_usage_exit_2(new_vault):
    assert new_vault.pactfs().returncode == 2
    assert new_vault.pactfs("frobnicate").returncode == 2
    assert new_vault.pactfs("mount", "--no-such-option", new_vault.dir, new_vault.mnt).returncode == 2
    assert new_vault.admin().returncode == 2


def test_unreadable_password_exit_12(new_vault, tmp_path):
    p = new_vault.pactfs(*new_vault.mount_args(passfile=str(tmp_path / "no-such-passfile")))
    assert p.returncode == 12, "missing passfile: exit %d\n%s" % (p.returncode, p.stderr)
    empty = tmp_path / "empty.pass"
    empty.write_text("")
    p = new_vault.pactfs(*new_vault.mount_args(passfile=str(empty)))
    assert p.returncode == 12, "empty passfile: exit %d\n%s" % (p.returncode, p.stderr)
    p = new_vault.pactfs("mount", new_vault.dir, new_vault.mnt, "--account", H.ACCOUNT,
                         "--extpass", "false")
    assert p.returncode == 12, "failing --extpass: exit %d\n%s" % (p.returncode, p.stderr)
    assert not H.is_mounted(new_vault.mnt)


def test_extpass_mount(new_vault):
    p = new_vault.pactfs("mount", new_vault.dir, new_vault.mnt, "--account", H.ACCOUNT,
                         "--extpass", "cat " + new_vault.passfile)
    assert p.returncode == 0, p.stderr
    H.LIVE_VAULTS.add(new_vault)
    assert H.wait_mounted(new_vault.mnt)
    assert os.path.isdir(new_vault.folder)


def test_pactfs_umount_flushes_and_unmounts(vault):
    data = H.seeded_bytes(9, 2 * H.CHUNK + 1)
    H.write_file(vault.path("u.bin"), data)      # no fsync: umount must flush
    pids = H.find_daemon_pids(vault.mnt)
    p = vault.pactfs("umount", vault.mnt)
    assert p.returncode == 0, p.stderr
    assert not H.is_mounted(vault.mnt)
    for pid in pids:
        assert H.wait_pid_gone(pid, H.DAEMON_EXIT_S), "daemon still running after umount"
    vault.mount()
    H.assert_same_bytes(H.read_file(vault.path("u.bin")), data, "after pactfs umount")


def test_sigterm_flushes_and_unmounts(vault):
    data = H.seeded_bytes(10, H.CHUNK + 77)
    H.write_file(vault.path("t.bin"), data)
    pids = vault.kill_daemon(signal.SIGTERM)
    for pid in pids:
        assert H.wait_pid_gone(pid, H.DAEMON_EXIT_S), "daemon ignored SIGTERM"
    assert not H.is_mounted(vault.mnt), "SIGTERM left a stale mount behind"
    vault.daemon_pid = None
    vault.mount()
    H.assert_same_bytes(H.read_file(vault.path("t.bin")), data, "after SIGTERM")


def test_read_only_mount_refuses_writes(vault):
    H.write_file(vault.path("ro.txt"), b"readable")
    vault.unmount()
    vault.mount(extra=["--read-only"])
    assert H.read_file(vault.path("ro.txt")) == b"readable"
    assert H.errno_of(open, vault.path("ro.txt"), "r+b") == errno.EROFS
    assert H.errno_of(os.mkdir, vault.path("newdir")) == errno.EROFS
    assert H.errno_of(os.unlink, vault.path("ro.txt")) == errno.EROFS


def test_foreground_mount_stays_until_unmounted(new_vault):
    new_vault.mount_foreground()
    assert new_vault.fg_proc.poll() is None, "pactfs -f exited while mounted"
    H.write_file(new_vault.path("fg.txt"), b"fg")
    new_vault.unmount()
    assert new_vault.fg_rc == 0, "pactfs -f exit %s after a clean unmount" % new_vault.fg_rc


# ---- pactfs-admin: per-command help and specific messages (issue 13) ----

ADMIN_COMMANDS = ["init", "passwd", "rotate-share", "keyd", "audit-verify", "folder-create",
                  "accounts", "account-add", "account-disable", "account-enable",
                  "account-rename", "account-role", "grant", "revoke"]


def test_admin_every_command_has_help_and_a_man_section(new_vault):
    man = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "man",
                            "pactfs-admin.8")).read().replace("\\-", "-")
    top = new_vault.admin("--help")
    assert top.returncode == 0
    for cmd in ADMIN_COMMANDS:
        p = new_vault.admin(cmd, "--help")
        assert p.returncode == 0, (cmd, p.stderr)
        assert p.stdout.startswith("Usage: pactfs-admin %s " % cmd), p.stdout[:200]
        assert len(p.stdout.splitlines()) < 40, "%s --help is the whole manual" % cmd
        assert re.search(r"^  %s\s" % re.escape(cmd), top.stdout, re.M), cmd
        assert re.search(r'^\.SS "?%s\b' % re.escape(cmd), man, re.M), \
            "pactfs-admin(8) has no section for %s" % cmd


def test_admin_missing_argument_is_named(new_vault):
    p = new_vault.admin("grant", "Contracts")
    assert_exit(p, 2, r"missing account")
    assert len((p.stdout + p.stderr).splitlines()) <= 4, "the whole usage was printed"
    p = new_vault.admin("grant", "Contracts", "bob", "read")
    assert_exit(p, 2, r"missing vault_dir")
    p = new_vault.admin("revoke", "Contracts", "bob", new_vault.dir, "extra")
    assert_exit(p, 2, r"unexpected argument \"extra\"|unexpected argument")
    p = new_vault.admin("init")
    assert_exit(p, 2, r"missing dir")


def test_admin_option_that_does_not_apply_is_refused(new_vault):
    # --account used to be silently ignored by keyd (the account is positional).
    p = new_vault.admin("keyd", "unlock", "alice", new_vault.dir, "--account", "bob")
    assert_exit(p, 2, r"--account does not apply")
    p = new_vault.admin("accounts", new_vault.dir, "--role", "user")
    assert_exit(p, 2, r"--role does not apply")
