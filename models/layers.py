"""Binary layers for training with PyTorch, written so their ONNX export converts.

XNOR-Net (Rastegari et al., ECCV 2016):
  * weights: W_B = sign(W), alpha = mean |W| per output filter; forward with alpha * W_B;
  * activations: X_B = sign(X); XNOR-Net's optional input scaling K = A * k, where
    A = mean over channels of |X| and k a kernel_h x kernel_w box filter of 1/(kh*kw);
  * backward through sign: the straight-through estimator, passing the gradient where
    |x| <= 1 (zero elsewhere).

In eval mode (what ``torch.onnx.export`` sees) the layers compute exactly
``Sign(x)``, ``Sign(2 Sign(W) + 1) * ReduceMean(Abs(W))`` (constants, folded by the
converter) and, with K, ``Conv(ReduceMean(Abs(x), axis 1), box)``, which the converter
recognises.  Weights map 0 to +1 like the runtime.  Activations use ONNX/PyTorch
``sign(0) = 0`` while the runtime maps 0 to +1; activations that are exactly 0.0 are
vanishingly rare after a batch norm, and the converter's --check reports any
disagreement.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _SignSTE(torch.autograd.Function):
    """sign(x) forward; gradient passed where |x| <= 1 (clipped straight-through)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def _sign_zero_plus(w):
    """Sign(2 Sign(W) + 1): sign with 0 -> +1.  The exporter keeps these four small nodes
    on W (a Where on W would be folded into a second full-size tensor: an ONNX file twice
    as big); the converter folds them."""
    return torch.sign(torch.sign(w) * 2 + 1)


class _WeightSignSTE(_SignSTE):
    """sign with sign(0) = +1 forward; the same clipped straight-through gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _sign_zero_plus(x)


def binarize_weight(w: torch.Tensor) -> torch.Tensor:
    """W_B = sign(W) with an exactly-zero weight mapped to +1, the runtime's convention:
    with torch.sign a 0 stays 0, the filter is not +-alpha, and the converter has to keep
    that convolution in float (larger and slower).  Exported as constants."""
    if torch.is_grad_enabled() and w.requires_grad:  # (also while torch.onnx.export traces)
        return _WeightSignSTE.apply(w)
    return _sign_zero_plus(w)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """sign with the clipped straight-through gradient while training; plain sign in eval
    (so the ONNX graph holds a single Sign node)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SignSTE.apply(x)
    return torch.sign(x)


class BinaryActivation(nn.Module):
    def forward(self, x):
        return binarize(x)


class BinaryConv2d(nn.Conv2d):
    """Conv2d with binary weights.

    mode "bwn":  weights alpha * sign(W), float input (Binary-Weight Network);
    mode "xnor": weights alpha * sign(W) and input sign(x);
    scale_k:     (xnor only) multiply the output by XNOR-Net's K computed from |x|.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 mode: str = "xnor", scale_k: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if mode not in ("bwn", "xnor"):
            raise ValueError("mode must be 'bwn' or 'xnor', got %r" % (mode,))
        if scale_k and mode != "xnor":
            raise ValueError("scale_k needs mode='xnor'")
        self.mode = mode
        self.scale_k = scale_k

    def binary_weight(self) -> torch.Tensor:
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return binarize_weight(self.weight) * alpha

    def forward(self, x):
        w = self.binary_weight()
        xin = binarize(x) if self.mode == "xnor" else x
        y = F.conv2d(xin, w, self.bias, self.stride, self.padding)
        if self.scale_k:
            kh, kw = self.kernel_size
            a = x.abs().mean(dim=1, keepdim=True)
            box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype, device=x.device)
            y = y * F.conv2d(a, box, None, self.stride, self.padding)
        return y


class BinaryLinear(nn.Linear):
    """Linear layer with binary weights (alpha per output) and, in xnor mode, binary input."""

    def __init__(self, in_features, out_features, bias=True, mode: str = "xnor"):
        super().__init__(in_features, out_features, bias=bias)
        if mode not in ("bwn", "xnor"):
            raise ValueError("mode must be 'bwn' or 'xnor', got %r" % (mode,))
        self.mode = mode

    def forward(self, x):
        alpha = self.weight.abs().mean(dim=1, keepdim=True)
        w = binarize_weight(self.weight) * alpha
        xin = binarize(x) if self.mode == "xnor" else x
        return F.linear(xin, w, self.bias)
