"""The binarized graph being built: values, nodes, tensors — as written to the model
file (docs/model-format.md)."""
from __future__ import annotations

import itertools
import re

import numpy as np

from ..bits import pack_signs as pack_bits  # noqa: F401 - one packing for weights everywhere
from ..registry import OPS

class IR:
    """The graph under construction.  ``nodes`` is the node list in execution order; the
    queries the passes make (``producer``, ``consumers``) are answered from an index kept
    up to date by the methods that change the graph (``add``, ``set_inputs``,
    ``set_outputs``, ``remove``, ``move_before``, ``rename_value``) in O(1) each, so the
    passes are linear in the graph's size (scanning every node per query made a
    100k-node model take over 5 minutes).  Change a node's inputs / outputs only through
    them."""

    def __init__(self):
        self._nodes: list[dict] = []
        self.values: dict[str, dict] = {}
        self.tensors: dict[str, np.ndarray] = {}
        self._names: set[str] = set()
        self._producer: dict[str, dict] = {}        # value -> the node writing it
        self._consumers: dict[str, dict] = {}       # value -> {id(node): node} reading it
        self._key: dict[int, tuple] = {}            # id(node) -> its sort key (order)
        self._seq = itertools.count()
        self._dirty = False                          # nodes removed / moved since the last sort

    @property
    def nodes(self) -> list:
        """the live nodes in execution order (do not insert / remove in this list: use the
        methods)"""
        if self._dirty:
            self._nodes = sorted((n for n in self._nodes if id(n) in self._key),
                                 key=lambda n: self._key[id(n)])
            self._dirty = False
        return self._nodes

    def _unique(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.:/-]", "_", base or "v")[:80] or "v"
        name, i = base, 1
        while name in self._names:
            i += 1
            name = "%s_%d" % (base, i)
        self._names.add(name)
        return name

    def value(self, base: str, kind: str, shape) -> str:
        name = self._unique(base)
        self.values[name] = {"name": name, "kind": kind, "shape": [int(s) for s in shape]}
        return name

    def tensor(self, base: str, arr: np.ndarray) -> str:
        name = self._unique(base)
        self.tensors[name] = np.ascontiguousarray(arr)
        return name

    def add(self, op: str, name: str, inputs, outputs, attrs=None, params=None) -> dict:
        """appends a node of a registered op (firmware_py.registry); its attribute and
        parameter names must be the spec's (the values are checked when the file is written)"""
        spec = OPS.get(op)
        if spec is None or not set(attrs or ()) <= set(spec.attrs) or not set(params or ()) <= set(spec.params):
            raise ValueError("lowering emitted %s node %r with attrs %s, params %s: not what the op's spec "
                             "(firmware_py.registry) allows" % (op, name, sorted(attrs or ()), sorted(params or ())))
        node = {"op": op, "name": self._unique(name), "inputs": [], "outputs": [],
                "attrs": dict(attrs or {}), "params": dict(params or {})}
        self._key[id(node)] = (next(self._seq),)
        self._nodes.append(node)
        self.set_inputs(node, inputs)
        self.set_outputs(node, outputs)
        return node

    # ---- changing the graph (keeps the index) ------------------------------------------------
    def set_inputs(self, node: dict, inputs):
        for v in node["inputs"]:
            self._consumers.get(v, {}).pop(id(node), None)
        node["inputs"] = list(inputs)
        for v in node["inputs"]:
            self._consumers.setdefault(v, {})[id(node)] = node

    def set_outputs(self, node: dict, outputs):
        for v in node["outputs"]:
            if self._producer.get(v) is node:
                del self._producer[v]
        node["outputs"] = list(outputs)
        for v in node["outputs"]:
            self._producer[v] = node

    def remove(self, node: dict):
        """drops a node (O(1); ``nodes`` is compacted when next read)"""
        self.set_inputs(node, [])
        self.set_outputs(node, [])
        del self._key[id(node)]
        self._dirty = True

    def alive(self, node: dict) -> bool:
        return id(node) in self._key

    def order(self, node: dict):
        """a key that sorts the nodes in execution order"""
        return self._key[id(node)]

    def move_before(self, node: dict, anchor: dict):
        """moves a node to just before ``anchor`` (after nodes moved there earlier)"""
        a = self._key[id(anchor)]
        self._key[id(node)] = a[:-1] + (a[-1] - 0.5, next(self._seq))
        self._dirty = True

    def rename_value(self, old: str, new: str):
        """every reference to value ``old`` (its producer's output, its consumers' inputs)
        now names ``new``; the value entry itself is the caller's"""
        prod = self._producer.get(old)
        if prod is not None:
            self.set_outputs(prod, [new if o == old else o for o in prod["outputs"]])
        for n in list(self._consumers.get(old, {}).values()):
            self.set_inputs(n, [new if i == old else i for i in n["inputs"]])

    # ---- queries used by the passes ------------------------------------------------------
    def producer(self, value: str):
        return self._producer.get(value)

    def consumers(self, value: str):
        return list(self._consumers.get(value, {}).values())

    def param(self, node: dict, key: str) -> np.ndarray:
        return self.tensors[node["params"][key]]

    def set_param(self, node: dict, key: str, arr: np.ndarray):
        old = node["params"].get(key)
        if old is not None:
            self.tensors.pop(old, None)
        node["params"][key] = self.tensor("%s.%s" % (node["name"], key), arr)

    def remove_unused(self, outputs):
        """Drops nodes whose outputs nobody reads (and, in turn, the nodes only they read,
        by a worklist: linear), then reports the values and tensors still used."""
        live = set(outputs)

        def dead(n):
            return self.alive(n) and not any(o in live or self._consumers.get(o) for o in n["outputs"])

        work = [n for n in self.nodes if dead(n)]
        while work:
            n = work.pop()
            if not dead(n):
                continue
            ins = list(n["inputs"])
            self.remove(n)
            for v in ins:
                p = self._producer.get(v)
                if p is not None and dead(p):
                    work.append(p)
        used_v = set(outputs)
        used_t = set()
        for n in self.nodes:
            used_v.update(n["inputs"])
            used_v.update(n["outputs"])
            used_t.update(n["params"].values())
        return used_v, used_t
