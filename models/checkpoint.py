"""Training checkpoints as data, never code: one .npz holding every tensor as a numpy array
plus a JSON description of the nested structure (dicts, lists, numbers, strings).
Read back with np.load(allow_pickle=False) -- no pickle anywhere.  Used for the resumable
state of the recipes (model, optimizer, scheduler, RNG, config).  bfloat16 tensors (numpy
has no such type) are stored as their 16 bits and marked so.

``python -m models.checkpoint compact IN OUT`` writes a training checkpoint smaller for
committing it, so that an unfinished run resumes on another machine (compact)."""
from __future__ import annotations

import json
import os

import numpy as np
import torch


def _pack(obj, arrays):
    if torch.is_tensor(obj):
        key = "a%d" % len(arrays)
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            arrays[key] = t.view(torch.int16).numpy()
            return {"tensor": key, "bfloat16": True}
        arrays[key] = t.numpy()
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
        t = torch.from_numpy(np.array(arrays[d["tensor"]]))
        if d.get("bfloat16"):
            if t.dtype != torch.int16:
                raise ValueError("checkpoint: a bfloat16 tensor stored as %s" % t.dtype)
            t = t.view(torch.bfloat16)
        return t
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


def config_diff(stored, wanted, prefix="") -> list:
    """["key: stored -> wanted", ...] for every leaf where two configs differ"""
    out = []
    for k in sorted(set(stored) | set(wanted), key=str):
        a, b = stored.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, "%s%s." % (prefix, k))
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append("%s%s: %s -> %s" % (prefix, k, json.dumps(a), json.dumps(b)))
    return out


class OtherConfig(ValueError):
    """a checkpoint at the path a run would write holds a run of another configuration"""


def check_resumable(path, stored, wanted, how_else):
    """Refuses (OtherConfig) to train over the checkpoint at `path` when it holds another
    configuration: hours of training are not thrown away for a changed flag.  how_else:
    how to train the new configuration beside it."""
    if not same_config(stored, wanted):
        diff = config_diff(json.loads(json.dumps(stored)), json.loads(json.dumps(wanted)))
        raise OtherConfig("%s holds a run of another configuration (%s%s): run the command that made it to "
                          "resume it, %s, or delete it to start over"
                          % (path, "; ".join(diff[:6]), "; ..." if len(diff) > 6 else "", how_else))


def _cast(obj, dtype):
    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() and obj.dim() else obj
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(v, dtype) for v in obj)
    return obj


def half_state(state: dict) -> dict:
    """A state dict's floating tensors as float16 where every value fits (weights, BN
    statistics; else as they were), its integer ones as they are"""
    out = {}
    for k, v in state.items():
        h = v.half() if torch.is_tensor(v) and v.is_floating_point() else v
        out[k] = h if h is v or bool(torch.isfinite(h).all() == torch.isfinite(v).all()) else v
    return out


def compact(obj: dict) -> dict:
    """A training checkpoint (models.train or models.train_detector) with fewer bytes, to
    commit it so that an unfinished run resumes elsewhere: the optimizer's state (Adam's
    moments, SGD's momentum) as bfloat16 (the range of float32, 8 bits of mantissa) and the
    EMA weights as float16; the trained weights themselves (``model``), the steps and the
    configuration stay as they are.  Loading casts back to each parameter's dtype
    (torch's load_state_dict), so a run resumes from it; it then differs from an
    uninterrupted run by this rounding (relative: < 0.4% of each moment, < 0.05% of each EMA
    weight above float16's smallest normal number, 6e-5)."""
    out = dict(obj)
    if "opt" in out and "state" in out.get("opt", {}):
        out["opt"] = dict(out["opt"], state=_cast(out["opt"]["state"], torch.bfloat16))
    if "ema" in out:
        out["ema"] = half_state(out["ema"])
    return out


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m models.checkpoint", description=compact.__doc__)
    ap.add_argument("command", choices=["compact"])
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args(argv)
    before = os.path.getsize(a.src)
    save(a.dst, compact(load(a.src)))
    print("%s: %d -> %d bytes" % (a.dst, before, os.path.getsize(a.dst)))


if __name__ == "__main__":
    main()
