"""Tests of the firmware_py binding against numpy references written here.

The binary convolution reference works on +-1 integers with explicit padding: zero
padding (the padded positions contribute 0, exactly what onnxruntime's Conv computes on
a +-1 input) or "one" padding (+1).  The whole module is skipped by conftest.py when the
native library has not been built (except the tests marked ``nolib``).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import wait_child
from tests.refs import ref_pack

import firmware_py as fp
from firmware_py import _native
from firmware_py._native import ffi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT32_MIN = np.iinfo(np.int32).min


# ---- numpy references --------------------------------------------------------------------------


def ref_bitpack(x, thr):
    return ref_pack(x < thr)


def ref_unpack(bits, c):
    words = bits.shape[-1]
    b = (bits[..., :, None] >> np.arange(32, dtype=np.uint32)) & 1
    b = b.reshape(bits.shape[:-1] + (words * 32,))[..., :c]
    return np.where(b == 1, -1.0, 1.0).astype(np.float32)


def pm1(shape, rng):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int64)


def ref_conv(x, w_oihw, stride, pads, pad_value=0.0, dtype=np.int64):
    """Direct convolution of NHWC x with OIHW w; padded positions hold pad_value."""
    pt, pl, pb, pr = pads
    sh, sw = stride
    xp = np.pad(x.astype(dtype), ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    o, c, kh, kw = w_oihw.shape
    n, hp, wp, _ = xp.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n, oh, ow, o), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
            y += patch @ w_oihw[:, :, i, j].T.astype(dtype)
    return y


def ref_window_reduce(x, kernel, stride, pads, pad_value, fn):
    pt, pl, pb, pr = pads
    kh, kw = kernel
    sh, sw = stride
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    n, hp, wp, c = xp.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    stack = np.stack(
        [xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
         for i in range(kh) for j in range(kw)]
    )
    return fn(stack)


def ref_xnor_scale(x, kernel, stride, pads):
    a = np.abs(x.astype(np.float64)).mean(axis=-1, keepdims=True)
    s = ref_window_reduce(a, kernel, stride, pads, 0.0, lambda st: st.sum(axis=0))
    return (s / (kernel[0] * kernel[1]))[..., 0]


def contexts():
    """(path, threads) for every available path and 1/2/3 threads."""
    return [(p, t) for p in fp.available_paths() for t in (1, 2, 3)]


@pytest.fixture(scope="module")
def ctx_cache():
    cache = {}
    yield cache
    for c in cache.values():
        c.close()


def get_ctx(cache, path, threads):
    key = (path, threads)
    if key not in cache:
        cache[key] = fp.Context(num_threads=threads, path=path)
    return cache[key]


# ---- library / context -------------------------------------------------------------------------------
def test_version_and_paths():
    assert fp.__version__ == "0.1.0"
    assert fp.library_version() == "0.1.0"
    paths = fp.available_paths()
    assert "portable" in paths
    assert all(p != "auto" for p in paths)


def test_context_properties():
    with fp.Context(num_threads=2, path="portable") as c:
        assert c.num_threads == 2
        assert c.path == "portable"
    assert "closed" in repr(c)
    with pytest.raises(ValueError, match="closed"):
        c.num_threads
    with pytest.raises(ValueError, match="ctx"):
        fp.bitpack(np.zeros((1, 4), np.float32), ctx=c)
    c.close()  # twice is fine
    auto = fp.Context(1)
    assert auto.path in fp.available_paths()
    auto.close()
    d = fp.default_context()
    assert d is fp.default_context()
    assert d.num_threads >= 1


def test_context_bad_args():
    with pytest.raises(ValueError, match="path"):
        fp.Context(path="no-such-path")
    avail = fp.available_paths()
    for p in ("portable", "neon", "avx2", "avx512"):
        if any(a.startswith(p) for a in avail):
            c = fp.Context(1, path=p)
            assert c.path.startswith(p)
            c.close()
        else:
            with pytest.raises(ValueError, match="not available"):
                fp.Context(1, path=p)
    with pytest.raises(ValueError, match="num_threads"):
        fp.Context(num_threads="2")
    with pytest.raises(ValueError, match="ctx"):
        fp.bitpack(np.zeros((1, 4), np.float32), ctx="ctx")


def test_check_maps_status():
    assert _native.check(0, "x") == 0
    with pytest.raises(_native.BnnSizeError) as e:
        _native.check(_native.BNN_E_SIZE, "bnn_thing")
    assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    assert "bnn_thing" in str(e.value) and "shorter" in str(e.value)
    with pytest.raises(_native.BnnShapeError):
        _native.check(_native.BNN_E_SHAPE)
    with pytest.raises(fp.BnnError):
        _native.check(_native.BNN_E_NOMEM)


def test_c_checks_short_buffers():
    """The C library validates again: a short output buffer gives BNN_E_SIZE, untouched."""
    L = _native.lib()
    a = np.ones(8, np.float32)
    y = np.full(8, 7.0, np.float32)
    st = L.bnn_add_f32(fp.default_context()._handle(), ffi.from_buffer("float[]", a), 8,
                       ffi.from_buffer("float[]", a), 8, ffi.from_buffer("float[]", y), 4, 8)
    assert st == _native.BNN_E_SIZE
    assert np.all(y == 7.0)
    x = np.zeros((4, 40), np.float32)
    out = np.full((4, 2), 123, np.uint32)
    st = L.bnn_bitpack_f32(fp.default_context()._handle(), ffi.from_buffer("float[]", x), x.size, 4, 40,
                           0.0, ffi.from_buffer("uint32_t[]", out), 7)
    assert st == _native.BNN_E_SIZE
    assert np.all(out == 123)


# ---- packed words / pads_for (pure Python) ------------------------------------------------------
def test_packed_words():
    assert [fp.packed_words(c) for c in (1, 31, 32, 33, 64, 65)] == [1, 1, 1, 2, 2, 3]
    assert fp.packed_words(130) == 5
    assert int(_native.lib().bnn_packed_words(130)) == 5
    with pytest.raises(ValueError, match="c"):
        fp.packed_words(-1)


@pytest.mark.nolib
def test_pads_for():
    assert fp.pads_for((7, 7), 3, 1, "valid") == (0, 0, 0, 0)
    assert fp.pads_for((7, 7), 3, 1, "same") == (1, 1, 1, 1)
    assert fp.pads_for((7, 7), 3, 2, "same") == (1, 1, 1, 1)
    assert fp.pads_for((8, 8), 3, 2, "same") == (0, 0, 1, 1)  # SAME_UPPER: extra at the end
    assert fp.pads_for((8, 8), 3, 2, "same_lower") == (1, 1, 0, 0)
    assert fp.pads_for((8, 6), (4, 2), (1, 1), "same") == (1, 0, 2, 1)
    assert fp.pads_for((5, 5), 1, 2, "same") == (0, 0, 0, 0)
    assert fp.pads_for((5, 5), 3, 1, (1, 0, 2, 1)) == (1, 0, 2, 1)
    with pytest.raises(ValueError, match="padding"):
        fp.pads_for((5, 5), 3, 1, "full")
    with pytest.raises(ValueError, match="padding"):
        fp.pads_for((5, 5), 3, 1, (1, 1))
    with pytest.raises(ValueError, match="padding"):
        fp.pads_for((5, 5), 3, 1, (1, -1, 1, 1))
    with pytest.raises(ValueError, match="stride"):
        fp.pads_for((5, 5), 3, 0, "same")


@pytest.mark.nolib
@pytest.mark.parametrize(
    "machine,psize,want",
    [
        ("x86_64", 8, "x86_64"), ("AMD64", 8, "x86_64"), ("aarch64", 8, "aarch64"),
        ("aarch64", 4, "armhf"), ("armv7l", 4, "armhf"), ("armv8l", 4, "armhf"),
        ("armv6l", 4, "armv6"), ("i686", 4, None), ("riscv64", 8, None), ("x86_64", 4, None),
    ],
)
def test_arch_dir(machine, psize, want):
    assert _native.arch_dir(machine, psize) == want


def _run_py(code, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.nolib
def test_import_is_light_and_lazy():
    r = _run_py(
        """
        import sys, firmware_py
        from firmware_py import _native
        assert _native._lib is None, "library loaded at import"
        bad = [m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules]
        assert not bad, bad
        print("ok")
        """,
        {},
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.nolib
def test_missing_library_error_is_clear():
    r = _run_py(
        """
        import numpy as np, firmware_py
        try:
            firmware_py.bitpack(np.zeros((1, 3), np.float32))
        except ImportError as e:
            print("IMPORTERROR", type(e).__name__, e)
        """,
        {"BNN_LIBRARY": "/nonexistent/libbnn.so"},
    )
    assert r.returncode == 0, r.stderr
    assert "IMPORTERROR BnnLibraryError" in r.stdout and "BNN_LIBRARY" in r.stdout, r.stdout


# ---- bitpack / unpack ------------------------------------------------------------------------------
CHANNELS = [1, 3, 17, 31, 32, 33, 40, 65, 130]


@pytest.mark.parametrize("c", CHANNELS)
def test_bitpack_f32(c):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, 3, 5, c)).astype(np.float32)
    x.flat[::7] = 0.0  # x == threshold -> +1 (bit 0)
    x.flat[1::11] = -0.0  # -0.0 is not < 0 -> +1
    for thr in (0.0, 0.25, -1.5):
        got = fp.bitpack(x, thr)
        assert got.dtype == np.uint32 and got.shape == (2, 3, 5, (c + 31) // 32)
        np.testing.assert_array_equal(got, ref_bitpack(x, np.float32(thr)))
        if c % 32:
            assert np.all(got[..., -1] >> np.uint32(c % 32) == 0), "tail bits not zero"
    np.testing.assert_array_equal(fp.unpack(fp.bitpack(x), c), np.where(x < 0, -1.0, 1.0))


def test_bitpack_f32_special_values():
    x = np.array([[np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-38, 1e-45, -1e-45] * 5], np.float32)
    # NaN < 0 is false -> +1 (bit 0); -1e-45 (a subnormal) < 0 -> -1
    np.testing.assert_array_equal(fp.bitpack(x), ref_bitpack(x, 0.0))


@pytest.mark.parametrize("c", CHANNELS)
def test_bitpack_u8_i8(c):
    rng = np.random.default_rng(100 + c)
    xu = rng.integers(0, 256, size=(4, 3, c), dtype=np.uint8)
    xi = rng.integers(-128, 128, size=(4, 3, c), dtype=np.int8)
    for zp in (0, 1, 128, 255):
        np.testing.assert_array_equal(fp.bitpack(xu, zp), ref_bitpack(xu.astype(np.int32), zp))
    for zp in (0, -3, 5, -128, 127):
        np.testing.assert_array_equal(fp.bitpack(xi, zp), ref_bitpack(xi.astype(np.int32), zp))
    # zero points outside the type's range: everything +1 / everything -1
    assert np.all(fp.bitpack(xu, -1) == 0)
    assert np.all(fp.unpack(fp.bitpack(xi, 1000), c) == -1)


def test_bitpack_shapes():
    x = np.arange(-5, 5, dtype=np.float32)
    np.testing.assert_array_equal(fp.bitpack(x), ref_bitpack(x, 0))
    assert fp.bitpack(x).shape == (1,)
    assert fp.bitpack(np.zeros((0, 4), np.float32)).shape == (0, 1)
    y = np.ones((2, 1, 1, 2, 33), np.int8)
    assert fp.bitpack(y).shape == (2, 1, 1, 2, 2)


@pytest.mark.parametrize("c", CHANNELS)
def test_unpack(c):
    rng = np.random.default_rng(200 + c)
    bits = ref_pack(rng.random((3, 2, c)) < 0.5)
    got = fp.unpack(bits, c)
    assert got.dtype == np.float32 and got.shape == (3, 2, c)
    np.testing.assert_array_equal(got, ref_unpack(bits, c))


def test_unpack_paths_threads_identical(ctx_cache):
    """the vector kernels on every path and thread count: the same bits as the reference"""
    rng = np.random.default_rng(6)
    for c in (1, 33, 64, 100, 512):
        bits = ref_pack(rng.random((4000, c)) < 0.5)
        ref = ref_unpack(bits, c)
        for path, t in contexts():
            got = fp.unpack(bits, c, ctx=get_ctx(ctx_cache, path, t))
            assert got.tobytes() == ref.tobytes(), "c %d path %s threads %d" % (c, path, t)


def test_bitpack_paths_threads_identical(ctx_cache):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 9, 545)).astype(np.float32)
    xi = rng.integers(-128, 128, size=(3, 7, 9, 130), dtype=np.int8)
    xu = rng.integers(0, 256, size=(3, 7, 9, 33), dtype=np.uint8)
    want = (ref_bitpack(x, 0.1), ref_bitpack(xi.astype(np.int32), 3), ref_bitpack(xu.astype(np.int32), 128))
    for path, t in contexts():
        c = get_ctx(ctx_cache, path, t)
        got = (fp.bitpack(x, 0.1, ctx=c), fp.bitpack(xi, 3, ctx=c), fp.bitpack(xu, 128, ctx=c))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg="path %s threads %d" % (path, t))


# ---- binary convolution --------------------------------------------------------------------------
# (n, h, w, c, out_c, kernel, stride, padding)
CONV_CASES = [
    (1, 5, 5, 3, 4, 1, 1, "valid"),
    (2, 6, 7, 17, 5, 3, 1, "same"),
    (1, 8, 8, 32, 33, 3, 2, "same"),
    (1, 9, 8, 33, 8, 3, 2, "valid"),
    (2, 7, 6, 40, 7, 3, 1, (1, 0, 2, 1)),
    (1, 9, 9, 65, 31, 5, 1, "same"),
    (1, 10, 11, 64, 32, 5, 2, "same_lower"),
    (1, 11, 9, 130, 6, 7, 2, "same"),
    (1, 9, 9, 31, 65, 7, 1, (3, 0, 0, 6)),
    (1, 4, 12, 96, 3, (1, 3), (2, 1), (0, 1, 0, 1)),
    # wider images, more channels: the kernels' row / 64-output-channel / word blocking
    (1, 6, 33, 256, 100, 3, 1, "same"),
    (1, 5, 6, 545, 65, 3, 2, "same"),
    (2, 4, 40, 64, 130, 1, 1, "valid"),
]


def _conv_id(case):
    n, h, w, c, o, k, s, p = case
    return "n%d_%dx%dx%d_o%d_k%s_s%s_%s" % (n, h, w, c, o, k, s, p if isinstance(p, str) else "pads")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_setup(case, seed):
    n, h, w, c, o, k, s, p = case
    rng = np.random.default_rng(seed)
    kh, kw = _pair(k)
    xf = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wf = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    wf.flat[::13] = 0.0  # sign 0 -> +1
    x_pm = np.where(xf < 0, -1, 1)
    w_pm = np.where(wf < 0, -1, 1)
    pads = fp.pads_for((h, w), (kh, kw), _pair(s), p)
    return rng, xf, wf, x_pm, w_pm, pads


@pytest.mark.parametrize("pad_mode", ["zero", "one"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_bconv2d_int32(case, pad_mode):
    n, h, w, c, o, k, s, p = case
    rng, xf, wf, x_pm, w_pm, pads = _conv_setup(case, 1)
    layer = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, pad_mode=pad_mode, output="int32")
    ref = ref_conv(x_pm, w_pm, _pair(s), pads, 0 if pad_mode == "zero" else 1)
    assert layer.out_shape == ref.shape
    y = layer.run(fp.bitpack(xf))
    assert y.dtype == np.int32 and y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_bconv2d_float(case):
    n, h, w, c, o, k, s, p = case
    rng, xf, wf, x_pm, w_pm, pads = _conv_setup(case, 2)
    kh, kw = _pair(k)
    d = ref_conv(x_pm, w_pm, _pair(s), pads, 0)
    mul = (rng.random(o) + 0.1).astype(np.float32) * np.where(rng.random(o) < 0.3, -1, 1).astype(np.float32)
    add = rng.standard_normal(o).astype(np.float32)
    bits = fp.bitpack(xf)

    plain = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, output="float")
    np.testing.assert_array_equal(plain.run(bits), d.astype(np.float32))

    layer = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, output="float", mul=mul, add=add)
    y = layer.run(bits)
    ref = d.astype(np.float32) * mul + add
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)

    K = fp.xnor_scale(xf, (kh, kw), s, p)
    np.testing.assert_allclose(K, ref_xnor_scale(xf, (kh, kw), _pair(s), pads), rtol=1e-5, atol=1e-6)
    yk = layer.run(bits, k_scale=K)
    refk = (d.astype(np.float32) * mul) * K[..., None] + add
    np.testing.assert_allclose(yk, refk, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_bconv2d_bits(case):
    n, h, w, c, o, k, s, p = case
    rng, xf, wf, x_pm, w_pm, pads = _conv_setup(case, 3)
    d = ref_conv(x_pm, w_pm, _pair(s), pads, 0)
    kh, kw = _pair(k)
    span = c * kh * kw
    thr = rng.integers(-span // 3 - 1, span // 3 + 2, size=o).astype(np.int32)
    flip = rng.random(o) < 0.4  # negative BN gamma
    thr[0] = INT32_MIN  # with flip 0: a constant +1 channel
    flip[0] = False
    if o > 2:
        thr[1] = np.iinfo(np.int32).max  # flip 1: d > INT32_MAX never: constant +1
        flip[1] = True
    layer = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, output="bits", threshold=thr, flip=flip)
    y = layer.run(fp.bitpack(xf))
    neg = np.where(flip, d > thr.astype(np.int64), d < thr.astype(np.int64))
    ref = ref_pack(neg)
    assert y.dtype == np.uint32 and y.shape == (n,) + d.shape[1:3] + ((o + 31) // 32,)
    np.testing.assert_array_equal(y, ref)
    assert np.all(fp.unpack(y, o)[..., 0] == 1.0)
    # flip given as uint8 and no flip at all
    y8 = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, output="bits", threshold=thr,
                    flip=flip.astype(np.uint8)).run(fp.bitpack(xf))
    np.testing.assert_array_equal(y8, ref)
    y0 = fp.BConv2d(wf, (n, h, w, c), stride=s, padding=p, output="bits", threshold=thr).run(fp.bitpack(xf))
    np.testing.assert_array_equal(y0, ref_pack(d < thr.astype(np.int64)))


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 4, 7, 9, 10, 11, 12)], ids=_conv_id)
def test_bconv2d_paths_threads_identical(case, ctx_cache):
    n, h, w, c, o, k, s, p = case
    rng, xf, wf, x_pm, w_pm, pads = _conv_setup(case, 4)
    d0 = ref_conv(x_pm, w_pm, _pair(s), pads, 0)
    d1 = ref_conv(x_pm, w_pm, _pair(s), pads, 1)
    kh, kw = _pair(k)
    mul = rng.standard_normal(o).astype(np.float32)
    add = rng.standard_normal(o).astype(np.float32)
    thr = rng.integers(-5, 6, size=o).astype(np.int32)
    flip = rng.random(o) < 0.5
    shape = (n, h, w, c)
    l_int = fp.BConv2d(wf, shape, stride=s, padding=p, output="int32")
    l_one = fp.BConv2d(wf, shape, stride=s, padding=p, pad_mode="one", output="int32")
    l_f = fp.BConv2d(wf, shape, stride=s, padding=p, output="float", mul=mul, add=add)
    l_b = fp.BConv2d(wf, shape, stride=s, padding=p, output="bits", threshold=thr, flip=flip)
    bits = fp.bitpack(xf)
    K = fp.xnor_scale(xf, (kh, kw), s, p)
    ref_b = ref_pack(np.where(flip, d0 > thr, d0 < thr))
    first_f = None
    for path, t in contexts():
        cx = get_ctx(ctx_cache, path, t)
        msg = "path %s threads %d" % (path, t)
        np.testing.assert_array_equal(l_int.run(bits, ctx=cx), d0, err_msg=msg)
        np.testing.assert_array_equal(l_one.run(bits, ctx=cx), d1, err_msg=msg)
        np.testing.assert_array_equal(l_b.run(bits, ctx=cx), ref_b, err_msg=msg)
        yf = l_f.run(bits, k_scale=fp.xnor_scale(xf, (kh, kw), s, p, ctx=cx), ctx=cx)
        if first_f is None:
            first_f = yf
            np.testing.assert_allclose(yf, (d0.astype(np.float32) * mul) * K[..., None] + add,
                                       rtol=1e-6, atol=1e-6)
        else:  # bit-identical across paths and thread counts
            np.testing.assert_array_equal(yf.view(np.uint32), first_f.view(np.uint32), err_msg=msg)


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 4, 7, 9, 10, 11, 12)], ids=_conv_id)
def test_bconv2d_output_steps(case, ctx_cache):
    """steps fused into the float output (QuickNet's ReLU, BatchNorm, shortcut add; a
    PReLU): the same bits as the float output followed by ops.eltwise, on every path and
    thread count, with and without K"""
    n, h, w, c, o, k, s, p = case
    rng, xf, wf, x_pm, w_pm, pads = _conv_setup(case, 6)
    kh, kw = _pair(k)
    mul, add, sc, b, sl = (rng.standard_normal(o).astype(np.float32) for _ in range(5))
    shape = (n, h, w, c)
    plain = fp.BConv2d(wf, shape, stride=s, padding=p, output="float", mul=mul, add=add)
    bits = fp.bitpack(xf)
    K = fp.xnor_scale(xf, (kh, kw), s, p)
    r = _specials(rng, plain.out_shape)
    for steps in ([("clip", 0.0, None), ("affine", sc, b), ("add",)], [("prelu", sl), ("clip", -1.0, sl)],
                  [("add",), ("clip", 0.0, 6.0)]):
        res = r if any(st[0] == "add" for st in steps) else None
        fused = fp.BConv2d(wf, shape, stride=s, padding=p, output="float", mul=mul, add=add, steps=steps)
        for k_scale in (None, K):
            want = fp.eltwise(plain.run(bits, k_scale=k_scale), steps, residual=res)
            for path, t in contexts():
                got = fused.run(bits, k_scale=k_scale, residual=res, ctx=get_ctx(ctx_cache, path, t))
                assert _same(got, want), "steps %s path %s threads %d K %s" % (
                    [st[0] for st in steps], path, t, k_scale is not None)
    with pytest.raises(ValueError, match="residual is required"):
        fused.run(bits)
    with pytest.raises(ValueError, match="residual is not used"):
        plain.run(bits, residual=r)
    with pytest.raises(ValueError, match="residual must have shape"):
        fused.run(bits, residual=r[..., :-1].copy())
    y = np.empty_like(r)
    with pytest.raises(ValueError, match="overlap"):
        fused.run(bits, residual=y, out=y)
    with pytest.raises(ValueError, match="only used with output='float'"):
        fp.BConv2d(wf, shape, stride=s, padding=p, output="int32", steps=[("clip", 0.0, None)])
    with pytest.raises(ValueError, match="step 0"):
        fp.BConv2d(wf, shape, stride=s, padding=p, output="float", steps=[("relu",)])


def test_bconv2d_weight_dtypes_and_close():
    rng = np.random.default_rng(9)
    wf = rng.standard_normal((4, 3, 3, 3))
    x = rng.standard_normal((1, 5, 5, 3)).astype(np.float32)
    want = ref_conv(np.where(x < 0, -1, 1), np.where(wf < 0, -1, 1), (1, 1), (0, 0, 0, 0))
    for wt in (wf, wf.astype(np.float32), np.where(wf < 0, -1, 1).astype(np.int8),
               np.asfortranarray(wf)):
        layer = fp.BConv2d(wt, (1, 5, 5, 3))
        np.testing.assert_array_equal(layer.run(fp.bitpack(x)), want)
        layer.close()
        layer.close()
        with pytest.raises(ValueError, match="closed"):
            layer.run(fp.bitpack(x))
    with fp.BConv2d(wf, (1, 5, 5, 3)) as layer:
        assert layer.out_shape == (1, 3, 3, 4)


def test_bconv2d_vs_onnxruntime():
    import onnxruntime as ort
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    n, h, w, c, o, k, s = 2, 9, 8, 45, 20, 3, 2
    pads = fp.pads_for((h, w), k, s, "same")
    x_pm = np.where(rng.random((n, c, h, w)) < 0.5, -1.0, 1.0).astype(np.float32)  # NCHW
    wf = rng.standard_normal((o, c, k, k)).astype(np.float32)
    w_pm = np.where(wf < 0, -1.0, 1.0).astype(np.float32)
    mul = rng.standard_normal(o).astype(np.float32)
    add = rng.standard_normal(o).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[k, k], strides=[s, s],
                             pads=[pads[0], pads[1], pads[2], pads[3]]),
            helper.make_node("Mul", ["c", "mul"], ["m"]),
            helper.make_node("Add", ["m", "add"], ["y"]),
        ],
        "bconv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w_pm, "w"),
         numpy_helper.from_array(mul.reshape(1, o, 1, 1), "mul"),
         numpy_helper.from_array(add.reshape(1, o, 1, 1), "add")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x_pm})[0].transpose(0, 2, 3, 1)

    x_nhwc = np.ascontiguousarray(x_pm.transpose(0, 2, 3, 1))
    layer = fp.BConv2d(wf, (n, h, w, c), stride=s, padding="same", output="float", mul=mul, add=add)
    got = layer.run(fp.bitpack(x_nhwc))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# ---- xnor_scale -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,stride,padding", [(1, 1, "valid"), (3, 1, "same"), (3, 2, "same"),
                                                   ((5, 3), (2, 1), (2, 1, 4, 0)), (7, 2, "valid")])
def test_xnor_scale(kernel, stride, padding, ctx_cache):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 11, 10, 19)).astype(np.float32)
    pads = fp.pads_for((11, 10), kernel, stride, padding)
    ref = ref_xnor_scale(x, _pair(kernel), _pair(stride), pads)
    first = None
    for path, t in contexts():
        k = fp.xnor_scale(x, kernel, stride, padding, ctx=get_ctx(ctx_cache, path, t))
        assert k.dtype == np.float32 and k.shape == ref.shape
        np.testing.assert_allclose(k, ref, rtol=1e-5, atol=1e-7)
        if first is None:
            first = k
        else:
            np.testing.assert_array_equal(k, first, err_msg="path %s threads %d" % (path, t))


# ---- pools -------------------------------------------------------------------------------------------
POOL_CASES = [(2, None, "valid"), (3, 2, "same"), (3, 1, (1, 0, 2, 1)), ((2, 3), (1, 2), "same_lower"),
              (3, 3, "valid")]


@pytest.mark.parametrize("c", [1, 31, 32, 33, 65, 130])
@pytest.mark.parametrize("kernel,stride,padding", POOL_CASES)
def test_bmaxpool2d(c, kernel, stride, padding, ctx_cache):
    rng = np.random.default_rng(c)
    n, h, w = 2, 9, 8
    x_pm = np.where(rng.random((n, h, w, c)) < 0.6, -1.0, 1.0).astype(np.float32)
    bits = ref_bitpack(x_pm, 0)
    st = _pair(kernel) if stride is None else _pair(stride)
    pads = fp.pads_for((h, w), kernel, st, padding)
    ref = ref_bitpack(ref_window_reduce(x_pm, _pair(kernel), st, pads, -np.inf,
                                        lambda s: s.max(axis=0)), 0)
    for path, t in contexts():
        got = fp.bmaxpool2d(bits, c, kernel, stride, padding, ctx=get_ctx(ctx_cache, path, t))
        np.testing.assert_array_equal(got, ref, err_msg="path %s threads %d" % (path, t))


@pytest.mark.parametrize("kernel,stride,padding", POOL_CASES)
def test_maxpool2d(kernel, stride, padding, ctx_cache):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 9, 8, 13)).astype(np.float32) - 3.0  # all negative-ish: pads ignored
    st = _pair(kernel) if stride is None else _pair(stride)
    pads = fp.pads_for((9, 8), kernel, st, padding)
    ref = ref_window_reduce(x, _pair(kernel), st, pads, -np.inf, lambda s: s.max(axis=0))
    for path, t in contexts():
        got = fp.maxpool2d(x, kernel, stride, padding, ctx=get_ctx(ctx_cache, path, t))
        np.testing.assert_array_equal(got, ref, err_msg="path %s threads %d" % (path, t))


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("kernel,stride,padding", POOL_CASES)
def test_avgpool2d(kernel, stride, padding, count_include_pad, ctx_cache):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 9, 8, 13)).astype(np.float32)
    st = _pair(kernel) if stride is None else _pair(stride)
    pads = fp.pads_for((9, 8), kernel, st, padding)
    kh, kw = _pair(kernel)
    s = ref_window_reduce(x.astype(np.float64), (kh, kw), st, pads, 0.0, lambda a: a.sum(axis=0))
    if count_include_pad:
        ref = s / (kh * kw)
    else:
        cnt = ref_window_reduce(np.ones((1, 9, 8, 1)), (kh, kw), st, pads, 0.0, lambda a: a.sum(axis=0))
        ref = s / cnt
    first = None
    for path, t in contexts():
        got = fp.avgpool2d(x, kernel, stride, padding, count_include_pad,
                           ctx=get_ctx(ctx_cache, path, t))
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        if first is None:
            first = got
        else:
            np.testing.assert_array_equal(got, first, err_msg="path %s threads %d" % (path, t))


@pytest.mark.parametrize("hw", [(1, 1), (7, 7), (15, 4), (20, 20)])
def test_global_avgpool(hw):
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2,) + hw + (37,)).astype(np.float32)
    got = fp.global_avgpool(x)
    assert got.shape == (2, 1, 1, 37) and got.dtype == np.float32
    np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=(1, 2), keepdims=True),
                               rtol=1e-5, atol=1e-6)


# ---- float convolution -------------------------------------------------------------------------------
# (n, h, w, c, out_c, kernel, stride, padding, bias)
FCONV_CASES = [
    (1, 16, 15, 3, 16, 3, 2, "same", True),   # a first layer
    (2, 8, 8, 1, 8, 3, 1, "valid", False),
    (1, 6, 5, 64, 10, 1, 1, "valid", True),   # 1x1
    (3, 1, 1, 128, 10, 1, 1, "valid", True),  # dense head
    (1, 13, 12, 3, 24, 7, 2, (3, 3, 3, 3), False),
    (1, 9, 9, 5, 7, (3, 5), (1, 2), (1, 0, 2, 4), True),
    (1, 10, 9, 33, 33, 3, 1, "same", True),
]


@pytest.mark.parametrize("case", FCONV_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_fconv2d(case, ctx_cache):
    n, h, w, c, o, k, s, p, with_bias = case
    rng = np.random.default_rng(31)
    kh, kw = _pair(k)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32) if with_bias else None
    pads = fp.pads_for((h, w), (kh, kw), _pair(s), p)
    ref = ref_conv(x, wt, _pair(s), pads, 0.0, dtype=np.float64)
    if bias is not None:
        ref = ref + bias
    mag = ref_conv(np.abs(x), np.abs(wt), _pair(s), pads, 0.0, dtype=np.float64)
    layer = fp.FConv2d(wt, (n, h, w, c), bias=bias, stride=s, padding=p)
    assert layer.out_shape == ref.shape
    for path, t in contexts():
        y = layer.run(x, ctx=get_ctx(ctx_cache, path, t))
        assert y.dtype == np.float32 and y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5 * float(mag.max()) + 1e-6,
                                   err_msg="path %s threads %d" % (path, t))
    layer.close()


@pytest.mark.parametrize("case", [(1, 15, 17, 24, 24, 3, 2, 24), (2, 9, 8, 16, 32, 3, 1, 8), (1, 6, 7, 12, 6, 1, 1, 3)],
                         ids=["depthwise-3x3s2", "group8", "1x1-group3"])
def test_fconv2d_groups(case, ctx_cache):
    """grouped / depthwise convolutions = one convolution per group (ref_conv on its channels)"""
    n, h, w, c, o, k, s, groups = case
    rng = np.random.default_rng(32)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    pads = fp.pads_for((h, w), (k, k), (s, s), "same")
    ic, oc = c // groups, o // groups
    ref = np.concatenate([ref_conv(x[..., g * ic:(g + 1) * ic], wt[g * oc:(g + 1) * oc], (s, s), pads, 0.0,
                                   dtype=np.float64) for g in range(groups)], axis=-1) + bias
    layer = fp.FConv2d(wt, (n, h, w, c), bias=bias, stride=s, padding="same", groups=groups)
    assert layer.out_shape == ref.shape and layer.groups == groups
    for path, t in contexts():
        y = layer.run(x, ctx=get_ctx(ctx_cache, path, t))
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg="path %s threads %d" % (path, t))
    with pytest.raises(ValueError, match="groups = 5 must divide the input channels"):
        fp.FConv2d(wt, (n, h, w, c), groups=5)
    with pytest.raises(ValueError, match="weight has"):
        fp.FConv2d(wt, (n, h, w, c))  # groups 1 expects c input channels
    if groups > 1:
        with pytest.raises(ValueError, match="must divide the output channels"):
            fp.FConv2d(wt[:-1], (n, h, w, c), groups=groups)

# ---- add ---------------------------------------------------------------------------------------------
def test_add():
    rng = np.random.default_rng(41)
    a = rng.standard_normal((2, 5, 5, 33)).astype(np.float32)
    b = rng.standard_normal((2, 5, 5, 33)).astype(np.float32)
    np.testing.assert_array_equal(fp.add(a, b), a + b)
    out = np.empty_like(a)
    assert fp.add(a, b, out=out) is out
    np.testing.assert_array_equal(out, a + b)
    a2 = a.copy()
    fp.add(a2, b, out=a2)  # aliasing
    np.testing.assert_array_equal(a2, a + b)
    x = rng.standard_normal(1001).astype(np.float32)
    np.testing.assert_array_equal(fp.add(x, x), x + x)


# ---- concat ------------------------------------------------------------------------------------------
def test_concat_matches_numpy():
    rng = np.random.default_rng(43)
    for shapes in ([(1, 48, 48, 16)] * 2, [(2, 3, 5, 1), (2, 3, 5, 70), (2, 3, 5, 0), (2, 3, 5, 9)],
                   [(4, 7)], [(3, 1000), (3, 24)], [(2, 1, 1, 5)] * 300):
        xs = [_specials(rng, s) if np.prod(s) else np.zeros(s, np.float32) for s in shapes]
        want = np.concatenate(xs, axis=-1)
        got = fp.concat(xs)
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bit for bit, NaN payloads included
        out = np.full(want.shape, 7.0, np.float32)
        assert fp.concat(tuple(xs), out=out) is out and out.tobytes() == want.tobytes()
    empty = np.zeros((0, 5, 5, 3), np.float32)
    assert fp.concat([empty, empty]).shape == (0, 5, 5, 6)


def test_concat_refuses_bad_input_and_leaves_out_alone():
    a = np.ones((2, 4, 4, 3), np.float32)
    out = np.full((2, 4, 4, 6), 5.0, np.float32)
    for xs, msg in (([a, a.astype(np.float64)], "float32"), ([a, a[:1]], "leading shape"),
                    ([a, a[..., ::2]], "C-contiguous"), (a, "list or tuple"), ([], "1 to"),
                    ([a, np.float32(1)], "numpy.ndarray")):
        with pytest.raises(ValueError, match=msg):
            fp.concat(xs, out=out)
    with pytest.raises(ValueError, match="must have shape"):
        fp.concat([a, a], out=np.empty((2, 4, 4, 5), np.float32))
    inside = out.reshape(-1)[96:].reshape(a.shape)  # a view of out's second half
    with pytest.raises(ValueError, match="overlap"):
        fp.concat([a, inside], out=out)
    assert (out == 5.0).all()


# ---- per-channel elementwise chains, packing after an affine -------------------------------------
def _specials(rng, shape):
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    flat = x.reshape(-1)
    sp = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-40, 3e38, -3e38], np.float32)
    idx = rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)
    flat[idx] = sp[rng.integers(0, sp.size, idx.size)]
    return x


def _np_chain(x, steps, residual=None):
    """numpy float32 reference of ops.eltwise (the executor's former numpy code)."""
    with np.errstate(all="ignore"):
        return _np_chain_(x, steps, residual)


def _np_chain_(x, steps, residual):
    adds = any(st[0] == "add" for st in steps)
    t = x + residual if residual is not None and not adds else x.copy()

    def f32(v):
        return np.float32(v) if np.ndim(v) == 0 else np.asarray(v, np.float32)
    for st in steps:
        if st[0] == "add":
            t = t + residual
        elif st[0] == "clip":  # NaN kept; the bound where t equals it (relu(-0) = +0)
            if st[1] is not None:
                t = np.where((t > f32(st[1])) | np.isnan(t), t, f32(st[1]))
            if st[2] is not None:
                t = np.where((t < f32(st[2])) | np.isnan(t), t, f32(st[2]))
        elif st[0] == "affine":
            if st[1] is not None:
                t = np.multiply(t, np.float32(st[1]) if np.ndim(st[1]) == 0 else np.asarray(st[1], np.float32))
            if st[2] is not None:
                t = np.add(t, np.float32(st[2]) if np.ndim(st[2]) == 0 else np.asarray(st[2], np.float32))
        else:
            m = np.multiply(t, np.asarray(st[1], np.float32))
            t = np.where(t >= 0, t, m)
    return t.astype(np.float32)


def _same(a, b):
    """Equal bits, any NaN equal to any NaN."""
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("c", [1, 3, 16, 17, 32, 64, 100, 256])
def test_eltwise_matches_numpy(c, ctx_cache):
    rng = np.random.default_rng(300 + c)
    x = _specials(rng, (2, 3, 5, c))
    r = _specials(rng, x.shape)
    sc, b, sl = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    chains = [
        ([("affine", sc, b)], None),
        ([("affine", None, b), ("prelu", sl), ("affine", None, -b)], r),  # Bi-Real add + RPReLU
        ([("prelu", sl)], None),
        ([("prelu", np.float32(0.25))], r),
        ([("affine", sc, None), ("affine", 2.0, 0.5)], None),
        ([], r),
        ([("clip", 0.0, None)], None),  # ReLU
        ([("clip", -b * 0 - 1, sc * 0 + 2)], r),  # per-channel bounds, r first
        ([("clip", None, 6.0), ("affine", sc, b), ("add",), ("clip", 0, None)], r),  # QuickNet: the add mid-chain
        ([("add",), ("prelu", sl), ("add",)], r),
    ]
    for steps, res in chains:
        want = _np_chain(x, steps, res)
        for path, t in contexts():
            got = fp.eltwise(x, steps, residual=res, ctx=get_ctx(ctx_cache, path, t))
            assert got.dtype == np.float32
            assert _same(got, want), "steps %s path %s threads %d" % ([s[0] for s in steps], path, t)
    np.testing.assert_array_equal(fp.affine(x, sc, b), _np_chain(x, [("affine", sc, b)]))
    assert _same(fp.prelu(x, sl), _np_chain(x, [("prelu", sl)]))
    assert _same(fp.prelu(x, np.array([0.3], np.float32)), _np_chain(x, [("prelu", np.full(c, 0.3, np.float32))]))


def test_eltwise_in_place_and_2d():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    r = rng.standard_normal((4, 9)).astype(np.float32)
    sl = rng.standard_normal(9).astype(np.float32)
    want = _np_chain(x, [("prelu", sl)], r)
    y = x.copy()
    assert fp.eltwise(y, [("prelu", sl)], residual=r, out=y) is y
    np.testing.assert_array_equal(y, want)
    y = r.copy()
    fp.eltwise(x, [("prelu", sl)], residual=y, out=y)
    np.testing.assert_array_equal(y, want)
    assert fp.eltwise(np.zeros((0, 3), np.float32), [("prelu", 1.0)]).shape == (0, 3)


@pytest.mark.parametrize("c", [1, 5, 31, 32, 33, 64, 130])
def test_bitpack_affine(c, ctx_cache):
    rng = np.random.default_rng(400 + c)
    x = _specials(rng, (3, 4, c))
    sc = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    x[0, 0] = b  # x - b == 0 exactly: +1
    for scale, bias, thr in ((None, -b, 0.0), (sc, b, 0.0), (sc, None, 0.5), (None, None, -0.25), (2.0, 1.0, 0.0)):
        t = _np_chain(x, [("affine", scale, bias)])
        want = ref_bitpack(t, np.float32(thr))
        for path, nt in contexts():
            got = fp.bitpack_affine(x, scale, bias, thr, ctx=get_ctx(ctx_cache, path, nt))
            np.testing.assert_array_equal(got, want, err_msg="path %s threads %d" % (path, nt))
    # RSign: sign(x - b) packs as x < b
    np.testing.assert_array_equal(fp.bitpack_affine(x, bias=-b), ref_bitpack(x - b, np.float32(0)))


def test_bad_input_eltwise_bitpack_affine():
    x = np.ones((2, 3, 4), np.float32)
    c4 = np.ones(4, np.float32)
    out = np.full((2, 3, 4), 7.0, np.float32)
    bad_steps = [
        ([("affine", np.ones(3, np.float32), None)], "scale"),
        ([("affine", None, np.ones(5, np.float32))], "bias"),
        ([("prelu", None)], "prelu"),
        ([("prelu",)], "prelu"),
        ([("relu", c4)], "step 0"),
        ([("affine", c4)], "affine"),
        ("prelu", "steps"),
        ([("affine", np.array(["a"] * 4), None)], "scale"),
        ([("affine", None, None)] * 17, "at most 16"),
        ([("clip", 0.0)], "clip"),
        ([("add", x)], "add"),
        ([("add",)], "needs the residual"),
    ]
    for steps, msg in bad_steps:
        with pytest.raises(ValueError, match=msg):
            fp.eltwise(x, steps, out=out)
    with pytest.raises(ValueError, match="residual"):
        fp.eltwise(x, [], residual=np.ones((2, 3, 5), np.float32), out=out)
    with pytest.raises(ValueError, match="residual.*dtype"):
        fp.eltwise(x, [], residual=np.ones((2, 3, 4)), out=out)
    with pytest.raises(ValueError, match="out.*shape"):
        fp.eltwise(x, [], out=np.ones((2, 3, 5), np.float32))
    buf = np.ones(28, np.float32)  # out overlapping x without being x
    with pytest.raises(ValueError, match="out must be x itself or not overlap it"):
        fp.eltwise(buf[4:].reshape(2, 3, 4), [], out=buf[:24].reshape(2, 3, 4))
    with pytest.raises(ValueError, match="out must be residual itself or not overlap it"):
        fp.eltwise(x, [], residual=buf[4:].reshape(2, 3, 4), out=buf[:24].reshape(2, 3, 4))
    r = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="not be the residual"):
        fp.eltwise(x, [("add",)], residual=r, out=r)
    with pytest.raises(ValueError, match="x.*dtype"):
        fp.eltwise(x.astype(np.float64), [])
    with pytest.raises(ValueError, match="x.*C-contiguous"):
        fp.eltwise(np.ones((2, 3, 8), np.float32)[:, :, ::2], [])
    assert np.all(out == 7.0), "output written on error"
    bits = np.full((2, 3, 1), 9, np.uint32)
    with pytest.raises(ValueError, match="scale"):
        fp.bitpack_affine(x, np.ones(5, np.float32), out=bits)
    with pytest.raises(ValueError, match="threshold"):
        fp.bitpack_affine(x, threshold="0", out=bits)
    with pytest.raises(ValueError, match="out.*shape"):
        fp.bitpack_affine(x, out=np.zeros((2, 3, 2), np.uint32))
    with pytest.raises(ValueError, match="x.*dtype"):
        fp.bitpack_affine(x.astype(np.int8), out=bits)
    assert np.all(bits == 9), "output written on error"


def test_c_checks_eltwise_sizes():
    """The C functions themselves refuse short buffers (BNN_E_SIZE) and leave y alone."""
    L = _native.lib()
    ctx = fp.Context(1)
    x = np.ones(40, np.float32)
    y = np.full(40, 5.0, np.float32)
    p = np.ones(20, np.float32)
    steps = ffi.new("bnn_ew_step[]", 1)
    steps[0].op = _native.BNN_EW_PRELU
    steps[0].a = ffi.from_buffer("float[]", p)
    fx, fy = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y, require_writable=True)
    h = ctx._handle()
    assert L.bnn_eltwise_f32(h, fx, 39, ffi.NULL, 0, 2, 20, steps, 1, 20, fy, 40) == _native.BNN_E_SIZE
    assert L.bnn_eltwise_f32(h, fx, 40, ffi.NULL, 0, 2, 20, steps, 1, 19, fy, 40) == _native.BNN_E_SIZE
    assert L.bnn_eltwise_f32(h, fx, 40, fx, 39, 2, 20, steps, 1, 20, fy, 40) == _native.BNN_E_SIZE
    assert L.bnn_eltwise_f32(h, fx, 40, ffi.NULL, 0, 2, 20, steps, 1, 20, fy, 39) == _native.BNN_E_SIZE
    assert L.bnn_eltwise_f32(h, fx, 40, ffi.NULL, 0, 2, 20, steps, 17, 20, fy, 40) == _native.BNN_E_SHAPE
    assert np.all(y == 5.0)
    bits = np.full(2, 3, np.uint32)
    fb = ffi.from_buffer("uint32_t[]", bits, require_writable=True)
    fp_ = ffi.from_buffer("float[]", p)
    assert L.bnn_bitpack_affine_f32(h, fx, 40, 2, 20, fp_, ffi.NULL, 19, 0.0, fb, 2) == _native.BNN_E_SIZE
    assert L.bnn_bitpack_affine_f32(h, fx, 40, 2, 20, fp_, fp_, 20, 0.0, fb, 1) == _native.BNN_E_SIZE
    assert np.all(bits == 3)
    ctx.close()


# ---- bad input: ValueError naming the argument, no crash --------------------------------------------
def test_bad_input_bitpack_unpack():
    x = np.zeros((2, 4, 40), np.float32)
    with pytest.raises(ValueError, match="x.*dtype"):
        fp.bitpack(x.astype(np.float64))
    with pytest.raises(ValueError, match="x.*dtype"):
        fp.bitpack(x.astype(np.int32))
    with pytest.raises(ValueError, match="x.*C-contiguous"):
        fp.bitpack(x[:, :, ::2])
    with pytest.raises(ValueError, match="x"):
        fp.bitpack(np.float32(1.0) * np.ones((), np.float32))
    with pytest.raises(ValueError, match="x"):
        fp.bitpack([1.0, -1.0])
    with pytest.raises(ValueError, match="x"):
        fp.bitpack(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        fp.bitpack(np.zeros((2, 3), np.int8), threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        fp.bitpack(np.zeros((2, 3), np.float32), threshold="0")
    bits = fp.bitpack(x)
    with pytest.raises(ValueError, match="bits"):
        fp.unpack(bits, 70)
    with pytest.raises(ValueError, match="bits.*dtype"):
        fp.unpack(bits.astype(np.int32), 40)
    with pytest.raises(ValueError, match="c"):
        fp.unpack(bits, 0)


def test_bad_input_bconv2d():
    rng = np.random.default_rng(51)
    wt = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    shape = (1, 6, 6, 8)
    with pytest.raises(ValueError, match="weight"):
        fp.BConv2d(wt[0], shape)
    with pytest.raises(ValueError, match="weight"):
        fp.BConv2d(wt.astype(np.complex64), shape)
    with pytest.raises(ValueError, match="in_shape"):
        fp.BConv2d(wt, (6, 6, 8))
    with pytest.raises(ValueError, match="in_shape|channels"):
        fp.BConv2d(wt, (1, 6, 6, 9))
    with pytest.raises(ValueError, match="in_shape"):
        fp.BConv2d(wt, (0, 6, 6, 8))
    with pytest.raises(ValueError, match="stride"):
        fp.BConv2d(wt, shape, stride=0)
    with pytest.raises(ValueError, match="stride"):
        fp.BConv2d(wt, shape, stride=9)
    with pytest.raises(ValueError, match="stride"):
        fp.BConv2d(wt, shape, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        fp.BConv2d(wt, shape, padding="full")
    with pytest.raises(ValueError, match="padding"):
        fp.BConv2d(wt, shape, padding=(3, 0, 0, 0))  # pad >= kernel
    with pytest.raises(ValueError, match="kernel"):
        fp.BConv2d(wt, (1, 2, 6, 8))  # kernel larger than the input
    with pytest.raises(ValueError, match="kernel"):
        fp.BConv2d(np.ones((1, 8, 16, 1), np.float32), (1, 20, 20, 8))
    with pytest.raises(ValueError, match="pad_mode"):
        fp.BConv2d(wt, shape, pad_mode="reflect")
    with pytest.raises(ValueError, match="output"):
        fp.BConv2d(wt, shape, output="int8")
    with pytest.raises(ValueError, match="mul"):
        fp.BConv2d(wt, shape, output="int32", mul=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="threshold"):
        fp.BConv2d(wt, shape, output="float", threshold=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="mul"):
        fp.BConv2d(wt, shape, output="float", mul=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="add"):
        fp.BConv2d(wt, shape, output="float", add=np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        fp.BConv2d(wt, shape, output="bits")
    with pytest.raises(ValueError, match="threshold"):
        fp.BConv2d(wt, shape, output="bits", threshold=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="threshold"):
        fp.BConv2d(wt, shape, output="bits", threshold=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="threshold"):
        fp.BConv2d(wt, shape, output="bits", threshold=np.full(4, 2**40, np.int64))
    with pytest.raises(ValueError, match="flip"):
        fp.BConv2d(wt, shape, output="bits", threshold=np.zeros(4, np.int32), flip=np.zeros(5, bool))
    with pytest.raises(ValueError, match="flip"):
        fp.BConv2d(wt, shape, output="bits", threshold=np.zeros(4, np.int32),
                   flip=np.zeros(4, np.float32))

    layer = fp.BConv2d(wt, shape, output="float")
    x = fp.bitpack(rng.standard_normal(shape).astype(np.float32))
    with pytest.raises(ValueError, match="x_bits.*dtype"):
        layer.run(x.astype(np.int32))
    with pytest.raises(ValueError, match="x_bits.*4-D"):
        layer.run(x[0])
    with pytest.raises(ValueError, match="x_bits.*shape"):
        layer.run(np.zeros((1, 6, 5, 1), np.uint32))
    with pytest.raises(ValueError, match="x_bits.*shape"):
        layer.run(np.zeros((2, 6, 6, 1), np.uint32))
    with pytest.raises(ValueError, match="x_bits.*C-contiguous"):
        layer.run(np.zeros((1, 6, 6, 2), np.uint32)[..., :1])
    with pytest.raises(ValueError, match="k_scale"):
        layer.run(x, k_scale=np.ones((1, 4, 5), np.float32))
    with pytest.raises(ValueError, match="k_scale"):
        layer.run(x, k_scale=np.ones((1, 4, 4), np.float64))
    with pytest.raises(ValueError, match="k_scale"):
        fp.BConv2d(wt, shape).run(x, k_scale=np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="ctx"):
        layer.run(x, ctx=object())
    # still usable after all that
    assert layer.run(x).shape == (1, 4, 4, 4)


def test_bad_input_pools_xnor_fconv_add():
    x = np.zeros((1, 6, 6, 5), np.float32)
    for fn in (fp.maxpool2d, fp.avgpool2d):
        with pytest.raises(ValueError, match="x.*4-D"):
            fn(x[0], 2)
        with pytest.raises(ValueError, match="x.*dtype"):
            fn(x.astype(np.float16), 2)
        with pytest.raises(ValueError, match="kernel"):
            fn(x, 16)
        with pytest.raises(ValueError, match="kernel"):
            fn(x, 0)
        with pytest.raises(ValueError, match="kernel"):
            fn(x, 7)
        with pytest.raises(ValueError, match="padding"):
            fn(x, 2, padding=(2, 0, 0, 0))
    with pytest.raises(ValueError, match="x.*4-D"):
        fp.global_avgpool(x[0])
    with pytest.raises(ValueError, match="x_bits"):
        fp.bmaxpool2d(np.zeros((1, 6, 6, 2), np.uint32), 5, 2)
    with pytest.raises(ValueError, match="x_bits.*dtype"):
        fp.bmaxpool2d(np.zeros((1, 6, 6, 1), np.int64), 5, 2)
    with pytest.raises(ValueError, match="c"):
        fp.bmaxpool2d(np.zeros((1, 6, 6, 1), np.uint32), 0, 2)
    with pytest.raises(ValueError, match="x.*C-contiguous"):
        fp.xnor_scale(np.zeros((1, 6, 6, 10), np.float32)[..., ::2], 3)
    with pytest.raises(ValueError, match="stride"):
        fp.xnor_scale(x, 3, stride=-1)

    wt = np.ones((3, 5, 3, 3), np.float32)
    with pytest.raises(ValueError, match="weight|in_shape"):
        fp.FConv2d(wt, (1, 6, 6, 4))
    with pytest.raises(ValueError, match="bias"):
        fp.FConv2d(wt, (1, 6, 6, 5), bias=np.ones(4, np.float32))
    layer = fp.FConv2d(wt, (1, 6, 6, 5))
    with pytest.raises(ValueError, match="x.*shape"):
        layer.run(np.zeros((1, 6, 7, 5), np.float32))
    with pytest.raises(ValueError, match="x.*dtype"):
        layer.run(x.astype(np.float64))

    a = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="a and b"):
        fp.add(a, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="b.*dtype"):
        fp.add(a, a.astype(np.float64))
    with pytest.raises(ValueError, match="a.*C-contiguous"):
        fp.add(a.T, a.T)
    with pytest.raises(ValueError, match="out"):
        fp.add(a, a, out=np.zeros((4, 5), np.float64))
    with pytest.raises(ValueError, match="out"):
        fp.add(a, a, out=np.zeros((5, 4), np.float32))
    ro = np.zeros((4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out.*writable"):
        fp.add(a, a, out=ro)
    # read-only inputs are fine
    np.testing.assert_array_equal(fp.add(ro, ro), ro)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_default_context_after_fork():
    """A forked child must not use (or join) the parent's worker threads."""
    import warnings

    x = np.random.default_rng(61).standard_normal((64, 100)).astype(np.float32)
    want = ref_bitpack(x, 0)
    np.testing.assert_array_equal(fp.bitpack(x), want)  # parent's default context exists
    parent_ctx = fp.Context(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = np.array_equal(fp.bitpack(x), want)
            try:
                fp.bitpack(x, ctx=parent_ctx)
                code = 3
            except ValueError:
                code = 0 if ok else 1
        except BaseException:
            code = 2
        os._exit(code)
    wait_child(pid)
    parent_ctx.close()
