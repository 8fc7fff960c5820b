"""The classifier of the recipes: a small VGG-like network whose variants differ only in
how the inner convolutions compute.

  fp      float convolutions, ReLU
  naive   fp's trained weights, then alpha*sign(W) and sign(x) (no retraining, BN kept)
  bwn     binary weights (alpha*sign(W)), float activations (ReLU)
  xnor    binary weights and sign(x) inputs
  xnor_k  xnor with XNOR-Net's input scaling K

The first convolution and the classifier stay float in every variant.  The network
takes float32 NCHW pixels in [0, 1] and normalises them itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import BinaryConv2d

VARIANTS = ("fp", "naive", "bwn", "xnor", "xnor_k")
TRAINED = ("fp", "bwn", "xnor", "xnor_k")  # naive is derived from fp


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


class VGGSmall(nn.Module):
    """stem 3x3 conv (float) -> 4 inner 3x3 convs (binary in bwn/xnor) with BN and two
    2x2 max-pools -> global average pool -> float linear."""

    def __init__(self, variant: str, in_ch: int, n_classes: int, mean, std, width=(64, 128, 128, 256, 256)):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError("variant must be one of %s" % (VARIANTS,))
        self.variant = variant
        self.width = tuple(width)
        inner = "xnor" if variant == "naive" else variant
        w = width
        self.norm = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]))
        float_act = variant in ("fp", "bwn")
        blocks = []
        for i, (cin, cout) in enumerate(zip(w[:-1], w[1:])):
            # binary variants: sign inside the conv (Identity keeps the layer indices equal)
            layers = [nn.ReLU() if float_act else nn.Identity(), _conv(inner, cin, cout), nn.BatchNorm2d(cout)]
            if i in (0, 2):
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.head_act = nn.ReLU() if float_act else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[-1], n_classes)

    def forward(self, x):
        x = self.blocks(self.stem(self.norm(x)))
        return self.fc(self.pool(self.head_act(x)).flatten(1))


def naive_from_fp(fp: VGGSmall) -> VGGSmall:
    """The seed's naive binarisation: fp's weights and BN statistics as they are, in the
    xnor network (weights -> alpha*sign(W), ReLU -> sign), no retraining."""
    c = fp.norm.mean.shape[1]
    m = VGGSmall("naive", fp.stem[0].in_channels, fp.fc.out_features, [0.0] * c, [1.0] * c, width=fp.width)
    m.load_state_dict(fp.state_dict(), strict=True)
    return m
