"""Tests of firmware_py.executor: hand-built graphs (model_format.write_model with numpy
weights) for every op, run through firmware_py.load().run() and compared with numpy
references of the same semantics written here (docs/model-format.md).

Skipped when the native library has not been built.
"""
import os

import numpy as np
import pytest

from tests.conftest import wait_child
from tests.refs import ref_pack

import firmware_py as fp
from firmware_py import _native
from firmware_py.executor import overhead_report
from firmware_py.model_format import write_model

try:
    _native.lib()
except Exception as e:  # pragma: no cover - depends on the build
    pytest.skip("native library not built (run ./build.sh): %s" % e, allow_module_level=True)

swv = np.lib.stride_tricks.sliding_window_view


# ---- numpy references ------------------------------------------------------------------------------


def pm1(shape, rng):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def windows(x, kernel, stride, pads, value):
    """x NHWC padded with `value` -> [n, oh, ow, c, kh, kw] windows."""
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)
    return swv(xp, tuple(kernel), axis=(1, 2))[:, ::stride[0], ::stride[1]]


def ref_conv(x, w_ohwi, stride, pads, pad_value=0.0):
    """sum over the window of x * w (float64); x NHWC, w OHWI."""
    win = windows(x.astype(np.float64), w_ohwi.shape[1:3], stride, pads, pad_value)
    return np.einsum("nhwcij,oijc->nhwo", win, w_ohwi.astype(np.float64))


def ref_xnor_scale(x, kernel, stride, pads):
    a = np.abs(x.astype(np.float64)).mean(axis=3, keepdims=True)
    win = windows(a, kernel, stride, pads, 0.0)
    return win.mean(axis=(3, 4, 5))


def ref_pool(x, kernel, stride, pads, mode, cip=False):
    if mode == "max":
        return windows(x.astype(np.float64), kernel, stride, pads, -np.inf).max(axis=(4, 5))
    s = windows(x.astype(np.float64), kernel, stride, pads, 0.0).sum(axis=(4, 5))
    if cip:
        return s / (kernel[0] * kernel[1])
    cnt = windows(np.ones(x.shape[:3] + (1,)), kernel, stride, pads, 0.0).sum(axis=(4, 5))
    return s / cnt


def nchw(a):
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


# ---- graph builder ---------------------------------------------------------------------------------
class G:
    """Builds a graph + tensors for write_model."""

    def __init__(self):
        self.values, self.nodes, self.tensors = [], [], {}
        self.inputs, self.outputs = [], []
        self.kinds = {}

    def value(self, name, kind, shape):
        self.values.append({"name": name, "kind": kind, "shape": list(shape)})
        self.kinds[name] = (kind, list(shape))
        return name

    def input(self, name, shape_nchw):
        s = list(shape_nchw)
        if len(s) == 4:
            self.value(name, "float", [s[0], s[2], s[3], s[1]])
            self.inputs.append({"name": name, "shape": s, "layout": "NCHW"})
        else:
            self.value(name, "float", s)
            self.inputs.append({"name": name, "shape": s, "layout": "NC"})
        return name

    def output(self, name):
        kind, s = self.kinds[name]
        if len(s) == 4:
            self.outputs.append({"name": name, "shape": [s[0], s[3], s[1], s[2]], "layout": "NCHW"})
        else:
            self.outputs.append({"name": name, "shape": s, "layout": "NC"})

    def node(self, op, inputs, out, kind, shape, attrs=None, params=None):
        name = "n%d_%s" % (len(self.nodes), op)
        self.value(out, kind, shape)
        p = {}
        for k, a in (params or {}).items():
            self.tensors[name + "." + k] = a
            p[k] = name + "." + k
        nd = {"op": op, "name": name, "inputs": list(inputs), "outputs": [out]}
        if attrs:
            nd["attrs"] = attrs
        if p:
            nd["params"] = p
        self.nodes.append(nd)
        return out

    def load(self, tmp_path, fname="m.bnn", num_threads=2):
        graph = {"format": "bnn-graph", "producer": "test", "metadata": {"class_names": ["a"]},
                 "inputs": self.inputs, "outputs": self.outputs, "values": self.values,
                 "nodes": self.nodes}
        path = str(tmp_path / fname)
        write_model(path, graph, self.tensors)
        return fp.load(path, num_threads=num_threads)


def win_attrs(kernel, stride, pads):
    return {"kernel": list(kernel), "stride": list(stride), "pads": list(pads)}


def out_hw(h, w, kernel, stride, pads):
    return ((h + pads[0] + pads[2] - kernel[0]) // stride[0] + 1,
            (w + pads[1] + pads[3] - kernel[1]) // stride[1] + 1)


RNG_SEED = 1234


# ---- single ops --------------------------------------------------------------------------------------
def test_bitpack_unpack_and_bits_output(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = 2, 37, 3, 4
    g = G()
    g.input("x", (n, c, h, w))
    b = g.node("bitpack", ["x"], "b", "bits", (n, h, w, c), {"threshold": 0.25})
    g.node("unpack", [b], "u", "float", (n, h, w, c))
    g.output("u")
    g.output("b")  # a bits graph output: unpacked to +-1 float NCHW
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    u, bo = m.run(x)
    want = np.where(x < 0.25, -1.0, 1.0).astype(np.float32)
    np.testing.assert_array_equal(u, want)
    np.testing.assert_array_equal(bo, want)
    assert u.dtype == np.float32 and u.shape == (n, c, h, w)


@pytest.mark.parametrize("pad_mode", ["zero", "one"])
@pytest.mark.parametrize("kernel,stride,pads", [((3, 3), (1, 1), (1, 1, 1, 1)),
                                                ((3, 2), (2, 1), (2, 0, 1, 1)),
                                                ((1, 1), (1, 1), (0, 0, 0, 0))])
def test_bconv2d_float(tmp_path, pad_mode, kernel, stride, pads):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w, oc = 2, 45, 6, 7, 9
    oh, ow = out_hw(h, w, kernel, stride, pads)
    wt = pm1((oc,) + kernel + (c,), rng)
    mul = rng.standard_normal(oc).astype(np.float32)
    add = rng.standard_normal(oc).astype(np.float32)
    g = G()
    g.input("x", (n, c, h, w))
    g.node("bitpack", ["x"], "b", "bits", (n, h, w, c), {"threshold": 0.0})
    attrs = dict(win_attrs(kernel, stride, pads), pad_mode=pad_mode, output="float")
    g.node("bconv2d", ["b"], "y", "float", (n, oh, ow, oc), attrs,
           {"weights": ref_pack(wt < 0), "mul": mul, "add": add})
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    xs = np.where(nhwc(x) < 0, -1.0, 1.0)
    d = ref_conv(xs, wt, stride, pads, 0.0 if pad_mode == "zero" else 1.0)
    want = d * mul + add
    np.testing.assert_allclose(m.run(x), nchw(want), rtol=1e-5, atol=1e-4)


def test_bconv2d_float_with_xnor_scale(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w, oc = 1, 20, 5, 5, 6
    kernel, stride, pads = (3, 3), (2, 2), (1, 1, 1, 1)
    oh, ow = out_hw(h, w, kernel, stride, pads)
    wt = pm1((oc,) + kernel + (c,), rng)
    mul = rng.random(oc).astype(np.float32) + 0.5
    g = G()
    g.input("x", (n, c, h, w))
    g.node("xnor_scale", ["x"], "k", "float", (n, oh, ow), win_attrs(kernel, stride, pads))
    g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
    g.node("bconv2d", ["b", "k"], "y", "float", (n, oh, ow, oc),
           dict(win_attrs(kernel, stride, pads), pad_mode="zero", output="float"),
           {"weights": ref_pack(wt < 0), "mul": mul})
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    xs = np.where(nhwc(x) < 0, -1.0, 1.0)
    k = ref_xnor_scale(nhwc(x), kernel, stride, pads)
    want = ref_conv(xs, wt, stride, pads) * mul * k[..., None]
    np.testing.assert_allclose(m.run(x), nchw(want), rtol=1e-5, atol=1e-4)


def test_bconv2d_bits(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w, oc = 2, 70, 5, 6, 40
    kernel, stride, pads = (3, 3), (1, 1), (1, 1, 1, 1)
    wt = pm1((oc,) + kernel + (c,), rng)
    thr = rng.integers(-20, 20, oc).astype(np.int32)
    flip = (rng.random(oc) < 0.5).astype(np.uint8)
    g = G()
    g.input("x", (n, c, h, w))
    g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
    g.node("bconv2d", ["b"], "y", "bits", (n, h, w, oc),
           dict(win_attrs(kernel, stride, pads), pad_mode="zero", output="bits"),
           {"weights": ref_pack(wt < 0), "threshold": thr, "flip": flip})
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    d = ref_conv(np.where(nhwc(x) < 0, -1.0, 1.0), wt, stride, pads)
    bit = np.where(flip.astype(bool), d > thr, d < thr)
    np.testing.assert_array_equal(m.run(x), nchw(np.where(bit, -1.0, 1.0)))


def test_fconv2d(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w, oc = 2, 3, 9, 8, 5
    kernel, stride, pads = (3, 3), (2, 2), (1, 1, 0, 1)
    oh, ow = out_hw(h, w, kernel, stride, pads)
    wt = rng.standard_normal((oc,) + kernel + (c,)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    g = G()
    g.input("x", (n, c, h, w))
    g.node("fconv2d", ["x"], "y", "float", (n, oh, ow, oc), win_attrs(kernel, stride, pads),
           {"weights": wt, "bias": bias})
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    want = ref_conv(nhwc(x), wt, stride, pads) + bias
    np.testing.assert_allclose(m.run(x), nchw(want), rtol=1e-4, atol=1e-4)


def test_dense_and_bdense(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, f, o1, o2 = 3, 50, 7, 4
    w1 = rng.standard_normal((o1, f)).astype(np.float32)
    b1 = rng.standard_normal(o1).astype(np.float32)
    w2 = pm1((o2, o1), rng)
    mul = rng.standard_normal(o2).astype(np.float32)
    add = rng.standard_normal(o2).astype(np.float32)
    g = G()
    g.input("x", (n, f))
    g.node("dense", ["x"], "y1", "float", (n, o1), params={"weights": w1, "bias": b1})
    g.node("bitpack", ["y1"], "b", "bits", (n, o1))
    g.node("bdense", ["b"], "y2", "float", (n, o2),
           params={"weights": ref_pack(w2 < 0), "mul": mul, "add": add})
    g.output("y1")
    g.output("y2")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, f)).astype(np.float32)
    y1, y2 = m.run(x)
    want1 = x.astype(np.float64) @ w1.T + b1
    np.testing.assert_allclose(y1, want1, rtol=1e-4, atol=1e-4)
    s = np.where(y1 < 0, -1.0, 1.0)  # the executor's own y1 decides the signs
    np.testing.assert_allclose(y2, (s @ w2.T) * mul + add, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", ["maxpool2d", "avgpool2d", "avgpool2d_cip", "bmaxpool2d"])
def test_pools(tmp_path, op):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = 2, 33, 7, 6
    kernel, stride, pads = (3, 2), (2, 2), (1, 0, 1, 1)
    oh, ow = out_hw(h, w, kernel, stride, pads)
    g = G()
    g.input("x", (n, c, h, w))
    attrs = win_attrs(kernel, stride, pads)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if op == "bmaxpool2d":
        g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
        g.node("bmaxpool2d", ["b"], "y", "bits", (n, oh, ow, c), attrs)
        want = ref_pool(np.where(nhwc(x) < 0, -1.0, 1.0), kernel, stride, pads, "max")
    elif op == "maxpool2d":
        g.node("maxpool2d", ["x"], "y", "float", (n, oh, ow, c), attrs)
        want = ref_pool(nhwc(x), kernel, stride, pads, "max")
    else:
        cip = op == "avgpool2d_cip"
        g.node("avgpool2d", ["x"], "y", "float", (n, oh, ow, c),
               dict(attrs, count_include_pad=int(cip)))
        want = ref_pool(nhwc(x), kernel, stride, pads, "avg", cip)
    g.output("y")
    m = g.load(tmp_path)
    np.testing.assert_allclose(m.run(x), nchw(want), rtol=1e-5, atol=1e-6)


def test_global_avgpool_flatten(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = 2, 11, 5, 4
    g = G()
    g.input("x", (n, c, h, w))
    g.node("global_avgpool", ["x"], "p", "float", (n, 1, 1, c))
    g.node("flatten", ["p"], "y", "float", (n, c))
    g.output("y")
    g.output("p")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y, p = m.run(x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)


# (flatten of a float value gives float: no float -> bits case)
# shapes: the general transposition, one channel and 1x1 images (no transposition: their own
# paths in registry.Flatten), words of 32 channels and more
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 28, 28), (2, 70, 1, 1), (1, 64, 1, 1)], ids=str)
@pytest.mark.parametrize("kind_in,kind_out", [("float", "float"), ("bits", "float"), ("bits", "bits")])
def test_flatten_nchw_order(tmp_path, kind_in, kind_out, shape):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = shape
    g = G()
    g.input("x", (n, c, h, w))
    src = "x"
    if kind_in == "bits":
        src = g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
    g.node("flatten", [src], "y", kind_out, (n, c * h * w))
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    want = x.reshape(n, -1)
    if kind_in == "bits":
        want = np.where(want < 0, -1.0, 1.0)
    np.testing.assert_array_equal(m.run(x), want)


def test_elementwise_ops(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = 2, 6, 3, 5
    shp = (n, h, w, c)
    scale = rng.standard_normal(c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    slope = rng.standard_normal(c).astype(np.float32)
    slope1 = np.array([0.3], dtype=np.float32)
    g = G()
    g.input("x", (n, c, h, w))
    g.input("x2", (n, c, h, w))
    outs = {
        "add": g.node("add", ["x", "x2"], "o_add", "float", shp),
        "affine": g.node("affine", ["x"], "o_aff", "float", shp,
                         params={"scale": scale, "bias": bias}),
        "relu": g.node("relu", ["x"], "o_relu", "float", shp),
        "sigmoid": g.node("sigmoid", ["x"], "o_sig", "float", shp),
        "leaky": g.node("leaky_relu", ["x"], "o_leaky", "float", shp, {"alpha": 0.1}),
        "leaky2": g.node("leaky_relu", ["x"], "o_leaky2", "float", shp, {"alpha": 2.5}),
        "prelu": g.node("prelu", ["x"], "o_prelu", "float", shp, params={"slope": slope}),
        "prelu1": g.node("prelu", ["x"], "o_prelu1", "float", shp, params={"slope": slope1}),
        "clip": g.node("clip", ["x"], "o_clip", "float", shp, {"min": -0.5, "max": 0.75}),
        "clipmin": g.node("clip", ["x"], "o_clipmin", "float", shp, {"min": -0.5}),
    }
    for v in outs.values():
        g.output(v)
    m = g.load(tmp_path)
    x = (rng.standard_normal((n, c, h, w)) * 3).astype(np.float32)
    x2 = rng.standard_normal((n, c, h, w)).astype(np.float32)
    got = dict(zip(outs, m.run([x, x2])))
    sc = scale[None, :, None, None]
    want = {
        "add": x + x2,
        "affine": x * sc + bias[None, :, None, None],
        "relu": np.maximum(x, 0),
        "sigmoid": 1 / (1 + np.exp(-x.astype(np.float64))),
        "leaky": np.where(x >= 0, x, 0.1 * x),
        "leaky2": np.where(x >= 0, x, 2.5 * x),
        "prelu": np.where(x >= 0, x, x * slope[None, :, None, None]),
        "prelu1": np.where(x >= 0, x, x * 0.3),
        "clip": np.clip(x, -0.5, 0.75),
        "clipmin": np.maximum(x, -0.5),
    }
    for k in outs:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the same through a dict of inputs
    got2 = m.run({"x2": x2, "x": x})
    np.testing.assert_array_equal(got2[0], got["add"])


def test_affine_2d_and_concat_2d(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, f = 3, 4
    scale = rng.standard_normal(f).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    g = G()
    g.input("x", (n, f))
    a = g.node("affine", ["x"], "a", "float", (n, f), params={"scale": scale, "bias": bias})
    g.node("concat", ["x", a, "x"], "y", "float", (n, 3 * f), {"axis": 1})
    g.output("y")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, f)).astype(np.float32)
    want = np.concatenate([x, x * scale + bias, x], axis=1)
    np.testing.assert_allclose(m.run(x), want, rtol=1e-6, atol=1e-6)


def test_concat_resize_pad(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    n, c, h, w = 1, 3, 4, 5
    g = G()
    g.input("x", (n, c, h, w))
    g.node("maxpool2d", ["x"], "p", "float", (n, 2, 2, c), win_attrs((2, 2), (2, 2), (0, 0, 0, 0)))
    g.node("resize_nearest", ["p"], "r", "float", (n, 4, 6, c), {"scale": [2, 3]})
    g.node("pad", ["x"], "xp", "float", (n, h + 1 + 2, w + 0 + 3, c),
           {"pads": [1, 0, 2, 3], "value": -2.0})
    g.node("resize_nearest", ["x"], "xr", "float", (n, 2 * h, 2 * w, c), {"scale": [2, 2]})
    g.node("concat", ["x", "x"], "cat", "float", (n, h, w, 2 * c), {"axis": 3})
    g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
    g.node("resize_nearest", ["b"], "br", "bits", (n, 3 * h, 1 * w, c), {"scale": [3, 1]})
    for v in ("r", "xp", "xr", "cat", "br"):
        g.output(v)
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    r, xp, xr, cat, br = m.run(x)
    p = x[:, :, :4, :4].reshape(n, c, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(r, p.repeat(2, axis=2).repeat(3, axis=3))
    np.testing.assert_array_equal(xp, np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 3)),
                                             constant_values=-2.0))
    np.testing.assert_array_equal(xr, x.repeat(2, axis=2).repeat(2, axis=3))
    np.testing.assert_array_equal(cat, np.concatenate([x, x], axis=1))
    np.testing.assert_array_equal(br, np.where(x < 0, -1.0, 1.0).repeat(3, axis=2))


# ---- networks -----------------------------------------------------------------------------------------
def test_small_bnn(tmp_path):
    """fconv2d -> affine -> bitpack -> bconv2d(bits) -> bmaxpool2d -> bconv2d(float) ->
    global_avgpool -> flatten -> dense, against a numpy reference."""
    rng = np.random.default_rng(7)
    n, c0, h, w = 2, 3, 8, 8
    c1, c2, c3, classes = 16, 40, 24, 10
    w0 = rng.standard_normal((c1, 3, 3, c0)).astype(np.float32)
    b0 = rng.standard_normal(c1).astype(np.float32)
    sc = (rng.random(c1) + 0.5).astype(np.float32)
    sb = rng.standard_normal(c1).astype(np.float32)
    w1 = pm1((c2, 3, 3, c1), rng)
    t1 = rng.integers(-6, 6, c2).astype(np.int32)
    f1 = (rng.random(c2) < 0.3).astype(np.uint8)
    w2 = pm1((c3, 3, 3, c2), rng)
    m2 = (rng.random(c3) * 0.1).astype(np.float32)
    a2 = rng.standard_normal(c3).astype(np.float32)
    wd = rng.standard_normal((classes, c3)).astype(np.float32)
    bd = rng.standard_normal(classes).astype(np.float32)
    same = win_attrs((3, 3), (1, 1), (1, 1, 1, 1))
    g = G()
    g.input("images", (n, c0, h, w))
    g.node("fconv2d", ["images"], "a0", "float", (n, h, w, c1), same, {"weights": w0, "bias": b0})
    g.node("affine", ["a0"], "a1", "float", (n, h, w, c1), params={"scale": sc, "bias": sb})
    g.node("bitpack", ["a1"], "b1", "bits", (n, h, w, c1), {"threshold": 0.0})
    g.node("bconv2d", ["b1"], "b2", "bits", (n, h, w, c2),
           dict(same, pad_mode="zero", output="bits"),
           {"weights": ref_pack(w1 < 0), "threshold": t1, "flip": f1})
    g.node("bmaxpool2d", ["b2"], "b3", "bits", (n, h // 2, w // 2, c2),
           win_attrs((2, 2), (2, 2), (0, 0, 0, 0)))
    g.node("bconv2d", ["b3"], "a4", "float", (n, h // 2, w // 2, c3),
           dict(same, pad_mode="zero", output="float"),
           {"weights": ref_pack(w2 < 0), "mul": m2, "add": a2})
    g.node("global_avgpool", ["a4"], "a5", "float", (n, 1, 1, c3))
    g.node("flatten", ["a5"], "a6", "float", (n, c3))
    g.node("dense", ["a6"], "logits", "float", (n, classes), params={"weights": wd, "bias": bd})
    g.output("logits")
    m = g.load(tmp_path)
    assert m.inputs[0] == ("images", (n, c0, h, w), "NCHW")
    assert m.outputs[0].layout == "NC" and m.metadata["class_names"] == ["a"]
    x = rng.standard_normal((n, c0, h, w)).astype(np.float32)

    a1 = (ref_conv(nhwc(x), w0, (1, 1), (1, 1, 1, 1)) + b0) * sc + sb
    s1 = np.where(a1 < 0, -1.0, 1.0)
    d1 = ref_conv(s1, w1, (1, 1), (1, 1, 1, 1))
    s2 = np.where(np.where(f1.astype(bool), d1 > t1, d1 < t1), -1.0, 1.0)
    s3 = ref_pool(s2, (2, 2), (2, 2), (0, 0, 0, 0), "max")
    a4 = ref_conv(s3, w2, (1, 1), (1, 1, 1, 1)) * m2 + a2
    logits = a4.mean(axis=(1, 2)) @ wd.T + bd
    y = m.run(x)
    assert y.shape == (n, classes) and y.dtype == np.float32
    np.testing.assert_allclose(y, logits, rtol=1e-4, atol=1e-4)
    # the planner shares buffers between values whose lifetimes do not overlap
    assert m.buffer_bytes < m.value_bytes
    assert "bconv2d" in m.summary()
    prof = m.profile(x, repeat=3)
    # affine -> bitpack runs as one fused step (bitpack_affine); fuse=False: every node
    assert [p["op"] for p in prof] == ["fconv2d", "bitpack_affine"] + [nd["op"] for nd in g.nodes[3:]]
    assert prof[1]["name"] == g.nodes[1]["name"] + " +1"
    assert prof.total_ms > 0 and all(p["ms"] >= 0 for p in prof)
    assert "total" in str(prof)
    m0 = fp.load(str(tmp_path / "m.bnn"), num_threads=1, fuse=False)
    assert [p["op"] for p in m0.profile(x, repeat=1)] == [nd["op"] for nd in g.nodes]
    np.testing.assert_array_equal(m0.run(x), y)


def _same_bits(a, b):
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32))
                                              | (np.isnan(a) & np.isnan(b))))


def test_fusion_bireal_block(tmp_path):
    """A Bi-Real / ReActNet block as the converter writes it: add (residual), RPReLU (affine
    Sub, prelu, affine Add), the next RSign (affine Sub -> bitpack).  The fused model (one C
    pass for the chain, one for the RSign packing) gives the same bits as the unfused one
    and as numpy doing the same float32 operations; values that are read twice or are graph
    outputs are never fused away."""
    rng = np.random.default_rng(11)
    n, c, h, w = 1, 40, 5, 6
    shp = (n, h, w, c)
    one = np.ones(c, np.float32)
    gam, zeta, beta, sl = (rng.standard_normal(c).astype(np.float32) for _ in range(4))
    sc = rng.standard_normal(c).astype(np.float32)
    wt = pm1((c, 3, 3, c), rng)
    same = win_attrs((3, 3), (1, 1), (1, 1, 1, 1))
    g = G()
    g.input("x", (n, c, h, w))
    g.input("s", (n, c, h, w))
    g.node("add", ["x", "s"], "a", "float", shp)
    g.node("affine", ["a"], "t1", "float", shp, params={"scale": one, "bias": -gam})
    g.node("prelu", ["t1"], "t2", "float", shp, params={"slope": sl})
    g.node("affine", ["t2"], "y", "float", shp, params={"scale": one, "bias": zeta})
    g.node("affine", ["y"], "u", "float", shp, params={"scale": one, "bias": -beta})
    g.node("bitpack", ["u"], "ub", "bits", shp, {"threshold": 0.0})
    g.node("bconv2d", ["ub"], "z", "float", shp, dict(same, pad_mode="zero", output="float"),
           {"weights": ref_pack(wt < 0), "mul": (rng.random(c) * 0.1).astype(np.float32)})
    g.node("add", ["z", "y"], "z2", "float", shp)          # y read twice: materialised
    g.node("prelu", ["z2"], "p", "float", shp, params={"slope": np.array([0.25], np.float32)})
    g.node("affine", ["p"], "q", "float", shp, params={"scale": sc, "bias": zeta})  # q: an output
    g.node("affine", ["q"], "q2", "float", shp, params={"scale": sc, "bias": gam})
    g.output("q")
    g.output("q2")
    g.output("t2")  # an intermediate that is an output: the first chain stops there
    m = g.load(tmp_path, num_threads=2)
    m0 = fp.load(str(tmp_path / "m.bnn"), num_threads=1, fuse=False)
    ops_fused = [p["op"] for p in m.profile([np.zeros((n, c, h, w), np.float32)] * 2, repeat=1)]
    # the chain after the bconv2d (add, prelu, affine: q) runs in its output transform
    assert ops_fused == ["eltwise", "eltwise", "bitpack_affine", "bconv2d", "eltwise"], ops_fused
    assert [st["name"] for st in m.profile([np.zeros((n, c, h, w), np.float32)] * 2, repeat=1)][3] == "n6_bconv2d +3"
    x = (rng.standard_normal((n, c, h, w)) * 2).astype(np.float32)
    s = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x.reshape(-1)[::13] = np.float32(0.0)
    x.reshape(-1)[5::17] = np.float32(-0.0)
    x.reshape(-1)[7::29] = np.inf
    got, ref = m.run([x, s]), m0.run([x, s])
    for a, b in zip(got, ref):
        assert _same_bits(a, b)
    # numpy, float32, the same operations (the executor's former numpy code for t2)
    with np.errstate(all="ignore"):
        t1 = (nhwc(x) + nhwc(s)) * one + (-gam)
        t2 = np.where(t1 >= 0, t1, t1 * sl)
    assert _same_bits(got[2], nchw(t2))
    assert np.isfinite(got[0]).any() and np.isfinite(got[1]).any()


def test_fusion_into_binary_conv_output(tmp_path):
    """QuickNet's block (binary conv -> ReLU -> BatchNorm -> shortcut add -> ReLU), a block
    whose add has the conv second, a conv with XNOR-Net's K input, a leaky ReLU / clip chain,
    a shortcut made between the conv and its add, and a binary dense head: each chain after
    a float binary conv runs in the conv's output transform (one step), with the same bits
    as the unfused model; a conv output read twice is not fused."""
    rng = np.random.default_rng(5)
    n, c, h, w = 1, 40, 6, 5
    shp = (n, h, w, c)
    same = win_attrs((3, 3), (1, 1), (1, 1, 1, 1))

    def conv_params():
        return {"weights": ref_pack(pm1((c, 3, 3, c), rng) < 0), "mul": (rng.random(c) * 0.1).astype(np.float32),
                "add": rng.standard_normal(c).astype(np.float32)}

    def bn():
        return {"scale": rng.standard_normal(c).astype(np.float32), "bias": rng.standard_normal(c).astype(np.float32)}

    g = G()
    g.input("x", (n, c, h, w))
    g.node("bitpack", ["x"], "xb", "bits", shp, {"threshold": 0.0})
    # QuickNet: conv, relu, bn, add(shortcut), then the next block's sign and shortcut read it
    g.node("bconv2d", ["xb"], "c1", "float", shp, dict(same, pad_mode="one", output="float"), conv_params())
    g.node("relu", ["c1"], "r1", "float", shp)
    g.node("affine", ["r1"], "b1", "float", shp, params=bn())
    g.node("add", ["b1", "x"], "y1", "float", shp)
    g.node("bitpack", ["y1"], "y1b", "bits", shp, {"threshold": 0.0})
    # the conv is the add's second input; then the stage's closing relu
    g.node("bconv2d", ["y1b"], "c2", "float", shp, dict(same, pad_mode="zero", output="float"), conv_params())
    g.node("add", ["y1", "c2"], "y2", "float", shp)
    g.node("relu", ["y2"], "y3", "float", shp)
    # XNOR-Net's K input; leaky relu and a clip
    g.node("xnor_scale", ["y3"], "k", "float", (n, h, w), same)
    g.node("bitpack", ["y3"], "y3b", "bits", shp, {"threshold": 0.0})
    g.node("bconv2d", ["y3b", "k"], "c3", "float", shp, dict(same, pad_mode="zero", output="float"), conv_params())
    g.node("leaky_relu", ["c3"], "l3", "float", shp, {"alpha": 0.1})
    g.node("clip", ["l3"], "y4", "float", shp, {"min": -1.5, "max": 2.0})
    # a conv output read twice (add(c, c)) stays unfused
    g.node("bitpack", ["y4"], "y4b", "bits", shp, {"threshold": 0.0})
    g.node("bconv2d", ["y4b"], "c4", "float", shp, dict(same, pad_mode="zero", output="float"), conv_params())
    g.node("add", ["c4", "c4"], "y5a", "float", shp)
    # Bi-Real's downsampling block: the shortcut (a pool) is made between the conv and the
    # add: the conv moves to the add
    g.node("bconv2d", ["y4b"], "c5", "float", shp, dict(same, pad_mode="zero", output="float"), conv_params())
    g.node("maxpool2d", ["y4"], "s5", "float", shp, win_attrs((1, 1), (1, 1), (0, 0, 0, 0)))
    g.node("add", ["s5", "c5"], "y5b", "float", shp)
    g.node("prelu", ["y5b"], "y5c", "float", shp, params={"slope": np.full(c, 0.2, np.float32)})
    g.node("add", ["y5a", "y5c"], "y5", "float", shp)
    # binary dense head with a residual-free chain
    g.node("flatten", ["y5"], "f", "float", (n, h * w * c))
    g.node("bitpack", ["f"], "fb", "bits", (n, h * w * c), {"threshold": 0.0})
    g.node("bdense", ["fb"], "d", "float", (n, 10), params={
        "weights": ref_pack(pm1((10, h * w * c), rng) < 0), "mul": np.full(10, 0.01, np.float32)})
    g.node("relu", ["d"], "out", "float", (n, 10))
    g.output("out")
    g.output("y4")
    m = g.load(tmp_path, num_threads=2)
    m0 = fp.load(str(tmp_path / "m.bnn"), num_threads=1, fuse=False)
    x = np.zeros((n, c, h, w), np.float32)
    prof = m.profile(x, repeat=1)
    names = {nd["outputs"][0]: nd["name"] for nd in g.nodes}
    assert [(p["op"], p["name"]) for p in prof if p["op"] in ("bconv2d", "bdense", "add", "eltwise")] == [
        ("bconv2d", names["c1"] + " +3"), ("bconv2d", names["c2"] + " +2"), ("bconv2d", names["c3"] + " +2"),
        ("bconv2d", names["c4"]), ("add", names["y5a"]), ("bconv2d", names["c5"] + " +2"), ("add", names["y5"]),
        ("bdense", names["d"] + " +1")], [
        (p["op"], p["name"]) for p in prof]
    for seed in range(3):
        x = (np.random.default_rng(seed).standard_normal((n, c, h, w)) * 2).astype(np.float32)
        x.reshape(-1)[::11] = np.float32(0.0)
        got, ref = m.run(x), m0.run(x)
        assert all(_same_bits(a, b) for a, b in zip(got, ref))
        assert np.isfinite(got[0]).all() and (got[0] >= 0).all() and got[1].min() >= -1.5 and got[1].max() <= 2.0


def test_long_chain_is_split_into_passes_of_at_most_16_steps(tmp_path):
    rng = np.random.default_rng(9)
    n, c, h, w = 1, 5, 3, 4
    shp = (n, h, w, c)
    g = G()
    g.input("x", (n, c, h, w))
    prev = "x"
    for i in range(40):
        if i % 2:
            g.node("relu", [prev], "v%d" % i, "float", shp)
        else:
            g.node("affine", [prev], "v%d" % i, "float", shp, params={
                "scale": rng.uniform(0.5, 1.5, c).astype(np.float32), "bias": rng.standard_normal(c).astype(np.float32)})
        prev = "v%d" % i
    g.output(prev)
    m = g.load(tmp_path)
    m0 = fp.load(str(tmp_path / "m.bnn"), num_threads=1, fuse=False)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    assert [p["op"] for p in m.profile(x, repeat=1)] == ["eltwise"] * 3  # 16 + 16 + 8
    assert _same_bits(m.run(x), m0.run(x))


def test_residual_add(tmp_path):
    rng = np.random.default_rng(3)
    n, c, h, w = 1, 8, 6, 6
    wt = pm1((c, 3, 3, c), rng)
    mul = (rng.random(c) * 0.2).astype(np.float32)
    same = win_attrs((3, 3), (1, 1), (1, 1, 1, 1))
    g = G()
    g.input("x", (n, c, h, w))
    g.node("bitpack", ["x"], "b", "bits", (n, h, w, c))
    g.node("bconv2d", ["b"], "y", "float", (n, h, w, c), dict(same, pad_mode="one", output="float"),
           {"weights": ref_pack(wt < 0), "mul": mul})
    g.node("add", ["y", "x"], "r", "float", (n, h, w, c))
    g.node("relu", ["r"], "out", "float", (n, h, w, c))
    g.output("out")
    m = g.load(tmp_path)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    xs = np.where(nhwc(x) < 0, -1.0, 1.0)
    want = np.maximum(ref_conv(xs, wt, (1, 1), (1, 1, 1, 1), 1.0) * mul + nhwc(x), 0)
    np.testing.assert_allclose(m.run(x), nchw(want), rtol=1e-5, atol=1e-5)


# ---- interface -------------------------------------------------------------------------------------
def _relu_model(tmp_path, n=1, c=4, h=3, w=3):
    g = G()
    g.input("images", (n, c, h, w))
    g.node("relu", ["images"], "a", "float", (n, h, w, c))
    g.node("sigmoid", ["a"], "b", "float", (n, h, w, c))
    g.node("relu", ["b"], "y", "float", (n, h, w, c))
    g.output("y")
    return g.load(tmp_path)


def test_wrong_inputs_name_the_input(tmp_path):
    m = _relu_model(tmp_path)
    good = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="images.*shape"):
        m.run(np.zeros((1, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="images.*float32.*float64"):
        m.run(good.astype(np.float64))
    with pytest.raises(ValueError, match="images.*ndarray"):
        m.run(good.tolist())
    with pytest.raises(ValueError, match="missing input.*images"):
        m.run({"x": good})
    with pytest.raises(ValueError, match="unknown input"):
        m.run({"images": good, "x": good})
    with pytest.raises(ValueError, match="1 input"):
        m.run([good, good])
    # a non-contiguous float32 view of the right shape is accepted (copied in)
    big = np.zeros((1, 4, 6, 3), np.float32)[:, :, ::2]
    assert m.run(big).shape == (1, 4, 3, 3)
    m.run([good])
    m.run({"images": good})


def test_buffers_reused_and_results_not_aliased(tmp_path):
    m = _relu_model(tmp_path)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    x2 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    y1 = m.run(x1)
    keep = y1.copy()
    bufs = {k: v.__array_interface__["data"][0] for k, v in m._buf.items()}
    y2 = m.run(x2)
    np.testing.assert_array_equal(y1, keep)  # not overwritten by the second run
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(m.run(x1), keep)
    assert bufs == {k: v.__array_interface__["data"][0] for k, v in m._buf.items()}
    assert all(not np.shares_memory(y1, b) for b in m._buf.values())
    assert y1.flags.writeable and y1.flags.c_contiguous


def test_close_and_context(tmp_path):
    m = _relu_model(tmp_path)
    with m:
        m.run(np.zeros((1, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="closed"):
        m.run(np.zeros((1, 4, 3, 3), np.float32))


def test_load_refuses_corrupt_file(tmp_path):
    m = _relu_model(tmp_path)
    m.close()
    path = tmp_path / "m.bnn"
    data = bytearray(path.read_bytes())
    data[-1 if len(data) > 200 else 100] ^= 0xFF
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(bytes(data))
    with pytest.raises(fp.ModelFormatError):
        fp.load(str(bad))


def test_overhead_report(tmp_path):
    m = _relu_model(tmp_path)
    r = overhead_report(m, np.zeros((1, 4, 3, 3), np.float32), repeat=3, n_tiny=8)
    for k in ("run_ms", "nodes_ms", "tiny_bconv2d_node_us", "bare_c_call_us",
              "python_overhead_per_c_node_us", "text"):
        assert k in r
    assert r["tiny_bconv2d_step_us"] > 0


def test_ops_out_argument_is_validated():
    """The out= parameter the executor uses (added to firmware_py.ops)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    y = np.empty((1, 2, 2, 8), np.float32)
    r = fp.maxpool2d(x, 2, out=y)
    assert r is y
    np.testing.assert_array_equal(y, fp.maxpool2d(x, 2))
    with pytest.raises(ValueError, match="out must have shape"):
        fp.maxpool2d(x, 2, out=np.empty((1, 2, 2, 7), np.float32))
    with pytest.raises(ValueError, match="out must have dtype float32"):
        fp.maxpool2d(x, 2, out=np.empty((1, 2, 2, 8), np.float64))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        fp.maxpool2d(x, 2, out=np.empty((1, 2, 2, 16), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="out must not overlap"):
        fp.maxpool2d(x, 2, out=x.reshape(-1)[:32].reshape(1, 2, 2, 8))
    ro = np.empty((1, 2, 2, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        fp.maxpool2d(x, 2, out=ro)
    bits = fp.bitpack(x)
    out_b = np.empty_like(bits)
    assert fp.bitpack(x, out=out_b) is out_b
    np.testing.assert_array_equal(out_b, bits)
    u = np.empty((1, 4, 4, 8), np.float32)
    assert fp.unpack(bits, 8, out=u) is u
    layer = fp.BConv2d(pm1((3, 8, 1, 1), rng), (1, 4, 4, 8), output="float")
    yb = np.empty((1, 4, 4, 3), np.float32)
    assert layer.run(bits, out=yb) is yb
    np.testing.assert_array_equal(yb, layer.run(bits))
    with pytest.raises(ValueError, match="out must have dtype float32"):
        layer.run(bits, out=np.empty((1, 4, 4, 3), np.int32))
    fl = fp.FConv2d(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), (1, 4, 4, 8))
    assert fl.run(x, out=yb) is yb
    k = np.empty((1, 4, 4), np.float32)
    assert fp.xnor_scale(x, 1, out=k) is k
    g = np.empty((1, 1, 1, 8), np.float32)
    assert fp.global_avgpool(x, out=g) is g
    assert fp.avgpool2d(x, 2, out=y) is y
    yb2 = np.empty((1, 2, 2, 1), np.uint32)
    assert fp.bmaxpool2d(bits, 8, 2, out=yb2) is yb2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_model_in_forked_child_raises(tmp_path):
    """A Model's prepared C calls must not reach the parent's worker threads from a forked
    child (they do not exist there: a hang): run raises ValueError instead."""
    import warnings

    rng = np.random.default_rng(12)
    g = G()
    g.input("x", (1, 8, 64, 64))  # big enough for the C call to use the worker thread
    g.node("prelu", ["x"], "y", "float", (1, 64, 64, 8), params={"slope": np.full(8, 0.5, np.float32)})
    g.output("y")
    m = g.load(tmp_path, num_threads=2)
    x = rng.standard_normal((1, 8, 64, 64)).astype(np.float32)
    m.run(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            m.run(x)
        except ValueError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    wait_child(pid)
    m.close()
