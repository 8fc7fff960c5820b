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

# Must match csrc/neon/include/bnn.h (BNN_API removed: cffi's cdef has no preprocessor).
CDEF = r"""
enum bnn_status {
    BNN_OK = 0,
    BNN_E_NULL = -1,
    BNN_E_SHAPE = -2,
    BNN_E_SIZE = -3,
    BNN_E_PATH = -4,
    BNN_E_NOMEM = -5,
    BNN_E_THREAD = -6
};

enum bnn_path {
    BNN_PATH_AUTO = 0,
    BNN_PATH_PORTABLE = 1,
    BNN_PATH_NEON = 2,
    BNN_PATH_AVX2 = 3,
    BNN_PATH_AVX512 = 4
};

const char *bnn_version(void);
const char *bnn_status_str(int status);
const char *bnn_path_name(int path);
int bnn_path_available(int path);

typedef struct bnn_ctx bnn_ctx;
int bnn_ctx_create(bnn_ctx **out, int num_threads);
void bnn_ctx_destroy(bnn_ctx *ctx);
int bnn_ctx_num_threads(const bnn_ctx *ctx);
int bnn_ctx_set_path(bnn_ctx *ctx, int path);
int bnn_ctx_path(const bnn_ctx *ctx);

size_t bnn_packed_words(int32_t c);
int bnn_bitpack_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c,
                    float threshold, uint32_t *out, size_t out_len);
int bnn_bitpack_u8(bnn_ctx *ctx, const uint8_t *x, size_t x_len, int32_t pixels, int32_t c,
                   int32_t zero_point, uint32_t *out, size_t out_len);
int bnn_bitpack_i8(bnn_ctx *ctx, const int8_t *x, size_t x_len, int32_t pixels, int32_t c,
                   int32_t zero_point, uint32_t *out, size_t out_len);
int bnn_bitpack_affine_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c,
                           const float *scale, const float *bias, size_t param_len,
                           float threshold, uint32_t *out, size_t out_len);
int bnn_unpack_f32(const uint32_t *x, size_t x_len, int32_t pixels, int32_t c,
                   float *out, size_t out_len);

typedef struct {
    int32_t n, in_h, in_w, in_c;
    int32_t out_c;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
} bnn_window;
int bnn_window_out(const bnn_window *win, int32_t *out_h, int32_t *out_w);

enum bnn_pad_mode { BNN_PAD_ZERO = 0, BNN_PAD_ONE = 1 };
enum bnn_out_mode { BNN_OUT_INT32 = 0, BNN_OUT_FLOAT = 1, BNN_OUT_BITS = 2 };

typedef struct {
    int32_t out_mode;
    const float *mul, *add;
    const int32_t *threshold;
    const uint8_t *flip;
} bnn_output;

typedef struct bnn_bconv2d bnn_bconv2d;
int bnn_bconv2d_create(bnn_bconv2d **out, const bnn_window *win, int32_t pad_mode,
                       const uint32_t *weights, size_t weights_len,
                       const bnn_output *output);
void bnn_bconv2d_destroy(bnn_bconv2d *layer);
size_t bnn_bconv2d_input_len(const bnn_bconv2d *layer);
size_t bnn_bconv2d_output_len(const bnn_bconv2d *layer);
int bnn_bconv2d_run(bnn_ctx *ctx, const bnn_bconv2d *layer,
                    const uint32_t *x, size_t x_len,
                    const float *k_scale, size_t k_len,
                    void *y, size_t y_len);

int bnn_xnor_scale(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len,
                   float *k_out, size_t k_len);

int bnn_bmaxpool2d(bnn_ctx *ctx, const bnn_window *win, const uint32_t *x, size_t x_len,
                   uint32_t *y, size_t y_len);

typedef struct bnn_fconv2d bnn_fconv2d;
int bnn_fconv2d_create(bnn_fconv2d **out, const bnn_window *win,
                       const float *weights, size_t weights_len,
                       const float *bias, size_t bias_len);
void bnn_fconv2d_destroy(bnn_fconv2d *layer);
size_t bnn_fconv2d_input_len(const bnn_fconv2d *layer);
size_t bnn_fconv2d_output_len(const bnn_fconv2d *layer);
int bnn_fconv2d_run(bnn_ctx *ctx, const bnn_fconv2d *layer, const float *x, size_t x_len,
                    float *y, size_t y_len);

int bnn_maxpool2d(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len,
                  float *y, size_t y_len);
int bnn_avgpool2d(bnn_ctx *ctx, const bnn_window *win, int32_t count_include_pad,
                  const float *x, size_t x_len, float *y, size_t y_len);

int bnn_add_f32(bnn_ctx *ctx, const float *a, size_t a_len, const float *b, size_t b_len,
                float *y, size_t y_len, size_t n);

enum bnn_ew_op { BNN_EW_AFFINE = 1, BNN_EW_PRELU = 2 };
typedef struct {
    int32_t op;
    const float *a, *b;
} bnn_ew_step;
int bnn_eltwise_f32(bnn_ctx *ctx, const float *x, size_t x_len, const float *r, size_t r_len,
                    int32_t pixels, int32_t c, const bnn_ew_step *steps, int32_t n_steps,
                    size_t param_len, float *y, size_t y_len);
"""

ffi = cffi.FFI()
ffi.cdef(CDEF)

# Constants as plain ints (the same values as the enums above; usable without the library).
BNN_OK = 0
BNN_E_NULL = -1
BNN_E_SHAPE = -2
BNN_E_SIZE = -3
BNN_E_PATH = -4
BNN_E_NOMEM = -5
BNN_E_THREAD = -6

BNN_PATH_AUTO = 0
BNN_PATH_PORTABLE = 1
BNN_PATH_NEON = 2
BNN_PATH_AVX2 = 3
BNN_PATH_AVX512 = 4

BNN_PAD_ZERO = 0
BNN_PAD_ONE = 1

BNN_OUT_INT32 = 0
BNN_OUT_FLOAT = 1
BNN_OUT_BITS = 2

BNN_EW_AFFINE = 1
BNN_EW_PRELU = 2
BNN_EW_MAX_STEPS = 16

_STATUS_NAMES = {
    BNN_OK: "BNN_OK",
    BNN_E_NULL: "BNN_E_NULL",
    BNN_E_SHAPE: "BNN_E_SHAPE",
    BNN_E_SIZE: "BNN_E_SIZE",
    BNN_E_PATH: "BNN_E_PATH",
    BNN_E_NOMEM: "BNN_E_NOMEM",
    BNN_E_THREAD: "BNN_E_THREAD",
}


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
