"""Writes the fuzz seed corpora tests/fuzz/seeds/{loader,convert}/ (committed; rerun only to
regenerate them):

    python3 tests/fuzz/make_seeds.py            # needs numpy, onnx; torch for the ONNX seeds

loader: one mode byte (see fuzz_model_loader.py) + a .bnn file: two tiny synthetic
models that together use every op of docs/model-format.md (a few KB each, so mutations
land in the JSON), and the two smallest zoo models (models/zoo/fashion-mnist/xnor.bnn,
xnor_k.bnn, ~50 KB) as real converter output; and six generator inputs (mode 7 + 48
random bytes: fuzz_model_loader.generate builds a valid random model from them).
convert: small ONNX files -- torch exports (TorchScript exporter, opset 17) of tiny
binarized nets built from models/layers.py (xnor with K, bwn, a binary linear head, the
float ops) and a QONNX BipolarQuant graph built with onnx.helper (the zoo's ONNX files
are ~1 MB, too large to mutate usefully).
"""
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from firmware_py.model_format import write_model  # noqa: E402
from tests.refs import ref_pack  # noqa: E402

LOADER = os.path.join(HERE, "seeds", "loader")
CONVERT = os.path.join(HERE, "seeds", "convert")




class G:
    def __init__(self):
        self.values, self.nodes, self.tensors, self.inputs, self.outputs = [], [], {}, [], []
        self.v = {}

    def value(self, name, kind, shape):
        self.values.append({"name": name, "kind": kind, "shape": list(shape)})
        self.v[name] = (kind, list(shape))
        return name

    def input(self, name, shape):
        if len(shape) == 4:
            n, c, h, w = shape
            self.value(name, "float", [n, h, w, c])
            self.inputs.append({"name": name, "shape": list(shape), "layout": "NCHW"})
        else:
            self.value(name, "float", shape)
            self.inputs.append({"name": name, "shape": list(shape), "layout": "NC"})
        return name

    def output(self, name):
        s = self.v[name][1]
        if len(s) == 4:
            self.outputs.append({"name": name, "shape": [s[0], s[3], s[1], s[2]], "layout": "NCHW"})
        else:
            self.outputs.append({"name": name, "shape": s, "layout": "NC"})

    def node(self, op, ins, out, kind, shape, attrs=None, params=None):
        name = "n%d" % len(self.nodes)
        self.value(out, kind, shape)
        nd = {"op": op, "name": name, "inputs": list(ins), "outputs": [out]}
        if attrs:
            nd["attrs"] = attrs
        if params:
            nd["params"] = {}
            for k, a in params.items():
                self.tensors[name + "." + k] = a
                nd["params"][k] = name + "." + k
        self.nodes.append(nd)
        return out

    def write(self, path, metadata=None):
        graph = {"format": "bnn-graph", "producer": "tests/fuzz/make_seeds.py",
                 "metadata": metadata or {}, "inputs": self.inputs, "outputs": self.outputs,
                 "values": self.values, "nodes": self.nodes}
        write_model(path, graph, self.tensors)


def win(k, s, p):
    return {"kernel": [k, k], "stride": [s, s], "pads": list(p)}


def tiny_bnn(rng):
    """fconv2d -> bitpack -> bconv2d (bits, pad one, flip) -> bmaxpool2d -> bconv2d (float,
    K from xnor_scale) -> relu -> avgpool2d -> global_avgpool -> flatten -> dense."""
    g = G()
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x = g.input("x", [1, 3, 6, 6])
    f1 = g.node("fconv2d", [x], "f1", "float", [1, 6, 6, 8], win(3, 1, [1, 1, 1, 1]),
                {"weights": f32(8, 3, 3, 3), "bias": f32(8)})
    b1 = g.node("bitpack", [f1], "b1", "bits", [1, 6, 6, 8], {"threshold": 0.1})
    b2 = g.node("bconv2d", [b1], "b2", "bits", [1, 6, 6, 40],
                dict(win(3, 1, [1, 1, 1, 1]), output="bits", pad_mode="one"),
                {"weights": ref_pack(rng.random((40, 3, 3, 8)) < 0.5),
                 "threshold": rng.integers(-20, 20, 40).astype(np.int32),
                 "flip": (rng.random(40) < 0.3).astype(np.uint8)})
    b3 = g.node("bmaxpool2d", [b2], "b3", "bits", [1, 3, 3, 40], win(2, 2, [0, 0, 0, 0]))
    m1 = g.node("maxpool2d", [f1], "m1", "float", [1, 3, 3, 8], win(2, 2, [0, 0, 0, 0]))
    k = g.node("xnor_scale", [m1], "k", "float", [1, 3, 3], win(3, 1, [1, 1, 1, 1]))
    c1 = g.node("bconv2d", [b3, k], "c1", "float", [1, 3, 3, 16],
                dict(win(3, 1, [1, 1, 1, 1]), output="float"),
                {"weights": ref_pack(rng.random((16, 3, 3, 40)) < 0.5), "mul": f32(16), "add": f32(16)})
    r1 = g.node("relu", [c1], "r1", "float", [1, 3, 3, 16])
    a1 = g.node("avgpool2d", [r1], "a1", "float", [1, 4, 4, 16],
                dict(win(2, 1, [1, 1, 1, 1]), count_include_pad=0))
    g1 = g.node("global_avgpool", [a1], "g1", "float", [1, 1, 1, 16])
    fl = g.node("flatten", [g1], "fl", "float", [1, 16])
    out = g.node("dense", [fl], "logits", "float", [1, 5], None,
                 {"weights": f32(5, 16), "bias": f32(5)})
    g.output(out)
    return g


def tiny_ops(rng):
    """The element-wise, shape and 2-D ops; two inputs, three outputs (one bits)."""
    g = G()
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x = g.input("x", [1, 4, 5, 5])
    y = g.input("y", [1, 6])
    a = g.node("affine", [x], "a", "float", [1, 5, 5, 4], None, {"scale": f32(4), "bias": f32(4)})
    s = g.node("sigmoid", [a], "s", "float", [1, 5, 5, 4])
    lr = g.node("leaky_relu", [s], "l", "float", [1, 5, 5, 4], {"alpha": 0.1})
    p = g.node("prelu", [lr], "p", "float", [1, 5, 5, 4], None, {"slope": f32(4)})
    c = g.node("clip", [p], "c", "float", [1, 5, 5, 4], {"min": -1.0, "max": 1.0})
    ad = g.node("add", [c, x], "ad", "float", [1, 5, 5, 4])
    pd = g.node("pad", [ad], "pd", "float", [1, 6, 6, 4], {"pads": [1, 0, 0, 1], "value": 0.5})
    cc = g.node("concat", [pd, pd], "cc", "float", [1, 6, 6, 8], {"axis": 3})
    rs = g.node("resize_nearest", [cc], "rs", "float", [1, 12, 6, 8], {"scale": [2, 1]})
    bb = g.node("bitpack", [rs], "bb", "bits", [1, 12, 6, 8])
    rb = g.node("resize_nearest", [bb], "rb", "bits", [1, 12, 12, 8], {"scale": [1, 2]})
    u = g.node("unpack", [rb], "u", "float", [1, 12, 12, 8])
    fb = g.node("flatten", [rb], "fb", "bits", [1, 1152])
    bd = g.node("bdense", [fb], "bd", "float", [1, 3], None,
                {"weights": ref_pack(rng.random((3, 1152)) < 0.5), "mul": f32(3), "add": f32(3)})
    yb = g.node("bitpack", [y], "yb", "bits", [1, 6])
    yd = g.node("bdense", [yb], "yd", "float", [1, 3], None, {"weights": ref_pack(rng.random((3, 6)) < 0.5)})
    sm = g.node("add", [bd, yd], "sm", "float", [1, 3])
    cat = g.node("concat", [sm, y], "cat", "float", [1, 9], {"axis": 1})
    af = g.node("affine", [cat], "af", "float", [1, 9], None, {"scale": f32(9), "bias": f32(9)})
    fu = g.node("flatten", [bb], "fu", "float", [1, 576])
    ub = g.node("unpack", [yb], "ub", "float", [1, 6])
    g.node("clip", [fu], "fc", "float", [1, 576], {"max": 0.5})
    g.output(u)
    g.output(af)
    g.output(rb)
    g.output(ub)
    return g


def loader_seeds():
    os.makedirs(LOADER, exist_ok=True)
    rng = np.random.default_rng(0)
    tmp = os.path.join(LOADER, ".tmp.bnn")
    files = {}
    for name, make in (("tiny_bnn", tiny_bnn), ("tiny_ops", tiny_ops)):
        make(rng).write(tmp, {"class_names": ["a", "b"]})
        with open(tmp, "rb") as f:
            files[name] = f.read()
        os.unlink(tmp)
    for name in ("xnor", "xnor_k"):
        with open(os.path.join(ROOT, "models", "zoo", "fashion-mnist", name + ".bnn"), "rb") as f:
            files["zoo_" + name] = f.read()
    # mode bytes: 0x02 rebuild; 0x00 raw; 0x01 CRCs only; 0x3a rebuild + special inputs + file
    # + 2 threads; 0x42 / 0x82 the portable / avx2 path
    modes = {"tiny_bnn": (0x02, 0x00, 0x01, 0x3A, 0x42, 0x82), "tiny_ops": (0x02, 0x3A, 0x42),
             "zoo_xnor": (0x02,), "zoo_xnor_k": (0x02,)}
    for name, blob in files.items():
        for m in modes[name]:
            with open(os.path.join(LOADER, "%s-%02x" % (name, m)), "wb") as f:
                f.write(bytes([m]) + blob)
    # generator inputs (mode 7: the bytes drive fuzz_model_loader.generate)
    for i in range(6):
        m = 0x07 | (i % 4) << 6
        with open(os.path.join(LOADER, "gen%d-%02x" % (i, m)), "wb") as f:
            f.write(bytes([m]) + rng.integers(0, 256, 48, dtype=np.uint8).tobytes())


def convert_seeds():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(CONVERT, exist_ok=True)
    rng = np.random.default_rng(1)
    # QONNX BipolarQuant graph (no torch needed)
    c0, c1, c2 = 3, 8, 4
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (f32(c1, c0, 3, 3), "w1"), (f32(c2, c1, 3, 3), "w2"), (f32(c2), "b2"),
        (f32(c1), "gamma"), (f32(c1), "beta"), (f32(c1), "mean"),
        (np.abs(f32(c1)) + 0.5, "var"), (np.array(0.5, np.float32), "sa"),
        (np.array(0.25, np.float32), "sw1"), (np.array(2.0, np.float32), "sw2")]]
    q = "qonnx.custom_op.general"
    nodes = [
        helper.make_node("BipolarQuant", ["x", "sa"], ["xq"], name="quant_x", domain=q),
        helper.make_node("BipolarQuant", ["w1", "sw1"], ["w1q"], name="quant_w1", domain=q),
        helper.make_node("Conv", ["xq", "w1q"], ["y1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y1", "gamma", "beta", "mean", "var"], ["z1"], name="bn1"),
        helper.make_node("BipolarQuant", ["z1", "sa"], ["z1q"], name="quant_z1", domain=q),
        helper.make_node("BipolarQuant", ["w2", "sw2"], ["w2q"], name="quant_w2", domain=q),
        helper.make_node("Conv", ["z1q", "w2q", "b2"], ["y"], name="conv2", strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "qonnx_bnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(q, 1)])
    onnx.save(model, os.path.join(CONVERT, "qonnx.onnx"))

    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print("make_seeds: no torch, only the QONNX convert seed written", file=sys.stderr)
        return
    from models.layers import BinaryActivation, BinaryConv2d, BinaryLinear

    class TinyXnor(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(1, 8, 3, padding=1)
            self.b0 = nn.BatchNorm2d(8)
            self.act = BinaryActivation()
            self.c1 = BinaryConv2d(8, 8, 3, padding=1, scale_k=True)
            self.b1 = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.c2 = BinaryConv2d(8, 8, 3, padding=1)
            self.b2 = nn.BatchNorm2d(8)
            self.fc = BinaryLinear(8 * 3 * 3, 4)

        def forward(self, x):
            x = self.b0(self.c0(x))
            x = self.pool(self.b1(self.c1(x)))
            x = self.b2(self.c2(self.act(x)))
            return self.fc(torch.flatten(x, 1))

    class TinyBwnRes(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(2, 8, 3, padding=1)
            self.c1 = BinaryConv2d(8, 8, 3, padding=1, mode="bwn")
            self.c2 = BinaryConv2d(8, 8, 1, stride=2)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            x0 = self.c0(x)
            x = x0 + self.c1(x0)
            x = torch.cat([self.up(self.c2(x)), x0], 1)
            return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1))

    class TinyFloat(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.prelu = nn.PReLU(4)
            self.head = nn.Parameter(torch.randn(4 * 4 * 4, 3) * 0.1)

        def forward(self, x):
            x = self.prelu(self.c1(x))
            x = F.leaky_relu(x, 0.2)
            x = F.hardtanh(x * 2.0 - 0.5)
            x = F.pad(x, (1, 0, 1, 0))
            x = F.avg_pool2d(x, 2, 2, padding=1, count_include_pad=False)
            x = torch.sigmoid(x) / 3.0
            x = F.relu(x + 0.1) + x
            return x.flatten(1) @ self.head

    def trained_looking(net):  # BN statistics off their defaults: with a zero mean and a zero
        # beta, a binary layer's output is exactly 0 where its +-1 dot product is, and the
        # converter refuses a Sign of it (ONNX's Sign(0) = 0)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        return net

    torch.manual_seed(0)
    for name, net, shape in (("tiny_xnor", trained_looking(TinyXnor()), (1, 1, 6, 6)),
                             ("tiny_bwn_res", TinyBwnRes(), (1, 2, 4, 4)),
                             ("tiny_float", TinyFloat(), (1, 3, 5, 5))):
        net.eval()
        path = os.path.join(CONVERT, name + ".onnx")
        torch.onnx.export(net, (torch.rand(*shape),), path, dynamo=False, opset_version=17)


if __name__ == "__main__":
    loader_seeds()
    convert_seeds()
    for d in (LOADER, CONVERT):
        for f in sorted(os.listdir(d)):
            print("%8d  %s" % (os.path.getsize(os.path.join(d, f)), os.path.join(d, f)))
    shutil.rmtree(os.path.join(HERE, "__pycache__"), ignore_errors=True)
