"""ONNX nodes -> binarized graph nodes.

Each ONNX value is represented by a ``Rep``: a float tensor, a binary tensor (packed
+-scale), a constant, or one of the intermediate forms of XNOR-Net's K (|x|, mean|x|,
K itself) that only make sense together.  Layouts: 4-D values are NCHW in ONNX and NHWC
in the runtime; shapes in a Rep are ONNX's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConvertError
from .ir import IR, pack_bits
from .qonnx import DOMAINS as QONNX_DOMAINS, OPS as QONNX_OPS



@dataclass
class Rep:
    kind: str            # float | bits | const | abs | absmean | kscale | cond
    value: str = ""      # IR value name
    shape: tuple = ()    # ONNX (NCHW / NC) shape
    levels: tuple = (1.0, -1.0)  # bits: the tensor's value where a bit is +1, where it is -1
    #                              (cond: the truth value there)
    const: np.ndarray = None
    src: "Rep" = None    # abs / absmean: the float tensor they come from; float that is
    #                      Relu(x) / Clip(x, 0, hi): x (Sign packs x > 0 from it); padded: the bits
    zero: str = None     # float: None: not exactly 0 by construction; "nonneg": >= 0 and may
    #                      be exactly 0; "signed": may be exactly 0 and negative
    why: str = ""        # where those zeros come from (for messages)
    pads: tuple = None   # padded: the bits in src padded spatially [t, l, b, r] with pad_value
    pad_value: float = 0.0

    @property
    def scale_offset(self):
        """bits: (s, o) with value = s * bit + o (bit = +-1)"""
        hi, lo = (float(v) for v in self.levels)
        return (hi - lo) / 2, (hi + lo) / 2


def nhwc(shape):
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _ints(v, n, name, node):
    v = list(v)
    if len(v) != n:
        raise ConvertError.at(node, "%s must have %d entries, got %s" % (name, n, v))
    return [int(x) for x in v]


def _scalar(const, node, what):
    """A constant holding one number -> float (ConvertError otherwise)."""
    c = np.asarray(const)
    if c.size != 1 or c.dtype.kind not in "biuf":
        raise ConvertError.at(node, "%s must be one number, got %s of shape %s" % (what, c.dtype, c.shape))
    return float(c.reshape(-1)[0])


def window_attrs(node, in_hw, kernel, kind):
    """(stride, pads[t, l, b, r]) from ONNX Conv / pool attributes, checked."""
    a = node.attrs
    if min(kernel) < 1:
        raise ConvertError.at(node, "kernel %s: sizes must be positive" % (list(kernel),))
    s = _ints(a.get("strides", [1, 1]), 2, "strides", node)
    if min(s) < 1:
        raise ConvertError.at(node, "strides %s must be positive" % (s,))
    d = _ints(a.get("dilations", [1, 1]), 2, "dilations", node)
    if d != [1, 1]:
        raise ConvertError.at(node, "dilations %s are not supported" % d, "use dilation 1")
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = _ints(a.get("pads", [0, 0, 0, 0]), 4, "pads", node)
        if min(p) < 0:
            raise ConvertError.at(node, "negative pads %s are not supported" % (p,))
        pads = [p[0], p[1], p[2], p[3]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for i in range(2):
            out = -(-in_hw[i] // s[i])
            tot = max(0, (out - 1) * s[i] + kernel[i] - in_hw[i])
            lo = tot // 2 if auto == "SAME_UPPER" else tot - tot // 2
            pads[i], pads[i + 2] = lo, tot - lo
    else:
        raise ConvertError.at(node, "auto_pad %r is not supported" % auto)
    if a.get("ceil_mode", 0):
        if kind == "conv":
            raise ConvertError.at(node, "ceil_mode on a convolution")
        for i in range(2):
            span = in_hw[i] + pads[i] + pads[i + 2] - kernel[i]
            out_floor = span // s[i] + 1
            out_ceil = -(-span // s[i]) + 1
            if (out_ceil - 1) * s[i] >= in_hw[i] + pads[i]:
                out_ceil -= 1  # ONNX: the last window must start inside the input or left pad
            if out_ceil > out_floor:  # extend the end so the last (partial) window exists
                pads[i + 2] += max(0, (out_ceil - 1) * s[i] + kernel[i] - (in_hw[i] + pads[i] + pads[i + 2]))
    for i in range(2):
        if pads[i] >= kernel[i] or pads[i + 2] >= kernel[i]:
            raise ConvertError.at(node, "pads %s must be smaller than the kernel %s" % (pads, kernel))
    if kernel[0] > 15 or kernel[1] > 15:
        if kind == "conv":
            raise ConvertError.at(node, "kernel %s larger than 15" % (kernel,))
    if s[0] > 8 or s[1] > 8:
        if kind == "conv":
            raise ConvertError.at(node, "strides %s larger than 8" % (s,))
    return s, pads


def out_hw(in_hw, kernel, stride, pads):
    return ((in_hw[0] + pads[0] + pads[2] - kernel[0]) // stride[0] + 1,
            (in_hw[1] + pads[1] + pads[3] - kernel[1]) // stride[1] + 1)


def binary_alpha(w: np.ndarray):
    """alpha [out] when every output filter of w is +-alpha (a binarised weight after
    folding), else None."""
    w = np.asarray(w, dtype=np.float32)
    a = np.abs(w.reshape(w.shape[0], -1))
    amax = a.max(axis=1)
    amin = a.min(axis=1)
    if not np.all(amax - amin <= 1e-6 * np.maximum(amax, 1e-30)):
        return None
    return a.mean(axis=1).astype(np.float32)


def per_channel(const, shape, node, what):
    """A constant that broadcasts over `shape` and varies only along the channel axis
    (axis 1) -> vector [C]."""
    c = np.asarray(const, dtype=np.float32)
    try:
        b = np.broadcast_to(c, shape)
    except ValueError:
        raise ConvertError.at(node, "%s of shape %s does not broadcast to %s" % (what, c.shape, shape)) from None
    if c.ndim > len(shape):
        raise ConvertError.at(node, "%s has more dimensions than the tensor" % what)
    idx = tuple(slice(None) if i == 1 else slice(0, 1) for i in range(len(shape)))
    ref = b[idx]
    if not np.array_equal(np.broadcast_to(ref, shape), b):
        raise ConvertError.at(node, "%s varies along axes other than the channels" % what,
                              "only per-channel (or scalar) constants are supported")
    return np.ascontiguousarray(ref.reshape(shape[1]))


class Lowering:
    def __init__(self, graph):
        self.g = graph
        self.ir = IR()
        self.reps: dict[str, Rep] = {}
        self._float_of_bits: dict[str, Rep] = {}
        self._bits_of_float: dict[str, Rep] = {}
        self.notes: list[str] = []
        self.sign_bits: dict = {}       # bits value -> the ONNX Sign node that made it (passes)
        self.float_reasons: dict = {}   # ONNX node name -> why a layer with binary weights is float
        self.anchors: dict = {}         # IR value -> (ONNX value, bits levels or None, the ONNX value
        #                                 binarised or None, threshold): what --check compares
        self.producer = {o: n for n in graph.nodes for o in n.outputs}
        self.consumers: dict[str, int] = {}
        for n in graph.nodes:
            for i in n.inputs:
                if i:
                    self.consumers[i] = self.consumers.get(i, 0) + 1
        for o in graph.outputs:
            self.consumers[o] = self.consumers.get(o, 0) + 1

    # ---- representation helpers -----------------------------------------------------------
    def rep(self, name, node):
        if name in self.g.consts:
            return Rep("const", shape=tuple(self.g.consts[name].shape), const=self.g.consts[name])
        if name not in self.reps:
            raise ConvertError.at(node, "input %r is not produced by any supported node" % name)
        return self.reps[name]

    def const(self, name, node, what):
        if not name:
            return None
        if name not in self.g.consts:
            raise ConvertError.at(node, "%s (%r) must be a constant" % (what, name),
                                  "only constant weights and parameters are supported")
        return self.g.consts[name]

    def new_float(self, base, shape):
        return Rep("float", self.ir.value(base, "float", nhwc(shape)), tuple(shape))

    def as_float(self, r: Rep, node) -> Rep:
        if r.kind == "float":
            return r
        if r.kind == "bits":
            key = (r.value, tuple(r.levels))
            if key not in self._float_of_bits:
                out = self.new_float(r.value + ".float", r.shape)
                self.ir.add("unpack", r.value + ".unpack", [r.value], [out.value])
                if tuple(r.levels) != (1.0, -1.0):
                    s, o = r.scale_offset
                    scaled = self.new_float(r.value + ".scaled", r.shape)
                    c = r.shape[1]
                    self.ir.add("affine", r.value + ".scale", [out.value], [scaled.value], params={
                        "scale": self.ir.tensor(r.value + ".scale", np.full(c, s, np.float32)),
                        "bias": self.ir.tensor(r.value + ".bias", np.full(c, o, np.float32))})
                    out = scaled
                    hi, lo = r.levels
                    if 0 in (hi, lo):
                        out.zero = "nonneg" if min(hi, lo) >= 0 else "signed"
                        out.why = "a two-valued tensor with the values %g and %g" % (hi, lo)
                self._float_of_bits[key] = out
            return self._float_of_bits[key]
        if r.kind == "padded":  # not read by a binary convolution: pad the unpacked floats
            return self._float_pad(node, r.value, r.value, self.as_float(r.src, node), r.pads, r.pad_value)
        if r.kind == "const":
            raise ConvertError.at(node, "a constant where a computed tensor is expected",
                                  "the graph computes on constants only; fold it before export")
        raise ConvertError.at(node, "consumes an intermediate of XNOR-Net's K scaling (%s) in an "
                                    "unsupported way" % r.kind,
                              "K must be Conv(ReduceMean(Abs(x), axis=1), box) multiplied into a binary conv")

    def as_bits(self, r: Rep, node, threshold=0.0, negate=False) -> Rep:
        """bits of r: +1 where r >= threshold, else -1 (QONNX BipolarQuant's rule; ONNX Sign's
        where r is never exactly 0); negate: +1 where -r >= threshold."""
        if r.kind == "bits" and threshold == 0.0 and not negate and r.levels[0] >= 0 > r.levels[1]:
            return Rep("bits", r.value, r.shape)
        f = self.as_float(r, node)
        key = (f.value, float(threshold), negate)
        if key not in self._bits_of_float:
            src = f
            if negate:
                src = self.new_float(f.value + ".neg", f.shape)
                c = f.shape[1]
                self.ir.add("affine", f.value + ".negate", [f.value], [src.value], params={
                    "scale": self.ir.tensor(f.value + ".minus_one", np.full(c, -1.0, np.float32)),
                    "bias": self.ir.tensor(f.value + ".zero", np.zeros(c, np.float32))})
            out = self.ir.value(f.value + ".bits", "bits", nhwc(f.shape))
            self.ir.add("bitpack", f.value + ".bitpack", [src.value], [out], {"threshold": float(threshold)})
            self._bits_of_float[key] = Rep("bits", out, f.shape)
        return self._bits_of_float[key]

    def invert(self, r: Rep, node) -> Rep:
        """the same tensor as r (bits) with every bit flipped and the levels swapped"""
        hi, lo = (np.float32(v) for v in r.levels)
        if hi == lo:
            return r
        mid = np.float32((np.float64(hi) + np.float64(lo)) / 2)
        if not min(hi, lo) < mid < max(hi, lo):
            raise ConvertError.at(node, "a two-valued tensor (%g, %g) too close to tell apart" % (hi, lo))
        # hi > lo: the new bit is -1 where x > mid, i.e. -x < -mid; hi < lo: where x < mid
        b = self.as_bits(r, node, -float(mid), negate=True) if hi > lo else self.as_bits(r, node, float(mid))
        return Rep("bits", b.value, r.shape, (float(lo), float(hi)))

    def zero_at_plus(self, r: Rep, node) -> Rep:
        """r (bits) with the value 0, if it takes it, where a bit is +1 (the bits a binary
        convolution pads with, pad_mode one)"""
        return self.invert(r, node) if float(r.levels[1]) == 0.0 else r

    def shape_of(self, name, fallback):
        return tuple(self.g.shapes.get(name, fallback))

    # ---- driver ---------------------------------------------------------------------------------
    def lower(self):
        """lowers every node in order (one ``op_<OnnxOp>`` rule each); returns the graph outputs"""
        for name, shape in self.g.inputs:
            if len(shape) not in (2, 4):
                raise ConvertError("input %r has rank %d; inputs must be NCHW (4-D) or NC (2-D)"
                                   % (name, len(shape)))
            kind_shape = nhwc(shape)
            self.ir._names.add(name)
            self.ir.values[name] = {"name": name, "kind": "float", "shape": list(kind_shape)}
            self.reps[name] = Rep("float", name, tuple(shape))
        for node in self.g.nodes:
            if node.domain not in ("", "ai.onnx") and not (node.domain in QONNX_DOMAINS and node.op in QONNX_OPS):
                raise ConvertError.at(node, "operator domain %r is not supported" % node.domain)
            fn = getattr(self, "op_" + node.op, None)
            if fn is None:
                raise ConvertError.at(node, "unsupported operator %s" % node.op,
                                      "supported: %s" % ", ".join(SUPPORTED_OPS))
            out = fn(node)
            if out is not None:
                self.reps[node.outputs[0]] = out
                if out.kind in ("float", "bits"):  # the last ONNX value a converted value holds
                    levels = tuple(out.levels) if out.kind == "bits" else None
                    pre = node.inputs[0] if levels and node.op in ("Sign", "BipolarQuant", "Quant") else None
                    old = self.anchors.get(out.value)
                    if pre is None and old and old[1] == levels:  # the same bits under another name
                        pre = old[2]
                    self.anchors[out.value] = (node.outputs[0], levels, pre, 0.0)
        outputs = []
        for name in self.g.outputs:
            if name in self.g.consts:
                raise ConvertError("graph output %r is a constant" % name)
            if name not in self.reps:
                raise ConvertError("graph output %r is not computed by any node" % name)
            r = self.as_float(self.reps[name], type("N", (), {"op": "output", "name": name})())
            outputs.append((name, r))
        return outputs

    # ---- ops ------------------------------------------------------------------------------------
    def op_Identity(self, node):
        return self.rep(node.inputs[0], node)

    op_Dropout = op_Identity

    def op_Sign(self, node):
        """ONNX Sign: -1, 0 or 1.  The runtime's bits hold two values, so a Sign whose input
        can be exactly 0 by construction (docs/converter.md, "Sign and exact zeros") becomes
        bits whose levels include 0 ({0, 1} after a Relu), or is refused."""
        r = self.rep(node.inputs[0], node)
        if r.kind == "const":
            self.g.consts[node.outputs[0]] = np.sign(r.const)
            return None
        if r.kind == "bits":  # the sign of a two-valued tensor: its levels' signs
            hi, lo = (float(v) for v in np.sign(np.float32(r.levels)))
            if 0.0 in (hi, lo) or hi == lo:
                return Rep("bits", r.value, r.shape, (hi, lo))
            return self.as_bits(r, node)
        f = self.as_float(r, node)
        if f.zero is None:
            b = self.as_bits(f, node)
            self.sign_bits[b.value] = node  # a binary layer's output may be exactly 0: see passes
            return b
        if f.zero == "nonneg":  # {0, 1}: the bit is +1 where the input is 0 (x <= 0), -1 where x > 0
            b = self.as_bits(f.src if f.src is not None else f, node, negate=True)
            return Rep("bits", b.value, f.shape, (0.0, 1.0))
        raise ConvertError.at(node, "its input can be exactly 0 and negative (%s): ONNX's Sign gives -1, 0 "
                                    "and 1 there, and the runtime's bits hold two values" % f.why,
                              "binarise with x >= 0 (Where(x >= 0, 1, -1), QONNX BipolarQuant), or make "
                              "the input nonnegative (Relu) or never exactly 0")

    def op_BipolarQuant(self, node):
        r = self.rep(node.inputs[0], node)
        s = np.asarray(self.const(node.inputs[1], node, "scale"), np.float32)
        if r.kind == "const":  # binarised weights (QONNX: +1 for x >= 0), any broadcastable scale
            from .qonnx import bipolar_quant
            try:
                self.g.consts[node.outputs[0]] = bipolar_quant(r.const, s)
            except ValueError:
                raise ConvertError.at(node, "scale of shape %s does not broadcast to %s" % (s.shape, r.shape)) from None
            return None
        b = self.as_bits(r, node)
        if s.size == 1 or np.all(s == s.reshape(-1)[0]):
            v = np.float32(s.reshape(-1)[0])
            return Rep("bits", b.value, b.shape, (float(v), float(-v)))
        self.float_reasons.setdefault(node.name, "the activation scale varies per channel (%s)" % (s.shape,))
        v = per_channel(s, b.shape, node, "scale")
        return self._affine(node, b, v, np.zeros_like(v))

    def op_Quant(self, node):
        """QONNX Quant: a float op (quant) unless it has 1 bit (then bipolar)"""
        from .qonnx import int_quant, int_range, quant_params
        r = self.rep(node.inputs[0], node)
        scale, zeropt, bits, signed, narrow, mode = quant_params(node, self.g.consts)
        if r.kind == "const":
            self.g.consts[node.outputs[0]] = int_quant(r.const, scale, zeropt, bits, signed, narrow, mode)
            return None
        x = self.as_float(r, node)
        if bits == 1 and signed:
            if np.any(zeropt != 0) or np.any(scale <= 0):
                raise ConvertError.at(node, "a 1-bit Quant with a zero point or a scale <= 0 is not supported",
                                      "BipolarQuant with a positive scale")
            return self.op_BipolarQuant(node)
        s = per_channel(scale, x.shape, node, "scale")
        z = per_channel(zeropt, x.shape, node, "zero point")
        lo, hi = int_range(bits, signed, narrow)
        least = np.minimum((lo - z) * s, (hi - z) * s)
        out = self.new_float(node.outputs[0], x.shape)
        self.ir.add("quant", node.name, [x.value], [out.value], {"min": lo, "max": hi, "rounding": mode},
                    {"scale": self.ir.tensor(node.name + ".scale", s),
                     "zero_point": self.ir.tensor(node.name + ".zero_point", z)})
        out.zero, out.why = ("nonneg" if np.all(least >= 0) else "signed"), "Quant node %r" % node.name
        return out

    def op_Abs(self, node):
        r = self.rep(node.inputs[0], node)
        if r.kind != "float" or len(r.shape) != 4:
            raise ConvertError.at(node, "Abs is supported only as part of XNOR-Net's K scaling of a float tensor")
        return Rep("abs", shape=r.shape, src=r)

    def _axes(self, node):
        if "axes" in node.attrs:
            return [int(a) for a in node.attrs["axes"]]
        if len(node.inputs) > 1 and node.inputs[1]:
            return [int(a) for a in np.asarray(self.const(node.inputs[1], node, "axes")).reshape(-1)]
        return None

    def op_ReduceMean(self, node):
        r = self.rep(node.inputs[0], node)
        axes = self._axes(node)
        keep = int(node.attrs.get("keepdims", 1))
        rank = len(r.shape)
        axes = sorted(a % rank for a in axes) if axes is not None else list(range(rank))
        if r.kind == "abs" and axes == [1] and keep:
            return Rep("absmean", shape=(r.shape[0], 1) + tuple(r.shape[2:]), src=r.src)
        if rank == 4 and axes == [2, 3]:
            g = self._global_pool(node, r, "avg")
            if keep:
                return g
            return self._flatten(node, g)
        raise ConvertError.at(node, "ReduceMean over axes %s (keepdims=%d) is not supported" % (axes, keep),
                              "supported: global average pooling (axes 2,3) and mean|x| over channels for K")

    def op_ReduceMax(self, node):
        r = self.rep(node.inputs[0], node)
        rank = len(r.shape)
        axes = self._axes(node)
        axes = sorted(a % rank for a in axes) if axes is not None else list(range(rank))
        if rank == 4 and axes == [2, 3]:
            g = self._global_pool(node, r, "max")
            return g if int(node.attrs.get("keepdims", 1)) else self._flatten(node, g)
        raise ConvertError.at(node, "ReduceMax over axes %s is not supported" % axes,
                              "supported: global max pooling (axes 2,3)")

    def op_Conv(self, node):
        x = self.rep(node.inputs[0], node)
        w = np.asarray(self.const(node.inputs[1], node, "weights"), np.float32)
        b = self.const(node.inputs[2], node, "bias") if len(node.inputs) > 2 else None
        groups = int(node.attrs.get("group", 1))
        if w.ndim != 4 or len(x.shape) != 4:
            raise ConvertError.at(node, "only 2-D convolutions are supported (weights %s)" % (w.shape,))
        k = (w.shape[2], w.shape[3])
        in_hw = x.shape[2:]
        s, pads = window_attrs(node, in_hw, k, "conv")
        one_pad = False
        if x.kind == "padded":  # Pad(0 or +1 level) of bits: the binary convolution's own padding
            x, pads, one_pad = self._padded_conv_input(node, x, w, k, pads)
            in_hw = x.shape[2:]
        oh, ow = out_hw(in_hw, k, s, pads)
        out_shape = (x.shape[0], w.shape[0], oh, ow)
        attrs = {"kernel": list(k), "stride": s, "pads": pads}
        if x.kind == "absmean":
            box = np.full(w.shape, 1.0 / (k[0] * k[1]), np.float32)
            if w.shape[:2] != (1, 1) or b is not None or not np.allclose(w, box, rtol=1e-5, atol=0):
                raise ConvertError.at(node, "a convolution of mean|x| that is not XNOR-Net's box filter")
            kv = self.ir.value(node.outputs[0], "float", (out_shape[0], oh, ow))
            self.ir.add("xnor_scale", node.name, [x.src.value], [kv], attrs)
            return Rep("kscale", kv, out_shape)
        if x.kind not in ("float", "bits"):
            self.as_float(x, node)  # raises the right message
        if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
            raise ConvertError.at(node, "group=%d does not divide the %d input and %d output channels"
                                  % (groups, x.shape[1], w.shape[0]))
        if w.shape[1] * groups != x.shape[1]:
            raise ConvertError.at(node, "weights have %d input channels per group (group=%d), input has %d"
                                  % (w.shape[1], groups, x.shape[1]))
        bias = np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32).reshape(-1)
        if bias.shape != (w.shape[0],):
            raise ConvertError.at(node, "bias has %d values for %d output channels" % (bias.size, w.shape[0]))
        alpha = binary_alpha(w) if groups == 1 else None
        pad_mode = "zero"
        if alpha is not None and x.kind != "bits":
            self.float_reasons[node.name] = "its input is not binary (%s)" % self._why_float(x)
            alpha = None
        if alpha is not None:
            sc, off = x.scale_offset
            if one_pad:  # a Pad with the +1 level before it (larq's pad_values=1)
                pad_mode = "one"
            elif off != 0 and any(pads):  # padding must add 0: only where the bits' +1 stands for 0
                x = self.zero_at_plus(x, node)
                sc, off = x.scale_offset
                if float(x.levels[0]) != 0.0:
                    self.float_reasons[node.name] = ("its input takes the values %g and %g, neither 0, and the "
                                                     "convolution pads with 0" % tuple(x.levels))
                    alpha = None
                pad_mode = "one"
        out = self.new_float(node.outputs[0], out_shape)
        if alpha is not None:
            # sum w * (s * b + o) = alpha * s * d + o * alpha * sum(sign(w)), d the +-1 dot product
            wsum = np.where(w >= 0, 1.0, -1.0).reshape(w.shape[0], -1).sum(axis=1)
            wt = pack_bits(w.transpose(0, 2, 3, 1))
            self.ir.add("bconv2d", node.name, [x.value], [out.value],
                        dict(attrs, pad_mode=pad_mode, output="float"),
                        {"weights": self.ir.tensor(node.name + ".weights", wt),
                         "mul": self.ir.tensor(node.name + ".mul", (alpha * sc).astype(np.float32)),
                         "add": self.ir.tensor(node.name + ".add", (bias + off * alpha * wsum).astype(np.float32))})
        else:
            if groups > 1 and binary_alpha(w) is not None:
                self.float_reasons[node.name] = "group=%d (binary convolutions have groups 1)" % groups
            elif x.kind == "bits":
                self.float_reasons.setdefault(node.name, "its weights are not +-alpha per filter")
            xf = self.as_float(x, node)
            params = {"weights": self.ir.tensor(node.name + ".weights", np.ascontiguousarray(w.transpose(0, 2, 3, 1)))}
            if b is not None:
                params["bias"] = self.ir.tensor(node.name + ".bias", bias)
            if groups > 1:
                attrs["groups"] = groups
            self.ir.add("fconv2d", node.name, [xf.value], [out.value], attrs, params)
        return out

    def _affine(self, node, x, scale, bias):
        xf = self.as_float(x, node)
        out = self.new_float(node.outputs[0], xf.shape)
        scale, bias = np.asarray(scale, np.float32), np.asarray(bias, np.float32)
        self.ir.add("affine", node.name, [xf.value], [out.value], params={
            "scale": self.ir.tensor(node.name + ".scale", scale),
            "bias": self.ir.tensor(node.name + ".bias", bias)})
        # exact zeros: x's zeros land on the bias; scale 0 with bias 0 makes them
        if xf.zero and np.any(bias == 0):
            nonneg = xf.zero == "nonneg" and np.all(scale >= 0) and np.all(bias >= 0)
            out.zero, out.why = ("nonneg" if nonneg else "signed"), xf.why
        elif np.any((scale == 0) & (bias == 0)):
            out.zero, out.why = "signed", "%s node %r multiplies by 0" % (node.op, node.name)
        return out

    @staticmethod
    def _on_levels(x, c, fn):
        """bits x combined elementwise with one number c: the same bits with new levels
        (computed in float32 as ONNX computes each element), or None"""
        c = np.asarray(c)
        if x.kind != "bits" or c.size == 0 or c.dtype.kind not in "biuf" or np.any(c != c.reshape(-1)[0]):
            return None
        try:
            if np.broadcast_shapes(c.shape, tuple(x.shape)) != tuple(x.shape):
                return None
        except ValueError:
            return None
        v = np.float32(c.reshape(-1)[0])
        hi, lo = (np.float32(fn(np.float32(lv), v)) for lv in x.levels)
        return Rep("bits", x.value, x.shape, (float(hi), float(lo)))

    def op_BatchNormalization(self, node):
        if int(node.attrs.get("training_mode", 0)):
            raise ConvertError.at(node, "training_mode=1", "export the model in eval mode")
        x = self.rep(node.inputs[0], node)
        gamma, beta, mean, var = (np.asarray(self.const(n, node, w), np.float64).reshape(-1)
                                  for n, w in zip(node.inputs[1:5], ("scale", "bias", "mean", "var")))
        if len(x.shape) not in (2, 4) or any(p.shape != (x.shape[1],) for p in (gamma, beta, mean, var)):
            raise ConvertError.at(node, "scale/bias/mean/var of sizes %s for an input of shape %s"
                                  % ([p.size for p in (gamma, beta, mean, var)], x.shape),
                                  "one value per channel of an NCHW or NC tensor")
        eps = float(node.attrs.get("epsilon", 1e-5))
        s = gamma / np.sqrt(var + eps)
        return self._affine(node, x, s.astype(np.float32), (beta - mean * s).astype(np.float32))

    def _binary_const(self, node):
        a, b = node.inputs[0], node.inputs[1]
        ra, rb = self.rep(a, node), self.rep(b, node)
        if ra.kind == "const" and rb.kind != "const":
            return rb, ra.const, True
        if rb.kind == "const":
            return ra, rb.const, False
        return None

    def op_Mul(self, node):
        ra, rb = self.rep(node.inputs[0], node), self.rep(node.inputs[1], node)
        for x, k in ((ra, rb), (rb, ra)):
            if k.kind == "kscale" and x.kind == "float":
                return self._attach_k(node, x, k)
        rc = self._binary_const(node)
        if rc is None:
            raise ConvertError.at(node, "multiplication of two computed tensors is not supported",
                                  "only per-channel constants and XNOR-Net's K")
        x, c, _ = rc
        b = self._on_levels(x, c, np.multiply)
        if b is not None:
            return b
        v = per_channel(c, x.shape, node, "multiplier")
        return self._affine(node, x, v, np.zeros_like(v))

    def _attach_k(self, node, x, k):
        prod = self.ir.producer(x.value)
        if (prod is None or prod["op"] != "bconv2d" or len(prod["inputs"]) != 1
                or self.consumers.get(node.inputs[0], 0) + self.consumers.get(node.inputs[1], 0) > 2
                or np.any(self.ir.param(prod, "add") != 0)):
            raise ConvertError.at(node, "XNOR-Net's K must multiply the output of a binary convolution without "
                                        "bias, used nowhere else")
        if tuple(k.shape[2:]) != tuple(x.shape[2:]):
            raise ConvertError.at(node, "K has spatial shape %s, the convolution %s" % (k.shape[2:], x.shape[2:]))
        self.ir.set_inputs(prod, prod["inputs"] + [k.value])
        kp = self.ir.producer(k.value)  # K must be computed before the convolution reads it
        if self.ir.order(kp) > self.ir.order(prod):
            self.ir.move_before(kp, prod)
        return x

    def op_Div(self, node):
        rc = self._binary_const(node)
        if rc is None or rc[2]:
            raise ConvertError.at(node, "only division by a constant is supported")
        x, c, _ = rc
        b = self._on_levels(x, c, np.divide)
        if b is not None:
            return b
        v = per_channel(c, x.shape, node, "divisor")
        return self._affine(node, x, (1.0 / v.astype(np.float64)).astype(np.float32), np.zeros_like(v))

    def op_Add(self, node):
        rc = self._binary_const(node)
        if rc is None:
            a = self.as_float(self.rep(node.inputs[0], node), node)
            b = self.as_float(self.rep(node.inputs[1], node), node)
            if tuple(a.shape) != tuple(b.shape):
                raise ConvertError.at(node, "adding tensors of shapes %s and %s (broadcasting is not supported)"
                                      % (a.shape, b.shape))
            out = self.new_float(node.outputs[0], a.shape)
            self.ir.add("add", node.name, [a.value, b.value], [out.value])
            if a.zero or b.zero:
                both = a.zero == b.zero == "nonneg"
                out.zero, out.why = ("nonneg" if both else "signed"), (a.why or b.why)
            return out
        x, c, _ = rc
        b = self._on_levels(x, c, np.add)
        if b is not None:
            return b
        v = per_channel(c, x.shape, node, "addend")
        return self._affine(node, x, np.ones_like(v), v)

    def op_Sub(self, node):
        rc = self._binary_const(node)
        if rc is None:
            raise ConvertError.at(node, "subtraction of two computed tensors is not supported")
        x, c, const_first = rc
        b = self._on_levels(x, c, (lambda lv, v: v - lv) if const_first else np.subtract)
        if b is not None:
            return b
        v = per_channel(c, x.shape, node, "subtrahend")
        if const_first:  # c - x
            return self._affine(node, x, -np.ones_like(v), v)
        return self._affine(node, x, np.ones_like(v), -v)

    @staticmethod
    def _zero(out, x):
        """out is exactly 0 where x is (and keeps its sign)"""
        if x.kind == "float" and x.zero:
            out.zero, out.why = x.zero, x.why
        return out

    def _why_float(self, x):
        if x.kind != "float":
            return "a %s tensor" % x.kind
        prod = self.producer.get(self.anchors.get(x.value, (None,))[0])
        if prod is None:
            return "a graph input" if x.value in dict(self.g.inputs) else "a float tensor"
        return "the float output of %s node %r" % (prod.op, prod.name)

    def op_Neg(self, node):
        x = self.rep(node.inputs[0], node)
        if x.kind == "bits":
            return Rep("bits", x.value, x.shape, tuple(-float(v) for v in x.levels))
        c = x.shape[1]
        return self._affine(node, x, -np.ones(c, np.float32), np.zeros(c, np.float32))

    def _unary(self, node, op, attrs=None, params=None):
        x = self.as_float(self.rep(node.inputs[0], node), node)
        out = self.new_float(node.outputs[0], x.shape)
        self.ir.add(op, node.name, [x.value], [out.value], attrs, params)
        return out

    def op_Relu(self, node):
        x = self.rep(node.inputs[0], node)
        if x.kind == "bits":
            return Rep("bits", x.value, x.shape, tuple(float(max(v, 0.0)) for v in x.levels))
        out = self._unary(node, "relu")
        out.zero, out.why, out.src = "nonneg", "Relu node %r" % node.name, self.as_float(x, node)
        return out

    def op_Sigmoid(self, node):
        return self._unary(node, "sigmoid")

    def op_LeakyRelu(self, node):
        out = self._unary(node, "leaky_relu", {"alpha": float(node.attrs.get("alpha", 0.01))})
        return self._zero(out, self.rep(node.inputs[0], node))

    def _softmax(self, node, log):
        x = self.as_float(self.rep(node.inputs[0], node), node)
        rank = len(x.shape)
        axis = int(node.attrs.get("axis", -1 if self.g.opset >= 13 else 1)) % rank
        # opset < 13 flattens the dims from axis on: the same as over the channels only when
        # nothing follows them
        if axis != 1 or (self.g.opset < 13 and any(d != 1 for d in x.shape[2:])):
            raise ConvertError.at(node, "%s over axis %d of a %d-D input is not supported" % (node.op, axis, rank),
                                  "supported: over the channels (axis 1 of NCHW or NC)")
        out = self.new_float(node.outputs[0], x.shape)
        self.ir.add("softmax", node.name, [x.value], [out.value], {"log": 1} if log else None)
        return out

    def op_Softmax(self, node):
        return self._softmax(node, log=False)

    def op_LogSoftmax(self, node):
        return self._softmax(node, log=True)

    def op_PRelu(self, node):
        x = self.rep(node.inputs[0], node)
        slope = np.asarray(self.const(node.inputs[1], node, "slope"), np.float32)
        v = slope.reshape(1) if slope.size == 1 else per_channel(slope, x.shape, node, "slope")
        out = self._unary(node, "prelu", params={"slope": self.ir.tensor(node.name + ".slope", v)})
        return self._zero(out, x)

    def op_Clip(self, node):
        lo, hi = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
        if len(node.inputs) > 1 and node.inputs[1]:
            lo = _scalar(self.const(node.inputs[1], node, "min"), node, "min")
        if len(node.inputs) > 2 and node.inputs[2]:
            hi = _scalar(self.const(node.inputs[2], node, "max"), node, "max")
        x = self.rep(node.inputs[0], node)
        if x.kind == "bits":
            return Rep("bits", x.value, x.shape, tuple(float(np.float32(min(max(v, lo), hi))) for v in x.levels))
        out = self._unary(node, "clip", {"min": float(max(lo, -3.0e38)), "max": float(min(hi, 3.0e38))})
        if lo == 0 and hi > 0:
            out.zero, out.why, out.src = "nonneg", "Clip node %r with min 0" % node.name, self.as_float(x, node)
        elif hi == 0 and lo < 0:
            out.zero, out.why = "signed", "Clip node %r with max 0" % node.name
        elif lo < 0 < hi:  # exactly 0 where x is
            self._zero(out, x)
        return out

    def _pool_common(self, node, x):
        k = _ints(node.attrs["kernel_shape"], 2, "kernel_shape", node)
        s, pads = window_attrs(node, x.shape[2:], k, "pool")
        oh, ow = out_hw(x.shape[2:], k, s, pads)
        return {"kernel": k, "stride": s, "pads": pads}, (x.shape[0], x.shape[1], oh, ow)

    def op_MaxPool(self, node):
        if len(node.outputs) > 1 and node.outputs[1]:
            raise ConvertError.at(node, "MaxPool with an Indices output")
        x = self.rep(node.inputs[0], node)
        attrs, shape = self._pool_common(node, x)
        if x.kind == "bits" and x.levels[0] != x.levels[1]:
            if x.levels[0] < x.levels[1]:  # the max is where the bit is -1: flip the bits
                x = self.invert(x, node)
            out = self.ir.value(node.outputs[0], "bits", nhwc(shape))
            self.ir.add("bmaxpool2d", node.name, [x.value], [out], attrs)
            return Rep("bits", out, shape, x.levels)
        xf = self.as_float(x, node)
        out = self.new_float(node.outputs[0], shape)
        self.ir.add("maxpool2d", node.name, [xf.value], [out.value], attrs)
        return self._zero(out, xf)

    def op_AveragePool(self, node):
        x = self.as_float(self.rep(node.inputs[0], node), node)
        attrs, shape = self._pool_common(node, x)
        cip = int(node.attrs.get("count_include_pad", 0))
        if cip and node.attrs.get("ceil_mode", 0):
            raise ConvertError.at(node, "ceil_mode with count_include_pad=1 is not supported")
        out = self.new_float(node.outputs[0], shape)
        self.ir.add("avgpool2d", node.name, [x.value], [out.value], dict(attrs, count_include_pad=cip))
        return self._zero(out, x)

    def _global_pool(self, node, x, kind):
        xf = self.as_float(x, node)
        shape = (xf.shape[0], xf.shape[1], 1, 1)
        out = self.new_float(node.outputs[0], shape)
        if kind == "avg":
            self.ir.add("global_avgpool", node.name, [xf.value], [out.value])
        else:
            h, w = xf.shape[2:]
            self.ir.add("maxpool2d", node.name, [xf.value], [out.value],
                        {"kernel": [h, w], "stride": [1, 1], "pads": [0, 0, 0, 0]})
        return self._zero(out, xf)

    def op_GlobalAveragePool(self, node):
        return self._global_pool(node, self.rep(node.inputs[0], node), "avg")

    def op_GlobalMaxPool(self, node):
        return self._global_pool(node, self.rep(node.inputs[0], node), "max")

    def _flatten(self, node, x):
        if len(x.shape) == 2:
            return x
        shape = (x.shape[0], int(np.prod(x.shape[1:])))
        if x.kind == "bits":
            out = self.ir.value(node.outputs[0], "bits", shape)
            self.ir.add("flatten", node.name, [x.value], [out])
            return Rep("bits", out, shape, x.levels)
        xf = self.as_float(x, node)
        out = self.new_float(node.outputs[0], shape)
        self.ir.add("flatten", node.name, [xf.value], [out.value])
        return self._zero(out, xf)

    def op_Flatten(self, node):
        if int(node.attrs.get("axis", 1)) != 1:
            raise ConvertError.at(node, "Flatten with axis=%d" % node.attrs["axis"], "only axis=1")
        return self._flatten(node, self.rep(node.inputs[0], node))

    def op_Reshape(self, node):
        x = self.rep(node.inputs[0], node)
        target = self.shape_of(node.outputs[0], ())
        if len(node.inputs) > 1 and node.inputs[1] in self.g.consts:  # the constant target itself
            t = [int(d) for d in np.asarray(self.g.consts[node.inputs[1]]).reshape(-1)]
            if not int(node.attrs.get("allowzero", 0)):
                t = [x.shape[i] if d == 0 and i < len(x.shape) else d for i, d in enumerate(t)]
            if t.count(-1) == 1 and all(d > 0 for d in t if d != -1):
                known = int(np.prod([d for d in t if d != -1]))
                if int(np.prod(x.shape)) % known == 0:
                    t[t.index(-1)] = int(np.prod(x.shape)) // known
            target = tuple(t)
        if len(target) == 2 and target[0] == x.shape[0] and int(np.prod(target)) == int(np.prod(x.shape)):
            return self._flatten(node, x)
        if tuple(target) == tuple(x.shape):
            return x
        raise ConvertError.at(node, "Reshape from %s to %s is not supported" % (x.shape, target),
                              "only flattening to (batch, features)")

    def _dense(self, node, x, w, bias):
        """w: [out, f] float; x: 2-D rep."""
        if len(x.shape) != 2:
            raise ConvertError.at(node, "input must be 2-D (batch, features), got %s" % (x.shape,))
        if w.shape[1] != x.shape[1]:
            raise ConvertError.at(node, "weights take %d features, input has %d" % (w.shape[1], x.shape[1]))
        out = self.new_float(node.outputs[0], (x.shape[0], w.shape[0]))
        alpha = binary_alpha(w)
        if alpha is not None and x.kind != "bits":
            self.float_reasons[node.name] = "its input is not binary (%s)" % self._why_float(x)
            alpha = None
        b = np.zeros(w.shape[0], np.float32) if bias is None else bias
        if alpha is not None:
            sc, off = x.scale_offset
            wsum = np.where(w >= 0, 1.0, -1.0).sum(axis=1)
            self.ir.add("bdense", node.name, [x.value], [out.value], params={
                "weights": self.ir.tensor(node.name + ".weights", pack_bits(w)),
                "mul": self.ir.tensor(node.name + ".mul", (alpha * sc).astype(np.float32)),
                "add": self.ir.tensor(node.name + ".add", (b + off * alpha * wsum).astype(np.float32))})
        else:
            if x.kind == "bits":
                self.float_reasons.setdefault(node.name, "its weights are not +-alpha per row")
            xf = self.as_float(x, node)
            params = {"weights": self.ir.tensor(node.name + ".weights", np.ascontiguousarray(w, np.float32))}
            if bias is not None:
                params["bias"] = self.ir.tensor(node.name + ".bias", b)
            self.ir.add("dense", node.name, [xf.value], [out.value], params=params)
        return out

    def op_Gemm(self, node):
        a = node.attrs
        if int(a.get("transA", 0)):
            raise ConvertError.at(node, "transA=1 is not supported")
        x = self.rep(node.inputs[0], node)
        bmat = np.asarray(self.const(node.inputs[1], node, "B (weights)"), np.float32)
        if bmat.ndim != 2:
            raise ConvertError.at(node, "Gemm weights must be 2-D, got shape %s" % (bmat.shape,))
        w = bmat if int(a.get("transB", 0)) else bmat.T
        w = (w * np.float32(a.get("alpha", 1.0))).astype(np.float32)
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = np.asarray(self.const(node.inputs[2], node, "C (bias)"), np.float32) * np.float32(a.get("beta", 1.0))
            try:
                bias = np.broadcast_to(c.reshape(-1) if c.size == w.shape[0] else c, (w.shape[0],)).astype(np.float32)
            except ValueError:
                raise ConvertError.at(node, "bias C of shape %s does not broadcast to the %d outputs"
                                      % (c.shape, w.shape[0])) from None
        return self._dense(node, x, np.ascontiguousarray(w), bias)

    def op_MatMul(self, node):
        x = self.rep(node.inputs[0], node)
        bmat = np.asarray(self.const(node.inputs[1], node, "B (weights)"), np.float32)
        if bmat.ndim != 2:
            raise ConvertError.at(node, "MatMul weights must be 2-D")
        return self._dense(node, x, np.ascontiguousarray(bmat.T), None)

    def op_Concat(self, node):
        reps = [self.as_float(self.rep(i, node), node) for i in node.inputs]
        rank = len(reps[0].shape)
        axis = int(node.attrs.get("axis", 1)) % rank
        if axis != 1:
            raise ConvertError.at(node, "Concat along axis %d; only the channel axis (1)" % axis)
        shape = list(reps[0].shape)
        for r in reps[1:]:
            if len(r.shape) != rank or [d for i, d in enumerate(r.shape) if i != 1] != \
                    [d for i, d in enumerate(shape) if i != 1]:
                raise ConvertError.at(node, "Concat of shapes %s" % [r.shape for r in reps])
        shape[1] = sum(r.shape[1] for r in reps)
        out = self.new_float(node.outputs[0], tuple(shape))
        self.ir.add("concat", node.name, [r.value for r in reps], [out.value], {"axis": 3 if rank == 4 else 1})
        zeros = [r for r in reps if r.zero]
        if zeros:
            out.zero = "nonneg" if len(zeros) == len(reps) and all(r.zero == "nonneg" for r in reps) else "signed"
            out.why = "Concat node %r of %s" % (node.name, zeros[0].why)
        return out

    def _resize(self, node, x, scales):
        if len(x.shape) != 4 or len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
            raise ConvertError.at(node, "only spatial resizing of NCHW tensors (scales %s)" % (scales,))
        sh, sw = scales[2], scales[3]
        if sh != int(sh) or sw != int(sw) or sh < 1 or sw < 1:
            raise ConvertError.at(node, "scales %s must be positive integers" % (scales,), "nearest upsampling by 2, 3, ...")
        shape = (x.shape[0], x.shape[1], x.shape[2] * int(sh), x.shape[3] * int(sw))
        attrs = {"scale": [int(sh), int(sw)]}
        if x.kind == "bits":
            out = self.ir.value(node.outputs[0], "bits", nhwc(shape))
            self.ir.add("resize_nearest", node.name, [x.value], [out], attrs)
            return Rep("bits", out, shape, x.levels)
        xf = self.as_float(x, node)
        out = self.new_float(node.outputs[0], shape)
        self.ir.add("resize_nearest", node.name, [xf.value], [out.value], attrs)
        return self._zero(out, xf)

    def op_Resize(self, node):
        mode = node.attrs.get("mode", "nearest")
        if mode != "nearest":
            raise ConvertError.at(node, "mode %r" % mode, "only nearest")
        x = self.rep(node.inputs[0], node)
        scales = None
        if len(node.inputs) > 2 and node.inputs[2]:
            sc = np.asarray(self.const(node.inputs[2], node, "scales"), np.float64).reshape(-1)
            if sc.size:
                scales = list(sc)
        if scales is None and len(node.inputs) > 3 and node.inputs[3]:
            sizes = np.asarray(self.const(node.inputs[3], node, "sizes"), np.int64).reshape(-1)
            scales = [s / d for s, d in zip(sizes, x.shape)]
        if scales is None:
            raise ConvertError.at(node, "Resize without constant scales or sizes")
        return self._resize(node, x, scales)

    def op_Upsample(self, node):
        if node.attrs.get("mode", "nearest") != "nearest":
            raise ConvertError.at(node, "mode %r" % node.attrs.get("mode"), "only nearest")
        x = self.rep(node.inputs[0], node)
        sc = node.attrs.get("scales")
        if sc is None:
            sc = np.asarray(self.const(node.inputs[1], node, "scales"), np.float64).reshape(-1)
        return self._resize(node, x, list(sc))

    # ---- comparisons with a constant and Where: binarisation written as Where(x >= t, a, b) ----
    def _compare(self, node, op):
        rc = self._binary_const(node)
        if rc is None:
            raise ConvertError.at(node, "%s of two computed tensors is not supported" % node.op,
                                  "compare with a constant (binarisation: Where(x >= 0, 1, -1))")
        x, c, const_first = rc
        if np.asarray(c).size != 1:
            raise ConvertError.at(node, "%s with a constant of shape %s; only one number" % (node.op, np.shape(c)))
        if const_first:  # c < x  ==  x > c
            op = {"ge": "le", "le": "ge", "gt": "lt", "lt": "gt"}[op]
        t = np.float32(np.asarray(c).reshape(-1)[0])
        # bit +1 where x >= t (ge / lt), or where -x >= -t, i.e. x <= t (le / gt)
        b = self.as_bits(x, node, float(t)) if op in ("ge", "lt") else self.as_bits(x, node, float(-t), negate=True)
        return Rep("cond", b.value, b.shape, (True, False) if op in ("ge", "le") else (False, True))

    def op_GreaterOrEqual(self, node):
        return self._compare(node, "ge")

    def op_Greater(self, node):
        return self._compare(node, "gt")

    def op_LessOrEqual(self, node):
        return self._compare(node, "le")

    def op_Less(self, node):
        return self._compare(node, "lt")

    def op_Not(self, node):
        r = self.rep(node.inputs[0], node)
        if r.kind != "cond":
            raise ConvertError.at(node, "Not is supported on a comparison with a constant only")
        return Rep("cond", r.value, r.shape, tuple(not v for v in r.levels))

    def op_Cast(self, node):
        r = self.rep(node.inputs[0], node)
        to = int(node.attrs.get("to", 1))
        if r.kind == "cond" and to == 1:  # bool -> float: 1.0 / 0.0
            return Rep("bits", r.value, r.shape, tuple(1.0 if v else 0.0 for v in r.levels))
        if r.kind in ("float", "bits") and to == 1:
            return r
        raise ConvertError.at(node, "Cast to type %d of a %s tensor is not supported" % (to, r.kind))

    def op_Where(self, node):
        cond = self.rep(node.inputs[0], node)
        if cond.kind != "cond":
            raise ConvertError.at(node, "the condition must be a comparison of a tensor with a constant")
        vals = [self.rep(i, node) for i in node.inputs[1:]]
        if any(v.kind != "const" or v.const.size != 1 for v in vals):
            raise ConvertError.at(node, "Where chooses between two numbers only (here %s)"
                                  % [v.kind if v.kind != "const" else "shape %s" % (v.const.shape,) for v in vals])
        a, b = (float(np.float32(v.const.reshape(-1)[0])) for v in vals)
        return Rep("bits", cond.value, cond.shape, tuple(a if t else b for t in cond.levels))

    def op_Pad(self, node):
        mode = node.attrs.get("mode", "constant")
        if mode != "constant":
            raise ConvertError.at(node, "mode %r" % mode, "only constant padding")
        x = self.rep(node.inputs[0], node)
        if "pads" in node.attrs:
            p = [int(v) for v in node.attrs["pads"]]
            value = float(node.attrs.get("value", 0.0))
        else:
            p = [int(v) for v in np.asarray(self.const(node.inputs[1], node, "pads")).reshape(-1)]
            value = 0.0
            if len(node.inputs) > 2 and node.inputs[2]:
                value = _scalar(self.const(node.inputs[2], node, "constant_value"), node, "constant_value")
        if len(node.inputs) > 3 and node.inputs[3]:
            raise ConvertError.at(node, "Pad with axes is not supported")
        if len(x.shape) != 4 or len(p) != 8 or p[0] or p[1] or p[4] or p[5] or min(p) < 0:
            raise ConvertError.at(node, "pads %s: only non-negative spatial padding of NCHW tensors" % p)
        pads = [p[2], p[3], p[6], p[7]]
        shape = (x.shape[0], x.shape[1], x.shape[2] + p[2] + p[6], x.shape[3] + p[3] + p[7])
        if x.kind == "bits" and value in (0.0, float(x.levels[0])):
            # padded with 0 or the +1 level: a binary convolution reading it pads by itself
            return Rep("padded", node.outputs[0], shape, src=x, pads=tuple(pads), pad_value=value)
        return self._float_pad(node, node.name, node.outputs[0], self.as_float(x, node), pads, value)

    def _float_pad(self, node, node_name, value_name, x, pads, value):
        shape = (x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3])
        out = self.new_float(value_name, shape)
        self.ir.add("pad", node_name, [x.value], [out.value], {"pads": list(pads), "value": float(value)})
        if value == 0 and any(pads) or x.zero:
            out.zero = "nonneg" if x.zero == "nonneg" and value >= 0 else "signed"
            out.why = x.why if x.zero else "Pad node %r pads with 0" % node_name
        return out

    def _padded_conv_input(self, node, x, w, k, conv_pads):
        """a Conv of Pad(bits): (bits, pads, one_pad) when the binary convolution's own
        padding is the same (Pad value 0: the pads add up; the +1 level and no padding of the
        Conv's own: pad_mode one), else (the padded floats, the Conv's pads, False)"""
        total = [a + b for a, b in zip(x.pads, conv_pads)]
        one = x.pad_value != 0.0
        if binary_alpha(w) is not None and not (one and any(conv_pads)) \
                and all(t < kk for t, kk in zip(total, (k[0], k[1], k[0], k[1]))):
            return x.src, total, one
        self.notes.append("%s: the Pad before it (value %g) is not the binary convolution's padding "
                          "(weights not +-alpha, or padding as large as the kernel); it runs on floats"
                          % (node.name, x.pad_value))
        return self.as_float(x, node), conv_pads, False


# the ONNX ops with a lowering rule (an op_<OnnxOp> method of Lowering)
SUPPORTED_OPS = sorted(name[3:] for name in dir(Lowering) if name.startswith("op_"))
