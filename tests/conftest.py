"""pytest configuration: make the repository importable, skip the tests that need the
native library with a clear reason when libbnn.so has not been built, and the fixtures
the app tests share."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_BINDING_MODULES = {"test_ops.py", "test_app.py", "test_faults.py", "test_bad_input.py"}


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
    from app import DEFAULT_MODEL
    if os.path.isfile(DEFAULT_MODEL):
        return DEFAULT_MODEL
    from app.testmodel import write_synthetic_detector
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
