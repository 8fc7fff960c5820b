"""Training checkpoints as data, never code: one .npz holding every tensor as a numpy array
plus a JSON description of the nested structure (dicts, lists, numbers, strings).
Read back with np.load(allow_pickle=False) -- no pickle anywhere.  Used for the resumable
state of the recipes (model, optimizer, scheduler, RNG, config)."""
from __future__ import annotations

import json
import os

import numpy as np
import torch


def _pack(obj, arrays):
    if torch.is_tensor(obj):
        key = "a%d" % len(arrays)
        arrays[key] = obj.detach().cpu().numpy()
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"dict": [[_pack(k, arrays), _pack(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list": [_pack(v, arrays) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError("cannot store %s in a checkpoint" % type(obj).__name__)


def _unpack(d, arrays):
    if "tensor" in d:
        return torch.from_numpy(np.array(arrays[d["tensor"]]))
    if "dict" in d:
        return {_unpack(k, arrays): _unpack(v, arrays) for k, v in d["dict"]}
    if "list" in d:
        items = [_unpack(v, arrays) for v in d["list"]]
        return tuple(items) if d["tuple"] else items
    return d["value"]


def save(path, obj: dict):
    """Atomically writes `obj` (nested dicts/lists of tensors and plain values)."""
    arrays = {}
    meta = json.dumps(_pack(obj, arrays)).encode()
    tmp = "%s.tmp" % os.fspath(path)
    with open(tmp, "wb") as f:
        np.savez(f, __structure__=np.frombuffer(meta, np.uint8), **arrays)
    os.replace(tmp, path)


def load(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _unpack(json.loads(arrays.pop("__structure__").tobytes()), arrays)


def same_config(a, b) -> bool:
    """Configs compare as their JSON form (a tuple saved comes back a list)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
