"""Rewrites of the imported ONNX graph (before lowering) that are exact at inference:

* the straight-through estimator written as arithmetic around a binarisation, as the BNN
  papers' reference code does (``sign(x).detach() - f(x).detach() + f(x)``): in an eval-mode
  export ``Add(Sub(a, b), b')`` with ``b'`` computing the same as ``b`` -- it is ``a`` up to
  float rounding, and ``a`` is what the training meant (the b terms only carry the gradient);
* then the nodes nothing reads any more are dropped (so the lowering never sees the
  surrogate's arithmetic, which may use ops it does not support).
"""
from __future__ import annotations


def _same(g, prod, u, v, depth=0):
    """u and v compute the same: one value, or the same op with the same attributes on
    inputs that compute the same"""
    if u == v:
        return True
    pu, pv = prod.get(u), prod.get(v)
    if pu is None or pv is None or depth > 16:
        return False
    if pu.op != pv.op or pu.domain != pv.domain or len(pu.inputs) != len(pv.inputs) or \
            pu.outputs.index(u) != pv.outputs.index(v) or repr(pu.attrs) != repr(pv.attrs):
        return False
    for a, b in zip(pu.inputs, pv.inputs):
        if a in g.consts and b in g.consts:
            if g.consts[a].shape != g.consts[b].shape or (g.consts[a] != g.consts[b]).any():
                return False
        elif not _same(g, prod, a, b, depth + 1):
            return False
    return True


def cancel_ste(g):
    """Add(Sub(a, b), b') and Add(b', Sub(a, b)) -> a; returns the number rewritten"""
    prod = {o: n for n in g.nodes for o in n.outputs}
    alias = {}
    for n in g.nodes:
        if n.op != "Add" or n.domain not in ("", "ai.onnx") or len(n.inputs) != 2:
            continue
        for s_in, other in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])):
            sub = prod.get(s_in)
            if sub is not None and sub.op == "Sub" and sub.domain in ("", "ai.onnx") and \
                    _same(g, prod, sub.inputs[1], other):
                alias[n.outputs[0]] = sub.inputs[0]
                break
    if not alias:
        return 0

    def resolve(v):
        while v in alias:
            v = alias[v]
        return v
    from .onnx_graph import Node

    g.nodes = [n for n in g.nodes if not (n.op == "Add" and n.outputs[0] in alias)]
    for n in g.nodes:
        n.inputs = [resolve(i) for i in n.inputs]
    for o in g.outputs:
        if o in alias:  # a graph output keeps its name: an Identity writes it
            g.nodes.append(Node("Identity", o + ".ste", [resolve(o)], [o], {}))
    drop_dead(g)
    return len(alias)


def drop_dead(g):
    """removes the nodes whose outputs nothing reads (not even a graph output)"""
    while True:
        used = set(g.outputs)
        for n in g.nodes:
            used.update(i for i in n.inputs if i)
        keep = [n for n in g.nodes if any(o in used for o in n.outputs if o)]
        if len(keep) == len(g.nodes):
            return
        g.nodes = keep


def simplify(g):
    cancel_ste(g)
    return g
