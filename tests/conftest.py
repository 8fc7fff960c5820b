"""pytest configuration: make the repository importable and skip the binding tests
(test_ops.py) with a clear reason when libbnn.so has not been built."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_BINDING_MODULES = {"test_ops.py"}


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
