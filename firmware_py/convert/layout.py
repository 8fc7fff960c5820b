"""Layout intake: the Transposes a TensorFlow (NHWC) graph brings through tf2onnx.

tf2onnx writes every Conv as NCHW and wraps NHWC-only stretches in Transpose pairs; its
own optimiser cancels them through ops it knows, but not through ``Sign`` (every larq
quantiser) or a ``Pad`` behind one, so a larq model arrives with a Transpose pair around
each quantiser.  The runtime is NHWC inside whatever ONNX says, so these Transposes are
layout only; this pass removes them from the imported graph before the lowering:

* a Transpose sinks through the node that reads it -- elementwise ops (broadcast
  constants are transposed with it), BatchNormalization (when the channel axis stays),
  constant Pad (its pads permuted) -- until it meets another Transpose: two compose, and an
  identity vanishes;
* a Reshape that only moves dimensions of size 1 ((1, 4096, 1, 1) -> (1, 1, 1, 4096)) is
  a Transpose and sinks the same way;
* a Transpose left before a flatten (Reshape to 2-D / Flatten) into Gemm/MatMul becomes a
  plain flatten with the weight rows permuted;
* a 4-D graph input whose every reader is Transpose(0, 3, 1, 2) is NHWC (``input_layout``
  "auto", or "NHWC" forces it): the graph takes it as NCHW, the Transposes vanish, and
  the model file's input says layout NHWC (executor: fed as it is).

Every rewrite keeps the graph's meaning exactly (data is only moved); a Transpose that
stays is refused by the lowering as before."""
from __future__ import annotations

import numpy as np

from .errors import ConvertError
from .onnx_graph import Node

# ops that apply to each element alone (their other inputs are broadcast)
ELEMENTWISE = {"Sign", "Relu", "Abs", "Neg", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid", "Identity",
               "Dropout", "Elu", "Selu", "Softsign", "Softplus", "Round", "Floor", "Ceil", "Exp", "Log",
               "Reciprocal", "Sqrt", "Erf", "PRelu", "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Where",
               "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Cast"}
NHWC_TO_NCHW = [0, 3, 1, 2]


def _inverse(p):
    return [int(i) for i in np.argsort(p)]


class _Rewriter:
    def __init__(self, g):
        self.g = g
        self.readers = {}
        self.names = {o for n in g.nodes for o in n.outputs} | {n for n, _ in g.inputs}
        for n in g.nodes:
            for v in n.inputs:
                if v:
                    self.readers.setdefault(v, []).append(n)
        self.count = 0

    # ---- graph edits (keep self.readers) -----------------------------------------------
    def set_input(self, node, i, value):
        old = node.inputs[i]
        if old:
            self.readers[old] = [r for r in self.readers.get(old, []) if r is not node]
        node.inputs[i] = value
        self.readers.setdefault(value, []).append(node)

    def remove(self, node):
        for i, v in enumerate(node.inputs):
            if v:
                self.readers[v] = [r for r in self.readers.get(v, []) if r is not node]
        self.g.nodes.remove(node)

    def replace_uses(self, old, new):
        for r in list(self.readers.get(old, [])):
            for i, v in enumerate(r.inputs):
                if v == old:
                    self.set_input(r, i, new)
        self.g.outputs = [new if o == old else o for o in self.g.outputs]

    def new_value(self, base, shape):
        name = base
        while name in self.g.shapes or name in self.g.consts or name in self.readers or name in self.names:
            self.count += 1
            name = "%s__layout%d" % (base, self.count)
        self.names.add(name)
        self.g.shapes[name] = tuple(shape)
        self.readers.setdefault(name, [])
        return name

    def const(self, base, array):
        name = self.new_value(base, np.shape(array))
        self.g.consts[name] = np.asarray(array)
        return name


def _perm(node, rank):
    p = node.attrs.get("perm")
    return list(range(rank))[::-1] if p is None else [int(i) for i in p]


def _shape(g, v):
    return g.shapes.get(v) if v not in g.consts else tuple(g.consts[v].shape)


def _unit_move_perm(src, dst):
    """a perm with dst == src[perm] when the Reshape src -> dst only moves size-1
    dimensions (same rank, same non-1 sizes in the same order), else None"""
    if len(src) != len(dst) or [d for d in src if d != 1] != [d for d in dst if d != 1]:
        return None
    for p in (NHWC_TO_NCHW, _inverse(NHWC_TO_NCHW)):
        if len(p) == len(src) and [src[i] for i in p] == list(dst):
            return p
    big = [i for i, d in enumerate(src) if d != 1]
    ones = [i for i, d in enumerate(src) if d == 1]
    perm = [big.pop(0) if d != 1 else ones.pop(0) for d in dst]
    return perm


def _reshapes_to_transposes(g):
    """layout-only Reshapes (size-1 dimensions moved) -> Transpose"""
    for i, n in enumerate(g.nodes):
        if n.op != "Reshape" or n.domain not in ("", "ai.onnx"):
            continue
        src, dst = _shape(g, n.inputs[0]), g.shapes.get(n.outputs[0])
        if src is None or dst is None or tuple(src) == tuple(dst):
            continue
        p = _unit_move_perm(tuple(src), tuple(dst))
        if p is not None:
            g.nodes[i] = Node("Transpose", n.name, [n.inputs[0]], list(n.outputs), {"perm": p}, n.domain)


def _nhwc_inputs(g, input_layout):
    """NHWC graph inputs -> NCHW (the readers' Transpose(0,3,1,2) removed); returns the
    names of the inputs that were NHWC"""
    readers = {}
    for n in g.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)
    nhwc = []
    for k, (name, shape) in enumerate(g.inputs):
        rs = readers.get(name, [])
        is_nhwc = len(shape) == 4 and rs and name not in g.outputs and all(
            r.op == "Transpose" and _perm(r, 4) == NHWC_TO_NCHW and r.inputs[0] == name for r in rs)
        if input_layout == "NHWC" and len(shape) == 4 and not is_nhwc:
            raise ConvertError("input %r: --input-layout NHWC, but the graph does not read it through "
                               "Transpose(perm=[0, 3, 1, 2]) only" % name)
        if input_layout == "NCHW" or not is_nhwc:
            continue
        n_, h, w, c = shape
        g.inputs[k] = (name, (n_, c, h, w))
        g.shapes[name] = (n_, c, h, w)
        for r in rs:
            out = r.outputs[0]
            for n in g.nodes:
                n.inputs = [name if v == out else v for v in n.inputs]
            g.outputs = [name if o == out else o for o in g.outputs]
            g.nodes.remove(r)
        nhwc.append(name)
    return nhwc


def _permute_const(c, q, rank):
    """a constant broadcast against y = transpose(x, p), for x instead (q = p's inverse)"""
    c = np.asarray(c)
    if c.size == 1 or c.ndim == 0:
        return c
    if c.ndim > rank:
        return None
    return np.ascontiguousarray(c.reshape((1,) * (rank - c.ndim) + c.shape).transpose(q))


def _push(rw, t, c):
    """rewrites c(transpose(x, p), consts) as transpose(c'(x, consts'), p); False when
    c is not such an op"""
    g = rw.g
    x, y = t.inputs[0], t.outputs[0]
    xs = _shape(g, x)
    if xs is None or c.domain not in ("", "ai.onnx") or len([o for o in c.outputs if o]) != 1:
        return False
    rank = len(xs)
    p = _perm(t, rank)
    q = _inverse(p)
    new_inputs = {}
    if c.op in ELEMENTWISE:
        for i, v in enumerate(c.inputs):
            if not v or v == y:
                continue
            if v in g.consts:
                k = _permute_const(g.consts[v], q, rank)
                if k is None:
                    return False
                if k is not g.consts[v]:
                    new_inputs[i] = rw.const(v + "_nchw", k)
                continue
            return False  # another computed operand: left where it is
    elif c.op == "Pad" and c.inputs[0] == y:
        if c.attrs.get("mode", "constant") != "constant" or "pads" in c.attrs:
            return False
        if len(c.inputs) < 2 or c.inputs[1] not in g.consts or (len(c.inputs) > 3 and c.inputs[3]):
            return False
        pads = np.asarray(g.consts[c.inputs[1]]).reshape(-1)
        if pads.size != 2 * rank:
            return False
        new_inputs[1] = rw.const(c.inputs[1] + "_nchw", np.concatenate([pads[:rank][q], pads[rank:][q]]))
    elif c.op == "BatchNormalization" and c.inputs[0] == y and len([o for o in c.outputs if o]) == 1:
        if p[1] != 1:  # the Transpose moved the channel axis: per-channel becomes per-row
            return False
    else:
        return False
    for i, v in new_inputs.items():
        rw.set_input(c, i, v)
    for i, v in enumerate(c.inputs):
        if v == y:
            rw.set_input(c, i, x)
    z = c.outputs[0]
    zs = g.shapes.get(z)
    z_new = rw.new_value(z + "_nchw", [zs[i] for i in q] if zs is not None else ())
    if zs is None:
        del g.shapes[z_new]
    c.outputs[0] = z_new
    t2 = Node("Transpose", t.name + "/" + c.name, [z_new], [z], {"perm": list(p)})
    rw.readers[z_new] = [t2]
    g.nodes.insert(g.nodes.index(c) + 1, t2)
    if not rw.readers.get(y):
        rw.remove(t)
    return True


def _flatten_into_dense(rw, t):
    """Transpose -> Reshape(to [n, -1]) / Flatten -> Gemm / MatMul with constant weights:
    flatten x itself and permute the weights' feature rows instead"""
    g = rw.g
    y = t.outputs[0]
    rs = rw.readers.get(y, [])
    xs = _shape(g, t.inputs[0])
    if len(rs) != 1 or xs is None or y in g.outputs:
        return False
    f = rs[0]
    fs = g.shapes.get(f.outputs[0])
    if f.op not in ("Reshape", "Flatten") or fs is None or len(fs) != 2 or fs[0] != xs[0] \
            or f.outputs[0] in g.outputs or int(f.attrs.get("axis", 1)) != 1:
        return False
    ds = rw.readers.get(f.outputs[0], [])
    if not ds or any(d.op not in ("Gemm", "MatMul") or d.inputs[0] != f.outputs[0] or d.inputs[1] not in g.consts
                     or int(d.attrs.get("transA", 0)) for d in ds):
        return False
    p = _perm(t, len(xs))
    if p[0] != 0:
        return False
    # position f_y of the transposed flatten holds feature order[f_y] of x's flatten
    order = np.arange(int(np.prod(xs[1:]))).reshape(xs[1:]).transpose([i - 1 for i in p[1:]]).reshape(-1)
    for d in ds:
        w = np.asarray(g.consts[d.inputs[1]])
        axis = 1 if d.op == "Gemm" and int(d.attrs.get("transB", 0)) else 0
        if w.ndim != 2 or w.shape[axis] != order.size:
            return False
    for d in ds:
        w = np.asarray(g.consts[d.inputs[1]])
        axis = 1 if d.op == "Gemm" and int(d.attrs.get("transB", 0)) else 0
        w2 = np.empty_like(w)
        if axis == 0:
            w2[order] = w
        else:
            w2[:, order] = w
        rw.set_input(d, 1, rw.const(d.inputs[1] + "_nchw", w2))
    # another name: its features are in another order than the ONNX value's
    out = rw.new_value(f.outputs[0] + "_nchw", g.shapes[f.outputs[0]])
    flat = Node("Flatten", f.name, [t.inputs[0]], [out], {"axis": 1})
    for d in ds:
        rw.set_input(d, 0, out)
    i = g.nodes.index(f)
    rw.remove(f)
    g.nodes.insert(i, flat)
    rw.readers.setdefault(t.inputs[0], []).append(flat)
    rw.remove(t)
    return True


def _step(rw, t):
    """one rewrite of Transpose t; True when the graph changed"""
    g = rw.g
    x, y = t.inputs[0], t.outputs[0]
    xs = _shape(g, x)
    if xs is None or t.domain not in ("", "ai.onnx"):
        return False
    p = _perm(t, len(xs))
    if p == list(range(len(xs))):  # identity
        rw.remove(t)
        prod = next((n for n in g.nodes if x in n.outputs), None)
        if prod is not None and x not in g.outputs:
            # x takes y's name: the value keeps the name and layout it has in the ONNX graph
            # (--check compares there)
            rw.replace_uses(x, y)
            prod.outputs = [y if o == x else o for o in prod.outputs]
            g.shapes[y] = g.shapes.get(x, g.shapes.get(y))
        else:
            rw.replace_uses(y, x)
        return True
    rs = rw.readers.get(y, [])
    if y in g.outputs or not rs:
        return False
    for r in rs:
        if r.op == "Transpose":
            p2 = _perm(r, len(xs))
            r.attrs = dict(r.attrs, perm=[p[j] for j in p2])
            rw.set_input(r, 0, x)
            if not rw.readers.get(y):
                rw.remove(t)
            return True
    if len(rs) > 1:
        # one copy per reader, so that each can sink on its own
        if not all(r.op in ELEMENTWISE or r.op in ("Pad", "BatchNormalization") for r in rs):
            return False
        i = g.nodes.index(t)
        for k, r in enumerate(rs[1:]):
            y2 = rw.new_value("%s_%d" % (y, k + 1), g.shapes.get(y, ()))
            t2 = Node("Transpose", "%s_%d" % (t.name, k + 1), [x], [y2], {"perm": list(p)})
            g.nodes.insert(i + 1, t2)
            rw.readers.setdefault(x, []).append(t2)
            for j, v in enumerate(r.inputs):
                if v == y:
                    rw.set_input(r, j, y2)
        return True
    return _push(rw, t, rs[0]) or _flatten_into_dense(rw, t)


def eliminate_transposes(g, input_layout="auto"):
    """rewrites the imported graph g (onnx_graph.Graph) in place; returns the names of the
    graph inputs taken as NHWC"""
    if input_layout not in ("auto", "NCHW", "NHWC"):
        raise ConvertError("input_layout must be 'auto', 'NCHW' or 'NHWC', got %r" % (input_layout,))
    nhwc = _nhwc_inputs(g, input_layout)
    _reshapes_to_transposes(g)
    rw = _Rewriter(g)
    budget = 64 * (len(g.nodes) + 1)  # every step removes a Transpose or moves one down a node
    changed = True
    while changed and budget > 0:
        changed = False
        for t in [n for n in g.nodes if n.op == "Transpose"]:
            if t in g.nodes and _step(rw, t):
                changed = True
                budget -= 1
    return nhwc
