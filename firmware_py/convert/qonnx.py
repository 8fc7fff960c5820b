"""QONNX's quantisers (domain ``qonnx.custom_op.general``), the exports Brevitas and FINN
write: their exact semantics in numpy (constant folding, the runtime's ``quant`` op) and as
standard ONNX ops (the oracle --check runs in onnxruntime).  Semantics as qonnx 1.0 runs them
(qonnx/custom_op/general/intquant.py, bipolar_quant.py):

* ``BipolarQuant(x, scale)`` = ``where(x >= 0, 1, -1) * scale``; scale broadcasts.
* ``Quant(x, scale, zeropt, bitwidth; signed, narrow, rounding_mode)`` =
  ``(round(clamp(x / scale + zeropt, lo, hi)) - zeropt) * scale`` with the integer range
  ``lo, hi`` of ``bitwidth`` bits (signed: ``-2^(b-1) [+1 if narrow] .. 2^(b-1) - 1``;
  unsigned: ``0 .. 2^b - 1 [-1 if narrow]``); a 1-bit signed Quant is bipolar (qonnx's rule).
"""
from __future__ import annotations

import numpy as np

from .errors import ConvertError

DOMAIN = "qonnx.custom_op.general"
DOMAINS = (DOMAIN, "finn.custom_op.general", "finn")  # FINN's older exports name it so
OPS = ("BipolarQuant", "Quant")

from ..registry import QUANT_ROUNDING as ROUNDING  # the runtime's quant op: one table

def int_range(bits, signed, narrow):
    """(lo, hi): the integers a Quant of `bits` bits takes"""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - (1 if narrow else 0)


def quant_params(node, consts):
    """(scale, zeropt, bits, signed, narrow, rounding) of a Quant node; ConvertError naming
    the node for anything that is not a constant or not a valid value"""
    def const(i, what):
        if len(node.inputs) <= i or node.inputs[i] not in consts:
            raise ConvertError.at(node, "%s must be a constant" % what)
        return np.asarray(consts[node.inputs[i]], np.float32)

    scale, zeropt, bits = const(1, "scale"), const(2, "zero point"), const(3, "bit width")
    if bits.size != 1 or not float(bits.reshape(-1)[0]).is_integer() or not 1 <= bits.reshape(-1)[0] <= 24:
        raise ConvertError.at(node, "bit width must be one integer 1..24, got %s" % bits.reshape(-1)[:4])
    if not np.all(np.isfinite(scale)) or np.any(scale == 0):
        raise ConvertError.at(node, "scale must be finite and non-zero")
    mode = str(node.attrs.get("rounding_mode", "ROUND")).upper()
    if mode not in ROUNDING:
        raise ConvertError.at(node, "rounding_mode %r is not one of %s" % (mode, sorted(ROUNDING)))
    return (scale, zeropt, int(bits.reshape(-1)[0]), bool(node.attrs.get("signed", 1)),
            bool(node.attrs.get("narrow", 0)), mode)


def bipolar_quant(x, scale):
    x = np.asarray(x, np.float32)
    return (np.where(x >= 0, np.float32(1), np.float32(-1)) * scale).astype(np.float32)


def int_quant(x, scale, zeropt, bits, signed, narrow, mode):
    x = np.asarray(x, np.float32)
    y = x / scale + zeropt
    if bits == 1 and signed:
        y = np.where(y >= 0, np.float32(1), np.float32(-1))
    else:
        lo, hi = int_range(bits, signed, narrow)
        y = ROUNDING[mode](np.clip(y, np.float32(lo), np.float32(hi)))
    return ((y - zeropt) * scale).astype(np.float32)


def evaluate(node, consts):
    """the output of a QONNX node whose inputs are all constants"""
    if node.op == "BipolarQuant":
        if len(node.inputs) < 2 or node.inputs[1] not in consts:
            raise ConvertError.at(node, "scale must be a constant")
        return bipolar_quant(consts[node.inputs[0]], np.asarray(consts[node.inputs[1]], np.float32))
    if node.op == "Quant":
        return int_quant(consts[node.inputs[0]], *quant_params(node, consts))
    raise ConvertError.at(node, "QONNX op %s is not supported" % node.op, "supported: %s" % ", ".join(OPS))


def to_standard_onnx(model):
    """A copy of ``model`` with every BipolarQuant / Quant replaced by standard ONNX ops of the
    same semantics (the --check oracle for onnxruntime).  Quant's rounding modes ROUND /
    HALF_EVEN (ONNX Round is half to even), FLOOR, CEIL, DOWN, UP, HALF_UP, HALF_DOWN."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if not any(n.domain in DOMAINS for n in g.node):
        return m
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    counter = [0]

    def c(arr):
        counter[0] += 1
        name = "__qonnx_oracle_%d" % counter[0]
        g.initializer.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def tmp():
        counter[0] += 1
        return "__qonnx_oracle_v%d" % counter[0]

    out_nodes = []
    for n in g.node:
        if n.domain not in DOMAINS:
            out_nodes.append(n)
            continue
        x, y = n.input[0], n.output[0]
        mk = lambda op, ins, outs=None, **kw: out_nodes.append(  # noqa: E731
            helper.make_node(op, ins, outs or [tmp()], **kw)) or out_nodes[-1].output[0]
        if n.op_type == "BipolarQuant":
            ge = mk("GreaterOrEqual", [x, c(0.0)])
            s = mk("Where", [ge, c(1.0), c(-1.0)])
            mk("Mul", [s, n.input[1]], [y])
            continue
        if n.op_type != "Quant":
            raise ConvertError("%s node %r: QONNX op %s has no oracle for --check" % (n.op_type, n.name, n.op_type))
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        mode = attrs.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
        bits = int(np.asarray(consts[n.input[3]]).reshape(-1)[0])
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        q = mk("Add", [mk("Div", [x, n.input[1]]), n.input[2]])
        if bits == 1 and signed:
            r = mk("Where", [mk("GreaterOrEqual", [q, c(0.0)]), c(1.0), c(-1.0)])
        else:
            lo, hi = int_range(bits, signed, narrow)
            q = mk("Clip", [q, c(lo), c(hi)])
            if mode in ("ROUND", "HALF_EVEN"):
                r = mk("Round", [q])
            elif mode == "FLOOR":
                r = mk("Floor", [q])
            elif mode == "CEIL":
                r = mk("Ceil", [q])
            else:  # sign(q) * f(|q|)
                a = mk("Abs", [q])
                f = {"DOWN": lambda: mk("Floor", [a]), "UP": lambda: mk("Ceil", [a]),
                     "HALF_UP": lambda: mk("Floor", [mk("Add", [a, c(0.5)])]),
                     "HALF_DOWN": lambda: mk("Ceil", [mk("Sub", [a, c(0.5)])])}[mode]()
                r = mk("Mul", [mk("Sign", [q]), f])
        mk("Mul", [mk("Sub", [r, n.input[2]]), n.input[1]], [y])
    del g.node[:]
    g.node.extend(out_nodes)
    keep = [o for o in m.opset_import if o.domain not in DOMAINS]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    if not any(o.domain in ("", "ai.onnx") for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("", 17))
    return m
