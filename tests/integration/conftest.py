"""Fixtures for the pactfs integration suite.

Run from the project root with Debian's pytest:
    PACTFS_BUILD=/path/to/build /usr/bin/python3 -m pytest tests/integration
Tests run as root (FUSE mounts, chown).  Every mount is torn down at the end
of its test, also on failure; a per-test watchdog kills the daemon (so any
FUSE call blocked in the test fails with ENOTCONN) if a test overruns.
"""
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pactfs_helpers as H  # noqa: E402

DEFAULT_TEST_TIMEOUT_S = 300


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): watchdog limit for one test")


def _binaries_missing():
    if not H.build_dir():
        return "PACTFS_BUILD is not set (the build directory holding pactfs and pactfs-admin)"
    for name in ("pactfs", "pactfs-admin"):
        if not os.access(H.binary(name), os.X_OK):
            return "%s is missing or not executable" % H.binary(name)
    if os.geteuid() != 0:
        return "the integration tests run as root (FUSE mounts, chown)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _require_binaries():
    why = _binaries_missing()
    if why:
        pytest.skip(why)


@pytest.fixture(autouse=True)
def watchdog(request):
    marker = request.node.get_closest_marker("timeout_s")
    limit = marker.args[0] if marker else DEFAULT_TEST_TIMEOUT_S
    fired = threading.Event()

    def fire():
        fired.set()
        H.hang_report()
        for v in list(H.LIVE_VAULTS):
            v.emergency_teardown()

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()
    if fired.is_set():
        pytest.fail("watchdog: test ran over %ss; pactfs daemons were killed" % limit)


def _finish(v, request):
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
def new_vault(tmp_path, request):
    """An initialised vault, not mounted."""
    v = H.Vault(tmp_path)
    v.init()
    yield v
    _finish(v, request)


@pytest.fixture
def vault(new_vault):
    """An initialised vault mounted in the background."""
    new_vault.mount()
    assert os.path.isdir(new_vault.folder), "the mount does not show the %s folder" % H.FOLDER
    return new_vault


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory, request):
    """One mounted vault for a module of tests that need no remount."""
    v = H.Vault(tmp_path_factory.mktemp("shared"))
    v.init()
    v.mount()
    yield v
    _finish(v, request)


@pytest.fixture
def workdir(shared_vault, request):
    """A fresh directory inside the shared vault's contract folder."""
    d = shared_vault.path(request.node.name.replace("[", "_").replace("]", "_"))
    os.mkdir(d)
    return d
