"""The op registry: one spec per op of the model format (docs/model-format.md).

A spec says everything about its op in one place: its arity, its attributes (type, range,
required or not), its parameters (dtype), ``check`` (the shape function: validates a node's
inputs, attributes and parameter shapes and returns its output kind and shape) and
``build`` (how the executor runs it).  ``model_format`` validates every node with the
specs, ``executor`` builds every step with them, and the converter's lowering emits only
ops that have one.  Adding an op = one spec here + its C folder (csrc/neon/<op>/, declared
in bnn.h) + one lowering rule (convert/lower.py); see docs/architecture.md.

``check(v)`` sees a node through ``model_format.NodeCheck`` (``v.need_in``, ``v.param``,
``v.window``, ``v.fail`` ...); ``build(b)`` through ``executor.StepBuilder`` (``b.x``, ``b.y``,
``b.ctx``, ``b.param`` ...) and returns a function of no arguments that computes the
node's output into ``b.y``.
"""
import math

import numpy as np

from . import ops
from .bits import packed_words
from .header import CONSTANTS

__all__ = ["OpSpec", "OPS", "Number", "Int", "Choice", "Flag", "Pair", "Pads"]

MAX_CONV_KERNEL = CONSTANTS["BNN_MAX_CONV_KERNEL"]  # the C library's window limits (bnn.h)
MAX_CONV_STRIDE = CONSTANTS["BNN_MAX_CONV_STRIDE"]
MAX_POOL = CONSTANTS["BNN_MAX_POOL"]
MAX_RESIZE = 64  # resize_nearest scale; runs in numpy
MAX_PAD = 1 << 16  # pad; runs in numpy


# ---- attribute types: each validates a value and says what went wrong -----------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class Number:
    """a finite number"""

    def check(self, v, name, value):
        where = "%s attrs.%s" % (v.where, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            v.fail("%s must be a finite number, got %r", where, value)
        try:
            f = float(value)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            v.fail("%s must be a finite number, got %r", where, value)


class Int:
    """an int in lo..hi"""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def check(self, v, name, value):
        if not _is_int(value) or not self.lo <= value <= self.hi:
            v.fail("%s: attrs.%s must be an int in %d..%d, got %r", v.where, name, self.lo, self.hi, value)


class Choice:
    """one of a few strings"""

    def __init__(self, *values):
        self.values = values

    def check(self, v, name, value):
        if not isinstance(value, str) or value not in self.values:
            v.fail("%s: attrs.%s must be %s, got %r", v.where, name, " or ".join(repr(x) for x in self.values),
                   value)


class Flag:
    """0 or 1 (false or true)"""

    def check(self, v, name, value):
        if value not in (0, 1) or not isinstance(value, (int, bool)):
            v.fail("%s: attrs.%s must be 0 or 1, got %r", v.where, name, value)


class Pair:
    """[a, b], ints in lo..hi"""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def check(self, v, name, value):
        where = "%s attrs.%s" % (v.where, name)
        if not isinstance(value, list) or len(value) != 2 or not all(_is_int(x) for x in value):
            v.fail("%s must be a list of 2 ints, got %r", where, value)
        if not all(self.lo <= x <= self.hi for x in value):
            v.fail("%s must hold ints in %d..%d, got %r", where, self.lo, self.hi, value)


class Pads:
    """[top, left, bottom, right], ints in 0..hi"""

    def __init__(self, hi):
        self.hi = hi

    def check(self, v, name, value):
        where = "%s attrs.%s" % (v.where, name)
        if not isinstance(value, list) or len(value) != 4 or not all(_is_int(x) for x in value):
            v.fail("%s must be a list of 4 ints [top, left, bottom, right], got %r", where, value)
        if not all(0 <= x <= self.hi for x in value):
            v.fail("%s must hold ints in 0..%d, got %r", where, self.hi, value)


class OpSpec:
    """One op: ``inputs`` (min, max), ``attrs`` {name: (type, required)}, ``params``
    {name: dtype}, and the ``check`` / ``build`` functions (see the module docstring)."""

    def __init__(self, name, check, build, inputs=(1, 1), attrs=None, params=None, doc=""):
        self.name, self.check, self.build, self.doc = name, check, build, doc
        self.inputs = inputs
        self.attrs = dict(attrs or {})
        self.params = dict(params or {})


OPS = {}


def op(name, inputs=(1, 1), attrs=None, params=None):
    """Registers a spec from a class holding ``check`` and ``build`` (static methods) and a
    docstring (what the op computes)."""
    def register(cls):
        OPS[name] = OpSpec(name, cls.check, cls.build, inputs, attrs, params, (cls.__doc__ or "").strip())
        return cls
    return register


def conv_window(required=True):
    return {"kernel": (Pair(1, MAX_CONV_KERNEL), required), "stride": (Pair(1, MAX_CONV_STRIDE), required),
            "pads": (Pads(MAX_POOL), required)}


POOL_WINDOW = {"kernel": (Pair(1, MAX_POOL), True), "stride": (Pair(1, MAX_POOL), True),
               "pads": (Pads(MAX_POOL), True)}


# ---- bit packing ---------------------------------------------------------------------------------
@op("bitpack", attrs={"threshold": (Number(), False)})
class Bitpack:
    """float -> bits: bit = x < threshold (default 0)"""

    @staticmethod
    def check(v):
        return "bits", v.need_in(0, ("float",), (2, 4))

    @staticmethod
    def build(b):
        return ops.bind(ops.bitpack, b.x, float(b.attrs.get("threshold", 0.0)), ctx=b.ctx, out=b.y)


@op("unpack")
class Unpack:
    """bits -> float +-1"""

    @staticmethod
    def check(v):
        return "float", v.need_in(0, ("bits",), (2, 4))

    @staticmethod
    def build(b):
        return ops.bind(ops.unpack, b.x, b.in_shape[-1], ctx=b.ctx, out=b.y)


# ---- convolutions --------------------------------------------------------------------------------
@op("bconv2d", inputs=(1, 2),
    attrs=dict(conv_window(), pad_mode=(Choice("zero", "one"), False), output=(Choice("float", "bits"), True)),
    params={"weights": "uint32", "mul": "float32", "add": "float32", "threshold": "int32", "flip": "uint8"})
class BConv2d:
    """binary convolution: bits in; float out (d * mul * K + add) or bits out (thresholds)"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("bits",), (4,))
        k, _, _, (oh, ow) = v.window(conv=True, in_hw=(h, w))
        oc = v.out_channels(4)
        v.param("weights", (oc, k[0], k[1], packed_words(c)))
        if v.attrs["output"] == "float":
            v.no_params("threshold", "flip")
            v.param("mul", (oc,), required=False)
            v.param("add", (oc,), required=False)
            if len(v.ins) == 2:
                kshape = v.need_in(1, ("float",), (3,))
                if kshape != (n, oh, ow):
                    v.fail("%s: the K input %r must have shape %s, got %s", v.where, v.ins[1],
                           [n, oh, ow], list(kshape))
            return "float", (n, oh, ow, oc)
        v.no_params("mul", "add")
        if len(v.ins) == 2:
            v.fail("%s: the K input is only used with attrs.output 'float'", v.where)
        v.param("threshold", (oc,))
        v.param("flip", (oc,), required=False)
        return "bits", (n, oh, ow, oc)

    @staticmethod
    def build(b):
        steps, r, xs = _output_steps(b)
        layer = b.keep(ops.BConv2d.from_bits(
            b.param("weights"), b.in_shape, stride=b.win["stride"], padding=b.win["padding"],
            pad_mode=b.attrs.get("pad_mode", "zero"), output=b.attrs["output"], mul=b.param("mul"),
            add=b.param("add"), threshold=b.param("threshold"), flip=b.param("flip"), steps=steps))
        k = xs[1] if len(xs) > 1 else None
        return ops.bind(layer.run, b.x, k, ctx=b.ctx, out=b.y, residual=r)


@op("bdense", params={"weights": "uint32", "mul": "float32", "add": "float32"})
class BDense:
    """binary fully connected layer (a 1x1 bconv2d on a 1x1 image), float out"""

    @staticmethod
    def check(v):
        n, f = v.need_in(0, ("bits",), (2,))
        oc = v.out_channels(2)
        v.param("weights", (oc, packed_words(f)))
        v.param("mul", (oc,), required=False)
        v.param("add", (oc,), required=False)
        return "float", (n, oc)

    @staticmethod
    def build(b):
        (n, f), wt = b.in_shape, b.param("weights")
        steps, r, _ = _output_steps(b)
        layer = b.keep(ops.BConv2d.from_bits(wt[:, None, None, :], (n, 1, 1, f), output="float",
                                             mul=b.param("mul"), add=b.param("add"), steps=steps))
        x, y = b.x.reshape(n, 1, 1, b.x.shape[-1]), b.y.reshape(n, 1, 1, b.y.shape[-1])
        if r is not None:
            r = r.reshape(y.shape)
        return ops.bind(layer.run, x, ctx=b.ctx, out=y, residual=r)


@op("xnor_scale", attrs=conv_window())
class XnorScale:
    """XNOR-Net's K: mean over channels of |x|, box-filtered (float [n, oh, ow])"""

    @staticmethod
    def check(v):
        n, h, w, _ = v.need_in(0, ("float",), (4,))
        _, _, _, (oh, ow) = v.window(conv=True, in_hw=(h, w))
        return "float", (n, oh, ow)

    @staticmethod
    def build(b):
        return ops.bind(ops.xnor_scale, b.x, ctx=b.ctx, out=b.y, **b.win)


@op("fconv2d", attrs=dict(conv_window(), groups=(Int(1, (1 << 31) - 1), False)),
    params={"weights": "float32", "bias": "float32"})
class FConv2d:
    """float convolution (weights OHWI, [out_c, kh, kw, in_c / groups]), zero padding"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("float",), (4,))
        k, _, _, (oh, ow) = v.window(conv=True, in_hw=(h, w))
        oc = v.out_channels(4)
        groups = v.attrs.get("groups", 1)
        if c % groups or oc % groups:
            v.fail("%s: attrs.groups %d must divide the input channels %d and the output channels %d", v.where,
                   groups, c, oc)
        v.param("weights", (oc, k[0], k[1], c // groups))
        v.param("bias", (oc,), required=False)
        return "float", (n, oh, ow, oc)

    @staticmethod
    def build(b):
        layer = b.keep(ops.FConv2d(b.param("weights"), b.in_shape, bias=b.param("bias"), layout="OHWI",
                                   stride=b.win["stride"], padding=b.win["padding"],
                                   groups=b.attrs.get("groups", 1)))
        return ops.bind(layer.run, b.x, ctx=b.ctx, out=b.y)


@op("dense", params={"weights": "float32", "bias": "float32"})
class Dense:
    """float fully connected layer (a 1x1 fconv2d on a 1x1 image)"""

    @staticmethod
    def check(v):
        n, f = v.need_in(0, ("float",), (2,))
        oc = v.out_channels(2)
        v.param("weights", (oc, f))
        v.param("bias", (oc,), required=False)
        return "float", (n, oc)

    @staticmethod
    def build(b):
        (n, f), wt = b.in_shape, b.param("weights")
        layer = b.keep(ops.FConv2d(wt[:, None, None, :], (n, 1, 1, f), bias=b.param("bias"), layout="OHWI"))
        x, y = b.x.reshape(n, 1, 1, f), b.y.reshape(n, 1, 1, b.y.shape[-1])
        return ops.bind(layer.run, x, ctx=b.ctx, out=y)


# ---- pooling ---------------------------------------------------------------------------------------
def _pool_check(v, kind):
    n, h, w, c = v.need_in(0, (kind,), (4,))
    _, _, _, (oh, ow) = v.window(conv=False, in_hw=(h, w))
    return kind, (n, oh, ow, c)


@op("maxpool2d", attrs=POOL_WINDOW)
class MaxPool2d:
    """float max pooling (padding ignored)"""

    @staticmethod
    def check(v):
        return _pool_check(v, "float")

    @staticmethod
    def build(b):
        return ops.bind(ops.maxpool2d, b.x, ctx=b.ctx, out=b.y, **b.win)


@op("bmaxpool2d", attrs=POOL_WINDOW)
class BMaxPool2d:
    """max pooling on bits (an AND of the words)"""

    @staticmethod
    def check(v):
        return _pool_check(v, "bits")

    @staticmethod
    def build(b):
        return ops.bind(ops.bmaxpool2d, b.x, b.in_shape[-1], ctx=b.ctx, out=b.y, **b.win)


@op("avgpool2d", attrs=dict(POOL_WINDOW, count_include_pad=(Flag(), False)))
class AvgPool2d:
    """float average pooling, as ONNX AveragePool"""

    @staticmethod
    def check(v):
        return _pool_check(v, "float")

    @staticmethod
    def build(b):
        cip = bool(b.attrs.get("count_include_pad", 0))
        return ops.bind(ops.avgpool2d, b.x, count_include_pad=cip, ctx=b.ctx, out=b.y, **b.win)


@op("global_avgpool")
class GlobalAvgPool:
    """mean over H and W -> [n, 1, 1, c]"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("float",), (4,))
        return "float", (n, 1, 1, c)

    @staticmethod
    def build(b):
        return ops.bind(ops.global_avgpool, b.x, ctx=b.ctx, out=b.y)


# ---- elementwise -----------------------------------------------------------------------------------
@op("add", inputs=(2, 2))
class Add:
    """a + b, same shapes"""

    @staticmethod
    def check(v):
        a = v.need_in(0, ("float",), (2, 3, 4))
        b = v.need_in(1, ("float",), (2, 3, 4))
        if a != b:
            v.fail("%s: inputs %r %s and %r %s must have the same shape", v.where, v.ins[0], list(a),
                   v.ins[1], list(b))
        return "float", a

    @staticmethod
    def build(b):
        return ops.bind(ops.add, b.x, b.xs[1], ctx=b.ctx, out=b.y)


# The per-channel elementwise ops the executor chains into one C pass (ops.eltwise), with a
# two-input add (the residual's); a chain right after a float binary conv runs in its output
# transform.
CHAIN_OPS = ("affine", "prelu", "relu", "leaky_relu", "clip")


def chain_step(node, param):
    """the ops.eltwise step of one chainable node (CHAIN_OPS, or an add: ("add",));
    param(node, key) -> array"""
    op, attrs = node["op"], node.get("attrs", {})
    if op == "affine":
        return ("affine", param(node, "scale"), param(node, "bias"))
    if op == "prelu":
        return ("prelu", param(node, "slope"))
    if op == "leaky_relu":
        return ("prelu", attrs["alpha"])
    if op == "relu":
        return ("clip", 0.0, None)
    if op == "clip":
        return ("clip", attrs.get("min"), attrs.get("max"))
    if op == "add":
        return ("add",)
    raise ValueError("%s is not a chainable op" % op)


def _output_steps(b):
    """(steps, residual buffer or None, the node's own input buffers) of a binary conv with
    an elementwise chain fused into its output (executor fusion: key _chain; the residual
    is then its last input)"""
    chain = b.node.get("_chain", ())
    steps = [chain_step(n, b.node_param) for n in chain] or None
    if any(n["op"] == "add" for n in chain):
        return steps, b.xs[-1], b.xs[:-1]
    return steps, None, b.xs


def _chain_build(b):
    return ops.bind(ops.eltwise, b.x, [chain_step(b.node, b.node_param)], ctx=b.ctx, out=b.y)


@op("affine", params={"scale": "float32", "bias": "float32"})
class Affine:
    """x * scale[c] + bias[c] (the product rounded to float32, then the sum)"""

    @staticmethod
    def check(v):
        shape = v.need_in(0, ("float",), (2, 4))
        v.param("scale", (shape[-1],))
        v.param("bias", (shape[-1],))
        return "float", shape

    build = staticmethod(_chain_build)


@op("prelu", params={"slope": "float32"})
class PRelu:
    """x if x >= 0 else x * slope[c] (slope [c] or [1])"""

    @staticmethod
    def check(v):
        shape = v.need_in(0, ("float",), (2, 4))
        v.param("slope", [(shape[-1],), (1,)])
        return "float", shape

    build = Affine.build


def _unary(fn):
    """a float -> float op of the same shape, computed by fn(b) -> step (its docstring says what)"""
    class Unary:
        __doc__ = fn.__doc__

        @staticmethod
        def check(v):
            return "float", v.need_in(0, ("float",), (2, 4))
        build = staticmethod(fn)
    return Unary


def _sigmoid(b):
    """1 / (1 + exp(-x))"""
    x, y, half = b.x, b.y, np.float32(0.5)

    def run():  # 0.5 * tanh(0.5 x) + 0.5: no overflow for any x
        np.multiply(x, half, out=y)
        np.tanh(y, out=y)
        np.multiply(y, half, out=y)
        np.add(y, half, out=y)
    return run


def _leaky_relu(b):
    """x if x >= 0 else alpha * x"""
    return _chain_build(b)


def _relu(b):
    """max(x, 0) (x > 0 ? x : 0, so relu(-0) = +0; NaN stays NaN)"""
    return _chain_build(b)


op("relu")(_unary(_relu))
op("sigmoid")(_unary(_sigmoid))
op("leaky_relu", attrs={"alpha": (Number(), True)})(_unary(_leaky_relu))


@op("clip", attrs={"min": (Number(), False), "max": (Number(), False)})
class Clip:
    """min(max(x, min), max); either bound may be absent (NaN stays NaN)"""

    @staticmethod
    def check(v):
        shape = v.need_in(0, ("float",), (2, 4))
        lo, hi = v.attrs.get("min"), v.attrs.get("max")
        if lo is not None and hi is not None and float(lo) > float(hi):
            v.fail("%s: attrs.min %r > attrs.max %r", v.where, float(lo), float(hi))
        return "float", shape

    build = staticmethod(_chain_build)


@op("softmax", attrs={"log": (Flag(), False)})
class Softmax:
    """softmax over the channels (the last axis): exp(x - max) / sum; log 1: LogSoftmax"""

    @staticmethod
    def check(v):
        return "float", v.need_in(0, ("float",), (2, 4))

    @staticmethod
    def build(b):
        x, y, log = b.x, b.y, bool(b.attrs.get("log", 0))

        def run():
            np.subtract(x, x.max(axis=-1, keepdims=True), out=y)
            if log:
                np.subtract(y, np.log(np.exp(y).sum(axis=-1, keepdims=True)), out=y)
            else:
                np.exp(y, out=y)
                np.divide(y, y.sum(axis=-1, keepdims=True), out=y)
        return run


# QONNX Quant's rounding modes (qonnx.custom_op.general.intquant), on float32 arrays
QUANT_ROUNDING = {
    "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - np.float32(0.5)),
}


@op("quant", attrs={"min": (Int(-(1 << 24), 1 << 24), True), "max": (Int(-(1 << 24), 1 << 24), True),
                    "rounding": (Choice(*QUANT_ROUNDING), False)},
    params={"scale": "float32", "zero_point": "float32"})
class Quant:
    """QONNX Quant: (round(clamp(x / scale[c] + zero_point[c], min, max)) - zero_point[c]) * scale[c],
    each step in float32 (numpy; for inputs and first / last layers)"""

    @staticmethod
    def check(v):
        shape = v.need_in(0, ("float",), (2, 4))
        v.param("scale", (shape[-1],))
        v.param("zero_point", (shape[-1],))
        if v.attrs["min"] > v.attrs["max"]:
            v.fail("%s: attrs.min %d is above attrs.max %d", v.where, v.attrs["min"], v.attrs["max"])
        return "float", shape

    @staticmethod
    def build(b):
        x, y, scale, zp = b.x, b.y, b.param("scale"), b.param("zero_point")
        lo, hi = np.float32(b.attrs["min"]), np.float32(b.attrs["max"])
        rnd = QUANT_ROUNDING[b.attrs.get("rounding", "ROUND")]
        if np.any(scale == 0) or not np.all(np.isfinite(scale)):
            raise ValueError("%s: scale must be finite and non-zero" % b.node["name"])

        def run():
            np.divide(x, scale, out=y)
            np.add(y, zp, out=y)
            np.clip(y, lo, hi, out=y)
            y[...] = rnd(y)
            np.subtract(y, zp, out=y)
            np.multiply(y, scale, out=y)
        return run


# ---- layout -----------------------------------------------------------------------------------------
@op("concat", inputs=(1, CONSTANTS["BNN_CONCAT_MAX_INPUTS"]), attrs={"axis": (Int(0, 3), False)})
class Concat:
    """concatenation along the channels (axis 3 of NHWC, 1 of NC)"""

    @staticmethod
    def check(v):
        shapes = [v.need_in(j, ("float",), (2, 4)) for j in range(len(v.ins))]
        axis = v.attrs.get("axis")
        nd = len(shapes[0])
        want_axis = 3 if nd == 4 else 1
        if not _is_int(axis) or axis != want_axis:
            v.fail("%s: attrs.axis must be %d for %d-D inputs (internal layout), got %r", v.where,
                   want_axis, nd, axis)
        for j, s in enumerate(shapes):
            if len(s) != nd or s[:axis] != shapes[0][:axis]:
                v.fail("%s: input %r %s does not match input %r %s outside axis %d", v.where, v.ins[j],
                       list(s), v.ins[0], list(shapes[0]), axis)
        return "float", shapes[0][:axis] + (sum(s[axis] for s in shapes),)

    @staticmethod
    def build(b):
        return ops.bind(ops.concat, list(b.xs), out=b.y, ctx=b.ctx)


@op("resize_nearest", attrs={"scale": (Pair(1, MAX_RESIZE), True)})
class ResizeNearest:
    """nearest-neighbour upsampling by integer factors (float or bits)"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("float", "bits"), (4,))
        sh, sw = v.attrs["scale"]
        return v.in_vals[0][0], (n, h * sh, w * sw, c)

    @staticmethod
    def build(b):
        sh, sw = b.attrs["scale"]
        x = b.x
        n, h, w = x.shape[:3]
        y6 = b.y.reshape(n, h, sh, w, sw, x.shape[3])
        x6 = x[:, :, None, :, None, :]
        return lambda: np.copyto(y6, x6)


@op("pad", attrs={"pads": (Pads(MAX_PAD), True), "value": (Number(), False)})
class Pad:
    """constant padding of H and W"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("float",), (4,))
        pt, pl, pb, pr = v.attrs["pads"]
        return "float", (n, h + pt + pb, w + pl + pr, c)

    @staticmethod
    def build(b):
        pt, pl, pb, pr = b.attrs["pads"]
        value = np.float32(b.attrs.get("value", 0.0))
        n, h, w, c = b.in_shape
        x, y = b.x, b.y
        inner = y[:, pt:pt + h, pl:pl + w, :]

        def run():
            y.fill(value)
            np.copyto(inner, x)
        return run


@op("flatten")
class Flatten:
    """NHWC -> [n, c*h*w] in NCHW order (as ONNX); bits may stay bits"""

    @staticmethod
    def check(v):
        n, h, w, c = v.need_in(0, ("float", "bits"), (4,))
        return ("float", "bits") if v.in_vals[0][0] == "bits" else "float", (n, c * h * w)

    @staticmethod
    def build(b):
        n, h, w, c = b.in_shape
        x, y, ctx = b.x, b.y, b.ctx
        if b.in_kind == "float":
            y4, xt = y.reshape(n, c, h, w), x.transpose(0, 3, 1, 2)
            return lambda: np.copyto(y4, xt)
        if h * w == 1 or c == 1:  # NCHW order = NHWC order: no transposition
            if b.out_kind == "bits" and h * w == 1:  # the same words
                xw = x.reshape(y.shape)
                return lambda: np.copyto(y, xw)
            if b.out_kind == "float":
                return ops.bind(ops.unpack, x, c, ctx=ctx, out=y.reshape(n, h, w, c))
            flat = np.empty((n, h * w), dtype=np.float32)
            unpack = ops.bind(ops.unpack, x, c, ctx=ctx, out=flat.reshape(n, h, w, c))
            pack = ops.bind(ops.bitpack, flat, 0.0, ctx=ctx, out=y)

            def run():
                unpack()
                pack()
            return run
        tmp = np.empty((n, h, w, c), dtype=np.float32)
        tmpt = tmp.transpose(0, 3, 1, 2)
        unpack = ops.bind(ops.unpack, x, c, ctx=ctx, out=tmp)
        if b.out_kind == "float":
            y4 = y.reshape(n, c, h, w)

            def run():
                unpack()
                np.copyto(y4, tmpt)
            return run
        flat = np.empty((n, c * h * w), dtype=np.float32)
        flat4 = flat.reshape(n, c, h, w)
        pack = ops.bind(ops.bitpack, flat, 0.0, ctx=ctx, out=y)

        def run():
            unpack()
            np.copyto(flat4, tmpt)
            pack()
        return run


# ---- fused steps (made by the executor at load, never in a file) -----------------------------------
def build_eltwise(b, chain):
    """a chain of CHAIN_OPS nodes and at most one add as one C pass (executor fusion; the
    residual is the node's second input)"""
    r = b.xs[1] if len(b.xs) > 1 else None
    return ops.bind(ops.eltwise, b.x, [chain_step(n, b.node_param) for n in chain], residual=r, ctx=b.ctx,
                    out=b.y)


def build_bitpack_affine(b, chain):
    """an affine read only by a bitpack, as one packing pass (executor fusion)"""
    aff, pack = chain
    return ops.bind(ops.bitpack_affine, b.x, b.node_param(aff, "scale"), b.node_param(aff, "bias"),
                    float(pack.get("attrs", {}).get("threshold", 0.0)), ctx=b.ctx, out=b.y)

