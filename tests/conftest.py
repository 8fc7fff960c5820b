"""pytest configuration: make the repository importable; the skip policy (a test may skip only
for what cannot exist on this machine, see ALLOWED_SKIPS: a missing dependency, tool or build is
a failure); and the fixtures the app tests share."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_BINDING_MODULES = {"test_ops.py", "test_app.py", "test_app_service.py", "test_faults.py",
                    "test_bad_input.py",
                    "test_hardening.py"}

# The only reasons a test may skip for (a reason must start with one of these); any other skip
# -- a module, package, program or build that is missing -- is reported as a failure.
ALLOWED_SKIPS = (
    "needs ../shared",        # the shared data sets and tools: not in a bare clone (CI has them)
    "needs root",             # mounting a tmpfs
    "needs a Raspberry Pi",   # a real camera, a Pi power sensor
)


def _not_allowed(rep):
    """the skip reason of a skipped report when the policy forbids it, else None"""
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return None
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if reason.startswith("Skipped: "):
        reason = reason[len("Skipped: "):]
    return None if reason.startswith(ALLOWED_SKIPS) else reason


def _fail_forbidden_skip(rep):
    reason = _not_allowed(rep)
    if reason is not None:
        rep.outcome = "failed"
        rep.longrepr = ("skipped for a reason that is not allowed (a test skips only when it %s): %s"
                        % (" / ".join(ALLOWED_SKIPS), reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


def _library_missing_reason():
    try:
        from firmware_py import _native
    except ImportError as e:  # numpy / cffi missing
        return "firmware_py cannot be imported: %s" % e
    try:
        _native.lib()
    except _native.BnnLibraryError as e:
        return "native library not built (run ./build.sh or set BNN_LIBRARY): %s" % e
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "nolib: a binding-module test that does not need the native library"
    )
    config.addinivalue_line(
        "markers", "arm_userland: needs the Debian ARM userlands of ../shared/tools/arm-rootfs "
        "(root and ~10 minutes each to build): run by ./build.sh pi-test, not by ./build.sh test"
    )


def pytest_collection_modifyitems(config, items):
    binding = [
        it for it in items
        if os.path.basename(str(it.fspath)) in _BINDING_MODULES and not it.get_closest_marker("nolib")
    ]
    if not binding:
        return
    reason = _library_missing_reason()
    if reason:
        mark = pytest.mark.skip(reason=reason)
        for it in binding:
            it.add_marker(mark)


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """the detector the app runs: the shipped one, else a synthetic converted detector
    (random weights, 160x160 input)"""
    from bnn_camera import DEFAULT_MODEL
    if os.path.isfile(DEFAULT_MODEL):
        return DEFAULT_MODEL
    from bnn_camera.testmodel import write_synthetic_detector
    return write_synthetic_detector(str(tmp_path_factory.mktemp("m") / "det.bnn"), size=160)


def wait_child(pid, timeout=30):
    """waits for a forked child (killing it after `timeout` s: a hang fails the test) and
    asserts that it exited with status 0"""
    import time
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("child process hung after fork")
        time.sleep(0.02)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def load_dataset(name):
    """models.data.load(name), or a skip when ../shared/data is not here (Fashion-MNIST is
    an apt package, dataset-fashion-mnist: a dependency, so its absence fails)"""
    from models import data
    try:
        return data.load(name)
    except data.DataUnavailable as e:
        if name == "fashion-mnist":
            raise
        pytest.skip("needs ../shared/data: %s" % e)
