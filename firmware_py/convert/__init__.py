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
    float_reasons: dict = field(default_factory=dict)  # ONNX node -> why its binary weights run float

    def report(self) -> str:
        from .report import report_text
        return report_text(self)


def _json_meta(meta, key):
    """metadata_props[key] parsed as JSON; ConvertError when it is not JSON, or when its
    strings are not UTF-8 text (JSON escapes can spell lone surrogates)."""
    try:
        v = json.loads(meta[key])
    except ValueError:
        raise ConvertError("metadata %r is not valid JSON" % key) from None
    try:
        json.dumps(v, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConvertError("metadata %r holds a string that is not valid UTF-8 (a lone "
                           "surrogate: %s)" % (key, e.reason)) from None
    return v


def _metadata(meta: dict, src) -> dict:
    out = {"source": os.path.basename(os.fspath(src)) if not hasattr(src, "graph") else "<ModelProto>"}
    if "class_names" in meta:
        try:
            names = json.loads(meta["class_names"])
        except ValueError:
            names = None
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            names = _json_meta(meta, "class_names")
            bad = [n for n in names if not n.isprintable()]
            if bad:
                raise ConvertError("metadata 'class_names': %s is not printable text"
                                   % ascii(bad[0]))
            out["class_names"] = names
    if "detector" in meta:  # detection head parameters (firmware_py.detect), JSON
        det = _json_meta(meta, "detector")
        if not isinstance(det, dict):
            raise ConvertError("metadata 'detector' must be a JSON object")
        out["detector"] = det
    for k, v in meta.items():
        if k not in ("class_names", "detector"):
            out.setdefault("onnx:" + k, v)
    return out


def _rename(ir, old, new, anchors):
    ir.values[new] = dict(ir.values.pop(old), name=new)
    ir._names.add(new)
    ir.rename_value(old, new)
    if old in anchors:
        anchors[new] = anchors.pop(old)


@dataclass
class Built:
    graph: dict
    tensors: dict
    notes: list
    source_bytes: int
    anchors: dict        # converted value -> the ONNX value it holds (check.py)
    float_reasons: dict  # ONNX node -> why a layer with binary weights stayed float


def build(src, input_shapes=None, input_layout="auto") -> Built:
    """ONNX -> the converted graph (Built); nothing is written."""
    from .layout import eliminate_transposes
    from .onnx_graph import import_graph
    from .patterns import simplify

    g = import_graph(src, input_shapes)
    onnx_values = {o for n in g.nodes for o in n.outputs} | {n for n, _ in g.inputs}
    nhwc_inputs = eliminate_transposes(g, input_layout)
    g = simplify(g)
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
                _rename(ir, v, name, low.anchors)
        low.anchors[name] = (name, None, None, 0.0)
        out_values.append(name)
    optimize(ir, out_values, low.sign_bits)
    graph = {
        "format": "bnn-graph",
        "producer": "firmware_py %s" % __version__,
        "metadata": _metadata(g.metadata, src),
        "inputs": [{"name": n, "shape": list(s), "layout": "NCHW" if len(s) == 4 else "NC"} if n not in nhwc_inputs
                   else {"name": n, "shape": [s[0], s[2], s[3], s[1]], "layout": "NHWC"} for n, s in g.inputs],
        "outputs": [{"name": n, "shape": list(r.shape), "layout": "NCHW" if len(r.shape) == 4 else "NC"}
                    for n, (_, r) in zip(out_values, outputs)],
        "values": [ir.values[v] for v in ir.values if v not in input_names],
        "nodes": ir.nodes,
    }
    # the inputs are values too
    graph["values"] = [ir.values[n] for n, _ in g.inputs] + graph["values"]
    # the values layout.py made (transposed copies of ONNX values) have no ONNX twin to check against
    anchors = {v: a for v, a in low.anchors.items() if v in ir.values and v not in input_names
               and a[0] in onnx_values and (not a[2] or a[2] in onnx_values)}
    return Built(graph, ir.tensors, low.notes, g.source_bytes, anchors, dict(low.float_reasons))


def _memory_check(memory_limit):
    """write_model's check: the converted model must fit the memory limit (the same budget
    and limit as the loader's: firmware_py/memory.py)."""
    from ..executor import check_memory, memory_budget
    from ..memory import MemoryBudgetError

    def check(graph):
        try:
            check_memory(memory_budget(graph), memory_limit, what="the converted model")
        except MemoryBudgetError as e:
            raise ConvertError("%s; nothing was written (a Pad, Resize or Concat making a "
                               "huge tensor?  --memory-limit / memory_limit= changes the "
                               "limit)" % e) from None
        except ValueError as e:  # a malformed memory_limit / $BNN_MEMORY_LIMIT
            raise ConvertError(str(e)) from None
    return check


def onnxruntime_available():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def convert(src, dst=None, input_shapes=None, check=None, check_inputs=None, check_samples=4, seed=0,
            rtol=1e-3, atol=1e-4, memory_limit=None, input_layout="auto") -> ConvertResult:
    """Converts an ONNX model (path or ModelProto) to the model file `dst` (default: src with
    the extension .bnn).  Raises ConvertError naming the node for anything unsupported.
    check (default: when onnxruntime is importable; True requires it) compares firmware_py
    against onnxruntime on random inputs (and check_inputs: an array or a list of arrays),
    end to end and layer by layer (convert/check.py), and raises ConvertError when a layer
    disagrees.  memory_limit: what the converted model may need at run time (bytes or
    "512M"; 0 / "none": no limit; None: $BNN_MEMORY_LIMIT, else the memory available here --
    firmware_py/memory.py).  On any error nothing is written and an existing `dst` is left
    as it was (the file is written to a temporary name and renamed after the checks).
    input_layout: "auto" takes a 4-D input that the graph reads only through
    Transpose(0, 3, 1, 2) as NHWC (TensorFlow exports without inputs_as_nchw), "NHWC"
    insists on that, "NCHW" never (convert/layout.py)."""
    from ..model_format import GraphSizeError, write_model

    b = build(src, input_shapes, input_layout)
    if dst is None:
        if not isinstance(src, (str, os.PathLike)):
            raise ConvertError("dst is required when src is a ModelProto")
        dst = os.path.splitext(os.fspath(src))[0] + ".bnn"
    if check is None:
        check = onnxruntime_available()
    result = ConvertResult(os.fspath(dst), b.graph, b.tensors, b.notes, b.source_bytes,
                           float_reasons=b.float_reasons)
    memory_check = _memory_check(memory_limit)

    def checks(graph):  # before anything is written (write_model's check)
        memory_check(graph)
        if check:
            from .check import check_against_onnxruntime
            result.check = check_against_onnxruntime(src, graph, b.tensors, b.anchors, check_inputs, check_samples,
                                                     seed, rtol, atol, memory_limit)
            if not result.check["ok"]:
                raise ConvertError("--check failed, nothing was written: %s" % result.check["summary"])
    try:
        write_model(dst, b.graph, b.tensors, check=checks)
    except GraphSizeError as e:
        raise ConvertError("%s: the converted model has %d nodes and %d values, more than a "
                           "model file can describe; nothing was written" % (
                               e, len(b.graph["nodes"]), len(b.graph["values"]))) from None
    result.file_bytes = os.path.getsize(dst)
    return result
