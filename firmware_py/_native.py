"""cffi ABI-mode binding of the prebuilt libbnn.so (csrc/neon/include/bnn.h).

Nothing is compiled on the device: the declarations below are handed to
``cffi.FFI.cdef`` and the shared library is opened with ``ffi.dlopen`` the first
time it is needed (``lib()``), not at import time.

Library lookup, first match wins:
  1. the environment variable ``BNN_LIBRARY`` (a path to a libbnn.so);
  2. ``firmware_py/_lib/<arch>/libbnn.so`` with <arch> one of
     x86_64 | aarch64 | armhf | armv6, chosen from ``platform.machine()`` and the
     pointer size of *this* Python (a 32-bit userland on a 64-bit Pi kernel reports
     aarch64 but needs the armhf library).

Works with cffi >= 1.15 (Raspberry Pi OS bookworm) and cffi 2.x.
"""

import os
import platform
import struct
import threading

import cffi

from . import header as _header

__all__ = [
    "ffi",
    "lib",
    "check",
    "library_path",
    "arch_dir",
    "BnnError",
    "BnnShapeError",
    "BnnSizeError",
    "BnnPathError",
    "BnnLibraryError",
    "BnnMissingSymbolError",
    "BNN_OK",
    "BNN_E_NULL",
    "BNN_E_SHAPE",
    "BNN_E_SIZE",
    "BNN_E_PATH",
    "BNN_E_NOMEM",
    "BNN_E_THREAD",
    "BNN_PATH_AUTO",
    "BNN_PATH_PORTABLE",
    "BNN_PATH_NEON",
    "BNN_PATH_AVX2",
    "BNN_PATH_AVX512",
    "BNN_PAD_ZERO",
    "BNN_PAD_ONE",
    "BNN_OUT_INT32",
    "BNN_OUT_FLOAT",
    "BNN_OUT_BITS",
    "BNN_EW_AFFINE",
    "BNN_EW_PRELU",
    "BNN_EW_MAX_STEPS",
]

# The declarations and every constant come from bnn.h itself (firmware_py/header.py).
CDEF = _header.CDEF

ffi = cffi.FFI()
ffi.cdef(CDEF)

# Constants as plain ints (the enum values and #defines of bnn.h; usable without the library).
globals().update(_header.CONSTANTS)

_STATUS_NAMES = {v: k for k, v in _header.CONSTANTS.items() if k == "BNN_OK" or k.startswith("BNN_E_")}


# ---- errors ------------------------------------------------------------------------------
class BnnError(RuntimeError):
    """A libbnn function returned a negative bnn_status."""

    def __init__(self, status, what="", message=None):
        self.status = int(status)
        self.what = what
        if message is None:
            name = _STATUS_NAMES.get(self.status, str(self.status))
            detail = _status_str(self.status)
            message = "%s failed: %s (%s)" % (what or "libbnn call", detail, name)
        super().__init__(message)


class BnnShapeError(BnnError, ValueError):
    """BNN_E_SHAPE: a shape or layer parameter is out of range or inconsistent."""


class BnnSizeError(BnnError, ValueError):
    """BNN_E_SIZE: a buffer is shorter than its shape requires."""


class BnnPathError(BnnError, ValueError):
    """BNN_E_PATH: the requested code path is not available here."""


class BnnLibraryError(ImportError):
    """libbnn.so could not be found or loaded (raised on first use, not at import)."""


class BnnMissingSymbolError(BnnLibraryError):
    """The loaded libbnn.so lacks a function of bnn.h (an older or partial build)."""


_ERROR_CLASSES = {
    BNN_E_SHAPE: BnnShapeError,
    BNN_E_SIZE: BnnSizeError,
    BNN_E_PATH: BnnPathError,
}


# ---- library lookup ------------------------------------------------------------------------
_HERE = os.path.dirname(os.path.abspath(__file__))
_LIB_NAME = "libbnn.so"
_lock = threading.Lock()
_lib = None
_lib_path = None


def arch_dir(machine=None, pointer_size=None):
    """The _lib/<arch> directory name for this interpreter, or None when unsupported.

    ``machine`` defaults to platform.machine(), ``pointer_size`` to the size of a C
    pointer in this Python (4 for a 32-bit build)."""
    m = (platform.machine() if machine is None else machine).lower()
    bits32 = (struct.calcsize("P") if pointer_size is None else pointer_size) == 4
    if m in ("x86_64", "amd64", "x64"):
        return None if bits32 else "x86_64"
    if m.startswith("armv6"):
        return "armv6"
    if m.startswith("armv7") or m.startswith("armv8") or m in ("aarch64", "arm64", "aarch64_be"):
        # armv7l / armv8l userlands are 32-bit; aarch64 with a 32-bit Python is a 32-bit
        # Raspberry Pi OS userland on a 64-bit kernel: it needs the armhf library.
        if bits32 or m.startswith("armv7") or m == "armv8l":
            return "armhf"
        return "aarch64"
    return None


def _find_library():
    env = os.environ.get("BNN_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise BnnLibraryError(
                "BNN_LIBRARY is set to %r, which is not a file; point it at a built libbnn.so "
                "or unset it to use the library bundled in firmware_py/_lib/" % env
            )
        return env
    arch = arch_dir()
    if arch is None:
        raise BnnLibraryError(
            "firmware_py: unsupported platform %r with a %d-bit Python: no prebuilt libbnn.so "
            "for it (supported: x86_64, aarch64, armhf, armv6). Build the library for this "
            "machine and set BNN_LIBRARY=/path/to/libbnn.so"
            % (platform.machine(), 8 * struct.calcsize("P"))
        )
    path = os.path.join(_HERE, "_lib", arch, _LIB_NAME)
    if not os.path.isfile(path):
        raise BnnLibraryError(
            "firmware_py: the native library %s is missing (platform %r, %d-bit Python -> %s). "
            "Run ./build.sh in the repository to build it, or set BNN_LIBRARY=/path/to/libbnn.so"
            % (path, platform.machine(), 8 * struct.calcsize("P"), arch)
        )
    return path


class _Lib:
    """The cffi library with a clear error for a function the .so does not export."""

    def __init__(self, raw, path):
        self._raw = raw
        self._path = path

    def __getattr__(self, name):
        try:
            value = getattr(self._raw, name)
        except AttributeError as e:
            raise BnnMissingSymbolError(
                "firmware_py: %s does not export %s (an old or partial build?). Rebuild it with "
                "./build.sh (or point BNN_LIBRARY at a current libbnn.so)" % (self._path, name)
            ) from e
        setattr(self, name, value)  # cached: later lookups skip __getattr__
        return value


def lib():
    """The loaded library (cffi ABI-mode ``Lib``, wrapped); loads it on the first call."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            path = _find_library()
            try:
                handle = ffi.dlopen(path)
            except OSError as e:  # wrong architecture, missing libc symbols, ...
                raise BnnLibraryError(
                    "firmware_py: could not load %s: %s. Rebuild it for this machine with "
                    "./build.sh (or set BNN_LIBRARY)" % (path, e)
                ) from e
            _lib_path = path
            _lib = _Lib(handle, path)
    return _lib


def library_path():
    """The path of the loaded library (loads it if needed)."""
    lib()
    return _lib_path


def _status_str(status):
    try:
        s = lib().bnn_status_str(int(status))
        return ffi.string(s).decode("utf-8", "replace") if s != ffi.NULL else "unknown status"
    except Exception:  # library unusable while formatting an error: keep the original error
        return "status %d" % int(status)


def check(status, what=""):
    """Raises BnnError (or a ValueError subclass of it for shape/size/path) on status < 0."""
    status = int(status)
    if status >= 0:
        return status
    raise _ERROR_CLASSES.get(status, BnnError)(status, what)
