"""The classifier of the recipes: a small VGG-like network whose variants differ only in
how the inner convolutions compute.

  fp      float convolutions, ReLU
  naive   fp's trained weights, then alpha*sign(W) and sign(x) (no retraining, BN kept)
  bwn     binary weights (alpha*sign(W)), float activations (ReLU)
  xnor    binary weights and sign(x) inputs
  xnor_k  xnor with XNOR-Net's input scaling K

The first convolution and the classifier stay float in every variant.  The network
takes float32 NCHW pixels in [0, 1] and normalises them itself.

Options (``models.train``'s recipe settings; every one exports to ops the converter maps to
binary ops, see tests/test_recipes.py):
  arch="bireal"  a real-valued (Bi-Real) shortcut around every inner convolution:
                 block(x) = BN(conv(act(x))) + x, the input repeated along the channels
                 where the block widens (Concat; no float MACs), max-pooled after the sum;
                 "plain" is the classic XNOR-Net stack;
  rsign          (binary activations) a learnable per-channel threshold before the sign;
  rprelu         (binary activations) RPReLU after each block's sum.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import BinaryConv2d, InAct, RPReLU

VARIANTS = ("fp", "naive", "bwn", "xnor", "xnor_k")
TRAINED = ("fp", "bwn", "xnor", "xnor_k")  # naive is derived from fp
ARCHS = ("plain", "bireal")


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) * self.inv_std


def _conv(variant, cin, cout):
    if variant == "fp":
        return nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    if variant == "bwn":
        return BinaryConv2d(cin, cout, 3, padding=1, mode="bwn")
    return BinaryConv2d(cin, cout, 3, padding=1, mode="xnor", scale_k=(variant == "xnor_k"))


def binary_activations(variant) -> bool:
    return variant in ("naive", "xnor", "xnor_k")


class VGGBlock(nn.Module):
    """act(x) -> 3x3 conv -> BN [+ x, channels repeated] [-> RPReLU] [-> 2x2 max-pool].
    act: ReLU for float activations; for binary ones the conv takes the sign itself, so
    act is only RSign's shift (or nothing)."""

    def __init__(self, variant, cin, cout, pool, arch="plain", rsign=False, rprelu=False):
        super().__init__()
        binary = binary_activations(variant)
        self.act = InAct(cin, "none" if binary else "relu", rsign and binary)
        self.conv = _conv("xnor" if variant == "naive" else variant, cin, cout)
        self.bn = nn.BatchNorm2d(cout)
        if arch == "bireal" and cout % cin:
            raise ValueError("a Bi-Real shortcut needs cout (%d) to be a multiple of cin (%d)" % (cout, cin))
        self.repeat = cout // cin if arch == "bireal" else 0
        self.post = RPReLU(cout) if (rprelu and binary) else None
        self.pool = nn.MaxPool2d(2) if pool else None

    def forward(self, x):
        y = self.bn(self.conv(self.act(x)))
        if self.repeat:
            y = y + (torch.cat([x] * self.repeat, 1) if self.repeat > 1 else x)
        if self.post is not None:
            y = self.post(y)
        return self.pool(y) if self.pool is not None else y


class VGGSmall(nn.Module):
    """stem 3x3 conv (float) -> len(width) - 1 inner 3x3 convs (binary in bwn/xnor) with BN,
    a 2x2 max-pool after the 1st, 3rd, 5th ... (4 inner convs: two pools) -> global average
    pool -> float linear."""

    def __init__(self, variant: str, in_ch: int, n_classes: int, mean, std, width=(64, 128, 128, 256, 256),
                 arch="plain", rsign=False, rprelu=False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError("variant must be one of %s" % (VARIANTS,))
        if arch not in ARCHS:
            raise ValueError("arch must be one of %s, got %r" % (ARCHS, arch))
        self.variant = variant
        self.width = tuple(width)
        self.options = {"arch": arch, "rsign": bool(rsign), "rprelu": bool(rprelu)}
        w = width
        self.norm = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]))
        self.blocks = nn.Sequential(*[VGGBlock(variant, cin, cout, i % 2 == 0, **self.options)
                                      for i, (cin, cout) in enumerate(zip(w[:-1], w[1:]))])
        self.head_act = nn.Identity() if binary_activations(variant) else nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[-1], n_classes)

    def forward(self, x):
        x = self.blocks(self.stem(self.norm(x)))
        return self.fc(self.pool(self.head_act(x)).flatten(1))


def naive_from_fp(fp: VGGSmall) -> VGGSmall:
    """The seed's naive binarisation: fp's weights and BN statistics as they are, in the
    xnor network (weights -> alpha*sign(W), ReLU -> sign), no retraining."""
    c = fp.norm.mean.shape[1]
    opts = dict(fp.options, rsign=False, rprelu=False)
    m = VGGSmall("naive", fp.stem[0].in_channels, fp.fc.out_features, [0.0] * c, [1.0] * c, width=fp.width, **opts)
    m.load_state_dict(fp.state_dict(), strict=True)
    return m
