"""convert/layout.py on small graphs in the shapes tf2onnx writes (each checked against
onnxruntime): Transpose pairs around larq's quantiser and a one-padding Pad, layout-only
Reshapes, a Transpose before the flatten into a dense layer, NHWC graph inputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import firmware_py
from firmware_py.convert import ConvertError, convert

RNG = np.random.default_rng(7)


def model(nodes, inputs, output, inits):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run_both(m, x, tmp_path, **kw):
    res = convert(m, tmp_path / "m.bnn", **kw)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {m.graph.input[0].name: x})[0]
    with firmware_py.load(res.path, num_threads=1) as fm:
        got = fm.run(x)
    return res, ref, got


def quantiser_block(pad_value, c=16, o=24):
    """BN -> Transpose(NHWC) -> Sign(Sign(x) + 0.1) -> Pad(pad_value) -> Transpose(NCHW) ->
    binary Conv -> BN -> Relu, as tf2onnx exports a larq QuantConv2D"""
    w = np.where(RNG.random((o, c, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32) * \
        RNG.uniform(0.5, 1, (o, 1, 1, 1)).astype(np.float32)
    bn = [RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.3, c), RNG.normal(0, 0.3, c), RNG.uniform(0.5, 2, c)]
    inits = {"g": bn[0], "b": bn[1], "m": bn[2], "v": bn[3], "w": w, "c": np.float32(0.1),
             "pads": np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64), "pv": np.float32(pad_value)}
    inits = {k: np.asarray(v, np.float32) if k != "pads" else v for k, v in inits.items()}
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn"]),
             helper.make_node("Transpose", ["bn"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("Sign", ["t1"], ["s1"]),
             helper.make_node("Add", ["s1", "c"], ["a"]),
             helper.make_node("Sign", ["a"], ["s2"]),
             helper.make_node("Pad", ["s2", "pads", "pv"], ["p"]),
             helper.make_node("Transpose", ["p"], ["t2"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t2", "w"], ["y"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["y"], ["out"])]
    return model(nodes, [("x", [1, c, 10, 12])], "out", inits)


@pytest.mark.parametrize("pad_value,mode", [(1.0, "one"), (0.0, "zero")])
def test_quantiser_transposes_and_pad_become_binary_conv_padding(tmp_path, pad_value, mode):
    m = quantiser_block(pad_value)
    x = RNG.normal(0, 1, (1, 16, 10, 12)).astype(np.float32)
    res, ref, got = run_both(m, x, tmp_path)
    ops = [n["op"] for n in res.graph["nodes"]]
    assert "pad" not in ops and "bconv2d" in ops, ops
    conv = next(n for n in res.graph["nodes"] if n["op"] == "bconv2d")
    assert conv["attrs"]["pad_mode"] == mode and conv["attrs"]["pads"] == [1, 1, 1, 1]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_pad_of_minus_one_stays_float_and_equal(tmp_path):
    m = quantiser_block(-1.0)
    x = RNG.normal(0, 1, (1, 16, 10, 12)).astype(np.float32)
    res, ref, got = run_both(m, x, tmp_path)
    assert "pad" in [n["op"] for n in res.graph["nodes"]]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_transpose_before_flatten_into_gemm_permutes_the_weights(tmp_path):
    w = RNG.normal(0, 1, (4 * 3 * 5, 7)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["out"])]
    m = model(nodes, [("x", [1, 4, 3, 5])], "out", {"w": w, "shape": np.array([-1, 60], np.int64)})
    x = RNG.normal(0, 1, (1, 4, 3, 5)).astype(np.float32)
    res, ref, got = run_both(m, x, tmp_path)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_layout_only_reshape(tmp_path):
    """XNOR-Net's head: (1, C, 1, 1) -> (1, 1, 1, C) -> flatten -> MatMul"""
    w = RNG.normal(0, 1, (32, 5)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "s1"], ["t"]),
             helper.make_node("Reshape", ["t", "s2"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["out"])]
    m = model(nodes, [("x", [1, 32, 1, 1])], "out",
              {"w": w, "s1": np.array([1, 1, 1, 32], np.int64), "s2": np.array([1, 32], np.int64)})
    x = RNG.normal(0, 1, (1, 32, 1, 1)).astype(np.float32)
    _, ref, got = run_both(m, x, tmp_path)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def nhwc_model():
    w = RNG.normal(0, 1, (8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    return model(nodes, [("x", [1, 9, 11, 3])], "out", {"w": w})


@pytest.mark.parametrize("layout", ["auto", "NHWC"])
def test_nhwc_input(tmp_path, layout):
    x = RNG.normal(0, 1, (1, 9, 11, 3)).astype(np.float32)
    res, ref, got = run_both(nhwc_model(), x, tmp_path, input_layout=layout)
    assert res.graph["inputs"][0]["layout"] == "NHWC" and res.graph["inputs"][0]["shape"] == [1, 9, 11, 3]
    assert "Transpose" not in str([n["op"] for n in res.graph["nodes"]])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_input_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="unsupported operator Transpose"):
        convert(nhwc_model(), tmp_path / "m.bnn", input_layout="NCHW")
    with pytest.raises(ConvertError, match=r"^input 'x': --input-layout NHWC, but the graph does not read it"):
        convert(quantiser_block(1.0), tmp_path / "m.bnn", input_layout="NHWC")
    with pytest.raises(ConvertError, match="input_layout must be"):
        convert(nhwc_model(), tmp_path / "m.bnn", input_layout="HWC")


def test_batchnorm_through_transposes(tmp_path):
    """BatchNormalization over the channels between a Transpose pair that keeps them on
    axis 1 sinks; over another axis (per-row in NCHW, which the runtime has no op for) the
    Transpose stays and is refused"""
    bn = {k: RNG.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("g", "b", "m", "v")}
    for perm, back in (([0, 1, 3, 2], [0, 1, 3, 2]), ([0, 2, 3, 1], [0, 3, 1, 2])):
        nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=perm),
                 helper.make_node("BatchNormalization", ["t1", "g", "b", "m", "v"], ["bn"]),
                 helper.make_node("Transpose", ["bn"], ["t2"], perm=back),
                 helper.make_node("Relu", ["t2"], ["out"])]
        m = model(nodes, [("x", [1, 4, 4, 6])], "out", bn)
        x = RNG.normal(0, 1, (1, 4, 4, 6)).astype(np.float32)
        if perm[1] == 1:
            res, ref, got = run_both(m, x, tmp_path)
            assert "Transpose" not in str([n["op"] for n in res.graph["nodes"]])
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        else:
            with pytest.raises(ConvertError, match="unsupported operator Transpose"):
                convert(m, tmp_path / "m.bnn")
