"""Rewrites of the binarized graph that keep its meaning and save work:

* fold_affine: a per-channel affine (folded BatchNorm, Mul/Add by constants) after a
  convolution or dense layer moves into that layer's output transform / weights;
* sign_before_maxpool: MaxPool then Sign == Sign then max-pool on bits (a threshold is
  monotone), so the pool runs on packed words;
* fuse_thresholds: a binary conv whose float output only feeds a Sign produces the bits
  directly, with per-channel integer thresholds (direction from the sign of the scale).
"""
from __future__ import annotations

import numpy as np

from .errors import ConvertError
from .ir import IR


def _single_use(ir: IR, value: str, outputs) -> bool:
    return value not in outputs and len(ir.consumers(value)) == 1


def fold_affine(ir: IR, outputs):
    changed = True
    while changed:
        changed = False
        for node in list(ir.nodes):
            if node["op"] != "affine" or not ir.alive(node):
                continue
            src = node["inputs"][0]
            prod = ir.producer(src)
            if prod is None or not _single_use(ir, src, outputs):
                continue
            s = ir.param(node, "scale").astype(np.float32)
            b = ir.param(node, "bias").astype(np.float32)
            op = prod["op"]
            if op in ("bconv2d", "bdense") and prod["attrs"].get("output", "float") == "float":
                ir.set_param(prod, "mul", ir.param(prod, "mul") * s)
                ir.set_param(prod, "add", ir.param(prod, "add") * s + b)
            elif op in ("fconv2d", "dense"):
                w = ir.param(prod, "weights")
                ir.set_param(prod, "weights", (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32))
                old_b = ir.param(prod, "bias") if "bias" in prod["params"] else np.zeros_like(s)
                ir.set_param(prod, "bias", (old_b * s + b).astype(np.float32))
            elif op == "affine":
                ps, pb = ir.param(prod, "scale"), ir.param(prod, "bias")
                ir.set_param(prod, "scale", ps * s)
                ir.set_param(prod, "bias", pb * s + b)
            else:
                continue
            outs = list(node["outputs"])
            ir.remove(node)
            ir.set_outputs(prod, outs)
            changed = True


def sign_before_maxpool(ir: IR, outputs):
    for node in list(ir.nodes):
        if node["op"] != "bitpack":
            continue
        src = node["inputs"][0]
        pool = ir.producer(src)
        if pool is None or pool["op"] != "maxpool2d" or not _single_use(ir, src, outputs):
            continue
        x = pool["inputs"][0]
        xs = ir.values[x]["shape"]
        bits_in = ir.value(x + ".bits", "bits", xs)
        # bitpack(x) -> bmaxpool2d -> (the old bitpack output)
        old_out = node["outputs"][0]
        ir.set_outputs(node, [bits_in])
        ir.set_inputs(node, [x])
        pool["op"] = "bmaxpool2d"
        ir.set_outputs(pool, [old_out])
        ir.set_inputs(pool, [bits_in])
        # order: the bitpack must come before the pool
        ir.move_before(node, pool)


def thresholds(mul: np.ndarray, add: np.ndarray, n: int, threshold: float = 0.0):
    """Integer thresholds so that, for every integer d in [-n, n],
    (float32(d) * mul + add < threshold)  ==  (flip ? d > t : d < t)."""
    d = np.arange(-n, n + 1, dtype=np.int64)
    df = d.astype(np.float32)
    thr = np.empty(mul.shape[0], np.int32)
    flip = np.zeros(mul.shape[0], np.uint8)
    i32 = np.iinfo(np.int32)
    for o in range(mul.shape[0]):
        y = df * np.float32(mul[o]) + np.float32(add[o])
        neg = y < np.float32(threshold)
        if mul[o] > 0:          # neg for small d: bit = d < t, t = first d not neg
            idx = np.flatnonzero(~neg)
            thr[o] = d[idx[0]] if idx.size else n + 1
        elif mul[o] < 0:        # neg for large d: bit = d > t, t = last d not neg
            idx = np.flatnonzero(~neg)
            thr[o] = d[idx[-1]] if idx.size else -n - 1
            flip[o] = 1
        else:
            thr[o] = i32.max if neg[0] else i32.min
        # the rule must reproduce the float comparison on every d
        rule = (d > thr[o]) if flip[o] else (d < thr[o])
        if not np.array_equal(rule, neg):
            raise AssertionError("non-monotone output transform in channel %d" % o)
    return thr, flip


def check_sign_of_zero(ir: IR, sign_bits):
    """ONNX's Sign(0) is 0, the runtime's bits say +1: a Sign of a binary layer's output must
    never see an exact 0.  That output is d * mul + add for an integer d in [-n, n]; refuse
    (naming the Sign) when some d makes it 0 in float32."""
    for node in list(ir.nodes):
        sign = sign_bits.get(node["outputs"][0]) if node["op"] == "bitpack" else None
        prod = ir.producer(node["inputs"][0]) if sign is not None else None
        while prod is not None and prod["op"] in ("maxpool2d", "flatten", "resize_nearest"):  # those values
            prod = ir.producer(prod["inputs"][0])
        if prod is None or prod["op"] not in ("bconv2d", "bdense") or len(prod["inputs"]) != 1 \
                or prod["attrs"].get("output", "float") != "float":
            continue
        shape = ir.values[prod["inputs"][0]]["shape"]
        kh, kw = prod["attrs"].get("kernel", [1, 1])
        n = kh * kw * shape[-1]
        d = np.arange(-n, n + 1, dtype=np.float32)[:, None]
        y = d * ir.param(prod, "mul").astype(np.float32)[None] + ir.param(prod, "add").astype(np.float32)[None]
        hit = np.argwhere(y == np.float32(node["attrs"].get("threshold", 0.0)))
        if hit.size:
            raise ConvertError.at(sign, "its input, the output of binary layer %r, is exactly 0 when the +-1 "
                                        "dot product of channel %d is %d: ONNX's Sign gives 0 there, and the "
                                        "runtime's bits hold two values" % (prod["name"], hit[0][1], hit[0][0] - n),
                                  "a bias or BatchNorm that keeps it off 0, or binarise with x >= 0 "
                                  "(Where(x >= 0, 1, -1), QONNX BipolarQuant)")


def fuse_thresholds(ir: IR, outputs):
    for node in list(ir.nodes):
        if node["op"] != "bitpack":
            continue
        src = node["inputs"][0]
        prod = ir.producer(src)
        if (prod is None or prod["op"] != "bconv2d" or len(prod["inputs"]) != 1
                or prod["attrs"].get("output", "float") != "float" or not _single_use(ir, src, outputs)):
            continue
        kh, kw = prod["attrs"]["kernel"]
        n = kh * kw * ir.values[prod["inputs"][0]]["shape"][3]
        thr, flip = thresholds(ir.param(prod, "mul"), ir.param(prod, "add"), n, node["attrs"]["threshold"])
        for k in ("mul", "add"):
            ir.tensors.pop(prod["params"].pop(k))
        prod["params"]["threshold"] = ir.tensor(prod["name"] + ".threshold", thr)
        prod["params"]["flip"] = ir.tensor(prod["name"] + ".flip", flip)
        prod["attrs"]["output"] = "bits"
        outs = list(node["outputs"])
        ir.remove(node)
        ir.set_outputs(prod, outs)


def optimize(ir: IR, outputs, sign_bits=None):
    ir.remove_unused(outputs)  # what only a dropped path read (a Relu before a {0, 1} Sign)
    fold_affine(ir, outputs)
    check_sign_of_zero(ir, sign_bits or {})
    sign_before_maxpool(ir, outputs)
    fuse_thresholds(ir, outputs)
    used_v, used_t = ir.remove_unused(outputs)
    for v in [v for v in ir.values if v not in used_v]:
        del ir.values[v]
    for t in [t for t in ir.tensors if t not in used_t]:
        del ir.tensors[t]
