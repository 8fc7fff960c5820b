"""Tests of firmware_py.model_format (docs/model-format.md): the round trip, and that every
kind of corruption -- truncation, header fields, checksums, JSON, tensors, values, nodes
-- is refused with a specific ModelFormatError and never another exception type.

No native library needed, except test_fuzzed_graphs_that_validate_also_load (skipped
without it).
"""
import copy
import json
import os
import random
import re
import struct
import zlib

import numpy as np
import pytest

from firmware_py.model_format import ModelFormatError, read_model, write_model
from tests.refs import ref_pack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HDR = struct.Struct("<8sHHIQQQQIIII")




def sample_model():
    """A small valid graph using most ops, and its tensors."""
    rng = np.random.default_rng(0)
    n, c, h, w = 1, 3, 8, 8
    same = {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1]}
    values = [
        {"name": "images", "kind": "float", "shape": [n, h, w, c]},
        {"name": "a0", "kind": "float", "shape": [n, h, w, 16]},
        {"name": "a1", "kind": "float", "shape": [n, h, w, 16]},
        {"name": "k1", "kind": "float", "shape": [n, h, w]},
        {"name": "b1", "kind": "bits", "shape": [n, h, w, 16]},
        {"name": "b2", "kind": "bits", "shape": [n, h, w, 40]},
        {"name": "b3", "kind": "bits", "shape": [n, 4, 4, 40]},
        {"name": "a4", "kind": "float", "shape": [n, 4, 4, 8]},
        {"name": "a5", "kind": "float", "shape": [n, 1, 1, 8]},
        {"name": "a6", "kind": "float", "shape": [n, 8]},
        {"name": "logits", "kind": "float", "shape": [n, 5]},
    ]
    nodes = [
        {"op": "fconv2d", "name": "conv0", "inputs": ["images"], "outputs": ["a0"], "attrs": same,
         "params": {"weights": "conv0.w", "bias": "conv0.b"}},
        {"op": "affine", "name": "bn0", "inputs": ["a0"], "outputs": ["a1"],
         "params": {"scale": "bn0.s", "bias": "bn0.b"}},
        {"op": "xnor_scale", "name": "k1", "inputs": ["a1"], "outputs": ["k1"], "attrs": same},
        {"op": "bitpack", "name": "sign1", "inputs": ["a1"], "outputs": ["b1"],
         "attrs": {"threshold": 0.0}},
        {"op": "bconv2d", "name": "conv1", "inputs": ["b1"], "outputs": ["b2"],
         "attrs": dict(same, pad_mode="zero", output="bits"),
         "params": {"weights": "conv1.w", "threshold": "conv1.t", "flip": "conv1.f"}},
        {"op": "bmaxpool2d", "name": "pool1", "inputs": ["b2"], "outputs": ["b3"],
         "attrs": {"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]}},
        {"op": "bconv2d", "name": "conv2", "inputs": ["b3"], "outputs": ["a4"],
         "attrs": dict(same, pad_mode="one", output="float"),
         "params": {"weights": "conv2.w", "mul": "conv2.m", "add": "conv2.a"}},
        {"op": "global_avgpool", "name": "gap", "inputs": ["a4"], "outputs": ["a5"]},
        {"op": "flatten", "name": "flat", "inputs": ["a5"], "outputs": ["a6"]},
        {"op": "dense", "name": "fc", "inputs": ["a6"], "outputs": ["logits"],
         "params": {"weights": "fc.w", "bias": "fc.b"}},
    ]
    tensors = {
        "conv0.w": rng.standard_normal((16, 3, 3, c)).astype(np.float32),
        "conv0.b": rng.standard_normal(16).astype(np.float32),
        "bn0.s": rng.standard_normal(16).astype(np.float32),
        "bn0.b": rng.standard_normal(16).astype(np.float32),
        "conv1.w": ref_pack(rng.random((40, 3, 3, 16)) < 0.5),
        "conv1.t": rng.integers(-5, 5, 40).astype(np.int32),
        "conv1.f": (rng.random(40) < 0.5).astype(np.uint8),
        "conv2.w": ref_pack(rng.random((8, 3, 3, 40)) < 0.5),
        "conv2.m": rng.random(8).astype(np.float32),
        "conv2.a": rng.random(8).astype(np.float32),
        "fc.w": rng.standard_normal((5, 8)).astype(np.float32),
        "fc.b": rng.standard_normal(5).astype(np.float32),
        "unused.i8": np.arange(-3, 4, dtype=np.int8),
    }
    graph = {
        "format": "bnn-graph", "producer": "test",
        "metadata": {"class_names": ["a", "b"], "source": "x.onnx", "n": 3, "nested": {"x": [1]}},
        "inputs": [{"name": "images", "shape": [n, c, h, w], "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": [n, 5], "layout": "NC"}],
        "values": values, "nodes": nodes,
    }
    return graph, tensors


def model_bytes(tmp_path):
    graph, tensors = sample_model()
    path = str(tmp_path / "m.bnn")
    write_model(path, graph, tensors)
    with open(path, "rb") as f:
        return f.read()


def split(data):
    """-> (header fields list, graph dict, data bytes)."""
    fields = list(HDR.unpack(data[:64]))
    go, gs, do = fields[4], fields[5], fields[6]
    return fields, json.loads(data[go:go + gs].decode()), data[do:]


def assemble(graph, data, text=None, fix_crc=True, **over):
    """Builds a file by hand (independent of write_model) from a graph dict (or raw JSON
    bytes in `text`) and the data section; header fields can be overridden."""
    gb = text if text is not None else json.dumps(graph, separators=(",", ":")).encode()
    do = (64 + len(gb) + 63) // 64 * 64
    f = dict(magic=b"BNNMODEL", major=1, minor=0, header_size=64, graph_offset=64,
             graph_size=len(gb), data_offset=do, data_size=len(data),
             graph_crc=zlib.crc32(gb), data_crc=zlib.crc32(data), reserved=0, header_crc=0)
    f.update(over)
    order = ["magic", "major", "minor", "header_size", "graph_offset", "graph_size", "data_offset",
             "data_size", "graph_crc", "data_crc", "reserved", "header_crc"]
    head = HDR.pack(*[f[k] for k in order])
    if fix_crc and "header_crc" not in over:
        head = head[:60] + struct.pack("<I", zlib.crc32(head[:60]))
    pad = bytes(max(0, do - 64 - len(gb)))
    return head + gb + pad + data


def expect_error(data, pattern):
    with pytest.raises(ModelFormatError, match=pattern):
        read_model(data)


# ---- round trip --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["mmap", "read", "bytes", "bytearray"])
def test_round_trip(tmp_path, how):
    graph, tensors = sample_model()
    path = str(tmp_path / "m.bnn")
    assert write_model(path, graph, tensors) == path
    assert [t["name"] for t in graph["tensors"]] == list(tensors)  # filled in place
    if how == "mmap":
        g2, t2 = read_model(path)
    elif how == "read":
        g2, t2 = read_model(path, mmap=False)
    else:
        raw = open(path, "rb").read()
        g2, t2 = read_model(raw if how == "bytes" else bytearray(raw))
    assert g2 == json.loads(json.dumps(graph))
    assert list(t2) == list(tensors)
    for name, a in tensors.items():
        b = t2[name]
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
        assert not b.flags.writeable
    for t in g2["tensors"]:
        assert t["offset"] % 64 == 0
    fields, _, _ = split(open(path, "rb").read())
    assert fields[6] % 64 == 0 and fields[1] == 1
    if how == "mmap":
        import mmap
        base = t2["conv0.w"]
        while isinstance(getattr(base, "base", None), np.ndarray):
            base = base.base
        base = base.base
        assert isinstance(base, (mmap.mmap, memoryview))
        if isinstance(base, memoryview):
            assert isinstance(base.obj, mmap.mmap)


def test_write_is_atomic_and_validates_first(tmp_path):
    graph, tensors = sample_model()
    path = tmp_path / "m.bnn"
    write_model(str(path), graph, tensors)
    before = path.read_bytes()
    bad = copy.deepcopy(graph)
    bad["nodes"][0]["op"] = "conv_unknown"
    with pytest.raises(ModelFormatError, match="unknown op 'conv_unknown'"):
        write_model(str(path), bad, tensors)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.bnn"]  # no temporary file left behind
    with pytest.raises(ModelFormatError, match="dtype float64"):
        write_model(str(path), graph, dict(tensors, **{"conv0.b": np.zeros(16)}))
    with pytest.raises(ModelFormatError, match="dtype bool"):
        write_model(str(path), graph, dict(tensors, extra=np.zeros(3, dtype=bool)))
    with pytest.raises(ModelFormatError, match="JSON"):
        write_model(str(path), dict(graph, metadata={"x": object()}), tensors)
    with pytest.raises(OSError):
        write_model(str(tmp_path / "missing" / "m.bnn"), graph, tensors)
    assert sorted(os.listdir(tmp_path)) == ["m.bnn"]
    assert path.read_bytes() == before


def test_write_converts_byte_order_and_layout(tmp_path):
    graph, tensors = sample_model()
    tensors["conv0.b"] = tensors["conv0.b"].astype(">f4")
    tensors["fc.w"] = np.asfortranarray(tensors["fc.w"])
    write_model(str(tmp_path / "m.bnn"), graph, tensors)
    _, t2 = read_model(str(tmp_path / "m.bnn"))
    np.testing.assert_array_equal(t2["conv0.b"], tensors["conv0.b"])
    np.testing.assert_array_equal(t2["fc.w"], tensors["fc.w"])


def test_minor_version_accepted_and_empty_tensors(tmp_path):
    data = model_bytes(tmp_path)
    _, g, d = split(data)
    read_model(assemble(g, d, minor=7))
    graph, tensors = sample_model()
    tensors["empty"] = np.zeros((0, 4), np.float32)
    write_model(str(tmp_path / "e.bnn"), graph, tensors)
    _, t2 = read_model(str(tmp_path / "e.bnn"))
    assert t2["empty"].shape == (0, 4)


# ---- container --------------------------------------------------------------------------------------------
def test_truncation_every_header_byte(tmp_path):
    data = model_bytes(tmp_path)
    for cut in range(64):
        expect_error(data[:cut], "too short for the header")
    p = tmp_path / "short.bnn"
    p.write_bytes(data[:10])
    with pytest.raises(ModelFormatError, match="too short"):
        read_model(str(p))
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="too short"):
        read_model(str(p))


def test_truncation_beyond_header(tmp_path):
    data = model_bytes(tmp_path)
    cuts = sorted(set(list(range(64, 200)) + list(range(200, len(data), 97)) + [len(data) - 1]))
    for cut in cuts:
        expect_error(data[:cut], "truncated|past the end")
    expect_error(data + b"\0", "file size mismatch")
    p = tmp_path / "cut.bnn"
    p.write_bytes(data[:len(data) - 5])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_model(str(p))


@pytest.mark.parametrize("field,value,pattern", [
    ("magic", b"BNNMODEX", "bad magic"),
    ("magic", b"\x89PNG\r\n\x1a\n", "bad magic"),
    ("major", 2, r"version 2\.0.*1\.x"),
    ("major", 0, "unsupported model format version 0"),
    ("header_size", 128, "header_size is 128"),
    ("reserved", 1, "reserved"),
    ("graph_offset", 0, "graph_offset is 0"),
    ("graph_offset", 2**64 - 1, "graph_offset"),
    ("graph_size", 0, "graph_size 0 is out of range"),
    ("graph_size", 16 * 1024 * 1024 + 1, "graph_size .* out of range"),
    ("graph_size", 2**64 - 1, "graph_size .* out of range"),
    ("data_offset", 65, "not a multiple of 64"),
    ("data_offset", 64, "inside the graph JSON"),
    ("data_offset", 2**64 - 64, "past the end"),
    ("data_size", 0, "file size mismatch"),
    ("data_size", 2**64 - 1, "file size mismatch"),
    ("graph_crc", 0, "graph CRC mismatch"),
    ("data_crc", 1, "data CRC mismatch"),
    ("header_crc", 0, "header CRC mismatch"),
])
def test_header_fields(tmp_path, field, value, pattern):
    data = model_bytes(tmp_path)
    _, g, d = split(data)
    expect_error(assemble(g, d, **{field: value}), pattern)


def test_crc_flips(tmp_path):
    data = model_bytes(tmp_path)
    fields = HDR.unpack(data[:64])
    go, gs, do = fields[4], fields[5], fields[6]

    def flipped(i):
        b = bytearray(data)
        b[i] ^= 0x01
        return bytes(b)

    for i in range(8):
        expect_error(flipped(i), "bad magic")
    expect_error(flipped(8), "unsupported model format version")
    for i in list(range(10, 60)) + list(range(60, 64)):
        expect_error(flipped(i), "header CRC mismatch")
    for i in range(go, go + gs, max(1, gs // 40)):
        expect_error(flipped(i), "graph CRC mismatch")
    if do > go + gs:
        expect_error(flipped(go + gs), "padding")
    for i in range(do, len(data), max(1, (len(data) - do) // 40)):
        expect_error(flipped(i), "data CRC mismatch")


@pytest.mark.parametrize("text,pattern", [
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"{\"format\": ", "not valid JSON"),
    (b"[1, 2, 3]", "must be an object, got list"),
    (b"\"x\"", "must be an object"),
    (b"{\"a\": 1, \"a\": 2}", "duplicate key"),
    (b"{\"a\": NaN}", "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|not valid JSON"),
    (b"{\"a\": " + b"9" * 5000 + b"}", "not valid JSON"),
    (b"{}", "missing required key 'format'"),
])
def test_bad_json(tmp_path, text, pattern):
    data = model_bytes(tmp_path)
    _, _, d = split(data)
    expect_error(assemble(None, d, text=text), pattern)


# ---- graph mutations --------------------------------------------------------------------------------------
def _node(g, name):
    return [n for n in g["nodes"] if n["name"] == name][0]


def _tensor(g, name):
    return [t for t in g["tensors"] if t["name"] == name][0]


def _value(g, name):
    return [v for v in g["values"] if v["name"] == name][0]


def _set(path, value):
    def f(g):
        obj = g
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return f


def _del(path):
    def f(g):
        obj = g
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]
    return f


def _nset(name, key, value):
    return lambda g: _node(g, name).__setitem__(key, value)


def _aset(name, key, value):
    return lambda g: _node(g, name).setdefault("attrs", {}).__setitem__(key, value)


def _adel(name, key):
    return lambda g: _node(g, name)["attrs"].pop(key)


def _pset(name, key, value):
    return lambda g: _node(g, name).setdefault("params", {}).__setitem__(key, value)


def _tset(name, key, value):
    return lambda g: _tensor(g, name).__setitem__(key, value)


def _vset(name, key, value):
    return lambda g: _value(g, name).__setitem__(key, value)


def _swap_nodes(i, j):
    def f(g):
        g["nodes"][i], g["nodes"][j] = g["nodes"][j], g["nodes"][i]
    return f


MUTATIONS = [
    # top level
    ("missing format", _del(["format"]), "missing required key 'format'"),
    ("missing nodes", _del(["nodes"]), "missing required key 'nodes'"),
    ("missing tensors", _del(["tensors"]), "missing required key 'tensors'"),
    ("missing values", _del(["values"]), "missing required key 'values'"),
    ("missing inputs", _del(["inputs"]), "missing required key 'inputs'"),
    ("unknown key", _set(["weights"], 1), r"unknown key\(s\) \['weights'\]"),
    ("format", _set(["format"], "onnx"), "'format' must be 'bnn-graph'"),
    ("producer type", _set(["producer"], 3), "'producer' must be a string"),
    ("metadata type", _set(["metadata"], [1]), "'metadata' must be an object"),
    ("nodes type", _set(["nodes"], {}), "'nodes' must be a list"),
    ("tensors type", _set(["tensors"], "x"), "'tensors' must be a list"),
    ("values type", _set(["values"], None), "'values' must be a list"),
    ("no inputs", _set(["inputs"], []), "'inputs' must be a non-empty list"),
    # tensors
    ("tensor out of bounds", _tset("fc.b", "offset", 1 << 20), "tensor 'fc.b'.*outside the data"),
    ("tensor misaligned", _tset("fc.b", "offset", 8), "tensor 'fc.b'.*not a multiple of 64"),
    ("tensor negative offset", _tset("fc.b", "offset", -64), "tensor 'fc.b'.*offset must be"),
    ("tensor overlap", _tset("fc.b", "offset", 0), "overlap"),
    ("tensor nbytes", _tset("fc.b", "nbytes", 24), r"tensor 'fc.b'.*nbytes 24 != product"),
    ("tensor nbytes type", _tset("fc.b", "nbytes", 20.0), "tensor 'fc.b'.*nbytes must be"),
    ("tensor dtype", _tset("fc.b", "dtype", "float64"), "tensor 'fc.b'.*dtype 'float64'"),
    ("tensor dtype object", _tset("fc.b", "dtype", "object"), "dtype 'object'"),
    ("tensor shape negative", _tset("fc.b", "shape", [-5]), "tensor 'fc.b'.*shape"),
    ("tensor shape bool", _tset("fc.b", "shape", [True]), "tensor 'fc.b'.*shape"),
    ("tensor shape huge", _tset("fc.b", "shape", [2**40, 2**40]), "tensor 'fc.b'.*shape"),
    ("tensor shape type", _tset("fc.b", "shape", "5"), "tensor 'fc.b'.*shape"),
    ("tensor missing key", lambda g: _tensor(g, "fc.b").pop("nbytes"), "missing required key 'nbytes'"),
    ("tensor extra key", _tset("fc.b", "strides", [4]), "unknown key"),
    ("tensor duplicate", lambda g: g["tensors"].append(dict(_tensor(g, "fc.b"))), "duplicate tensor"),
    ("tensor name", _tset("fc.b", "name", ""), "non-empty string"),
    # values
    ("value kind", _vset("a0", "kind", "int8"), "value 'a0'.*kind must be"),
    ("value shape 5-D", _vset("a0", "shape", [1, 1, 8, 8, 16]), "value 'a0'.*dimensions"),
    ("value shape 1-D", _vset("a0", "shape", [16]), "value 'a0'.*dimensions"),
    ("value shape zero", _vset("a0", "shape", [1, 8, 0, 16]), "value 'a0'.*positive"),
    ("value 3-D bits", _vset("k1", "kind", "bits"), "3-D value.*must be float"),
    ("value duplicate", lambda g: g["values"].append(dict(_value(g, "a0"))), "duplicate value"),
    ("value never written",
     lambda g: g["values"].append({"name": "ghost", "kind": "float", "shape": [1, 2]}),
     "value 'ghost' is never written"),
    # inputs / outputs
    ("input unknown", _set(["inputs", 0, "name"], "nope"), "not a value of the graph"),
    ("input shape", _set(["inputs", 0, "shape"], [1, 8, 8, 3]), r"inputs\[0\].*does not match"),
    ("input layout", _set(["inputs", 0, "layout"], "NWHC"), "layout must be 'NCHW', 'NHWC' or 'NC'"),
    ("input layout NHWC", _set(["inputs", 0, "layout"], "NHWC"), r"inputs\[0\].*does not match.*layout NHWC"),
    ("output layout", _set(["outputs", 0, "layout"], "NCHW"), "layout NCHW needs a 4-D value"),
    ("output shape", _set(["outputs", 0, "shape"], [1, 6]), r"outputs\[0\].*does not match"),
    ("input twice", lambda g: g["inputs"].append(dict(g["inputs"][0])), "listed twice"),
    ("input bits", lambda g: g["inputs"].append(
        {"name": "b1", "shape": [1, 16, 8, 8], "layout": "NCHW"}), "must be a float value|already written"),
    # nodes
    ("unknown op", _nset("gap", "op", "frobnicate"), "unknown op 'frobnicate'"),
    ("op type", _nset("gap", "op", 3), "unknown op 3"),
    ("node name", _nset("gap", "name", ""), "'name' must be a non-empty string"),
    ("node duplicate name", _nset("flat", "name", "gap"), "duplicate node name"),
    ("node extra key", _nset("gap", "weights", "x"), "unknown key"),
    ("node missing inputs", lambda g: _node(g, "gap").pop("inputs"), "missing required key 'inputs'"),
    ("inputs type", _nset("gap", "inputs", "a4"), "'inputs' must be a list"),
    ("two outputs", _nset("gap", "outputs", ["a5", "a6"]), "exactly 1 output"),
    ("too many inputs", _nset("gap", "inputs", ["a4", "a4"]), "takes 1 input"),
    ("input not a value", _nset("gap", "inputs", ["zz"]), "input 'zz' is not a value"),
    ("output not a value", _nset("gap", "outputs", ["zz"]), "output 'zz' is not a value"),
    ("read before written", _swap_nodes(7, 8), "input 'a5' is read before it is written"),
    ("written twice", _nset("flat", "outputs", ["a5"]), "output 'a5' is already written"),
    ("write a graph input", _nset("conv0", "outputs", ["images"]), "already written.*graph input"),
    ("wrong input kind", _nset("conv1", "inputs", ["a1"]), "input 'a1' must be a bits value"),
    ("unknown attr", _aset("conv1", "dilation", [2, 2]), r"unknown key\(s\) \['dilation'\]"),
    ("unknown param", _pset("gap", "weights", "fc.w"), "unknown key"),
    ("attrs type", _nset("conv1", "attrs", [1]), "attrs must be a JSON object"),
    ("kernel 0", _aset("conv0", "kernel", [0, 3]), "kernel must hold ints in 1..15"),
    ("kernel 16", _aset("conv0", "kernel", [16, 16]), "kernel must hold ints in 1..15"),
    ("kernel float", _aset("conv0", "kernel", [3.0, 3]), "kernel must be a list of 2 ints"),
    ("kernel scalar", _aset("conv0", "kernel", 3), "kernel must be a list of 2 ints"),
    ("kernel missing", _adel("conv0", "kernel"), "missing attribute 'kernel'"),
    ("stride 9", _aset("conv1", "stride", [9, 1]), "stride must hold ints in 1..8"),
    ("stride 0", _aset("pool1", "stride", [0, 1]), "stride must hold ints in 1..65536"),
    ("pads >= kernel", _aset("conv1", "pads", [3, 1, 1, 1]), "each pad must be smaller than the kernel"),
    ("pads negative", _aset("conv1", "pads", [-1, 1, 1, 1]), "pads must hold ints in 0"),
    ("pads length", _aset("conv1", "pads", [1, 1]), "pads must be a list of 4 ints"),
    ("pad_mode", _aset("conv1", "pad_mode", "two"), "pad_mode must be 'zero' or 'one'"),
    ("output mode", _aset("conv2", "output", "int32"), "output must be 'float' or 'bits'"),
    ("kernel vs weights", lambda g: (_aset("conv2", "kernel", [1, 1])(g),
                                     _aset("conv2", "pads", [0, 0, 0, 0])(g)),
     r"'weights' \(tensor 'conv2.w'\) must have shape \[8, 1, 1, 2\], got \[8, 3, 3, 2\]"),
    ("kernel larger than input", lambda g: (_aset("conv2", "kernel", [5, 5])(g),
                                            _aset("conv2", "pads", [0, 0, 0, 0])(g)),
     "larger than the padded input"),
    ("output shape", _vset("a4", "shape", [1, 4, 4, 9]), "weights.*must have shape"),
    ("output hw", _vset("a5", "shape", [1, 2, 1, 8]), "output 'a5' has shape"),
    ("output kind", _aset("conv2", "output", "bits"), "parameter 'mul' is not used"),
    ("missing weights", lambda g: _node(g, "conv1")["params"].pop("weights"), "missing parameter 'weights'"),
    ("missing threshold", lambda g: _node(g, "conv1")["params"].pop("threshold"),
     "missing parameter 'threshold'"),
    ("param unknown tensor", _pset("conv1", "weights", "nope"), "names tensor 'nope', which is not"),
    ("param wrong dtype", _pset("conv1", "threshold", "conv2.m"), "'threshold'.*must be int32, got float32"),
    ("param wrong shape", _pset("conv2", "mul", "fc.b"), r"'mul'.*must have shape \[8\], got \[5\]"),
    ("weights wrong dtype", _pset("conv1", "weights", "conv0.w"), "'weights'.*must be uint32"),
    ("fconv weights shape", _pset("conv0", "weights", "fc.w"), "'weights'.*must be float32|must have shape"),
    ("dense bias shape", _pset("fc", "bias", "conv2.m"), r"'bias'.*must have shape \[5\]"),
    ("affine scale dtype", _pset("bn0", "scale", "conv1.t"), "'scale'.*must be float32"),
    ("K input with bits", _nset("conv1", "inputs", ["b1", "k1"]), "K input is only used"),
    ("threshold attr", _aset("sign1", "threshold", "0"), "threshold must be a finite number"),
    ("threshold huge", _aset("sign1", "threshold", 10**400), "threshold must be a finite number"),
    ("threshold 1e400", _aset("sign1", "threshold", "@1e400@"), "threshold must be a finite"),
    ("flatten to bits from float", _vset("a6", "kind", "bits"), "output 'a6' must be a float value"),
]


@pytest.mark.parametrize("name,mutate,pattern", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_graph_mutation(tmp_path, name, mutate, pattern):
    data = model_bytes(tmp_path)
    _, g, d = split(data)
    mutate(g)
    text = json.dumps(g, separators=(",", ":")).replace('"@1e400@"', "1e400").encode()
    expect_error(assemble(None, d, text=text), pattern)


def _one_node_graph(op, in_kind, in_shape, out_kind, out_shape, attrs=None, params=None,
                    tensors=None, extra_values=()):
    values = [{"name": "x", "kind": "float", "shape": list(in_shape)}]
    nodes = []
    src = "x"
    if in_kind == "bits":
        values.append({"name": "xb", "kind": "bits", "shape": list(in_shape)})
        nodes.append({"op": "bitpack", "name": "pack", "inputs": ["x"], "outputs": ["xb"]})
        src = "xb"
    values += list(extra_values)
    values.append({"name": "y", "kind": out_kind, "shape": list(out_shape)})
    node = {"op": op, "name": "op", "inputs": [src], "outputs": ["y"]}
    if attrs is not None:
        node["attrs"] = attrs
    if params is not None:
        node["params"] = params
    nodes.append(node)
    lay = lambda s: "NCHW" if len(s) == 4 else "NC"  # noqa: E731
    nchw = lambda s: [s[0], s[3], s[1], s[2]] if len(s) == 4 else list(s)  # noqa: E731
    graph = {"format": "bnn-graph", "inputs": [{"name": "x", "shape": nchw(in_shape),
                                                "layout": lay(in_shape)}],
             "outputs": [{"name": "y", "shape": nchw(out_shape), "layout": lay(out_shape)}],
             "values": values, "nodes": nodes}
    return graph, dict(tensors or {})


WIN1 = {"kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0]}
OP_CASES = [
    # (id, graph args, expected error or None for valid)
    ("clip ok", ("clip", "float", (1, 4), "float", (1, 4), {"min": -1, "max": 1}), None),
    ("clip min>max", ("clip", "float", (1, 4), "float", (1, 4), {"min": 2, "max": 1}), "min 2.0 > attrs.max"),
    ("clip bool", ("clip", "float", (1, 4), "float", (1, 4), {"min": True}), "finite number"),
    ("leaky no alpha", ("leaky_relu", "float", (1, 4), "float", (1, 4), {}), "missing attribute 'alpha'"),
    ("concat axis", ("concat", "float", (1, 2, 2, 4), "float", (1, 2, 2, 4), {"axis": 1}),
     "axis must be 3 for 4-D"),
    ("concat ok", ("concat", "float", (1, 2, 2, 4), "float", (1, 2, 2, 4), {"axis": 3}), None),
    ("resize scale 0", ("resize_nearest", "float", (1, 2, 2, 4), "float", (1, 2, 2, 4),
                        {"scale": [0, 1]}), "scale must hold ints in 1"),
    ("resize shape", ("resize_nearest", "bits", (1, 2, 2, 4), "bits", (1, 4, 2, 4),
                      {"scale": [2, 2]}), "output 'y' has shape"),
    ("resize kind", ("resize_nearest", "bits", (1, 2, 2, 4), "float", (1, 4, 4, 4),
                     {"scale": [2, 2]}), "must be a bits value"),
    ("pad ok", ("pad", "float", (1, 2, 2, 4), "float", (1, 3, 5, 4), {"pads": [1, 2, 0, 1]}), None),
    ("pad value", ("pad", "float", (1, 2, 2, 4), "float", (1, 3, 5, 4),
                   {"pads": [1, 2, 0, 1], "value": "x"}), "value must be a finite"),
    ("avgpool cip", ("avgpool2d", "float", (1, 2, 2, 4), "float", (1, 2, 2, 4),
                     dict(WIN1, count_include_pad=2)), "count_include_pad must be 0 or 1"),
    ("maxpool no stride", ("maxpool2d", "float", (1, 2, 2, 4), "float", (1, 2, 2, 4),
                           {"kernel": [1, 1], "pads": [0, 0, 0, 0]}), "missing attribute 'stride'"),
    ("global pool 2-D", ("global_avgpool", "float", (1, 4), "float", (1, 1, 1, 4)),
     "must be a float value of 4 dimensions"),
    ("unpack float", ("unpack", "float", (1, 4), "float", (1, 4)), "must be a bits value"),
    ("prelu ok [1]", ("prelu", "float", (1, 4), "float", (1, 4), None, {"slope": "s"},
                      {"s": np.ones(1, np.float32)}), None),
    ("prelu [3]", ("prelu", "float", (1, 4), "float", (1, 4), None, {"slope": "s"},
                   {"s": np.ones(3, np.float32)}), r"must have shape \[4\] or \[1\]"),
    ("bdense ok", ("bdense", "bits", (2, 40), "float", (2, 3), None, {"weights": "w"},
                   {"w": np.zeros((3, 2), np.uint32)}), None),
    ("bdense tail bits", ("bdense", "bits", (2, 40), "float", (2, 3), None, {"weights": "w"},
                          {"w": np.full((3, 2), 0xFFFFFFFF, np.uint32)}), "tail bits"),
    ("bdense words", ("bdense", "bits", (2, 40), "float", (2, 3), None, {"weights": "w"},
                      {"w": np.zeros((3, 40), np.uint32)}), r"must have shape \[3, 2\]"),
    ("bconv flip 2", ("bconv2d", "bits", (1, 2, 2, 4), "bits", (1, 2, 2, 3),
                      dict(WIN1, output="bits"), {"weights": "w", "threshold": "t", "flip": "f"},
                      {"w": np.zeros((3, 1, 1, 1), np.uint32), "t": np.zeros(3, np.int32),
                       "f": np.array([0, 1, 2], np.uint8)}), "'flip'.*only 0 and 1"),
    ("bconv ok", ("bconv2d", "bits", (1, 2, 2, 4), "bits", (1, 2, 2, 3),
                  dict(WIN1, output="bits"), {"weights": "w", "threshold": "t"},
                  {"w": np.zeros((3, 1, 1, 1), np.uint32), "t": np.zeros(3, np.int32)}), None),
    ("bconv no output", ("bconv2d", "bits", (1, 2, 2, 4), "bits", (1, 2, 2, 3), dict(WIN1),
                         {"weights": "w", "threshold": "t"},
                         {"w": np.zeros((3, 1, 1, 1), np.uint32), "t": np.zeros(3, np.int32)}),
     "missing attribute 'output'"),
    ("add one input", ("add", "float", (1, 4), "float", (1, 4)), "takes 2 input"),
    ("dense 4-D", ("dense", "float", (1, 1, 1, 4), "float", (1, 2), None, {"weights": "w"},
                   {"w": np.zeros((2, 4), np.float32)}), "must be a float value of 2 dimensions"),
    ("flatten bits->bits ok", ("flatten", "bits", (1, 2, 2, 4), "bits", (1, 16)), None),
    ("xnor_scale shape", ("xnor_scale", "float", (1, 3, 3, 4), "float", (1, 3, 3),
                          {"kernel": [3, 3], "stride": [1, 1], "pads": [0, 0, 0, 0]}),
     r"output 'y' has shape \[1, 3, 3\] but xnor_scale gives \[1, 1, 1\]"),
]


@pytest.mark.parametrize("case", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_per_op_validation(tmp_path, case):
    _, args, pattern = case
    graph, tensors = _one_node_graph(*args)
    if args[0] == "xnor_scale":
        graph["outputs"] = [{"name": "x", "shape": [1, 4, 3, 3], "layout": "NCHW"}]
    path = str(tmp_path / "m.bnn")
    if pattern is None:
        write_model(path, graph, tensors)
        read_model(path)
    else:
        with pytest.raises(ModelFormatError, match=pattern):
            write_model(path, graph, tensors)
        # and the same from a file that bypasses the writer's check
        table, off, data = [], 0, b""
        for n, a in tensors.items():
            table.append({"name": n, "dtype": a.dtype.name, "shape": list(a.shape),
                          "offset": off, "nbytes": a.nbytes})
            data += a.tobytes() + bytes((-a.nbytes) % 64)
            off = len(data)
        graph["tensors"] = table
        expect_error(assemble(graph, data), pattern)
        assert not os.path.exists(path)


# ---- fuzzing ---------------------------------------------------------------------------------------------
def _read_ok_or_format_error(data):
    try:
        read_model(data)
        return True
    except ModelFormatError:
        return False


def test_random_byte_flips(tmp_path):
    data = model_bytes(tmp_path)
    rng = random.Random(12345)
    for _ in range(300):
        b = bytearray(data)
        kind = rng.random()
        if kind < 0.6:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind < 0.8:
            b = b[:rng.randrange(len(b))]
        else:
            pos = rng.randrange(len(b))
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 70)))
        _read_ok_or_format_error(bytes(b))


_JUNK = [None, True, False, 0, -1, 1, 7, 2**31, 2**70, -2**63, 0.5, -1e300, "", "x", "float",
         "bits", "NCHW", "images", "a4", [], [0], [1, 1], [3, 3], [0, 0, 0, 0], [-1, 2], {},
         {"a": 1}, [[1]], "conv1.w", 16, 40, 64, 63]


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        yield path, obj
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path, obj


def _fuzz_graphs(n, seed):
    """Yields (graph text bytes, data) with structural mutations and valid CRCs."""
    graph, tensors = sample_model()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.bnn")
        write_model(p, graph, tensors)
        data = open(p, "rb").read()
    _, g0, d0 = split(data)
    rng = random.Random(seed)
    for _ in range(n):
        g = copy.deepcopy(g0)
        for _ in range(rng.randint(1, 3)):
            paths = [pth for pth, _ in _leaves(g) if pth]
            pth = rng.choice(paths)
            parent = g
            for k in pth[:-1]:
                parent = parent[k]
            r = rng.random()
            if r < 0.6:
                parent[pth[-1]] = copy.deepcopy(rng.choice(_JUNK))
            elif r < 0.8 and isinstance(parent, dict):
                del parent[pth[-1]]
            elif r < 0.9 and isinstance(parent, list):
                parent.insert(pth[-1], copy.deepcopy(parent[pth[-1]]))
            elif isinstance(parent[pth[-1]], int) and not isinstance(parent[pth[-1]], bool):
                parent[pth[-1]] += rng.choice([-64, -1, 1, 64])
        yield json.dumps(g).encode(), d0


def test_fuzzed_graphs_only_raise_model_format_error():
    ok = 0
    for text, d in _fuzz_graphs(400, 99):
        ok += _read_ok_or_format_error(assemble(None, d, text=text))
    assert ok < 400  # most mutations are caught


def test_fuzzed_graphs_that_validate_also_load(tmp_path):
    """Whatever the reader accepts, the executor must be able to build and run."""
    from firmware_py import _native
    try:
        _native.lib()
    except Exception as e:
        pytest.skip("native library not built: %s" % e)
    import firmware_py as fp
    accepted = 0
    for i, (text, d) in enumerate(_fuzz_graphs(400, 7)):
        data = assemble(None, d, text=text)
        if not _read_ok_or_format_error(data):
            continue
        accepted += 1
        p = tmp_path / ("f%d.bnn" % i)
        p.write_bytes(data)
        m = fp.load(str(p), num_threads=1)
        xs = [np.zeros(s.shape, np.float32) for s in m.inputs]
        m.run(xs)
        m.close()
    assert accepted > 0


# ---- no code in model files ---------------------------------------------------------------------------
def test_no_pickle_in_firmware_py():
    bad = re.compile(r"\bimport\s+(c?pickle|dill|marshal|shelve)\b|\bfrom\s+(c?pickle|dill|marshal)\b"
                     r"|\bpickle\.|allow_pickle\s*=\s*True|torch\.load|\beval\(|\bexec\(")
    hits = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "firmware_py")):
        for fn in files:
            if fn.endswith(".py"):
                p = os.path.join(dirpath, fn)
                for i, line in enumerate(open(p, encoding="utf-8"), 1):
                    if bad.search(line):
                        hits.append("%s:%d: %s" % (os.path.relpath(p, ROOT), i, line.strip()))
    assert not hits, "\n".join(hits)
    for fn in ("model_format.py", "executor.py"):
        src = open(os.path.join(ROOT, "firmware_py", fn), encoding="utf-8").read()
        assert "pickle" not in src
        # neither needs torch nor onnx (messages may still name the formats)
        assert not re.search(r"^\s*(import|from)\s+(torch|onnx|onnxruntime)\b", src, re.M), fn
