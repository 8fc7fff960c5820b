"""ONNX -> binarized graph converter (needs onnx; --check needs onnxruntime).

    from firmware_py.convert import convert
    result = convert("model.onnx", "model.bnn", check=True)
    print(result.report())

Recognised: Sign (and QONNX BipolarQuant) on activations; binary weights as folded
+-alpha per output filter, or Sign/Abs/ReduceMean/Mul subgraphs (folded here); XNOR-Net's
K = Conv(ReduceMean(Abs(x), 1), box); BatchNorm and per-channel Mul/Add folded into the
output transform, and into integer thresholds when a Sign follows, so that consecutive
binary layers pass packed bits.  The first and last layers stay float.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from .errors import ConvertError
from .lower import SUPPORTED_OPS, Lowering
from .passes import optimize

__all__ = ["convert", "ConvertError", "ConvertResult", "SUPPORTED_OPS"]


@dataclass
class ConvertResult:
    path: str
    graph: dict
    tensors: dict
    notes: list = field(default_factory=list)
    source_bytes: int = 0
    file_bytes: int = 0
    check: dict = None

    def report(self) -> str:
        from .report import report_text
        return report_text(self)


def _metadata(meta: dict, src) -> dict:
    out = {"source": os.path.basename(os.fspath(src)) if not hasattr(src, "graph") else "<ModelProto>"}
    if "class_names" in meta:
        try:
            names = json.loads(meta["class_names"])
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                out["class_names"] = names
        except ValueError:
            pass
    if "detector" in meta:  # detection head parameters (firmware_py.detect), JSON
        try:
            det = json.loads(meta["detector"])
        except ValueError:
            raise ConvertError("metadata 'detector' is not valid JSON") from None
        if not isinstance(det, dict):
            raise ConvertError("metadata 'detector' must be a JSON object")
        out["detector"] = det
    for k, v in meta.items():
        if k not in ("class_names", "detector"):
            out.setdefault("onnx:" + k, v)
    return out


def _rename(ir, old, new):
    ir.values[new] = dict(ir.values.pop(old), name=new)
    ir._names.add(new)
    for n in ir.nodes:
        n["inputs"] = [new if i == old else i for i in n["inputs"]]
        n["outputs"] = [new if o == old else o for o in n["outputs"]]


def build(src, input_shapes=None):
    """ONNX -> (graph dict, tensors, notes, source size); nothing is written."""
    from .onnx_graph import import_graph

    g = import_graph(src, input_shapes)
    low = Lowering(g)
    outputs = low.lower()
    ir = low.ir
    input_names = {name for name, _ in g.inputs}
    out_values = []
    for name, rep in outputs:
        v = rep.value
        if v != name:
            if name in ir.values:
                raise ConvertError("graph output %r collides with another value's name" % name)
            if v in input_names or v in out_values:
                # an output that is an input or another output: copy it
                c = ir.values[v]["shape"][-1]
                ir.values[name] = {"name": name, "kind": "float", "shape": list(ir.values[v]["shape"])}
                ir.add("affine", name + ".copy", [v], [name], params={
                    "scale": ir.tensor(name + ".one", np.ones(c, np.float32)),
                    "bias": ir.tensor(name + ".zero", np.zeros(c, np.float32))})
            else:
                _rename(ir, v, name)
        out_values.append(name)
    optimize(ir, out_values)
    graph = {
        "format": "bnn-graph",
        "producer": "firmware_py %s" % __version__,
        "metadata": _metadata(g.metadata, src),
        "inputs": [{"name": n, "shape": list(s), "layout": "NCHW" if len(s) == 4 else "NC"} for n, s in g.inputs],
        "outputs": [{"name": n, "shape": list(r.shape), "layout": "NCHW" if len(r.shape) == 4 else "NC"}
                    for n, (_, r) in zip(out_values, outputs)],
        "values": [ir.values[v] for v in ir.values if v not in input_names],
        "nodes": ir.nodes,
    }
    # the inputs are values too
    graph["values"] = [ir.values[n] for n, _ in g.inputs] + graph["values"]
    return graph, ir.tensors, low.notes, g.source_bytes


def convert(src, dst=None, input_shapes=None, check=False, check_inputs=None, check_samples=4, seed=0,
            rtol=1e-3, atol=1e-4) -> ConvertResult:
    """Converts an ONNX model (path or ModelProto) to the model file `dst` (default: src with
    the extension .bnn).  Raises ConvertError naming the node for anything unsupported;
    nothing is written then.  check=True compares firmware_py against onnxruntime on
    random inputs (and check_inputs: an array or a list of arrays) and raises
    ConvertError when they disagree."""
    from ..model_format import write_model

    graph, tensors, notes, source_bytes = build(src, input_shapes)
    if dst is None:
        if not isinstance(src, (str, os.PathLike)):
            raise ConvertError("dst is required when src is a ModelProto")
        dst = os.path.splitext(os.fspath(src))[0] + ".bnn"
    write_model(dst, graph, tensors)
    result = ConvertResult(os.fspath(dst), graph, tensors, notes, source_bytes, os.path.getsize(dst))
    if check:
        from .check import check_against_onnxruntime
        result.check = check_against_onnxruntime(src, dst, graph, check_inputs, check_samples, seed, rtol, atol)
        if not result.check["ok"]:
            raise ConvertError("--check failed: %s" % result.check["summary"])
    return result
