"""Small BNNs (Brevitas TFC / CNV sizes, w1a1): this runtime vs onnxruntime fp32, 1 thread.
Prints one JSON document.

    python -m models.bench_small [--seconds 3] [--rounds 40]

Small graphs are where fixed per-op costs show: every node costs a Python step and a C call,
whatever its size.  The two networks (random weights, random BatchNorm statistics; speed does
not depend on them), built with models/layers.py, exported with the TorchScript exporter and
converted with firmware_py.convert (checked against onnxruntime):

  ``tfc``: Brevitas' TFC: a bipolar (sign) input 1x28x28, flatten (of bits), three binary
    fully connected layers of 64 with BatchNorm and sign, a binary classifier of 10;
  ``cnv``: Brevitas' CNV: 3x32x32, a float 3x3 conv of 64 (the input is not binary), then
    binary 3x3 convs 64, [max pool], 128, 128, [max pool], 256, 256 (no padding, down to 1x1),
    max pools of bits (sign before the pool), flatten of bits, binary fully connected 512,
    512 and 10.

The two runtimes run in alternating rounds (``--rounds``, each about --seconds / rounds long
for each runtime), so that a machine whose load changes slows both alike; ``ms`` is the
median of the per-round mean times per inference, ``speedup`` the median of the per-round
ratios onnxruntime / ours.  ``profile``: our per-node time (Model.profile, medians, ms).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np


def _nets():
    import torch.nn as nn

    from models.layers import BinaryActivation, BinaryConv2d, BinaryLinear

    class TFC(nn.Module):
        def __init__(self, hidden=64):
            super().__init__()
            self.act = BinaryActivation()
            dims = [784, hidden, hidden, hidden]
            self.fc = nn.ModuleList([BinaryLinear(a, b) for a, b in zip(dims, dims[1:])] + [BinaryLinear(hidden, 10)])
            self.bn = nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(3)])

        def forward(self, x):
            x = self.act(x - 0.5).flatten(1)
            for fc, bn in zip(self.fc, self.bn):
                x = bn(fc(x))
            return self.fc[-1](x)

    class CNV(nn.Module):
        def __init__(self):
            super().__init__()
            ch = [64, 64, 128, 128, 256, 256]
            self.conv = nn.ModuleList([nn.Conv2d(3, 64, 3)] + [BinaryConv2d(a, b, 3) for a, b in zip(ch, ch[1:])])
            self.bn = nn.ModuleList([nn.BatchNorm2d(c) for c in ch])
            self.fc = nn.ModuleList([BinaryLinear(256, 512), BinaryLinear(512, 512), BinaryLinear(512, 10)])
            self.bnf = nn.ModuleList([nn.BatchNorm1d(512) for _ in range(2)])
            self.act = BinaryActivation()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            for i, (conv, bn) in enumerate(zip(self.conv, self.bn)):
                x = bn(conv(x))
                if i in (1, 3):
                    x = self.pool(self.act(x))
            x = self.act(x).flatten(1)
            for fc, bn in zip(self.fc, self.bnf):
                x = bn(fc(x))
            return self.fc[-1](x)

    return {"tfc": (TFC, (1, 1, 28, 28)), "cnv": (CNV, (1, 3, 32, 32))}


def _randomize(model, seed):
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


def build(name, folder):
    """(onnx path, bnn path, input shape) of one network, exported and converted into folder."""
    import torch

    from firmware_py.convert import convert

    cls, shape = _nets()[name]
    torch.manual_seed(0)
    model = _randomize(cls(), seed=1)
    src, dst = os.path.join(folder, name + ".onnx"), os.path.join(folder, name + ".bnn")
    torch.onnx.export(model, (torch.rand(*shape),), src, dynamo=False, opset_version=17)
    convert(src, dst, check=True)
    return src, dst, shape


def _round(fn, x, seconds):
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return dt / n


def bench(name, folder, rounds, seconds):
    import onnxruntime as ort

    import firmware_py as fp

    src, dst, shape = build(name, folder)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    model = fp.load(dst, num_threads=1)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runs = {"ours": model.run, "onnxruntime_fp32": lambda a: sess.run(None, {iname: a})}
    for fn in runs.values():
        _round(fn, x, 0.2)  # warm-up
    per = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            per[k].append(_round(fn, x, seconds / rounds))
    ratios = [o / b for o, b in zip(per["onnxruntime_fp32"], per["ours"])]
    prof = model.profile(x, repeat=200)
    return {"input": list(shape), "steps": len(prof),
            "ms": {k: round(statistics.median(v) * 1e3, 4) for k, v in per.items()},
            "speedup": round(statistics.median(ratios), 3),
            "profile": [{"name": d["name"], "op": d["op"], "ms": round(d["ms"], 4)} for d in prof],
            "profile_total_ms": round(prof.total_ms, 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.bench_small", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per runtime and network (default 3)")
    ap.add_argument("--rounds", type=int, default=40, help="alternating rounds (default 40)")
    ap.add_argument("--nets", default="tfc,cnv", help="comma-separated: tfc, cnv")
    a = ap.parse_args(argv)
    if a.seconds <= 0 or a.rounds < 1:
        ap.error("--seconds must be > 0 and --rounds >= 1")
    import onnxruntime as ort

    out = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": 1,
           "onnxruntime": ort.__version__, "rounds": a.rounds, "seconds": a.seconds, "nets": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name in a.nets.split(","):
            if name not in _nets():
                ap.error("unknown net %r (tfc, cnv)" % name)
            out["nets"][name] = bench(name, folder, a.rounds, a.seconds)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
