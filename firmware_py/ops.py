"""The numpy-facing API over libbnn (see csrc/neon/include/bnn.h for the contract).

Conventions
-----------
* Tensors are NHWC, C-contiguous.  Inputs are validated here first (ValueError naming
  the argument), then again by the C library.  No input is silently copied or
  converted: pass the documented dtype (e.g. ``x.astype(np.float32)``) and a
  C-contiguous array (``np.ascontiguousarray(x)``).  Layer parameters given at
  construction time (weights, bias, mul, add, threshold, flip) are the exception:
  they are converted once, since the C layer copies them anyway.
* Bit packing: channel c of a pixel is bit c % 32 of word c // 32; bit 1 means -1
  (x < threshold), bit 0 means +1; tail bits are 0.
* Every op takes ``ctx=None``: None uses :func:`default_context`.  A Context
  serialises the calls made through it (a lock), so sharing one between Python
  threads is safe; use one Context per thread for parallel calls.
"""

import os
import threading

import numpy as np

from . import _native
from ._native import ffi, lib, check
from .bits import pack_signs
from .bits import packed_words as _packed_words
from .header import CONSTANTS as _C

__all__ = [
    "Context",
    "available_paths",
    "default_context",
    "packed_words",
    "bitpack",
    "unpack",
    "pads_for",
    "BConv2d",
    "xnor_scale",
    "bmaxpool2d",
    "maxpool2d",
    "avgpool2d",
    "global_avgpool",
    "FConv2d",
    "add",
    "concat",
    "eltwise",
    "affine",
    "prelu",
    "bitpack_affine",
    "library_version",
    "bind",
]

_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
_MAX_KERNEL = _C["BNN_MAX_CONV_KERNEL"]  # convolutions; pools take kernels up to the whole image
_MAX_POOL_KERNEL = _C["BNN_MAX_POOL"]
_MAX_STRIDE = _C["BNN_MAX_CONV_STRIDE"]

_PATH_IDS = {
    "auto": _native.BNN_PATH_AUTO,
    "portable": _native.BNN_PATH_PORTABLE,
    "neon": _native.BNN_PATH_NEON,
    "neon-aarch64": _native.BNN_PATH_NEON,
    "neon-armv7": _native.BNN_PATH_NEON,
    "avx2": _native.BNN_PATH_AVX2,
    "avx512": _native.BNN_PATH_AVX512,
    "avx512-vpopcntdq": _native.BNN_PATH_AVX512,
}


def library_version():
    """The version string of the loaded libbnn (bnn_version())."""
    return ffi.string(lib().bnn_version()).decode()


def _path_name(path_id):
    return ffi.string(lib().bnn_path_name(int(path_id))).decode()


def available_paths():
    """Names of the code paths that can run here (e.g. ['portable', 'avx2', ...])."""
    L = lib()
    return [
        _path_name(p)
        for p in (
            _native.BNN_PATH_PORTABLE,
            _native.BNN_PATH_NEON,
            _native.BNN_PATH_AVX2,
            _native.BNN_PATH_AVX512,
        )
        if L.bnn_path_available(p)
    ]


def _path_id(path):
    if isinstance(path, (int, np.integer)) and not isinstance(path, bool):
        return int(path)
    if isinstance(path, str):
        key = path.strip().lower()
        if key in _PATH_IDS:
            return _PATH_IDS[key]
    raise ValueError(
        "path must be one of %s (or a bnn_path int), got %r" % (sorted(_PATH_IDS), path)
    )


# ---- context ---------------------------------------------------------------------------------
class Context:
    """A libbnn context: thread pool, scratch memory and the code path in use.

    num_threads: None or <= 0 -> one per online CPU.  path: "auto" (the best this CPU
    supports), "portable", "neon", "avx2", "avx512" (ValueError if not available).
    """

    def __init__(self, num_threads=None, path="auto"):
        if num_threads is None:
            nt = 0
        elif isinstance(num_threads, (int, np.integer)) and not isinstance(num_threads, bool):
            nt = int(num_threads)
            if nt > _INT32_MAX:
                raise ValueError("num_threads is too large: %d" % nt)
            nt = max(nt, 0)
        else:
            raise ValueError("num_threads must be an int or None, got %r" % (num_threads,))
        pid = _path_id(path)
        L = lib()
        out = ffi.new("bnn_ctx **")
        check(L.bnn_ctx_create(out, nt), "bnn_ctx_create")
        self._ptr = ffi.gc(out[0], L.bnn_ctx_destroy)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        if pid != _native.BNN_PATH_AUTO:
            st = L.bnn_ctx_set_path(self._ptr, pid)
            if st == _native.BNN_E_PATH:
                self.close()
                raise ValueError(
                    "path %r is not available here (available: %s)" % (path, available_paths())
                )
            if st < 0:
                self.close()
                check(st, "bnn_ctx_set_path")

    def _handle(self):
        ptr = getattr(self, "_ptr", None)
        if ptr is None:
            raise ValueError("ctx: this Context is closed")
        if self._pid != os.getpid():
            raise ValueError(
                "ctx: this Context was created in another process (before a fork); its worker "
                "threads do not exist here. Create a new Context in this process"
            )
        return ptr

    @property
    def num_threads(self):
        return int(lib().bnn_ctx_num_threads(self._handle()))

    @property
    def path(self):
        """The name of the code path in use (never "auto")."""
        return _path_name(lib().bnn_ctx_path(self._handle()))

    def close(self):
        ptr = getattr(self, "_ptr", None)
        if ptr is None:
            return
        self._ptr = None
        if self._pid != os.getpid():
            # The worker threads belong to the parent: never join them from a child.
            try:
                ffi.gc(ptr, None)
            except Exception:
                pass
            return
        lock = self._lock
        with lock:
            ffi.release(ptr)  # runs bnn_ctx_destroy now

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        # ffi.gc destroys the context when the pointer dies; nothing to do here except
        # in a forked child, where destroying would join threads that do not exist.
        try:
            if getattr(self, "_ptr", None) is not None and self._pid != os.getpid():
                ffi.gc(self._ptr, None)
                self._ptr = None
        except Exception:
            pass

    def __repr__(self):
        if getattr(self, "_ptr", None) is None:
            return "<firmware_py.Context closed>"
        return "<firmware_py.Context num_threads=%d path=%r>" % (self.num_threads, self.path)


_default_ctx = None
_default_lock = threading.Lock()


def default_context():
    """The shared Context (all CPUs, best path), created on first use (per process)."""
    global _default_ctx
    c = _default_ctx
    if c is not None and c._ptr is not None and c._pid == os.getpid():
        return c
    with _default_lock:
        c = _default_ctx
        if c is None or c._ptr is None or c._pid != os.getpid():
            if c is not None and c._pid != os.getpid():
                c.__del__()  # forget the parent's context without destroying it
            c = Context()
            _default_ctx = c
    return c


def _ctx(ctx):
    if ctx is None:
        return default_context()
    if not isinstance(ctx, Context):
        raise ValueError("ctx must be a firmware_py.Context or None, got %r" % (type(ctx),))
    return ctx


# ---- C calls, and binding them once for a loop (the executor) ------------------------------------
_recording = threading.local()


def _c(name, *args, keep=None):
    """Calls the C function `name`; raises on a non-OK status.  Inside bind() the call is
    recorded instead (with `keep`: objects its pointer arguments point into)."""
    calls = getattr(_recording, "calls", None)
    if calls is not None:
        calls.append((name, args, keep))
        return
    check(getattr(lib(), name)(*args), name)


def _call(ctx, name, *args, keep=None):
    """Calls the C function `name` with the context's handle first, under its lock."""
    cx = _ctx(ctx)
    with cx._lock:
        _c(name, cx._handle(), *args, keep=keep)


def bind(fn, *args, **kwargs):
    """Validates one call of an op of this module (a function, or a layer's ``run``) and
    returns a function of no arguments that repeats only its C call, on the same arrays.

    ``out=`` must be given (the bound call writes there each time); the arrays and the
    context must outlive the returned function, and its calls must not overlap (the
    executor calls it under its model's lock).  Every op here is exactly its C call once
    validated, so the bound function computes what ``fn(*args, **kwargs)`` computes."""
    if kwargs.get("out") is None:
        raise ValueError("bind() needs out=: the bound call writes into it")
    _recording.calls = []
    try:
        fn(*args, **kwargs)
        calls = _recording.calls
    finally:
        _recording.calls = None
    L = lib()
    bound = [(getattr(L, name), name, a, keep) for name, a, keep in calls]

    def run():
        for f, name, a, _ in bound:
            st = f(*a)
            if st:
                check(st, name)
    return run


# ---- validation helpers --------------------------------------------------------------------------


def _dtype_names(dtypes):
    return " or ".join(np.dtype(d).name for d in dtypes)


def _arr(name, a, dtypes, ndim=None, min_ndim=None, writable=False):
    """Checks an input array without copying it; returns it."""
    if not isinstance(a, np.ndarray):
        raise ValueError(
            "%s must be a numpy.ndarray of dtype %s, got %s"
            % (name, _dtype_names(dtypes), type(a).__name__)
        )
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        raise ValueError(
            "%s must have dtype %s, got %s (convert with %s.astype(...))"
            % (name, _dtype_names(dtypes), a.dtype, name)
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError("%s must be %d-D, got %d-D with shape %s" % (name, ndim, a.ndim, a.shape))
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(
            "%s must be at least %d-D, got %d-D with shape %s" % (name, min_ndim, a.ndim, a.shape)
        )
    if not a.flags.c_contiguous:
        raise ValueError(
            "%s must be C-contiguous (use numpy.ascontiguousarray(%s))" % (name, name)
        )
    if not a.flags.aligned:
        raise ValueError("%s must be aligned (use %s.copy())" % (name, name))
    if writable and not a.flags.writeable:
        raise ValueError("%s must be writable" % name)
    return a


def _int(name, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError("%s must be an int, got %r" % (name, v))
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError("%s must be >= %d, got %d" % (name, lo, v))
    if hi is not None and v > hi:
        raise ValueError("%s must be <= %d, got %d" % (name, hi, v))
    return v


def _channels_last(x, dtypes=(np.float32,)):
    """x (float32 unless told) with channels on the last axis -> (x, channels, pixels),
    both in int32"""
    x = _arr("x", x, dtypes, min_ndim=1)
    c = x.shape[-1]
    if c < 1:
        raise ValueError("x must have at least one channel (last axis), got shape %s" % (x.shape,))
    _int("x.shape[-1] (channels)", c, 1, _INT32_MAX)
    pixels = int(np.prod(x.shape[:-1], dtype=np.int64))
    if pixels > _INT32_MAX:
        raise ValueError("x has too many pixels (%d > 2**31 - 1)" % pixels)
    return x, c, pixels


def _pair(name, v, lo=1, hi=None):
    """int or (h, w) -> (h, w) ints in [lo, hi]."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v, v)
    try:
        items = tuple(v)
    except TypeError:
        raise ValueError("%s must be an int or a (h, w) pair, got %r" % (name, v)) from None
    if len(items) != 2:
        raise ValueError("%s must be an int or a (h, w) pair, got %r" % (name, v))
    return tuple(_int(name, x, lo, hi) for x in items)


def _shape4(name, s):
    try:
        items = tuple(s)
    except TypeError:
        raise ValueError("%s must be an (n, h, w, c) tuple, got %r" % (name, s)) from None
    if len(items) != 4:
        raise ValueError("%s must be an (n, h, w, c) tuple (NHWC), got %r" % (name, s))
    return tuple(_int(name, x, 1, _INT32_MAX) for x in items)


def packed_words(c):
    """Number of 32-bit words holding c channels: ceil(c / 32)."""
    return _packed_words(_int("c", c, 0, _INT32_MAX))


def _buf(ctype, a, writable=False):
    return ffi.from_buffer(ctype + "[]", a, require_writable=writable)


def _f32_param(name, v, length):
    """A float32 [length] layer parameter (converted once; the C layer copies it)."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu":
        raise ValueError("%s must be a real numeric array, got dtype %s" % (name, a.dtype))
    if a.shape != (length,):
        raise ValueError("%s must have shape (%d,), got %s" % (name, length, a.shape))
    return np.ascontiguousarray(a, dtype=np.float32)


def _out(out, shape, dtype, *inputs):
    """The output array: a new one, or ``out`` after checking it (dtype, shape,
    C-contiguous, writable, not overlapping an input)."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    _arr("out", out, (dtype,), writable=True)
    if out.shape != tuple(shape):
        raise ValueError("out must have shape %s, got %s" % (tuple(shape), out.shape))
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError("out must not overlap an input array")
    return out


# ---- padding ---------------------------------------------------------------------------------------
def pads_for(in_size_hw, kernel_hw, stride_hw, padding):
    """Explicit (top, left, bottom, right) pads for a padding spec.

    padding: "valid"; "same" / "same_upper" (ONNX SAME_UPPER: output = ceil(in / stride),
    the odd extra pad at the end); "same_lower" (the extra pad at the beginning); or an
    explicit (top, left, bottom, right) tuple (returned after checking).
    """
    in_h, in_w = _pair("in_size_hw", in_size_hw, 1)
    k_h, k_w = _pair("kernel", kernel_hw, 1)
    s_h, s_w = _pair("stride", stride_hw, 1)
    if isinstance(padding, str):
        mode = padding.strip().lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode in ("same", "same_upper", "same_lower"):
            def total(n, k, s):
                out = -(-n // s)
                return max(0, (out - 1) * s + k - n)

            th, tw = total(in_h, k_h, s_h), total(in_w, k_w, s_w)
            if mode == "same_lower":
                return (th - th // 2, tw - tw // 2, th // 2, tw // 2)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        raise ValueError(
            "padding must be 'valid', 'same', 'same_lower' or a (top, left, bottom, right) "
            "tuple, got %r" % padding
        )
    try:
        items = tuple(padding)
    except TypeError:
        raise ValueError(
            "padding must be 'valid', 'same', 'same_lower' or a (top, left, bottom, right) "
            "tuple, got %r" % (padding,)
        ) from None
    if len(items) != 4:
        raise ValueError("padding must be a (top, left, bottom, right) 4-tuple, got %r" % (padding,))
    return tuple(_int("padding", p, 0) for p in items)


def _window(n, h, w, c, out_c, kernel, stride, padding, stride_default=None, pool=False):
    """Validated bnn_window cdata plus (out_h, out_w)."""
    k_h, k_w = _pair("kernel", kernel, 1, _MAX_POOL_KERNEL if pool else _MAX_KERNEL)
    if stride is None:
        stride = stride_default if stride_default is not None else 1
    s_h, s_w = _pair("stride", stride, 1, _MAX_POOL_KERNEL if pool else _MAX_STRIDE)
    pt, pl, pb, pr = pads_for((h, w), (k_h, k_w), (s_h, s_w), padding)
    if pt >= k_h or pb >= k_h or pl >= k_w or pr >= k_w:
        raise ValueError(
            "padding %r: each pad must be smaller than the kernel %s" % ((pt, pl, pb, pr), (k_h, k_w))
        )
    if h + pt + pb < k_h or w + pl + pr < k_w:
        raise ValueError(
            "kernel %s is larger than the padded input %s" % ((k_h, k_w), (h + pt + pb, w + pl + pr))
        )
    for nm, v in (("n", n), ("h", h), ("w", w), ("c", c), ("out_c", out_c)):
        _int(nm, v, 1, _INT32_MAX)
    out_h = (h + pt + pb - k_h) // s_h + 1
    out_w = (w + pl + pr - k_w) // s_w + 1
    win = ffi.new(
        "bnn_window *",
        {
            "n": n, "in_h": h, "in_w": w, "in_c": c, "out_c": out_c,
            "kernel_h": k_h, "kernel_w": k_w, "stride_h": s_h, "stride_w": s_w,
            "pad_top": pt, "pad_left": pl, "pad_bottom": pb, "pad_right": pr,
        },
    )
    return win, out_h, out_w


# ---- bit packing ------------------------------------------------------------------------------
def bitpack(x, threshold=0, ctx=None, out=None):
    """Packs the last axis of x into bits: bit = x < threshold (1 means -1).

    x: float32, uint8 or int8, channels last, any leading dims (>= 1-D).  For the int
    types ``threshold`` is the zero point (an int).  Returns uint32 of shape
    x.shape[:-1] + (packed_words(c),) (written into ``out`` when given).
    """
    x, c, pixels = _channels_last(x, (np.float32, np.uint8, np.int8))
    if x.dtype == np.float32:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
            raise ValueError("threshold must be a number, got %r" % (threshold,))
        thr = float(threshold)
    else:
        if isinstance(threshold, (float, np.floating)) and float(threshold).is_integer():
            threshold = int(threshold)
        thr = _int("threshold", threshold, _INT32_MIN, _INT32_MAX)
    words = packed_words(c)
    out = _out(out, x.shape[:-1] + (words,), np.uint32, x)
    if pixels == 0:
        return out
    fn, ct = {
        np.dtype(np.float32): ("bnn_bitpack_f32", "float"),
        np.dtype(np.uint8): ("bnn_bitpack_u8", "uint8_t"),
        np.dtype(np.int8): ("bnn_bitpack_i8", "int8_t"),
    }[x.dtype]
    _call(ctx, fn, _buf(ct, x), x.size, pixels, c, thr, _buf("uint32_t", out, True), out.size)
    return out


def bitpack_affine(x, scale=None, bias=None, threshold=0.0, ctx=None, out=None):
    """Packs the last axis of float32 x after a per-channel affine, in one pass:
    bit = x * scale[c] + bias[c] < threshold (the product rounded to float32, then the sum,
    exactly as separate Mul and Add; scale / bias None = 1 / 0, or a number, or a [c]
    array).  ReActNet's RSign sign(x - b) is ``bitpack_affine(x, bias=-b)``.  Returns
    uint32 of shape x.shape[:-1] + (packed_words(c),) (written into ``out`` when given)."""
    x, c, pixels = _channels_last(x)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError("threshold must be a number, got %r" % (threshold,))
    sc = None if scale is None else _chan_param("scale", scale, c)
    bi = None if bias is None else _chan_param("bias", bias, c)
    out = _out(out, x.shape[:-1] + (packed_words(c),), np.uint32, x)
    if pixels == 0:
        return out
    _call(ctx, "bnn_bitpack_affine_f32", _buf("float", x), x.size, pixels, c,
          ffi.NULL if sc is None else _buf("float", sc), ffi.NULL if bi is None else _buf("float", bi), c,
          float(threshold), _buf("uint32_t", out, True), out.size)
    return out


def unpack(bits, c, out=None, ctx=None):
    """The inverse of bitpack: float32 +1 / -1 of shape bits.shape[:-1] + (c,)
    (written into ``out`` when given)."""
    c = _int("c", c, 1, _INT32_MAX)
    bits = _arr("bits", bits, (np.uint32,), min_ndim=1)
    words = packed_words(c)
    if bits.shape[-1] != words:
        raise ValueError(
            "bits: last axis must be packed_words(c) = %d for c = %d, got shape %s"
            % (words, c, bits.shape)
        )
    pixels = int(np.prod(bits.shape[:-1], dtype=np.int64))
    if pixels > _INT32_MAX:
        raise ValueError("bits has too many pixels (%d > 2**31 - 1)" % pixels)
    out = _out(out, bits.shape[:-1] + (c,), np.float32, bits)
    if pixels == 0:
        return out
    _call(ctx, "bnn_unpack_f32", _buf("uint32_t", bits), bits.size, pixels, c, _buf("float", out, True), out.size)
    return out


def _packed_input(name, x, n, h, w, c):
    x = _arr(name, x, (np.uint32,), ndim=4)
    want = (n, h, w, packed_words(c))
    if x.shape != want:
        raise ValueError(
            "%s must have shape %s (packed NHWC for %d channels), got %s" % (name, want, c, x.shape)
        )
    return x


# ---- binary convolution --------------------------------------------------------------------------
_OUT_MODES = {"int32": _native.BNN_OUT_INT32, "float": _native.BNN_OUT_FLOAT, "bits": _native.BNN_OUT_BITS}
_PAD_MODES = {"zero": _native.BNN_PAD_ZERO, "one": _native.BNN_PAD_ONE}


class _Layer:
    """A C layer object owned through cffi: close() frees it (also at garbage collection);
    usable as a context manager."""

    def close(self):
        p, self._ptr = getattr(self, "_ptr", None), None
        if p is not None:
            ffi.release(p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _weight_oihw(weight, c):
    """Checked OIHW convolution weights for an input of c channels -> (array, out_c, kh, kw)."""
    wt = np.asarray(weight)
    if wt.dtype.kind not in "fiu":
        raise ValueError("weight must be a real numeric (float) array, got dtype %s" % wt.dtype)
    if wt.ndim != 4:
        raise ValueError("weight must be 4-D OIHW, got %d-D with shape %s" % (wt.ndim, wt.shape))
    out_c, w_in_c, k_h, k_w = (int(s) for s in wt.shape)
    if out_c < 1 or k_h < 1 or k_w < 1:
        raise ValueError("weight has an empty dimension: shape %s" % (wt.shape,))
    if w_in_c != c:
        raise ValueError(
            "weight has %d input channels (OIHW shape %s) but in_shape has c = %d" % (w_in_c, wt.shape, c))
    if k_h > _MAX_KERNEL or k_w > _MAX_KERNEL:
        raise ValueError("weight: kernel %s is larger than %d" % ((k_h, k_w), _MAX_KERNEL))
    return wt, out_c, k_h, k_w


class BConv2d(_Layer):
    """Binary 2-D convolution (groups 1) on packed NHWC bits.

    weight: float OIHW (the ONNX layout); its sign gives the binary weights (>= 0 -> +1).
    in_shape: (n, h, w, c) NHWC of the (unpacked) input.  stride: int or (h, w).
    padding: see pads_for.  pad_mode: "zero" (as onnxruntime on a +-1 input) or "one".
    output: "int32" (the dot products), "float" (d * mul[o] * K + add[o]; mul, add
    optional [out_c]) or "bits" (packed; threshold int32 [out_c] required, flip
    bool/uint8 [out_c] optional: bit = d < threshold, or d > threshold where flip).
    steps (output "float" only): :func:`eltwise` steps applied to the outputs in the same
    pass -- a ReLU, a BatchNorm, the shortcut's ("add",) of ``run(residual=...)`` -- with
    the same bits as eltwise after the convolution.
    """

    def __init__(self, weight, in_shape, stride=1, padding="valid", pad_mode="zero",
                 output="int32", mul=None, add=None, threshold=None, flip=None, steps=None):
        self._ptr = None
        shape = _shape4("in_shape", in_shape)
        wt, out_c, k_h, k_w = _weight_oihw(weight, shape[3])
        w_ohwi = np.ascontiguousarray(np.transpose(wt.astype(np.float32, copy=False), (0, 2, 3, 1)))
        self._create(pack_signs(w_ohwi), shape, stride, padding, pad_mode, output, mul, add, threshold, flip,
                     steps)

    @classmethod
    def from_bits(cls, weight_bits, in_shape, stride=1, padding="valid", pad_mode="zero",
                  output="int32", mul=None, add=None, threshold=None, flip=None, steps=None):
        """The same layer from weights packed as the model format stores them: uint32
        [out_c, kh, kw, packed_words(c)] (bit 1 = -1, tail bits 0; see firmware_py.bits)."""
        self = cls.__new__(cls)
        self._ptr = None
        shape = _shape4("in_shape", in_shape)
        wb = _arr("weight_bits", weight_bits, (np.uint32,), ndim=4)
        if min(wb.shape) < 1 or wb.shape[3] != packed_words(shape[3]):
            raise ValueError("weight_bits must be [out_c, kh, kw, packed_words(c) = %d], got shape %s"
                             % (packed_words(shape[3]), wb.shape))
        if max(wb.shape[1:3]) > _MAX_KERNEL:
            raise ValueError("weight_bits: kernel %s is larger than %d" % (wb.shape[1:3], _MAX_KERNEL))
        self._create(wb, shape, stride, padding, pad_mode, output, mul, add, threshold, flip, steps)
        return self

    def _create(self, wbits, in_shape, stride, padding, pad_mode, output, mul, add, threshold, flip, steps):
        n, h, w, c = in_shape
        out_c, k_h, k_w = wbits.shape[:3]
        if not isinstance(output, str) or output not in _OUT_MODES:
            raise ValueError("output must be one of %s, got %r" % (sorted(_OUT_MODES), output))
        if not isinstance(pad_mode, str) or pad_mode not in _PAD_MODES:
            raise ValueError("pad_mode must be one of %s, got %r" % (sorted(_PAD_MODES), pad_mode))
        win, oh, ow = _window(n, h, w, c, out_c, (k_h, k_w), stride, padding)

        keep = []  # cdata that must stay alive during the create call
        outp = ffi.new("bnn_output *")
        outp.out_mode = _OUT_MODES[output]
        self._adds = False
        if steps:
            if output != "float":
                raise ValueError("steps are only used with output='float' (output=%r)" % output)
            arr, n_steps, step_keep, self._adds = _ew_steps(steps, out_c)
            keep += [arr, step_keep]
            outp.steps, outp.n_steps = arr, n_steps
        if output != "float":
            for nm, v in (("mul", mul), ("add", add)):
                if v is not None:
                    raise ValueError("%s is only used with output='float' (output=%r)" % (nm, output))
        if output != "bits":
            for nm, v in (("threshold", threshold), ("flip", flip)):
                if v is not None:
                    raise ValueError("%s is only used with output='bits' (output=%r)" % (nm, output))
        if output == "float":
            if mul is not None:
                m = _f32_param("mul", mul, out_c)
                pm = _buf("float", m)
                keep += [m, pm]
                outp.mul = pm
            if add is not None:
                a = _f32_param("add", add, out_c)
                pa = _buf("float", a)
                keep += [a, pa]
                outp.add = pa
        elif output == "bits":
            if threshold is None:
                raise ValueError("threshold ([out_c] int32) is required with output='bits'")
            t = np.asarray(threshold)
            if t.dtype.kind not in "iu":
                raise ValueError(
                    "threshold must be an integer array (int32), got dtype %s" % t.dtype
                )
            if t.shape != (out_c,):
                raise ValueError("threshold must have shape (%d,), got %s" % (out_c, t.shape))
            if t.size and (t.min() < _INT32_MIN or t.max() > _INT32_MAX):
                raise ValueError("threshold values must fit in int32")
            t = np.ascontiguousarray(t, dtype=np.int32)
            pt = _buf("int32_t", t)
            keep += [t, pt]
            outp.threshold = pt
            if flip is not None:
                f = np.asarray(flip)
                if f.dtype != np.bool_ and f.dtype.kind not in "iu":
                    raise ValueError("flip must be a bool or uint8 array, got dtype %s" % f.dtype)
                if f.shape != (out_c,):
                    raise ValueError("flip must have shape (%d,), got %s" % (out_c, f.shape))
                f = np.ascontiguousarray(f != 0, dtype=np.uint8)
                pf = _buf("uint8_t", f)
                keep += [f, pf]
                outp.flip = pf

        L = lib()
        out = ffi.new("bnn_bconv2d **")
        check(
            L.bnn_bconv2d_create(out, win, _PAD_MODES[pad_mode], _buf("uint32_t", wbits),
                                 wbits.size, outp),
            "bnn_bconv2d_create",
        )
        self._ptr = ffi.gc(out[0], L.bnn_bconv2d_destroy)
        del keep
        self.in_shape = (n, h, w, c)
        self.out_c = out_c
        self.kernel = (k_h, k_w)
        self.stride = (win.stride_h, win.stride_w)
        self.pads = (win.pad_top, win.pad_left, win.pad_bottom, win.pad_right)
        self.pad_mode = pad_mode
        self.output = output
        self._out_hw = (oh, ow)
        if output == "bits":
            self._y_shape, self._y_dtype = (n, oh, ow, packed_words(out_c)), np.uint32
        elif output == "float":
            self._y_shape, self._y_dtype = (n, oh, ow, out_c), np.float32
        else:
            self._y_shape, self._y_dtype = (n, oh, ow, out_c), np.int32

    @property
    def out_shape(self):
        """(n, out_h, out_w, out_c) of the (unpacked) output."""
        n = self.in_shape[0]
        return (n, self._out_hw[0], self._out_hw[1], self.out_c)

    def _handle(self):
        if self._ptr is None:
            raise ValueError("this BConv2d is closed")
        return self._ptr

    def run(self, x_bits, k_scale=None, ctx=None, out=None, residual=None):
        """x_bits: packed input uint32 (n, h, w, words(c)).  k_scale: optional float32
        (n, out_h, out_w) from xnor_scale (output='float' only).  residual: float32
        (n, oh, ow, out_c), what an ("add",) step adds (required then, refused otherwise;
        ``out`` must not overlap it).  Returns int32 / float32 (n, oh, ow, out_c), or packed
        uint32 (n, oh, ow, words(out_c)) for output='bits' (written into ``out`` when given:
        that dtype and shape, C-contiguous)."""
        layer = self._handle()
        n, h, w, c = self.in_shape
        x = _packed_input("x_bits", x_bits, n, h, w, c)
        k_ptr, k_len = ffi.NULL, 0
        if k_scale is not None:
            if self.output != "float":
                raise ValueError("k_scale is only used with output='float' (output=%r)" % self.output)
            k = _arr("k_scale", k_scale, (np.float32,), ndim=3)
            want = (n,) + self._out_hw
            if k.shape != want:
                raise ValueError("k_scale must have shape %s, got %s" % (want, k.shape))
            k_ptr, k_len = _buf("float", k), k.size
        r_ptr, r_len = ffi.NULL, 0
        if self._adds != (residual is not None):
            raise ValueError("this BConv2d's steps %s an ('add',): residual is %s" % (
                ("have", "required") if self._adds else ("have no", "not used")))
        if residual is not None:
            r = _arr("residual", residual, (np.float32,), ndim=4)
            if r.shape != self._y_shape:
                raise ValueError("residual must have shape %s, got %s" % (self._y_shape, r.shape))
            r_ptr, r_len = _buf("float", r), r.size
        y = _out(out, self._y_shape, self._y_dtype, x, k_scale, residual)
        _call(ctx, "bnn_bconv2d_run_residual", layer, _buf("uint32_t", x), x.size, k_ptr, k_len, r_ptr, r_len,
              ffi.from_buffer(y, require_writable=True), y.size)
        return y

    __call__ = run


    def __repr__(self):
        return "<BConv2d in=%s out=%s kernel=%s stride=%s pads=%s output=%r>" % (
            self.in_shape, self.out_shape, self.kernel, self.stride, self.pads, self.output)


def xnor_scale(x, kernel, stride=1, padding="valid", ctx=None, out=None):
    """XNOR-Net input scaling K: mean over channels of |x| (float32 NHWC), box-filtered
    with the kernel, stride and zero padding.  Returns float32 (n, out_h, out_w)."""
    x = _arr("x", x, (np.float32,), ndim=4)
    n, h, w, c = x.shape
    win, oh, ow = _window(n, h, w, c, 1, kernel, stride, padding)
    k = _out(out, (n, oh, ow), np.float32, x)
    _call(ctx, "bnn_xnor_scale", win, _buf("float", x), x.size, _buf("float", k, True), k.size)
    return k


# ---- pooling -------------------------------------------------------------------------------------
def bmaxpool2d(x_bits, c, kernel, stride=None, padding="valid", ctx=None, out=None):
    """Max pooling on packed +-1 bits (AND of the words; padding ignored).
    x_bits: uint32 (n, h, w, words(c)); stride defaults to the kernel."""
    c = _int("c", c, 1, _INT32_MAX)
    x = _arr("x_bits", x_bits, (np.uint32,), ndim=4)
    n, h, w, words = x.shape
    if words != packed_words(c):
        raise ValueError(
            "x_bits: last axis must be packed_words(c) = %d for c = %d, got shape %s"
            % (packed_words(c), c, x.shape)
        )
    win, oh, ow = _window(n, h, w, c, c, kernel, stride, padding, stride_default=kernel, pool=True)
    y = _out(out, (n, oh, ow, words), np.uint32, x)
    _call(ctx, "bnn_bmaxpool2d", win, _buf("uint32_t", x), x.size, _buf("uint32_t", y, True), y.size)
    return y


def maxpool2d(x, kernel, stride=None, padding="valid", ctx=None, out=None):
    """Float max pooling, NHWC float32 (padding ignored); stride defaults to the kernel."""
    x = _arr("x", x, (np.float32,), ndim=4)
    n, h, w, c = x.shape
    win, oh, ow = _window(n, h, w, c, c, kernel, stride, padding, stride_default=kernel, pool=True)
    y = _out(out, (n, oh, ow, c), np.float32, x)
    _call(ctx, "bnn_maxpool2d", win, _buf("float", x), x.size, _buf("float", y, True), y.size)
    return y


def avgpool2d(x, kernel, stride=None, padding="valid", count_include_pad=False, ctx=None,
              out=None):
    """Float average pooling, NHWC float32, as ONNX AveragePool; stride defaults to the kernel."""
    x = _arr("x", x, (np.float32,), ndim=4)
    n, h, w, c = x.shape
    win, oh, ow = _window(n, h, w, c, c, kernel, stride, padding, stride_default=kernel, pool=True)
    y = _out(out, (n, oh, ow, c), np.float32, x)
    _call(ctx, "bnn_avgpool2d", win, 1 if count_include_pad else 0, _buf("float", x), x.size,
          _buf("float", y, True), y.size)
    return y


def global_avgpool(x, ctx=None, out=None):
    """Mean over H and W of NHWC float32 x -> (n, 1, 1, c) float32.

    bnn_avgpool2d with the kernel the size of the image."""
    x = _arr("x", x, (np.float32,), ndim=4)
    n, h, w, c = x.shape
    if min(x.shape) < 1:
        raise ValueError("x must not have an empty dimension, got shape %s" % (x.shape,))
    return avgpool2d(x, (h, w), stride=1, padding="valid", count_include_pad=False, ctx=ctx,
                     out=out)


# ---- float convolution -------------------------------------------------------------------------
class FConv2d(_Layer):
    """Float 2-D convolution, zero padding as ONNX.  weight: float OIHW (the ONNX layout,
    I = c / groups), or OHWI (the runtime's, as the model format stores it) with
    layout="OHWI"; bias: [out_c] or None; in_shape: NHWC (n, h, w, c); groups: as ONNX
    Conv's group (dividing c and out_c; depthwise: groups = c = out_c).  run(x) -> float32
    NHWC."""

    def __init__(self, weight, in_shape, bias=None, stride=1, padding="valid", layout="OIHW", groups=1):
        self._ptr = None
        n, h, w, c = _shape4("in_shape", in_shape)
        groups = _int("groups", groups, 1, c)
        if c % groups:
            raise ValueError("groups = %d must divide the input channels c = %d" % (groups, c))
        if layout not in ("OIHW", "OHWI"):
            raise ValueError("layout must be 'OIHW' or 'OHWI', got %r" % (layout,))
        if layout == "OHWI":
            weight = np.asarray(weight)
            if weight.ndim != 4:
                raise ValueError("weight must be 4-D OHWI, got shape %s" % (weight.shape,))
            weight = weight.transpose(0, 3, 1, 2)  # a view: checked as OIHW below
        wt, out_c, k_h, k_w = _weight_oihw(weight, c // groups)
        if out_c % groups:
            raise ValueError("groups = %d must divide the output channels out_c = %d" % (groups, out_c))
        win, oh, ow = _window(n, h, w, c, out_c, (k_h, k_w), stride, padding)
        # (OHWI weights come back to their own memory here: no copy when already float32)
        w_ohwi = np.ascontiguousarray(wt.transpose(0, 2, 3, 1), dtype=np.float32)
        b_ptr, b_len, b = ffi.NULL, 0, None
        if bias is not None:
            b = _f32_param("bias", bias, out_c)
            b_ptr, b_len = _buf("float", b), b.size
        L = lib()
        out = ffi.new("bnn_fconv2d **")
        check(
            L.bnn_fconv2d_create(out, win, groups, _buf("float", w_ohwi), w_ohwi.size, b_ptr, b_len),
            "bnn_fconv2d_create",
        )
        self._ptr = ffi.gc(out[0], L.bnn_fconv2d_destroy)
        self.in_shape = (n, h, w, c)
        self.out_c = out_c
        self.groups = groups
        self.kernel = (k_h, k_w)
        self.stride = (win.stride_h, win.stride_w)
        self.pads = (win.pad_top, win.pad_left, win.pad_bottom, win.pad_right)
        self._out_hw = (oh, ow)

    @property
    def out_shape(self):
        return (self.in_shape[0], self._out_hw[0], self._out_hw[1], self.out_c)

    def run(self, x, ctx=None, out=None):
        """x: float32 NHWC in_shape -> float32 NHWC out_shape (written into ``out``
        when given: float32, that shape, C-contiguous)."""
        if self._ptr is None:
            raise ValueError("this FConv2d is closed")
        x = _arr("x", x, (np.float32,), ndim=4)
        if x.shape != self.in_shape:
            raise ValueError("x must have shape %s (NHWC), got %s" % (self.in_shape, x.shape))
        y = _out(out, self.out_shape, np.float32, x)
        _call(ctx, "bnn_fconv2d_run", self._ptr, _buf("float", x), x.size, _buf("float", y, True), y.size)
        return y

    __call__ = run



# ---- elementwise -----------------------------------------------------------------------------------
def add(a, b, out=None, ctx=None):
    """Residual add of two float32 arrays of the same shape; out may be a or b."""
    a = _arr("a", a, (np.float32,))
    b = _arr("b", b, (np.float32,))
    if a.shape != b.shape:
        raise ValueError("a and b must have the same shape, got a %s and b %s" % (a.shape, b.shape))
    if out is None:
        out = np.empty(a.shape, dtype=np.float32)
    else:
        _arr("out", out, (np.float32,), writable=True)
        if out.shape != a.shape:
            raise ValueError("out must have shape %s, got %s" % (a.shape, out.shape))
    if a.size == 0:
        return out
    _call(ctx, "bnn_add_f32", _buf("float", a), a.size, _buf("float", b), b.size, _buf("float", out, True),
          out.size, a.size)
    return out


def concat(xs, out=None, ctx=None):
    """Concatenates float32 arrays along the last axis (NHWC tensors on the channels), in C:
    the values copied bit for bit, as numpy.concatenate(xs, axis=-1)."""
    if isinstance(xs, np.ndarray) or not isinstance(xs, (list, tuple)):
        raise ValueError("xs must be a list or tuple of arrays, got %s" % type(xs).__name__)
    if not 1 <= len(xs) <= _C["BNN_CONCAT_MAX_INPUTS"]:
        raise ValueError("concat takes 1 to %d arrays, got %d" % (_C["BNN_CONCAT_MAX_INPUTS"], len(xs)))
    xs = [_arr("xs[%d]" % i, a, (np.float32,), min_ndim=1) for i, a in enumerate(xs)]
    lead = xs[0].shape[:-1]
    for i, a in enumerate(xs):
        if a.shape[:-1] != lead:
            raise ValueError("xs[%d] has shape %s: every array must have the leading shape %s of xs[0]"
                             % (i, a.shape, lead))
    shape = lead + (sum(a.shape[-1] for a in xs),)
    out = _out(out, shape, np.float32, *xs)
    if out.size == 0:
        return out
    bufs = [_buf("float", a) for a in xs]
    ptrs = ffi.new("float *[]", bufs)
    lens = ffi.new("size_t[]", [a.size for a in xs])
    cs = ffi.new("int32_t[]", [a.shape[-1] for a in xs])
    _call(ctx, "bnn_concat_f32", len(xs), ptrs, lens, cs, int(np.prod(lead, dtype=np.int64)),
          _buf("float", out, True), out.size, keep=(bufs, ptrs, lens, cs))
    return out


def _chan_param(name, v, c):
    """A per-channel float32 parameter: a number or an array of shape (c,) or (1,) -> a
    contiguous float32 [c] array (converted; a private copy)."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise ValueError("%s must be a real number or array, got dtype %s" % (name, a.dtype))
    if a.shape not in ((), (1,), (c,)):
        raise ValueError("%s must be a number or have shape (%d,) or (1,) (one value per channel, "
                         "the last axis), got %s" % (name, c, a.shape))
    return np.array(np.broadcast_to(a.astype(np.float32), (c,)), dtype=np.float32)


EW_MAX_STEPS = _native.BNN_EW_MAX_STEPS  # steps of one eltwise call / BConv2d output
_EW_KINDS = {"affine": _native.BNN_EW_AFFINE, "prelu": _native.BNN_EW_PRELU, "clip": _native.BNN_EW_CLIP,
             "add": _native.BNN_EW_ADD}
_EW_FORMS = "('affine', scale, bias), ('prelu', slope), ('clip', lo, hi) or ('add',)"


def _ew_steps(steps, c):
    """Validated steps -> (cdata bnn_ew_step[], number of steps, arrays to keep alive,
    whether one is ('add',))."""
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ValueError("steps must be a list of %s tuples" % _EW_FORMS)
    steps = list(steps)
    if len(steps) > _native.BNN_EW_MAX_STEPS:
        raise ValueError("at most %d steps, got %d" % (_native.BNN_EW_MAX_STEPS, len(steps)))
    keep, adds = [], False
    arr = ffi.new("bnn_ew_step[]", max(len(steps), 1))
    for i, st in enumerate(steps):
        if not isinstance(st, (tuple, list)) or not st or st[0] not in _EW_KINDS:
            raise ValueError("step %d must be %s, got %r" % (i, _EW_FORMS, st))
        kind = st[0]
        names = {"affine": ("scale", "bias"), "clip": ("lo", "hi"), "prelu": ("slope",), "add": ()}[kind]
        if len(st) != 1 + len(names) or (kind == "prelu" and st[1] is None):
            raise ValueError("step %d: ('%s'%s)%s, got %r" % (
                i, kind, "".join(", " + n for n in names),
                {"affine": " (None = 1 / 0)", "clip": " (None = no bound)"}.get(kind, ""), st))
        a, b = ([None if v is None else _chan_param("step %d %s" % (i, n), v, c) for n, v in zip(names, st[1:])]
                + [None, None])[:2]
        adds = adds or kind == "add"
        arr[i].op = _EW_KINDS[kind]
        arr[i].a = ffi.NULL if a is None else _buf("float", a)
        arr[i].b = ffi.NULL if b is None else _buf("float", b)
        keep += [a, b]
    return arr, len(steps), keep, adds


def _same_or_disjoint(name, out, a):
    """out must be exactly ``a`` (same memory, shape and strides) or not overlap it."""
    if a is None or not np.may_share_memory(out, a):
        return
    if (out.__array_interface__["data"][0] != a.__array_interface__["data"][0]
            or out.shape != a.shape or out.strides != a.strides):
        raise ValueError("out must be %s itself or not overlap it" % name)


def eltwise(x, steps=(), residual=None, out=None, ctx=None):
    """Per-channel elementwise chain over float32 x (channels last), in one C pass:
    t = x (+ residual, same shape, when no step is ("add",)), then each step in order:

      ("affine", scale, bias): t = t * scale[c] + bias[c]   (the product rounded to float32,
                               then the sum: as separate Mul and Add nodes; None = 1 / 0)
      ("prelu", slope):        t = t if t >= 0 else t * slope[c]
      ("clip", lo, hi):        t = t if t > lo[c] else lo[c], then t if t < hi[c] else hi[c]
                               (None = no bound; NaN stays NaN; a bound equal to t wins, so
                               ReLU, ("clip", 0, None), gives +0 for -0)
      ("add",):                t = t + residual   (the residual add where it comes)

    Parameters are numbers or arrays of shape (c,) or (1,).  Returns float32 of x's shape
    (written into ``out`` when given; ``out`` may be x, or residual itself when no step is
    ("add",)).  The results are those of numpy doing the same operations in float32."""
    x, c, pixels = _channels_last(x)
    if residual is not None:
        residual = _arr("residual", residual, (np.float32,))
        if residual.shape != x.shape:
            raise ValueError("residual must have x's shape %s, got %s" % (x.shape, residual.shape))
    arr, n, keep, adds = _ew_steps(steps, c)
    if adds and residual is None:
        raise ValueError("an ('add',) step needs the residual")
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    else:
        _arr("out", out, (np.float32,), writable=True)
        if out.shape != x.shape:
            raise ValueError("out must have shape %s, got %s" % (x.shape, out.shape))
        _same_or_disjoint("x", out, x)
        _same_or_disjoint("residual", out, residual)
        if adds and np.may_share_memory(out, residual):
            raise ValueError("out must not be the residual when a step is ('add',)")
    if x.size == 0:
        return out
    _call(ctx, "bnn_eltwise_f32", _buf("float", x), x.size,
          ffi.NULL if residual is None else _buf("float", residual), 0 if residual is None else residual.size,
          pixels, c, arr, n, c, _buf("float", out, True), out.size, keep=keep)
    return out


def affine(x, scale=None, bias=None, out=None, ctx=None):
    """x * scale[c] + bias[c] over the last axis of float32 x (the product rounded, then the
    sum; None = 1 / 0); ``out`` may be x.  See :func:`eltwise`."""
    return eltwise(x, [("affine", scale, bias)], out=out, ctx=ctx)


def prelu(x, slope, out=None, ctx=None):
    """PReLU over the last axis of float32 x: x if x >= 0 else x * slope[c]; ``out`` may be
    x.  See :func:`eltwise`."""
    return eltwise(x, [("prelu", slope)], out=out, ctx=ctx)
