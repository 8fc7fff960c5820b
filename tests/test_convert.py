"""End-to-end tests of firmware_py.convert: small PyTorch models built from models/layers.py
(XNOR-Net / Bi-Real / BWN layers) exported with both ONNX exporters (TorchScript and
dynamo, the latter with external data), converted with --check against onnxruntime, then
run with firmware_py.load() and compared with the PyTorch model's own output.  Also checks
that the converted graph really uses the binary ops (bconv2d with fused bit outputs,
bmaxpool2d, bdense), a hand-built QONNX (BipolarQuant) graph against numpy, the errors
(unsupported op, dynamic shapes), the CLI and the size report.

Skipped when torch / onnx / onnxruntime are missing or the native library is not built.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import torch
import onnx
import onnxruntime  # noqa: F401

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import firmware_py as fp  # noqa: E402
from firmware_py import _native  # noqa: E402
from firmware_py.convert import ConvertError, convert  # noqa: E402
from models.layers import BinaryActivation, BinaryConv2d, BinaryLinear  # noqa: E402

try:
    _native.lib()
except Exception as e:  # pragma: no cover - depends on the build
    pytest.skip("native library not built (run ./build.sh): %s" % e, allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTERS = ["torchscript", "dynamo"]

torch.set_num_threads(2)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


# ---- helpers -----------------------------------------------------------------------------------------
def randomize_bn(model, seed=0, neg_frac=0.3):
    """Random BN parameters and running statistics (so the thresholds matter), with about
    neg_frac of the gammas negative (so the comparisons flip); puts the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                w = torch.rand(c, generator=g) * 1.5 + 0.25
                neg = torch.rand(c, generator=g) < neg_frac
                neg[0] = True  # at least one negative gamma per BN
                mod.weight.copy_(torch.where(neg, -w, w))
                mod.bias.copy_(torch.randn(c, generator=g) * 0.5)
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return model.eval()


def export(model, x, path, exporter, **kw):
    """Exports with the TorchScript exporter (opset 17) or the dynamo exporter (weights
    as external data `<path>.data`)."""
    model.eval()
    if exporter == "torchscript":
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, **kw)
    else:
        torch.onnx.export(model, (x,), path, dynamo=True, external_data=True, verbose=False, **kw)
        assert os.path.exists(str(path) + ".data"), "the dynamo exporter did not write external data"
    return str(path)


def ops(result):
    return [n["op"] for n in result.graph["nodes"]]


def nodes_of(result, op):
    return [n for n in result.graph["nodes"] if n["op"] == op]


def assert_close(got, ref, what=""):
    got = np.asarray(got, np.float32)
    ref = np.asarray(ref, np.float32)
    assert got.shape == ref.shape, "%s: shape %s, expected %s" % (what, got.shape, ref.shape)
    scale = float(np.abs(ref).max()) or 1.0
    err = np.abs(got - ref)
    bad = err > 1e-4 * scale + 1e-3 * np.abs(ref)
    assert not bad.any(), "%s: %d of %d values differ (max error %.3g, max|ref| %.3g)" % (
        what, int(bad.sum()), bad.size, float(err.max()), scale)


def roundtrip(model, shape, tmp_path, exporter, samples=2, seed=0, name="model", check=True):
    """Export, convert (with the onnxruntime check) and compare firmware_py against the
    PyTorch model on `samples` random [0, 1) inputs.  Returns the ConvertResult."""
    torch.manual_seed(seed)
    model.eval()
    x0 = torch.rand(*shape)
    src = export(model, x0, tmp_path / ("%s.onnx" % name), exporter)
    dst = str(tmp_path / ("%s.bnn" % name))
    res = convert(src, dst, check=check, check_samples=samples)
    assert os.path.exists(dst) and os.path.getsize(dst) == res.file_bytes
    m = fp.load(dst, num_threads=1)
    for i in range(samples):
        x = x0 if i == 0 else torch.rand(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        assert_close(m.run(x.numpy()), ref, "%s (%s) sample %d" % (name, exporter, i))
    return res


def bconv_outputs(result):
    return [n["attrs"].get("output", "float") for n in nodes_of(result, "bconv2d")]


# ---- models ------------------------------------------------------------------------------------------
class SmallXnorNet(nn.Module):
    """float conv -> BN -> bconv -> BN -> bconv -> BN -> maxpool -> bconv(stride 2) -> BN ->
    global avg pool -> flatten -> float Linear."""

    def __init__(self, in_c=3, classes=10):
        super().__init__()
        self.conv0 = nn.Conv2d(in_c, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 40, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(40)
        self.conv2 = BinaryConv2d(40, 40, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(40)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = BinaryConv2d(40, 65, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(65)
        self.fc = nn.Linear(65, classes)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.conv1(x))
        x = self.pool(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("in_c", [1, 3])
def test_small_xnor_net(tmp_path, exporter, in_c):
    model = randomize_bn(SmallXnorNet(in_c), seed=in_c)
    res = roundtrip(model, (1, in_c, 16, 16), tmp_path, exporter)
    o = ops(res)
    assert o.count("bconv2d") == 3, o
    assert o.count("fconv2d") == 1 and o.count("dense") == 1, o
    # conv1 -> BN -> sign and conv2 -> BN -> maxpool -> sign produce bits directly;
    # conv3 -> BN -> avg pool stays float
    assert bconv_outputs(res) == ["bits", "bits", "float"], bconv_outputs(res)
    assert o.count("bmaxpool2d") == 1 and "maxpool2d" not in o, o
    assert o.count("bitpack") == 1, o  # only after the float first layer
    assert "unpack" not in o and "affine" not in o, o  # BNs folded
    assert res.check["ok"] and res.check["inputs"] == 2


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_exactly_zero_weights_stay_binary(tmp_path, exporter):
    """A latent weight of exactly 0.0 binarises to +1 (the runtime's sign), so its layer
    still converts to bconv2d instead of falling back to a float convolution."""
    model = randomize_bn(SmallXnorNet(3), seed=7)
    with torch.no_grad():
        for conv in (model.conv1, model.conv2, model.conv3):
            conv.weight[0, :2, 1, 1] = 0.0
            conv.weight[-1, -1, 0, 0] = 0.0
    res = roundtrip(model, (1, 3, 16, 16), tmp_path, exporter)
    o = ops(res)
    assert o.count("bconv2d") == 3 and o.count("fconv2d") == 1, o


class SignPoolNet(nn.Module):
    """sign -> max-pool (k3 s2 p1) -> binary conv: the pool runs on bits directly; the
    output is the sign of the last layer (bits, unpacked to +-1 at the boundary)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 24, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(24)
        self.act = BinaryActivation()
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.conv1 = BinaryConv2d(24, 36, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(36)

    def forward(self, x):
        x = self.pool(self.act(self.bn0(self.conv0(x))))
        return self.act(self.bn1(self.conv1(x)))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_sign_then_maxpool_and_bits_output(tmp_path, exporter):
    model = randomize_bn(SignPoolNet(), seed=12)
    res = roundtrip(model, (1, 3, 11, 11), tmp_path, exporter)
    o = ops(res)
    assert o.count("bmaxpool2d") == 1 and "maxpool2d" not in o, o
    assert bconv_outputs(res) == ["bits"], o  # BN -> sign fused into thresholds
    assert nodes_of(res, "bmaxpool2d")[0]["attrs"]["pads"] == [1, 1, 1, 1]


class PoolNet(nn.Module):
    """bconv -> BN -> max-pool -> (sign) bconv: the pool is moved onto the bits."""

    def __init__(self, pool):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.pool = pool
        self.conv2 = BinaryConv2d(32, 20, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(20)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.pool(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(x))


@pytest.mark.parametrize("pool,exporter", [
    ("k3s2p1", "dynamo"),
    ("ceil_mode", "torchscript"),   # 11x11 -> 6x6: the last window hangs over the edge by one
    ("ceil_mode", "dynamo"),
])
def test_maxpool_between_binary_layers(tmp_path, pool, exporter):
    mp = nn.MaxPool2d(3, 2, padding=1) if pool == "k3s2p1" else nn.MaxPool2d(2, 2, ceil_mode=True)
    model = randomize_bn(PoolNet(mp), seed=13)
    res = roundtrip(model, (1, 3, 11, 11), tmp_path, exporter)
    o = ops(res)
    assert o.count("bmaxpool2d") == 1 and "maxpool2d" not in o, o
    assert bconv_outputs(res) == ["bits", "float"]
    node = nodes_of(res, "bmaxpool2d")[0]
    # ONNX ceil_mode: one more output row/column, padded by what the last window needs
    assert node["attrs"]["pads"] == ([1, 1, 1, 1] if pool == "k3s2p1" else [0, 0, 1, 1]), node["attrs"]
    shapes = {v["name"]: v["shape"] for v in res.graph["values"]}
    assert shapes[node["outputs"][0]] == [1, 6, 6, 32]


class ChannelNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv0 = nn.Conv2d(3, c, 1)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = BinaryConv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = BinaryConv2d(c, 16, 3)
        self.bn2 = nn.BatchNorm2d(16)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(x))


@pytest.mark.parametrize("c,exporter", [(3, "torchscript"), (17, "dynamo"), (40, "torchscript"),
                                        (65, "torchscript"), (130, "dynamo")])
def test_channels_not_multiple_of_32(tmp_path, exporter, c):
    model = randomize_bn(ChannelNet(c), seed=c)
    res = roundtrip(model, (1, 3, 8, 8), tmp_path, exporter)
    assert bconv_outputs(res) == ["bits", "float"]
    words = (c + 31) // 32
    w = res.tensors[nodes_of(res, "bconv2d")[0]["params"]["weights"]]
    assert w.dtype == np.uint32 and w.shape == (c, 3, 3, words), w.shape


class GeometryNet(nn.Module):
    def __init__(self, k, pad, stride):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 33, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(33)
        self.conv1 = BinaryConv2d(33, 40, k, stride=stride, padding=pad)
        self.bn1 = nn.BatchNorm2d(40)
        self.conv2 = BinaryConv2d(40, 24, k, padding=pad)
        self.bn2 = nn.BatchNorm2d(24)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(x))


@pytest.mark.parametrize("k,pad,stride,exporter", [
    (1, 0, 1, "torchscript"),
    (3, 1, 1, "dynamo"),
    (5, 2, 1, "torchscript"),
    (7, 3, 1, "torchscript"),
    (3, 1, 2, "torchscript"),
    (5, 2, 2, "dynamo"),
    (3, 0, 2, "torchscript"),
])
def test_binary_conv_geometry(tmp_path, k, pad, stride, exporter):
    model = randomize_bn(GeometryNet(k, pad, stride), seed=k * 10 + stride)
    res = roundtrip(model, (1, 3, 13, 13), tmp_path, exporter)
    b = nodes_of(res, "bconv2d")
    assert len(b) == 2 and bconv_outputs(res) == ["bits", "float"]
    assert b[0]["attrs"]["kernel"] == [k, k] and b[0]["attrs"]["stride"] == [stride, stride]
    assert b[0]["attrs"]["pads"] == [pad] * 4 and b[0]["attrs"]["pad_mode"] == "zero"


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_negative_gamma_thresholds(tmp_path, exporter):
    """Half of the BN gammas negative: the fused threshold comparisons must flip there."""
    model = randomize_bn(GeometryNet(3, 1, 1), seed=7, neg_frac=0.5)
    res = roundtrip(model, (1, 3, 10, 10), tmp_path, exporter, samples=2)
    b = nodes_of(res, "bconv2d")[0]
    assert b["attrs"]["output"] == "bits"
    flip = res.tensors[b["params"]["flip"]]
    gamma = model.bn1.weight.detach().numpy()
    # alpha > 0, so a comparison flips exactly where gamma < 0
    np.testing.assert_array_equal(flip.astype(bool), gamma < 0)
    thr = res.tensors[b["params"]["threshold"]]
    assert len(set(thr.tolist())) > 1, "thresholds should differ between channels"


class BiRealNet(nn.Module):
    """Bi-Real style: x = bn(bconv(x)) + x (the sign is inside the next binary conv)."""

    def __init__(self, c=32):
        super().__init__()
        self.conv0 = nn.Conv2d(3, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = BinaryConv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = BinaryConv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.conv1(x)) + x
        x = self.bn2(self.conv2(x)) + x
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_residual_add(tmp_path, exporter):
    model = randomize_bn(BiRealNet(), seed=3)
    res = roundtrip(model, (1, 3, 8, 8), tmp_path, exporter)
    o = ops(res)
    assert o.count("bconv2d") == 2 and o.count("add") == 2, o
    # each residual sum is binarised for the next conv: float output, BN folded into it
    assert bconv_outputs(res) == ["float", "float"]
    assert "affine" not in o, o


class UpCatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 24, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(24)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2 = BinaryConv2d(40, 20, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(20)

    def forward(self, x):
        x0 = self.bn0(self.conv0(x))
        a = self.up(self.bn1(self.conv1(x0)))
        return self.bn2(self.conv2(torch.cat([a, x0], 1)))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_upsample_concat(tmp_path, exporter):
    model = randomize_bn(UpCatNet(), seed=4)
    res = roundtrip(model, (1, 3, 8, 8), tmp_path, exporter)
    o = ops(res)
    assert o.count("bconv2d") == 2 and o.count("resize_nearest") == 1 and o.count("concat") == 1, o
    assert nodes_of(res, "resize_nearest")[0]["attrs"]["scale"] == [2, 2]


class KScaleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 32, 3, padding=1, scale_k=True)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = BinaryConv2d(32, 24, 3, stride=2, padding=1, scale_k=True)
        self.bn2 = nn.BatchNorm2d(24)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(x))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_xnor_k_scaling(tmp_path, exporter):
    model = randomize_bn(KScaleNet(), seed=5)
    res = roundtrip(model, (1, 3, 9, 9), tmp_path, exporter)
    o = ops(res)
    assert o.count("bconv2d") == 2 and o.count("xnor_scale") == 2, o
    for b in nodes_of(res, "bconv2d"):
        assert len(b["inputs"]) == 2, b  # the K input
        assert b["attrs"]["output"] == "float"
    k = nodes_of(res, "xnor_scale")
    assert k[1]["attrs"]["stride"] == [2, 2] and k[1]["attrs"]["pads"] == [1, 1, 1, 1]


class BwnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 24, 3, padding=1, mode="bwn")
        self.bn1 = nn.BatchNorm2d(24)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        return torch.relu(self.bn1(self.conv1(x)))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_bwn_layer(tmp_path, exporter):
    model = randomize_bn(BwnNet(), seed=6)
    res = roundtrip(model, (1, 3, 8, 8), tmp_path, exporter)
    o = ops(res)
    assert "bconv2d" not in o and "bitpack" not in o, o
    assert o.count("fconv2d") == 2 and o.count("relu") == 1, o
    # the binarised weights were folded to +-alpha per filter
    w = res.tensors[nodes_of(res, "fconv2d")[1]["params"]["weights"]]
    alpha = model.conv1.weight.detach().abs().mean((1, 2, 3)).numpy()
    gamma_s = (model.bn1.weight / torch.sqrt(model.bn1.running_var + model.bn1.eps)).detach().numpy()
    np.testing.assert_allclose(np.abs(w).reshape(24, -1).max(1), np.abs(alpha * gamma_s), rtol=1e-5)


class BinaryHeadNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = BinaryConv2d(16, 40, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(40)
        self.act = BinaryActivation()
        self.fc = BinaryLinear(40 * 4 * 4, 10)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        x = self.act(self.bn1(self.conv1(x)))   # sign -> bits
        return self.fc(torch.flatten(x, 1))       # flatten of bits, binary linear


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_binary_linear_head(tmp_path, exporter):
    model = randomize_bn(BinaryHeadNet(), seed=8)
    res = roundtrip(model, (1, 3, 8, 8), tmp_path, exporter)
    o = ops(res)
    assert o.count("bdense") == 1 and "dense" not in o, o
    assert bconv_outputs(res) == ["bits"]
    assert "unpack" not in o, o  # the flatten runs on bits


# ---- QONNX / Brevitas-style BipolarQuant --------------------------------------------------------------
QONNX = "qonnx.custom_op.general"


def _bipolar(x, s):
    return np.where(x >= 0, 1.0, -1.0) * s


def _np_conv(x, w, pads, stride=1):
    """NCHW float64 convolution with zero padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pads, pads), (pads, pads)))
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w)


def test_qonnx_bipolar_quant(tmp_path):
    rng = np.random.default_rng(0)
    c0, c1, c2 = 20, 36, 12
    w1 = rng.standard_normal((c1, c0, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((c2, c1, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(c2).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c1).astype(np.float32) * np.where(rng.random(c1) < 0.3, -1, 1).astype(np.float32)
    beta, mean = rng.standard_normal(c1).astype(np.float32), rng.standard_normal(c1).astype(np.float32) * 3
    var = rng.uniform(0.5, 2.0, c1).astype(np.float32)
    sa, sw1, sw2 = np.float32(0.5), np.float32(0.25), np.float32(2.0)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (w2, "w2"), (b2, "b2"), (gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"),
        (np.array(sa, np.float32), "sa"), (np.array(sw1, np.float32), "sw1"),
        (np.array(sw2, np.float32), "sw2")]]
    nodes = [
        helper.make_node("BipolarQuant", ["x", "sa"], ["xq"], name="quant_x", domain=QONNX),
        helper.make_node("BipolarQuant", ["w1", "sw1"], ["w1q"], name="quant_w1", domain=QONNX),
        helper.make_node("Conv", ["xq", "w1q"], ["y1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y1", "gamma", "beta", "mean", "var"], ["z1"], name="bn1"),
        helper.make_node("BipolarQuant", ["z1", "sa"], ["z1q"], name="quant_z1", domain=QONNX),
        helper.make_node("BipolarQuant", ["w2", "sw2"], ["w2q"], name="quant_w2", domain=QONNX),
        helper.make_node("Conv", ["z1q", "w2q", "b2"], ["y"], name="conv2", strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "qonnx_bnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)])
    src = str(tmp_path / "qonnx.onnx")
    onnx.save(model, src)
    dst = str(tmp_path / "qonnx.bnn")
    res = convert(src, dst)  # checked against onnxruntime on the oracle (QONNX ops lowered to standard ones)
    assert res.check["ok"], res.check
    o = ops(res)
    assert o.count("bconv2d") == 2 and bconv_outputs(res) == ["bits", "float"], o
    m = fp.load(dst, num_threads=1)
    for _ in range(2):
        x = rng.standard_normal((1, c0, 9, 9)).astype(np.float32)
        y1 = _np_conv(_bipolar(x.astype(np.float64), sa), _bipolar(w1.astype(np.float64), sw1), 1)
        s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
        z1 = y1 * s[None, :, None, None] + (beta - mean * s)[None, :, None, None]
        ref = _np_conv(_bipolar(z1, sa), _bipolar(w2.astype(np.float64), sw2), 0, stride=2) + b2[None, :, None, None]
        assert_close(m.run(x), ref, "qonnx")


class SoftmaxNet(nn.Module):
    """a classifier head ending in (Log)Softmax over the classes, or over a 4-D map's channels"""

    def __init__(self, log=False, dim=1, four_d=False):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)
        self.log, self.dim, self.four_d = log, dim, four_d

    def forward(self, x):
        y = self.conv0(x) if self.four_d else self.fc(self.conv0(x).mean((2, 3)))
        return (torch.log_softmax if self.log else torch.softmax)(y, dim=self.dim)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("log,four_d", [(False, False), (True, False), (False, True)])
def test_softmax_heads(tmp_path, exporter, log, four_d):
    res = roundtrip(SoftmaxNet(log, four_d=four_d), (1, 3, 6, 6), tmp_path, exporter)
    soft = nodes_of(res, "softmax")
    assert len(soft) == 1 and soft[0].get("attrs", {}).get("log", 0) == int(log)


def test_softmax_over_a_spatial_axis_is_refused(tmp_path):
    src = export(SoftmaxNet(dim=2, four_d=True).eval(), torch.rand(1, 3, 6, 6), tmp_path / "s.onnx", "torchscript")
    with pytest.raises(ConvertError, match="Softmax over axis 2 of a 4-D input is not supported"):
        convert(src, str(tmp_path / "s.bnn"))
    assert not (tmp_path / "s.bnn").exists()


# ---- errors -----------------------------------------------------------------------------------------


class TanhNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.tanh(self.conv0(x))


@pytest.mark.parametrize("net,op_type,exporter", [(TanhNet, "Tanh", "torchscript"),
                                                   (TanhNet, "Tanh", "dynamo")])
def test_unsupported_op(tmp_path, exporter, net, op_type):
    src = export(net().eval(), torch.rand(1, 3, 6, 6), tmp_path / "bad.onnx", exporter)
    names = [n.name for n in onnx.load(src, load_external_data=False).graph.node if n.op_type == op_type]
    assert len(names) == 1, "the export has no single %s node" % op_type
    dst = tmp_path / "bad.bnn"
    with pytest.raises(ConvertError) as ei:
        convert(src, str(dst), check=True)
    msg = str(ei.value)
    assert op_type in msg and names[0] in msg, msg
    assert "hint" in msg and "supported" in msg, msg
    assert not dst.exists(), "nothing may be written when the conversion fails"


def test_dynamic_input_shape(tmp_path):
    model = randomize_bn(ChannelNet(17), seed=9)
    src = str(tmp_path / "dyn.onnx")
    torch.onnx.export(model, (torch.rand(1, 3, 8, 8),), src, dynamo=False, opset_version=17,
                      input_names=["pixels"], output_names=["out"],
                      dynamic_axes={"pixels": {2: "h", 3: "w"}, "out": {2: "oh", 3: "ow"}})
    dst = tmp_path / "dyn.bnn"
    with pytest.raises(ConvertError) as ei:
        convert(src, str(dst))
    msg = str(ei.value)
    assert "dynamic" in msg and "pixels" in msg, msg
    assert not dst.exists()
    res = convert(src, str(dst), input_shapes={"pixels": (1, 3, 10, 12)}, check=True, check_samples=2)
    assert res.graph["inputs"] == [{"name": "pixels", "shape": [1, 3, 10, 12], "layout": "NCHW"}]
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        ref = model(x).numpy()
    assert_close(fp.load(str(dst), num_threads=1).run(x.numpy()), ref, "dynamic H/W fixed to 10x12")


def test_dynamic_batch_defaults_to_one(tmp_path):
    model = randomize_bn(ChannelNet(17), seed=10)
    src = str(tmp_path / "dynb.onnx")
    torch.onnx.export(model, (torch.rand(1, 3, 8, 8),), src, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    res = convert(src, str(tmp_path / "dynb.bnn"), check=True, check_samples=1)
    assert res.graph["inputs"][0]["shape"] == [1, 3, 8, 8]


# ---- external data, size, CLI ------------------------------------------------------------------------
class WideNet(nn.Module):
    """Several 128-channel binary convs: the converted file must be much smaller."""

    def __init__(self, c=128):
        super().__init__()
        self.conv0 = nn.Conv2d(3, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.convs = nn.ModuleList([BinaryConv2d(c, c, 3, padding=1) for _ in range(3)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(3)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.bn0(self.conv0(x))
        for conv, bn in zip(self.convs, self.bns):
            x = bn(conv(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def wide_models(tmp_path_factory):
    """WideNet exported with both exporters: {exporter: path}."""
    d = tmp_path_factory.mktemp("wide")
    model = randomize_bn(WideNet(), seed=11)
    x = torch.rand(1, 3, 8, 8)
    return model, {e: export(model, x, d / ("wide_%s.onnx" % e), e) for e in EXPORTERS}


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_size_report(tmp_path, wide_models, exporter):
    model, paths = wide_models
    src = paths[exporter]
    res = convert(src, str(tmp_path / "wide.bnn"), check=True, check_samples=1)
    assert ops(res).count("bconv2d") == 3 and bconv_outputs(res) == ["bits", "bits", "float"]
    on_disk = os.path.getsize(src) + (os.path.getsize(src + ".data") if exporter == "dynamo" else 0)
    assert res.source_bytes == on_disk, "source_bytes %d, but the model (with external data) takes %d bytes" % (
        res.source_bytes, on_disk)
    assert res.file_bytes < res.source_bytes / 4, (res.file_bytes, res.source_bytes)
    text = res.report()
    assert "layer" in text and "binary" in text and "source ONNX" in text, text


def test_dynamo_external_data_moved(tmp_path, wide_models):
    """The dynamo export keeps its weights in `<model>.onnx.data`; the converter reads it
    relative to the model file (not the working directory), also after a move."""
    model, paths = wide_models
    src = paths["dynamo"]
    locs = {kv.value for init in onnx.load(src, load_external_data=False).graph.initializer
            for kv in init.external_data if kv.key == "location"}
    assert locs == {os.path.basename(src) + ".data"}, locs
    d = tmp_path / "moved"
    d.mkdir()
    new = d / "net.onnx"
    new.write_bytes(open(src, "rb").read())
    (d / locs.pop()).write_bytes(open(src + ".data", "rb").read())
    res = convert(str(new), str(d / "net.bnn"), check=True, check_samples=1)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x).numpy()
    assert_close(fp.load(res.path, num_threads=1).run(x.numpy()), ref, "moved external data")
    # missing external data: a ConvertError, nothing written
    os.remove(str(d / (os.path.basename(src) + ".data")))
    with pytest.raises(ConvertError):
        convert(str(new), str(d / "net2.bnn"))
    assert not (d / "net2.bnn").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "firmware_py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_convert(tmp_path, wide_models):
    _, paths = wide_models
    out = tmp_path / "cli.bnn"
    p = _cli("convert", paths["torchscript"], str(out), "--check", "--report")
    assert p.returncode == 0, p.stderr
    assert out.exists()
    header = p.stdout.splitlines()[0].split()
    assert header[:2] == ["layer", "op"] and "MACs" in header, p.stdout
    assert "binary" in p.stdout and "model file" in p.stdout and "source ONNX" in p.stdout, p.stdout
    assert "check:" in p.stdout, p.stdout

    bad = export(TanhNet().eval(), torch.rand(1, 3, 6, 6), tmp_path / "bad.onnx", "torchscript")
    p = _cli("convert", bad, str(tmp_path / "bad.bnn"))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "error:" in p.stderr and "Tanh" in p.stderr, p.stderr
    assert not (tmp_path / "bad.bnn").exists()


class FloatOpsNet(nn.Module):
    """The float layers a BNN keeps around its binary core: every float op of the
    converter's list in one graph."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.prelu = nn.PReLU(8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.head = nn.Parameter(torch.randn(8 * 5 * 5, 5) * 0.1)

    def forward(self, x):
        x = self.prelu(self.c1(x))
        x = F.leaky_relu(x, 0.2)
        x = F.hardtanh(x * 2.0 - 0.5)
        x = F.pad(x, (1, 0, 1, 0))                      # Pad -> pad
        x = F.avg_pool2d(x, 2, 2, padding=1, count_include_pad=False)
        x = torch.sigmoid(self.c2(x)) / 3.0
        x = F.relu(x + 0.1) + x
        x = x.flatten(1)
        return x @ self.head                            # MatMul


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_float_ops(tmp_path, exporter):
    torch.manual_seed(3)
    res = roundtrip(FloatOpsNet(), (1, 3, 7, 7), tmp_path, exporter)
    got = set(ops(res))
    assert {"fconv2d", "prelu", "leaky_relu", "clip", "pad", "avgpool2d", "sigmoid", "relu", "add",
            "flatten", "dense"} <= got, got
    assert not got & {"bconv2d", "bitpack"}
