"""Training speed of fp32 vs bf16 autocast (models/precision.py) on this machine: one
training step (forward, backward, AdamW) of the CIFAR-10 VGG (fp and xnor, the modern
recipe's Bi-Real shape) and of the person detector (fp twin and binary).  The two
precisions run in alternating rounds so that a change of load slows both alike; ``ms`` is
the median step time, ``speedup`` fp32 / bf16.  Prints one JSON document.

    python -m models.bench_precision [--threads 2] [--rounds 5] [--cifar-width 64,128,128,256,256]
                                     [--cifar-batch 256] [--imgsz 192] [--det-batch 32]

The detector's loss here is the mean square of its outputs (the YOLO loss needs targets;
its cost is small beside the network's).  bf16 pays off on CPUs with bf16 arithmetic
(AVX512-BF16, AMX; "bf16_flags" lists those this CPU has) and on GPUs.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from . import detector as D
from .precision import autocast
from .train import build_net, net_config, recipe


def _flags():
    try:
        with open("/proc/cpuinfo") as f:
            words = set(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        return []
    return sorted(w for w in words if "bf16" in w or w.startswith("amx"))


def _step_fn(model, x, loss_of, precision, dev):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(precision, dev):
            out = model(x)
        loss = loss_of(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def compare(name, build, x, loss_of, rounds, dev):
    """median step times (ms) of fp32 and bf16 in alternating rounds"""
    steps = {p: _step_fn(build(), x, loss_of, p, dev) for p in ("fp32", "bf16")}
    for s in steps.values():  # warm-up: oneDNN picks its kernels on the first calls
        s()
    times = {p: [] for p in steps}
    for _ in range(rounds):
        for p, s in steps.items():
            t = time.perf_counter()
            s()
            times[p].append((time.perf_counter() - t) * 1e3)
    med = {p: sorted(v)[len(v) // 2] for p, v in times.items()}
    return {"model": name, "batch": x.shape[0], "input": "x".join(map(str, x.shape[1:])),
            "fp32_ms": round(med["fp32"], 1), "bf16_ms": round(med["bf16"], 1),
            "speedup": round(med["fp32"] / med["bf16"], 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.bench_precision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cifar-width", default="64,128,128,256,256")
    ap.add_argument("--cifar-batch", type=int, default=256)
    ap.add_argument("--imgsz", type=int, default=D.IMGSZ)
    ap.add_argument("--det-batch", type=int, default=32)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device("cpu")
    width = [int(v) for v in a.cifar_width.split(",")]
    rows = []
    x = torch.rand(a.cifar_batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.cifar_batch,))
    for variant in ("fp", "xnor"):
        s = recipe("cifar10", variant, "modern", {"width": width})

        def build(s=s, variant=variant):
            return build_net(net_config("cifar10", variant, s)).to(memory_format=torch.channels_last).train()
        rows.append(compare("cifar10/%s %s" % (variant, a.cifar_width), build, x,
                            lambda out: F.cross_entropy(out.float(), y), a.rounds, dev))
    x = torch.rand(a.det_batch, 3, a.imgsz, a.imgsz)
    for variant in ("fp", "binary"):
        def build(variant=variant):
            return D.build_detector(D.default_config(variant, a.imgsz)).train()
        rows.append(compare("detector/%s" % variant, build, x,
                            lambda outs: sum(o.float().square().mean() for o in outs), a.rounds, dev))
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "bf16_flags": _flags(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
