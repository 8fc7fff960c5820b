"""larq-zoo models as a user exports them (tf2onnx, opset 17, inputs_as_nchw), converted
with the plain ``convert`` and compared with Keras -- at least as closely as Larq Compute
Engine's own conversion of the same Keras model.

The fixtures (tests/larq/NAME.fixture.npz) are made by models/larq/export.py in the
TensorFlow venv (models/larq/tf_venv.sh) with random weights and calibrated BatchNorm
statistics; they hold the ONNX export (binary kernels as sign bits, lossless), fixed
inputs, Keras' outputs and LCE's outputs on them.  Neither TensorFlow nor LCE runs here.

Each difference from Keras is traced layer by layer: the fixture holds the signs of the
input of every larq quantiser in Keras, and ours are compared with them.  A flip may start
only where the float value (onnxruntime running the ONNX graph) is within rounding of zero;
later flips are its consequences.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import firmware_py
from firmware_py.convert import convert
from firmware_py.convert.report import layer_rows
from models.larq.fixture import unpack_onnx

FIXTURES = Path(__file__).parent / "larq"
MODELS = ["QuickNetSmall", "QuickNet", "BinaryDenseNet28", "BiRealNet", "XNORNet"]
NEAR_TIE = 0.02     # top-2 probabilities closer than this: no top-1 verdict
NEAR_ZERO = 1e-4    # |x| / max|x| of a quantiser input that float rounding can flip


def stats(got, ref):
    """mean / max |diff|, correlation, top-1 agreement except near-ties"""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) >= NEAR_TIE
    agree = got.argmax(1) == ref.argmax(1)
    d = np.abs(got - ref)
    return {"mean": float(d.mean()), "max": float(d.max()),
            "corr": float(np.corrcoef(got.ravel(), ref.ravel())[0, 1]),
            "top1": int(agree[decided].sum()), "decided": int(decided.sum())}


@pytest.fixture(scope="module", params=MODELS)
def larq(request, tmp_path_factory):
    name = request.param
    with np.load(FIXTURES / (name + ".fixture.npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k in ("x", "keras", "lce", "lce_indirect") or k.startswith("sign.")}
    onnx_model = unpack_onnx(FIXTURES / (name + ".fixture.npz"))
    dst = tmp_path_factory.mktemp("larq") / (name + ".bnn")
    result = convert(onnx_model, dst)  # the plain command: no pre-pass, no option
    return name, onnx_model, result, arrays


def test_converts_mostly_binary(larq):
    name, _, result, _ = larq
    rows = layer_rows(result.graph, result.tensors)
    binary = sum(r["macs"] for r in rows if r["op"] in ("bconv2d", "bdense"))
    total = binary + sum(r["macs"] for r in rows if r["op"] in ("fconv2d", "dense"))
    assert binary / total >= 0.90, (name, binary, total)
    assert not [n for n in result.graph["nodes"] if n["op"] == "pad"], "a Pad before a binary conv stayed float"


def test_matches_keras_at_least_as_closely_as_lce(larq):
    name, _, result, a = larq
    with firmware_py.load(result.path, num_threads=1) as model:
        ours = np.stack([model.run(a["x"][i:i + 1])[0] for i in range(len(a["x"]))])
    s_ours, s_lce = stats(ours, a["keras"]), stats(a["lce"], a["keras"])
    print("%s: ours %s\n%s: LCE  %s" % (name, s_ours, name, s_lce))
    assert s_ours["mean"] <= s_lce["mean"] + 1e-7 and s_ours["max"] <= s_lce["max"] + 1e-7, (s_ours, s_lce)
    assert s_ours["corr"] >= s_lce["corr"] - 1e-6, (s_ours, s_lce)
    assert s_ours["top1"] >= s_lce["top1"], (s_ours, s_lce)


def quantisers(model):
    """[(Keras layer, value)]: the NCHW value each larq input quantiser binarises (the input
    of a Sign, back through the layout Transposes / Reshapes tf2onnx put before it), in
    graph order"""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, found = set(), []
    for n in model.graph.node:
        if n.op_type != "Sign" or n.input[0] in seen:
            continue
        p = producer.get(n.input[0])
        if p is not None and p.op_type == "Add" and producer.get(p.input[0]) is not None \
                and producer[p.input[0]].op_type == "Sign":
            continue  # the outer Sign of larq's Sign(Sign(x) + c)
        v = n.input[0]
        while v in producer and producer[v].op_type in ("Transpose", "Reshape"):  # layout only
            v = producer[v].input[0]
        seen.add(n.input[0])
        found.append((n.output[0].split("/")[1], v))  # tf2onnx names it model/layer/quantiser/Sign
    return found


def test_differences_are_sign_flips_near_zero(larq, tmp_path):
    """ours against Keras at every quantiser: where the signs of its input differ; a flip
    may start only where the float value (onnxruntime on the ONNX graph) is within rounding
    of zero, and a flip elsewhere only after flips upstream (its cause)"""
    import onnx
    import onnxruntime as ort

    name, onnx_model, _, a = larq
    probe = onnx.ModelProto()
    probe.CopyFrom(onnx_model)
    layers = quantisers(probe)
    # every Keras quantiser found in the ONNX graph, and nothing else
    assert sorted("sign." + k for k, _ in layers) == sorted(k for k in a if k.startswith("sign.")), layers
    for _, v in layers:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None))
    res = convert(probe, tmp_path / "probe.bnn")
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    n = len(a["x"])
    lines = []
    with firmware_py.load(res.path, num_threads=1) as model:
        for i in range(n):
            x = a["x"][i:i + 1]
            floats = sess.run(None, {probe.graph.input[0].name: x})[1:]
            ours = model.run(x)[1:]
            upstream = 0
            for (layer, _), f, g in zip(layers, floats, ours):
                keras_neg = np.unpackbits(a["sign." + layer], count=n * g.size).reshape(n, -1)[i].astype(bool)
                flips = (g.reshape(-1) < 0) != keras_neg
                near = np.abs(f.reshape(-1)) <= NEAR_ZERO * max(float(np.abs(f).max()), 1e-30)
                far = int((flips & ~near).sum())
                if flips.any():
                    lines.append("%s sample %d %-24s %6d of %7d signs flipped, %d not near zero%s"
                                 % (name, i, layer, flips.sum(), flips.size, far, "" if upstream else " (first)"))
                assert far == 0 or upstream, "\n".join(lines)
                upstream += int(flips.sum())
    print("\n".join(lines) or "%s: every sign equals Keras'" % name)
