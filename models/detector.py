"""A tiny-YOLO-style binarized person detector (and its full-precision twin).

Architecture (``build_detector``; input float32 NCHW RGB in [0, 1], square ``imgsz``,
a multiple of 32, default 192; default widths (16, 32, 64, 128, 512), depths (1, 1, 2, 1)):

    stem     float Conv 3x3 s2 3->16 + BN                                   /2
    stage 1  DownBlock 16->32   (+1 Block 32)                               /4
    stage 2  DownBlock 32->64   (+1 Block 64)                               /8
    stage 3  DownBlock 64->128  (+2 Block 128)          = C4                /16
    stage 4  DownBlock 128->512 (+1 Block 512)          = C5                /32
    neck     Block-style 1x1 512->128 on C5 (no shortcut), nearest x2, Concat with
             C4 (256), Block-style 3x3 256->128 with C4 as its shortcut = P4
    heads    float Conv 1x1 on P4 and on C5 -> na*(5+nc) channels each (raw logits)

Every convolution between the stem and the heads is binary in the ``binary`` variant
(XNOR: Conv(Sign(x), +-alpha) -> BN, which the converter folds into bconv2d with integer
thresholds or a float output), float in ``fp``; both variants have identical modules
and parameter names, so the binary model can be initialised from the trained twin.

Modern BNN options (``arch="bireal"``, the default), all exported with ops the converter
supports:
  * real-valued (Bi-Real) shortcuts: each block adds its input to BN(bconv(sign(x)));
  * real-valued downsampling: the shortcut of a stride-2 block is AvgPool 2x2 and the
    input repeated along channels (``downsample="avg"``, the default: no float MACs) or
    AvgPool 2x2 -> float Conv 1x1 -> BN (``downsample="real"``).  Measured on untrained
    stand-ins (``python -m models.bench_detector``, x86, 1 thread) at 256x256 with widths
    (32, 64, 128, 256, 512): "avg" 3.35 ms and a 0.97 MB file vs the FP twin's 29.5 ms /
    25.1 MB ONNX; "real" 4.06 ms and 1.68 MB (its 1x1 float weights are 0.7 MB: 15x
    smaller than the twin, short of the 20x target);
  * ReActNet's learnable per-channel threshold before the sign (RSign: Sign(x - b),
    a per-channel Sub folded into the integer thresholds) and RPReLU after the sum
    (Sub, PRelu, Add per channel);
  * learnable per-channel weight scales (XNOR-Net++-style: +-1 weights times a learned
    scale instead of mean|W|; ``learn_scale=True``).
``arch="plain"``: the classic XNOR-Net stack without shortcuts, downsampling by a 2x2
max-pool on the bits before a stride-1 binary conv (bmaxpool2d in the runtime).

Why 192 and (16, 32, 64, 128, 512): training cost on 2 CPU cores (fp twin, batch 32,
measured with --limit 320 --max-steps 8): 12.6 img/s at 256 with (32 .. 512), 56 img/s at
192 with these widths, ~85 s per epoch of the people set.  Narrow early stages are cheap
at high resolution; the wide last stage (6x6 at 192) costs little time and keeps the
binary model's share of the fp twin's size and time small (untrained stand-ins at 192,
``--seconds 2``: (16 .. 256) 5.6x faster and 20.4x smaller -- too close to the targets;
(16, 32, 64, 128, 512) 7.3x and 24.1x).
The shipped detector (models/zoo/person) is trained with widths (16, 64, 128, 256, 512):
at these defaults the binary model stopped at 76% of its twin's mAP, wider it reached 88%
(docs/training.md).

The fp twin replaces Sign by Hardtanh (Clip(-1, 1)), the ``+-alpha`` weights by the
real weights; everything else is the same.

Decoding (``"decode": "yolov5"``), per scale with stride s and anchors (w, h) in input
pixels, channels laid out anchor-major (c = a * (5 + nc) + k), all sigmoid:
    x, y = (2 * sig(tx, ty) - 0.5 + (col, row)) * s;   w, h = (2 * sig(tw, th))**2 * anchor
    score = sig(obj) * sig(cls_k)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BinaryConv2d, InAct, RPReLU, ScaledBinaryConv2d

WIDTHS = (16, 32, 64, 128, 512)
IMGSZ = 192
DEPTHS = (1, 1, 2, 1)
NECK = 128
STRIDES = (16, 32)
# fallback anchors (input pixels at imgsz 256); training computes them from the data (kmeans_anchors)
ANCHORS_256 = ((12, 27), (24, 56), (44, 96), (70, 150), (118, 196), (208, 236))
DECODE = "yolov5"
VARIANTS = ("fp", "binary")


# ---------------------------------------------------------------------------------------
# layers
def _conv(variant, cin, cout, k, s, learn_scale):
    p = k // 2
    if variant == "fp":
        return nn.Conv2d(cin, cout, k, s, p, bias=False)
    if learn_scale:
        return ScaledBinaryConv2d(cin, cout, k, stride=s, padding=p, mode="xnor")
    return BinaryConv2d(cin, cout, k, stride=s, padding=p, mode="xnor")


class Block(nn.Module):
    """act(x) -> conv k x k (stride s) -> BN [+ shortcut(x)] [-> RPReLU]."""

    def __init__(self, variant, cin, cout, stride=1, k=3, arch="bireal", downsample="avg", rsign=True,
                 rprelu=True, learn_scale=False, shortcut=True):
        super().__init__()
        self.plain = arch == "plain"
        self.act = InAct(cin, "hardtanh" if variant == "fp" else "sign", rsign and not self.plain)
        self.pool = nn.MaxPool2d(2) if (self.plain and stride == 2) else None
        conv_stride = 1 if self.plain else stride
        self.conv = _conv(variant, cin, cout, k, conv_stride, learn_scale)
        self.bn = nn.BatchNorm2d(cout)
        self.short = None
        self.use_short = shortcut and not self.plain
        self.repeat = 1
        if self.use_short and (stride != 1 or cin != cout):
            if downsample == "real" or cout % cin:
                layers = [nn.AvgPool2d(2)] if stride == 2 else []
                layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
                self.short = nn.Sequential(*layers)
            else:  # "avg": AvgPool and the channels repeated (Concat), no float MACs
                self.short = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
                self.repeat = cout // cin
        self.post = RPReLU(cout) if (rprelu and not self.plain and (self.use_short or not shortcut)) else None

    def forward(self, x, res=None):
        y = self.act(x)
        if self.pool is not None:
            y = self.pool(y)
        y = self.bn(self.conv(y))
        if res is not None:  # an explicit real-valued shortcut (the neck's fuse block: C4)
            y = y + res
        elif self.use_short:
            s = x if self.short is None else self.short(x)
            if self.repeat > 1:
                s = torch.cat([s] * self.repeat, 1)
            y = y + s
        if self.post is not None:
            y = self.post(y)
        return y


# ---------------------------------------------------------------------------------------
# the network
def default_config(variant="binary", imgsz=IMGSZ, nc=1, anchors=None, **kw) -> dict:
    if variant not in VARIANTS:
        raise ValueError("variant must be one of %s" % (VARIANTS,))
    if imgsz % 32:
        raise ValueError("imgsz must be a multiple of 32, got %d" % imgsz)
    if anchors is None:
        anchors = [[round(w * imgsz / 256, 2), round(h * imgsz / 256, 2)] for w, h in ANCHORS_256]
    cfg = {"variant": variant, "imgsz": int(imgsz), "nc": int(nc),
           "anchors": [[float(a) for a in wh] for wh in anchors],  # 6 (w, h), 3 per scale, small first
           "widths": list(WIDTHS), "depths": list(DEPTHS), "neck": NECK, "arch": "bireal", "downsample": "avg",
           "rsign": True, "rprelu": True, "learn_scale": False}
    for k, v in kw.items():
        if k not in cfg:
            raise ValueError("unknown detector option %r" % k)
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


class Detector(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        v, w, d = cfg["variant"], cfg["widths"], cfg["depths"]
        opt = dict(arch=cfg["arch"], downsample=cfg["downsample"], rsign=cfg["rsign"], rprelu=cfg["rprelu"],
                   learn_scale=cfg["learn_scale"])
        self.nc = cfg["nc"]
        self.no = 5 + self.nc
        anchors = torch.tensor(cfg["anchors"], dtype=torch.float32).view(len(STRIDES), -1, 2)
        self.na = anchors.shape[1]
        self.register_buffer("anchors", anchors)  # input pixels
        self.strides = STRIDES
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]))
        stages = []
        for i in range(4):
            blocks = [Block(v, w[i], w[i + 1], 2, **opt)]
            blocks += [Block(v, w[i + 1], w[i + 1], 1, **opt) for _ in range(d[i])]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        c4, c5 = w[3], w[4]
        self.lateral = Block(v, c5, cfg["neck"], 1, k=1, shortcut=False, **opt)
        self.fuse = Block(v, cfg["neck"] + c4, c4, 1, k=3, shortcut=False, **opt)
        self.head4 = nn.Conv2d(c4, self.na * self.no, 1)
        self.head5 = nn.Conv2d(c5, self.na * self.no, 1)
        self._init_heads()

    def _init_heads(self):
        for head, s in ((self.head4, 16), (self.head5, 32)):
            b = head.bias.detach().view(self.na, self.no)
            b[:, 4] += math.log(8 / (self.cfg["imgsz"] / s) ** 2)  # ~8 objects per image
            b[:, 5:] += math.log(0.6 / max(self.nc - 0.99, 0.5))
            head.bias = nn.Parameter(b.view(-1).clone())

    def forward(self, x, feats: bool = False):
        x = self.stem(x)
        out_feats = []
        for i, st in enumerate(self.stages):
            x = st(x)
            out_feats.append(x)
        c4, c5 = out_feats[2], out_feats[3]
        up = F.interpolate(self.lateral(c5), scale_factor=2.0, mode="nearest")
        p4 = self.fuse(torch.cat([up, c4], 1), res=None if self.cfg["arch"] == "plain" else c4)
        outs = [self.head4(p4), self.head5(c5)]
        if feats:
            return outs, out_feats + [p4]
        return outs

    def split(self, outs):
        """raw head maps (bs, na*no, ny, nx) -> (bs, na, ny, nx, no)"""
        res = []
        for o in outs:
            bs, _, ny, nx = o.shape
            res.append(o.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return res

    def detector_metadata(self) -> dict:
        """what firmware_py.detect needs to decode the raw outputs"""
        return head_metadata(self.cfg)


def head_metadata(cfg) -> dict:
    na = len(cfg["anchors"]) // len(STRIDES)
    return {"format": "yolo-grid", "decode": DECODE, "input_size": [cfg["imgsz"], cfg["imgsz"]],
            "input": "RGB float32 NCHW in [0, 1], letterboxed (aspect kept, centred, pad 114/255)",
            "strides": list(STRIDES), "outputs": ["p4", "p5"],
            "anchors": [[list(map(float, a)) for a in cfg["anchors"][i * na:(i + 1) * na]] for i in range(len(STRIDES))],
            "num_classes": cfg["nc"], "layout": "NCHW, channel = anchor * (5 + num_classes) + k; "
                                                "k: tx, ty, tw, th, obj, cls...; raw logits",
            "variant": cfg["variant"], "arch": cfg["arch"]}


def build_detector(cfg: dict) -> Detector:
    return Detector(cfg)


def init_from_fp(binary: Detector, fp_state: dict) -> list:
    """Copies the fp twin's weights into the binary model (same names and shapes);
    returns the keys not found.  Learnable scales are reset to mean|W| of the new weights."""
    res = binary.load_state_dict(fp_state, strict=False)
    for m in binary.modules():
        if isinstance(m, ScaledBinaryConv2d):
            m.reset_scale()
    return list(res.missing_keys)


def _channel_layouts(cfg) -> dict:
    """module name -> (input, output) channel layouts: lists of (group, channels), group i
    the feature maps of width widths[i] (0: the stem's output), "neck" the lateral conv's"""
    w, d = cfg["widths"], cfg["depths"]
    out = {"stem.0": ([("rgb", 3)], [(0, w[0])]), "stem.1": (None, [(0, w[0])])}
    for i in range(4):
        for j in range(d[i] + 1):
            out["stages.%d.%d" % (i, j)] = ([(i if j == 0 else i + 1, w[i if j == 0 else i + 1])], [(i + 1, w[i + 1])])
    out["lateral"] = ([(4, w[4])], [("neck", cfg["neck"])])
    out["fuse"] = ([("neck", cfg["neck"]), (3, w[3])], [(3, w[3])])
    out["head4"] = ([(3, w[3])], [("head", None)])
    out["head5"] = ([(4, w[4])], [("head", None)])
    return out


def widen(model: Detector, widths, noise=0.0, seed=0) -> Detector:
    """A Detector with wider feature maps computing the same function (Net2Net, Chen et al.
    2016): widths[i] = k * the model's widths[i] for whole k; each channel appears k times
    (the copies tiled: [c_0..c_n-1, c_0..c_n-1, ...], the layout of the "avg" shortcuts'
    channel repeat), the weights reading a widened input divided by k.  Exact for the fp
    twin and for binary convs with real-valued weights (the two-step schedule's first step);
    with +-alpha weights a division by k changes alpha, so binary-weight models are refused.
    ``noise`` > 0 adds Gaussian noise (that fraction of each widened weight's standard
    deviation) so that training can tell the copies apart."""
    cfg = dict(model.cfg)
    old = list(cfg["widths"])
    if len(widths) != len(old):
        raise ValueError("widen: %d widths expected, got %d" % (len(old), len(widths)))
    k = {}
    for i, (a, b) in enumerate(zip(old, widths)):
        if b < a or b % a:
            raise ValueError("widen: width %d must be a whole multiple of %d, got %d" % (i, a, b))
        k[i] = b // a
    if cfg["arch"] != "bireal" or cfg["downsample"] != "avg" or cfg["learn_scale"]:
        raise ValueError("widen: only the bireal architecture with avg downsampling and mean|W| scales")
    if any(m.binary_weights for m in model.modules() if isinstance(m, BinaryConv2d)):
        raise ValueError("widen: the model's binary convs have binary weights; widen its fp twin or a "
                         "first-step checkpoint (real weights)")
    for ws in (old, widths):  # else a stride-2 block's shortcut is a float 1x1 conv, which widen does not copy
        if any(ws[i + 1] % ws[i] for i in range(4)):
            raise ValueError("widen: each stage's width must be a multiple of the one before, got %s" % (ws,))
    new_cfg = dict(cfg, widths=[int(v) for v in widths])
    new = Detector(new_cfg)
    layouts = _channel_layouts(cfg)
    g = torch.Generator().manual_seed(seed)

    def expand(t, dim, layout, divide):
        parts, start = [], 0
        for group, n in layout:
            n = t.shape[dim] if n is None else n
            seg = t.narrow(dim, start, n)
            start += n
            r = k.get(group, 1)
            parts += [seg / r if divide else seg] * r
        return torch.cat(parts, dim)

    state = {}
    for name, t in model.state_dict().items():
        mod = max((m for m in layouts if name.startswith(m + ".")), key=len, default=None)
        leaf = name[len(mod) + 1:] if mod else name
        if mod is None or t.dim() == 0:  # anchors, num_batches_tracked
            state[name] = t.clone()
            continue
        lin, lout = layouts[mod]
        if leaf in ("weight", "conv.weight") and t.dim() == 4:  # a convolution (out, in, kh, kw)
            shape = t.shape
            t = expand(expand(t, 0, lout, False), 1, lin, True)
            if noise and t.shape != shape:
                t = t + torch.randn(t.shape, generator=g) * (noise * float(t.std()))
        elif leaf == "act.shift":
            t = expand(t, 1, lin, False)
        elif leaf in ("post.gamma", "post.zeta"):
            t = expand(t, 1, lout, False)
        else:  # BatchNorm, PReLU slopes, head biases: per output channel
            t = expand(t, 0, lout, False)
        state[name] = t
    new.load_state_dict(state)
    for m in new.modules():
        if isinstance(m, BinaryConv2d):
            m.binary_weights = 0.0  # as the model's (checked above)
    return new.train(model.training)


def count_macs(model: Detector) -> dict:
    """multiply-accumulates of one image: binary (XNOR) convs and float layers."""
    counts = {"binary": 0, "float": 0}
    hooks = []

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
        n = out.shape[1] * out.shape[2] * out.shape[3] * k
        counts["binary" if isinstance(m, BinaryConv2d) else "float"] += int(n)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    s = model.cfg["imgsz"]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, s, s, device=next(model.parameters()).device))
    model.train(was)
    for h in hooks:
        h.remove()
    return counts


def randomize_bn(model: nn.Module, seed=0):
    """random BN statistics and affine parameters (tests: an untrained model whose
    thresholds are not all zero)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
            elif isinstance(m, (InAct, RPReLU)):
                for p in m.parameters():
                    if p.dim() == 4:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# ---------------------------------------------------------------------------------------
# decoding and NMS in torch (training-time evaluation; firmware_py.detect is the numpy twin)
def decode(model_or_cfg, outs):
    """raw head maps -> (bs, N, 4 + 1 + nc): xywh in input pixels, obj, cls (sigmoids)"""
    cfg = model_or_cfg.cfg if isinstance(model_or_cfg, nn.Module) else model_or_cfg
    anchors = torch.tensor(cfg["anchors"], dtype=torch.float32).view(len(STRIDES), -1, 2)
    na, no = anchors.shape[1], 5 + cfg["nc"]
    res = []
    for i, o in enumerate(outs):
        bs, _, ny, nx = o.shape
        p = o.float().view(bs, na, no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
        yv, xv = torch.meshgrid(torch.arange(ny, device=o.device), torch.arange(nx, device=o.device), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
        a = anchors[i].to(o.device).view(1, na, 1, 1, 2)
        xy = (p[..., :2] * 2 - 0.5 + grid) * STRIDES[i]
        wh = (p[..., 2:4] * 2) ** 2 * a
        res.append(torch.cat((xy, wh, p[..., 4:]), -1).view(bs, -1, no))
    return torch.cat(res, 1)


def box_iou(a, b):
    """xyxy (n, 4), (m, 4) -> (n, m)"""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def nms(boxes, scores, iou_thres):
    """greedy NMS; boxes xyxy; returns kept indices by descending score"""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    iou = box_iou(boxes, boxes)
    keep = []
    removed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= iou[i] > iou_thres
    return order[torch.tensor(keep, dtype=torch.long)] if keep else order[:0]


def postprocess(pred, conf=0.25, iou=0.45, max_det=300, max_nms=30000):
    """decoded (bs, N, 5 + nc) -> per image (boxes xyxy (n, 4), scores (n,), classes (n,))
    class-aware NMS, best class per box (score = obj * cls)."""
    out = []
    for p in pred:
        scores_all = p[:, 5:] * p[:, 4:5]
        score, cls = scores_all.max(1)
        m = score > conf
        p, score, cls = p[m], score[m], cls[m]
        if p.shape[0] > max_nms:
            top = torch.argsort(score, descending=True, stable=True)[:max_nms]
            p, score, cls = p[top], score[top], cls[top]
        xy, wh = p[:, :2], p[:, 2:4]
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1)
        keep = nms(boxes + cls[:, None].float() * 7680.0, score, iou)[:max_det]
        out.append((boxes[keep], score[keep], cls[keep]))
    return out


# ---------------------------------------------------------------------------------------
# loss (YOLOv5's: CIoU box loss, BCE objectness and class, anchor-ratio matching with
# the two neighbouring cells as extra positives)
def bbox_ciou(b1, b2, eps=1e-7):
    """xywh (n, 4) each -> CIoU (n,)"""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1.unbind(-1), b2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((x2 - x1) ** 2 + (y2 - y1) ** 2)
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    def __init__(self, model: Detector, box=0.05, obj=1.0, cls=0.5, anchor_t=4.0, balance=(4.0, 1.0)):
        nl = len(STRIDES)
        s = model.cfg["imgsz"]
        self.box = box * 3 / nl
        self.cls = cls * max(model.nc, 1) / 80 * 3 / nl
        self.obj = obj * (s / 640) ** 2 * 3 / nl
        self.anchor_t = anchor_t
        self.balance = balance
        self.na, self.nc = model.na, model.nc
        self.anchors = model.anchors  # pixels

    def build_targets(self, p, targets):
        """targets (nt, 6): image, class, cx, cy, w, h (normalised)"""
        na, nt = self.na, targets.shape[0]
        dev = targets.device
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=dev)
        ai = torch.arange(na, device=dev).float().view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)
        g = 0.5
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=dev).float() * g
        for i, pi in enumerate(p):
            anchors = self.anchors[i].to(dev) / STRIDES[i]
            shape = pi.shape
            gain[2:6] = torch.tensor(shape, device=dev)[[3, 2, 3, 2]].float()
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                j = torch.max(r, 1 / r).max(2)[0] < self.anchor_t
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                l, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, l, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = 0
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, shape[3] - 1)
            gj = gij[:, 1].clamp(0, shape[2] - 1)
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - torch.stack((gi, gj), 1).float(), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch

    def __call__(self, p, targets):
        """p: split head outputs [(bs, na, ny, nx, no)]; returns (loss * bs, parts)"""
        dev = p[0].device
        lcls = torch.zeros(1, device=dev)
        lbox = torch.zeros(1, device=dev)
        lobj = torch.zeros(1, device=dev)
        tcls, tbox, indices, anchors = self.build_targets(p, targets)
        for i, pi in enumerate(p):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=dev)
            n = b.shape[0]
            if n:
                ps = pi[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i])
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                t = torch.zeros_like(ps[:, 5:])
                t[torch.arange(n, device=dev), tcls[i]] = 1.0
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t)
            lobj = lobj + F.binary_cross_entropy_with_logits(pi[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.box, lobj * self.obj, lcls * self.cls
        bs = p[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()


def distill_loss(student_outs, teacher_outs, s_feats, t_feats, model: Detector, w_out=1.0, w_feat=1.0):
    """Output distillation (BCE of the student's objectness/class logits against the
    teacher's probabilities, MSE of the box sigmoids weighted by the teacher's objectness)
    and feature distillation (Real-to-Binary attention transfer on every stage output)."""
    loss = torch.zeros((), device=student_outs[0].device)
    if w_out:
        for s, t in zip(model.split(student_outs), model.split(teacher_outs)):
            tp = t.detach().sigmoid()
            loss = loss + w_out * F.binary_cross_entropy_with_logits(s[..., 4:], tp[..., 4:])
            wobj = tp[..., 4:5]
            loss = loss + w_out * ((s[..., :4].sigmoid() - tp[..., :4]) ** 2 * wobj).sum() / wobj.sum().clamp(min=1)
    if w_feat:
        for s, t in zip(s_feats, t_feats):
            a_s = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
            a_t = F.normalize(t.detach().pow(2).mean(1).flatten(1), dim=1)
            loss = loss + w_feat * (a_s - a_t).pow(2).sum(1).mean()
    return loss


def kmeans_anchors(wh: np.ndarray, n=6, iters=100, seed=0) -> list:
    """k-means with 1 - IoU distance on box sizes (pixels) -> n anchors sorted by area"""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh > 2).all(1)]
    if len(wh) < n:
        return None
    rng = np.random.default_rng(seed)
    c = wh[rng.choice(len(wh), n, replace=False)]
    for _ in range(iters):
        inter = np.minimum(wh[:, None], c[None]).prod(2)
        iou = inter / (wh.prod(1)[:, None] + c.prod(1)[None] - inter)
        assign = iou.argmax(1)
        new = np.array([wh[assign == k].mean(0) if (assign == k).any() else c[k] for k in range(n)])
        if np.allclose(new, c):
            break
        c = new
    c = c[np.argsort(c.prod(1))]
    return [[round(float(w), 1), round(float(h), 1)] for w, h in c]


def export_onnx(model: Detector, path, class_names) -> str:
    """eval-mode ONNX (batch 1, input 'images', outputs 'p4', 'p5') with metadata_props
    class_names and detector."""
    import json

    import onnx

    import warnings

    model = model.to("cpu").eval()
    s = model.cfg["imgsz"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, s, s),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["p4", "p5"])
    m = onnx.load(str(path))
    m.metadata_props.add(key="class_names", value=json.dumps(list(class_names)))
    m.metadata_props.add(key="detector", value=json.dumps(model.detector_metadata()))
    onnx.save(m, str(path))
    return str(path)
