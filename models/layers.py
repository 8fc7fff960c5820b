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

The modern options (Bi-Real Net, Liu et al. 2018; ReActNet, Liu et al. 2020;
Real-to-Binary, Martinez et al. 2020) use these layers too:
  * ``InAct``: the activation in front of a convolution, with ReActNet's RSign (a learnable
    per-channel threshold: Sign(x - b), exported as Sub then Sign; the converter folds the
    Sub into the previous layer's thresholds or packs with it: bitpack_affine);
  * ``RPReLU``: PReLU(x - gamma) + zeta per channel (Sub, PRelu, Add: fused by the runtime);
  * ``ScaledBinaryConv2d``: +-1 weights times a learned per-channel scale (XNOR-Net++);
  * ``set_binary_weights(model, False)``: the first step of the two-step schedule trains
    with real-valued weights behind binary activations; the second (and every export)
    binarises them.  A fraction in between, ``set_binary_weights(model, t)``, trains with
    (1 - t) W + t alpha sign(W): the second step can binarise gradually (t ramped 0 -> 1).
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


def _mix_weight(w: torch.Tensor, binary, t: float) -> torch.Tensor:
    """the weights a binary layer computes with: w when t == 0, binary() when t == 1,
    (1 - t) w + t binary() in between (gradual binarisation)"""
    if t <= 0:
        return w
    if t >= 1:
        return binary()
    return w * (1 - t) + binary() * t


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
        self.binary_weights = 1.0  # 0: step 1 of the two-step schedule (set_binary_weights)

    def binary_weight(self) -> torch.Tensor:
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return _mix_weight(self.weight, lambda: binarize_weight(self.weight) * alpha, self.binary_weights)

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
        self.binary_weights = 1.0  # 0: step 1 of the two-step schedule

    def forward(self, x):
        alpha = self.weight.abs().mean(dim=1, keepdim=True)
        w = _mix_weight(self.weight, lambda: binarize_weight(self.weight) * alpha, self.binary_weights)
        xin = binarize(x) if self.mode == "xnor" else x
        return F.linear(xin, w, self.bias)


class ScaledBinaryConv2d(BinaryConv2d):
    """XNOR conv with +-1 weights and a learnable per-output-channel scale (init mean|W|).
    Exports as Mul(Conv(Sign(x), Sign(W)), scale), folded by the converter."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.scale = nn.Parameter(self.weight.detach().abs().mean(dim=(1, 2, 3)).clone())

    def reset_scale(self):
        with torch.no_grad():
            self.scale.copy_(self.weight.abs().mean(dim=(1, 2, 3)))

    def forward(self, x):
        w = _mix_weight(self.weight, lambda: binarize_weight(self.weight), self.binary_weights)
        y = F.conv2d(binarize(x), w, None, self.stride, self.padding)
        return y * self.scale.view(1, -1, 1, 1)


ACTIVATIONS = {"sign": binarize, "hardtanh": F.hardtanh, "relu": F.relu, "none": lambda x: x}


class InAct(nn.Module):
    """The activation in front of a convolution, fn(x - b): fn one of ACTIVATIONS ("none"
    when the convolution binarises its input itself); b a learnable per-channel shift
    (ReActNet's RSign) when rsign, else no shift."""

    def __init__(self, c, fn="sign", rsign=False):
        super().__init__()
        if fn not in ACTIVATIONS:
            raise ValueError("fn must be one of %s, got %r" % (sorted(ACTIVATIONS), fn))
        self.fn = fn
        self.shift = nn.Parameter(torch.zeros(1, c, 1, 1)) if rsign else None

    def forward(self, x):
        if self.shift is not None:
            x = x - self.shift
        return ACTIVATIONS[self.fn](x)


class RPReLU(nn.Module):
    """ReActNet's RPReLU: PReLU(x - gamma) + zeta, per channel."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.zeta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.prelu = nn.PReLU(c, 0.25)

    def forward(self, x):
        return self.prelu(x - self.gamma) + self.zeta


def set_binary_weights(model: nn.Module, on):
    """Binary (alpha * sign(W)) or real-valued weights in every binary layer of `model`:
    off (False or 0) for the first step of the two-step schedule, on (True or 1) for the
    second and for export; a fraction t in (0, 1) mixes them: (1 - t) W + t alpha sign(W)."""
    t = float(on)
    if not 0.0 <= t <= 1.0:
        raise ValueError("set_binary_weights: expected a bool or a fraction in [0, 1], got %r" % (on,))
    for m in model.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)):
            m.binary_weights = t


def latent_binary_weights(model: nn.Module) -> set:
    """the ids of the latent real weights of the binary layers (no weight decay on them)"""
    return {id(m.weight) for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))}
