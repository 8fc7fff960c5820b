"""The converter never converts silently wrong (issue 15): ONNX Sign(0) = 0 while the
runtime's bits hold two values.  PyTorch graphs with each source of exact zeros (Relu,
Clip(0, 6), MaxPool / Resize / Concat / Pad of such, a zero multiplier, a binary layer with
no bias) before a Sign, exported by both exporters: each converts and matches onnxruntime
(with --check, on by default), or is refused naming the Sign.  Also the binarisation
patterns of the BNN papers' reference code (straight-through estimator arithmetic,
Where(x >= 0, 1, -1), Sign(Sign(x) + c), Sign(x) * s) staying binary, and --check itself:
a wrong conversion fails layer by layer and leaves the destination as it was.
"""
import os

import pytest

import torch
import torch.nn as nn
import torch.nn.functional as F
import onnxruntime as ort

import firmware_py as fp
from firmware_py.convert import ConvertError, convert
from test_convert import EXPORTERS, assert_close, export, nodes_of, randomize_bn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


def binary_weight(w):
    """+-alpha per output filter, as a binarised layer exports (folded constants)"""
    alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    return torch.where(w >= 0, 1.0, -1.0) * alpha


class ZeroThenSign(nn.Module):
    """float stem (conv, BN) -> a source of exact zeros -> Sign -> binary 3x3 conv (padding 1)
    -> BN -> binary 1x1 conv"""

    def __init__(self, source, c=24):
        super().__init__()
        self.source = source
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.w1 = nn.Parameter(torch.randn(c, c * (2 if source.startswith("concat") else 1), 3, 3))
        self.bn1 = nn.BatchNorm2d(c)
        self.w2 = nn.Parameter(torch.randn(10, c, 1, 1))

    def forward(self, x):
        y = self.bn0(self.stem(x))
        s = self.source
        if s == "relu":
            y = F.relu(y)
        elif s == "relu6":
            y = torch.clamp(y, 0.0, 6.0)
        elif s == "maxpool":
            y = F.max_pool2d(F.relu(y), 2)
        elif s == "resize":
            y = F.interpolate(F.relu(y), scale_factor=2, mode="nearest")
        elif s == "concat":
            y = torch.cat([F.relu(y), F.relu(-y)], 1)
        elif s == "pad":
            y = F.pad(F.relu(y), (1, 1, 1, 1))
        elif s == "pad_signed":  # zero padding of a float that is negative too: {-1, 0, 1}
            y = F.pad(y, (1, 1, 1, 1))
        elif s == "concat_signed":
            y = torch.cat([F.relu(y), y], 1)
        elif s == "zero_gain":  # a per-channel multiplier with a 0
            g = torch.ones(1, y.shape[1], 1, 1)
            g[0, 3] = 0.0
            y = y * g
        b = torch.sign(y)
        z = self.bn1(F.conv2d(b, binary_weight(self.w1), padding=1))
        return F.conv2d(torch.sign(z), binary_weight(self.w2))


def _ort(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


# both exporters where their graphs differ, TorchScript elsewhere (the dynamo exporter is slow)
@pytest.mark.parametrize("source,exporter", [("relu", e) for e in EXPORTERS] + [("relu6", e) for e in EXPORTERS] + [
    (s, "torchscript") for s in ("maxpool", "resize", "concat", "pad")])
def test_sign_of_nonnegative_zeros_is_exact(tmp_path, exporter, source):
    """Sign of a tensor that is >= 0 with exact zeros is {0, 1}: packed with +1 for 0, the
    next binary convolution pads with +1 (= 0) and corrects its output transform; matches
    onnxruntime and the float model, and that convolution stays binary."""
    torch.manual_seed(1)
    model = randomize_bn(ZeroThenSign(source))
    x = torch.rand(1, 3, 12, 12) * 2 - 1
    src = export(model, x, tmp_path / "m.onnx", exporter)
    dst = str(tmp_path / "m.bnn")
    res = convert(src, dst)  # --check is on by default
    assert res.check["ok"] and res.check["layers"] > 2, res.check
    convs = nodes_of(res, "bconv2d")
    assert len(convs) == 2 and convs[0]["attrs"]["pad_mode"] == "one", [c["attrs"] for c in convs]
    m = fp.load(dst, num_threads=1)
    for seed in range(3):
        xi = (torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(seed)) * 2 - 1).numpy()
        ref = _ort(src, xi)
        assert (ref != 0).any()
        assert_close(m.run(xi), ref, source)
        with torch.no_grad():
            assert_close(m.run(xi), model(torch.from_numpy(xi)).numpy(), source + " vs torch")


@pytest.mark.parametrize("source,why,exporter", [("pad_signed", "Pad", e) for e in EXPORTERS] + [
    ("concat_signed", "Concat", "torchscript"), ("zero_gain", "multiplies by 0", "torchscript")])
def test_sign_of_signed_zeros_is_refused(tmp_path, exporter, source, why):
    torch.manual_seed(1)
    model = randomize_bn(ZeroThenSign(source))
    src = export(model, torch.rand(1, 3, 12, 12), tmp_path / "m.onnx", exporter)
    dst = tmp_path / "m.bnn"
    dst.write_bytes(b"an older model")
    with pytest.raises(ConvertError) as e:
        convert(src, str(dst))
    msg = str(e.value)
    assert msg.startswith("Sign node ") and "exactly 0" in msg and why in msg, msg
    assert dst.read_bytes() == b"an older model"


class BinaryNoBias(nn.Module):
    """Sign -> binary conv without bias (its +-1 dot product can be 0) -> Sign -> conv"""

    def __init__(self, c=8):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(c, c, 1, 1))
        self.w2 = nn.Parameter(torch.randn(4, c, 1, 1))

    def forward(self, x):
        y = F.conv2d(torch.sign(x - 0.5), binary_weight(self.w1))
        return F.conv2d(torch.sign(y), binary_weight(self.w2))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_sign_of_a_binary_layer_that_can_be_zero_is_refused(tmp_path, exporter):
    src = export(BinaryNoBias().eval(), torch.rand(1, 8, 4, 4), tmp_path / "m.onnx", exporter)
    with pytest.raises(ConvertError, match=r"^Sign node .* exactly 0 when the \+-1 dot product"):
        convert(src, str(tmp_path / "m.bnn"))
    assert not os.path.exists(tmp_path / "m.bnn")


class Patterns(nn.Module):
    """binarisations as the BNN papers' reference code writes them, each feeding a binary
    conv: the STE arithmetic (XNOR-Net++/ReActNet style, and Bi-Real's polynomial surrogate),
    Where(x >= 0, 1, -1), Sign(Sign(x) + c), Sign(x) * 1, Sign(x) * s"""

    def __init__(self, kind, c=16):
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.w1 = nn.Parameter(torch.randn(c, c, 3, 3))
        self.bn1 = nn.BatchNorm2d(c)

    def binarize(self, x):
        k = self.kind
        if k == "ste_clip":
            return torch.sign(x).detach() - F.hardtanh(x).detach() + F.hardtanh(x)
        if k == "ste_bireal":  # Bi-Real Net's ApproxSign surrogate (x * x: no runtime op)
            m1 = (x < -1).float()
            m2 = (x < 0).float()
            m3 = (x < 1).float()
            out = -1 * m1 + (x * x + 2 * x) * (1 - m1)
            out = out * m2 + (-x * x + 2 * x) * (1 - m2)
            out = out * m3 + 1 * (1 - m3)
            return torch.sign(x).detach() - out.detach() + out
        if k == "where":
            return torch.where(x >= 0, 1.0, -1.0)
        if k == "sign_sign":
            return torch.sign(torch.sign(x) + 0.5)
        if k == "times_one":
            return torch.sign(x) * 1.0
        if k == "scaled":
            return torch.sign(x) * 0.75
        raise ValueError(k)

    def forward(self, x):
        b = self.binarize(self.bn0(self.stem(x)))
        return self.bn1(F.conv2d(b, binary_weight(self.w1), padding=1))


@pytest.mark.parametrize("kind,exporter", [(k, e) for k in ("ste_clip", "where") for e in EXPORTERS] + [
    (k, "torchscript") for k in ("ste_bireal", "sign_sign", "times_one", "scaled")])
def test_binarisation_patterns_stay_binary(tmp_path, exporter, kind):
    torch.manual_seed(2)
    model = randomize_bn(Patterns(kind))
    x = torch.rand(1, 3, 10, 10)
    src = export(model, x, tmp_path / "m.onnx", exporter)
    dst = str(tmp_path / "m.bnn")
    res = convert(src, dst)
    assert res.check["ok"], res.check
    assert [n["op"] for n in res.graph["nodes"]].count("bconv2d") == 1 and not res.float_reasons, res.report()
    m = fp.load(dst, num_threads=1)
    for seed in range(2):
        xi = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            assert_close(m.run(xi.numpy()), model(xi).numpy(), kind)


def test_check_catches_a_wrong_layer_and_leaves_the_destination(tmp_path, monkeypatch):
    """a deliberately wrong lowering (Relu dropped): --check fails naming the first layer that
    disagrees; the old file at the destination is untouched; --no-check writes it"""
    from firmware_py.convert import lower

    torch.manual_seed(1)
    model = randomize_bn(ZeroThenSign("maxpool"))
    src = export(model, torch.rand(1, 3, 12, 12), tmp_path / "m.onnx", "torchscript")
    dst = tmp_path / "m.bnn"
    dst.write_bytes(b"an older model")
    monkeypatch.setattr(lower.Lowering, "op_Relu", lambda self, node: self.rep(node.inputs[0], node))
    with pytest.raises(ConvertError, match=r"--check failed, nothing was written: .*layer by layer: '.*' "
                                           r"\(.*\) disagrees with onnxruntime"):
        convert(src, str(dst))
    assert dst.read_bytes() == b"an older model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx", "m.bnn"] or sorted(
        p.name for p in tmp_path.iterdir()) == ["m.bnn", "m.onnx"]
    res = convert(src, str(dst), check=False)
    assert res.check is None and dst.read_bytes() != b"an older model"


def test_cli_check_by_default_and_report_reasons(tmp_path, capsys):
    """the plain command checks; --no-check does not; --report names the float layer with
    binary weights and why"""
    from firmware_py.__main__ import main

    class BinaryStem(nn.Module):  # binary weights on the float image: stays float, with a reason
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, binary_weight(self.w))

    src = export(BinaryStem().eval(), torch.rand(1, 3, 8, 8), tmp_path / "m.onnx", "torchscript")
    assert main(["convert", src, str(tmp_path / "a.bnn")]) == 0
    out = capsys.readouterr().out
    assert "check: " in out and "layer by layer: 1 layers agree" in out, out
    assert main(["convert", src, str(tmp_path / "b.bnn"), "--no-check", "--report"]) == 0
    out = capsys.readouterr().out
    assert "check:" not in out, out
    assert "float although its weights are binary: " in out and "its input is not binary (a graph input)" in out, out
