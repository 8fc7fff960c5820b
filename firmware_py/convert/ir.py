"""The binarized graph being built: values, nodes, tensors — as written to the model
file (docs/model-format.md)."""
from __future__ import annotations

import re

import numpy as np

from ..bits import pack_signs as pack_bits  # noqa: F401 - one packing for weights everywhere
from ..registry import OPS

class IR:
    def __init__(self):
        self.nodes: list[dict] = []
        self.values: dict[str, dict] = {}
        self.tensors: dict[str, np.ndarray] = {}
        self._names: set[str] = set()

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
        node = {"op": op, "name": self._unique(name), "inputs": list(inputs), "outputs": list(outputs),
                "attrs": dict(attrs or {}), "params": dict(params or {})}
        self.nodes.append(node)
        return node

    # ---- queries used by the passes ------------------------------------------------------
    def producer(self, value: str):
        for n in self.nodes:
            if value in n["outputs"]:
                return n
        return None

    def consumers(self, value: str):
        return [n for n in self.nodes if value in n["inputs"]]

    def param(self, node: dict, key: str) -> np.ndarray:
        return self.tensors[node["params"][key]]

    def set_param(self, node: dict, key: str, arr: np.ndarray):
        old = node["params"].get(key)
        if old is not None:
            self.tensors.pop(old, None)
        node["params"][key] = self.tensor("%s.%s" % (node["name"], key), arr)

    def remove_unused(self, outputs):
        """Drops nodes whose outputs nobody reads, then unreferenced values and tensors."""
        live = set(outputs)
        changed = True
        while changed:
            changed = False
            for n in list(self.nodes):
                if not any(o in live or self.consumers(o) for o in n["outputs"]):
                    self.nodes.remove(n)
                    changed = True
        used_v = set(outputs)
        used_t = set()
        for n in self.nodes:
            used_v.update(n["inputs"])
            used_v.update(n["outputs"])
            used_t.update(n["params"].values())
        return used_v, used_t
