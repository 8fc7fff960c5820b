"""QONNX intake (issue 15): Brevitas' own BNN-PYNQ networks (brevitas_examples.bnn_pynq:
TFC, SFC, LFC and CNV, w1a1) with random weights and trained-looking BatchNorm / TensorNorm
statistics, exported with both exporters (brevitas.export.export_qonnx, TorchScript and
dynamo), as exported and after qonnx.util.cleanup; each converts with the plain call (--check
on: the QONNX oracle, layer by layer), matches Brevitas' own eval output (max |diff| <= 1e-3
max|out|, same argmax) and keeps its binary layers binary.  Also QONNX Quant's semantics
(every rounding mode, signed / narrow, per-channel scale and zero point): the converter's
runtime op and the oracle's standard-ONNX lowering against qonnx's own executor.
"""
import numpy as np
import pytest

import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import firmware_py as fp
from firmware_py.convert import convert
from firmware_py.convert.qonnx import to_standard_onnx

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")
QONNX = "qonnx.custom_op.general"


def randomize_norms(model, seed=0):
    """random non-trivial running statistics and affine parameters for every BatchNorm and
    BNN-PYNQ's TensorNorm; eval mode"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) or type(mod).__name__ == "TensorNorm":
                shape = mod.running_mean.shape
                mod.running_mean.copy_(torch.randn(shape, generator=g) * 2)
                mod.running_var.copy_(torch.rand(shape, generator=g) * 3 + 0.5)
                mod.weight.copy_(torch.randn(shape, generator=g))
                mod.bias.copy_(torch.randn(shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["tfc_1w1a", "sfc_1w1a", "lfc_1w1a", "cnv_1w1a"])
def test_brevitas_bnn_pynq(tmp_path, name, exporter):
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    from qonnx.util.cleanup import cleanup

    torch.manual_seed(0)
    model = randomize_norms(model_with_cfg(name, False)[0])
    shape = (1, 3, 32, 32) if name.startswith("cnv") else (1, 1, 28, 28)
    x = torch.rand((6,) + shape[1:])
    with torch.no_grad():
        ref = model(x).numpy()
    raw = str(tmp_path / "raw.onnx")
    export_qonnx(model, x[:1], raw, dynamo=exporter == "dynamo")
    clean = str(tmp_path / "clean.onnx")
    cleanup(raw, out_file=clean)
    for src in (raw, clean):
        dst = src[:-5] + ".bnn"
        res = convert(src, dst)  # the plain call: --check is on
        assert res.check["ok"] and res.check["layers"] >= 8, res.check
        m = fp.load(dst, num_threads=1)
        got = np.concatenate([m.run(x[i:i + 1].numpy()) for i in range(len(x))])
        err = float(np.abs(got - ref).max())
        assert err <= 1e-3 * float(np.abs(ref).max()), "%s: max |diff| %.3g, max|ref| %.3g" % (
            src, err, np.abs(ref).max())
        assert (got.argmax(1) == ref.argmax(1)).all()
        ops = [n["op"] for n in res.graph["nodes"]]
        dense = ops.count("bdense")
        if name.startswith("cnv"):  # the 8-bit input layer is float, with its reason; the rest binary
            assert ops.count("bconv2d") == 5 and dense == 3 and ops.count("fconv2d") == 1, ops
            assert len(res.float_reasons) == 1, res.float_reasons
            assert "Quant node" in list(res.float_reasons.values())[0], res.float_reasons
            assert ops.count("quant") == 1
        else:
            assert dense == 4 and "dense" not in ops and not res.float_reasons, (ops, res.float_reasons)


def test_deep_net_differs_end_to_end_but_every_layer_agrees(tmp_path):
    """CNV with untrained BatchNorm statistics (mean 0, var 1): a BN output near 0 rounds to
    either side in onnxruntime's float first layer and in the runtime's, and the exact ties of
    every later layer magnify the flip -- the end-to-end outputs differ, each layer on
    onnxruntime's own input agrees, so the conversion passes"""
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model = model_with_cfg("cnv_1w1a", False)[0].eval()
    src = str(tmp_path / "cnv.onnx")
    export_qonnx(model, torch.rand(1, 3, 32, 32), src, dynamo=False)
    res = convert(src, str(tmp_path / "cnv.bnn"))
    assert res.check["ok"] and res.check["layers"] == 17, res.check
    assert res.check["mismatched"] > 0, res.check  # end to end they do differ


ROUNDINGS = ["ROUND", "HALF_EVEN", "FLOOR", "CEIL", "DOWN", "UP", "HALF_UP", "HALF_DOWN"]


def _quant_model(mode, bits, signed, narrow, scale, zeropt, c=4):
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for a, n in
             ((scale, "s"), (zeropt, "z"), (np.float32(bits), "b"))]
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="q", domain=QONNX,
                            rounding_mode=mode, signed=int(signed), narrow=int(narrow))
    g = helper.make_graph([node], "quant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 5, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)])


@pytest.mark.parametrize("mode", ROUNDINGS)
@pytest.mark.parametrize("bits,signed,narrow", [(8, True, False), (3, True, True), (4, False, False), (2, False, True)])
def test_quant_semantics_match_qonnx(tmp_path, mode, bits, signed, narrow):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    scale = np.array([0.25, 0.5, 0.125, 1.0], np.float32).reshape(1, 4, 1, 1)
    zeropt = np.array([0.0, 1.0, -2.0, 0.0], np.float32).reshape(1, 4, 1, 1) if not signed else np.float32(0)
    model = _quant_model(mode, bits, signed, narrow, scale, zeropt)
    rng = np.random.default_rng(bits)
    # halves (the rounding modes differ there), values beyond the range, random values
    x = np.concatenate([np.arange(-6, 6.5, 0.5), rng.uniform(-8, 8, 100 - 25)]).astype(np.float32)
    x = x.reshape(1, 4, 5, 5) * scale
    want = execute_onnx(ModelWrapper(model), {"x": x})["y"]
    oracle = ort.InferenceSession(to_standard_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(oracle.run(None, {"x": x})[0], want)
    src = str(tmp_path / "q.onnx")
    onnx.save(model, src)
    res = convert(src, str(tmp_path / "q.bnn"))
    assert [n["op"] for n in res.graph["nodes"]] == ["quant"]
    np.testing.assert_array_equal(fp.load(str(tmp_path / "q.bnn")).run(x), want)


def test_bipolar_quant_per_channel_weight_scale(tmp_path):
    """BipolarQuant with a per-output-channel weight scale (40, 1, 1, 1) is the runtime's
    per-filter alpha: the convolution stays binary"""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 16, 3, 3)).astype(np.float32)
    ws = rng.uniform(0.1, 2.0, (40, 1, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (ws, "ws"), (np.float32(1.0), "one"))]
    nodes = [helper.make_node("BipolarQuant", ["x", "one"], ["xq"], domain=QONNX),
             helper.make_node("BipolarQuant", ["w", "ws"], ["wq"], domain=QONNX),
             helper.make_node("Conv", ["xq", "wq"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])]
    g = helper.make_graph(nodes, "pc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)])
    src = str(tmp_path / "pc.onnx")
    onnx.save(model, src)
    res = convert(src, str(tmp_path / "pc.bnn"))
    assert res.check["ok"] and [n["op"] for n in res.graph["nodes"]] == ["bitpack", "bconv2d"], res.report()


@pytest.mark.parametrize("attrs,scale,error", [({"min": 5, "max": -5}, 1.0, "attrs.min 5 is above attrs.max -5"),
                                               ({"min": -8, "max": 7}, 0.0, "scale must be finite and non-zero"),
                                               ({"min": -8, "max": 7, "rounding": "NEAREST"}, 1.0, "attrs.rounding")])
def test_quant_op_refuses_bad_parameters(tmp_path, attrs, scale, error):
    """the model file's quant node: checked by the loader (a hand-written file, not the converter)"""
    from firmware_py.model_format import ModelFormatError, write_model

    g = {"format": "bnn-graph", "producer": "test", "metadata": {},
         "inputs": [{"name": "x", "shape": [1, 4], "layout": "NC"}],
         "outputs": [{"name": "y", "shape": [1, 4], "layout": "NC"}],
         "values": [{"name": "x", "kind": "float", "shape": [1, 4]}, {"name": "y", "kind": "float", "shape": [1, 4]}],
         "nodes": [{"op": "quant", "name": "q", "inputs": ["x"], "outputs": ["y"], "attrs": attrs,
                    "params": {"scale": "s", "zero_point": "z"}}]}
    t = {"s": np.full(4, scale, np.float32), "z": np.zeros(4, np.float32)}
    with pytest.raises((ModelFormatError, ValueError), match=error):
        write_model(str(tmp_path / "q.bnn"), g, t)
        fp.load(str(tmp_path / "q.bnn"))
