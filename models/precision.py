"""The arithmetic of training's forward pass: fp32, or bfloat16 autocast.

bf16 autocast runs convolutions and matrix products in bfloat16 (float32 accumulation) and
keeps the weights, their gradients, the optimizer state and every checkpoint in float32, so
a run can switch precision when it resumes and exports are unchanged.  On CPUs with
AVX512-BF16 (AMD Zen 4, Intel Sapphire Rapids) or AMX a training step of the CIFAR-10 VGG
takes about half the fp32 time (measured by `python -m models.bench_precision`); without bf16
units it may be slower than fp32: measure first.
"""
from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16")


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError("precision %r is not one of %s" % (precision, ", ".join(PRECISIONS)))
    return precision


def autocast(precision: str, device: torch.device):
    """the context to run a forward pass in (compute the loss in float32 after it)"""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=check(precision) == "bf16")


def add_argument(ap):
    """--precision of the training commands"""
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="bf16: autocast the forward pass (about 2x faster on CPUs with bf16 units)")
