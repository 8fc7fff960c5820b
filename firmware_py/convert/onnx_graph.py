"""ONNX intake: load (with external data), fix the input shapes, fold constants with
onnx's reference evaluator, and give every remaining node its static input shapes."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import ConvertError

# Ops evaluated on constants only when all their inputs are constant; anything the
# reference evaluator knows works, this set just documents the usual ones.
_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}


@dataclass
class Node:
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict
    domain: str = ""
    proto: object = None


@dataclass
class Graph:
    nodes: list
    consts: dict            # name -> np.ndarray
    shapes: dict            # value name -> tuple (static)
    inputs: list            # [(name, shape)]
    outputs: list           # [name]
    metadata: dict = field(default_factory=dict)
    opset: int = 0
    source_bytes: int = 0


def _to_array(t, what):
    """numpy_helper.to_array, with a ConvertError for a malformed TensorProto (data that
    does not match its dims or data_type, an unknown data_type, ...)."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - onnx raises ValueError, TypeError, KeyError, ...
        raise ConvertError("%s: malformed ONNX tensor: %s" % (what, e)) from None


def _schema(node, opset):
    """The op's onnx schema, or None (an unknown op or a custom domain)."""
    import onnx

    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset or 17, node.domain)
    except Exception:  # noqa: BLE001 - no schema: the lowering names the unsupported op
        return None


def _attr_types(node, opset):
    """({attribute: AttributeProto type}, [required attributes]) from the op's schema, or
    ({}, []) (an unknown op or domain)."""
    schema = _schema(node, opset)
    if schema is None:
        return {}, []
    return ({k: v.type for k, v in schema.attributes.items()},
            sorted(k for k, v in schema.attributes.items() if v.required))


def _check_arity(node, where, opset):
    """ConvertError when a standard op has fewer or more inputs / outputs than its schema
    allows (the lowering indexes them)."""
    schema = _schema(node, opset)
    if schema is None:
        return
    for what, items, lo, hi in (("inputs", node.input, schema.min_input, schema.max_input),
                                ("outputs", node.output, schema.min_output, schema.max_output)):
        if not lo <= len(items) <= hi:
            raise ConvertError("%s: %d %s, the op takes %d..%d" % (where, len(items), what, lo, hi))


def _attrs(node, where, opset=17) -> dict:
    import onnx
    from onnx import helper

    out = {}
    types, required = _attr_types(node, opset)
    missing = [k for k in required if k not in {a.name for a in node.attribute}]
    if missing:
        raise ConvertError("%s: missing required attribute(s) %s" % (where, missing))
    for a in node.attribute:
        want = types.get(a.name)
        if a.type == onnx.AttributeProto.UNDEFINED or (want is not None and a.type != want):
            name = onnx.AttributeProto.AttributeType.Name
            raise ConvertError("%s: attribute %r has type %s, expected %s" % (
                where, a.name, name(a.type) if a.type in onnx.AttributeProto.AttributeType.values()
                else a.type, name(want) if want is not None else "a defined type"))
        try:
            v = helper.get_attribute_value(a)
        except Exception as e:  # noqa: BLE001 - an attribute whose type and value disagree
            raise ConvertError("%s: malformed attribute %r: %s" % (where, a.name, e)) from None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif a.type == onnx.AttributeProto.TENSOR:
            v = _to_array(v, "%s attribute %r" % (where, a.name))
        elif isinstance(v, (list, tuple)):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _dims(vi):
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def load_model(src):
    """onnx.ModelProto from a path (external data next to it) or a ModelProto."""
    import onnx

    if isinstance(src, onnx.ModelProto):
        return src, 0
    path = os.fspath(src)
    if not os.path.exists(path):
        raise ConvertError("input file not found: %s" % path)
    from onnx.external_data_helper import load_external_data_for_model

    from ..model_format import open_regular

    def regular(p):  # a FIFO or a device would block the reader
        try:
            open_regular(p, not_regular=ConvertError).close()
        except OSError as e:
            raise ConvertError("cannot read ONNX file %s: %s" % (p, e)) from None

    base = os.path.dirname(os.path.abspath(path))
    regular(path)
    try:
        model = onnx.load(path, load_external_data=False)
        # external data files count toward the source size
        size = os.path.getsize(path)
        for loc in sorted({kv.value for init in model.graph.initializer for kv in init.external_data
                           if kv.key == "location"}):
            p = os.path.join(base, loc)
            if not os.path.exists(p):
                raise ConvertError("external data file %r of %s not found" % (loc, path))
            regular(p)
            size += os.path.getsize(p)
        load_external_data_for_model(model, base)
    except ConvertError:
        raise
    except Exception as e:  # noqa: BLE001 - onnx raises many kinds
        raise ConvertError("cannot read ONNX file %s: %s" % (path, e)) from None
    return model, size


def _check_strings(model):
    """ConvertError when a name the converter uses is not valid UTF-8 (protobuf hands such
    a ``string`` field over as bytes)."""
    def need(v, what):
        if not isinstance(v, str):
            raise ConvertError("%s is not valid UTF-8: %r" % (what, v))

    g = model.graph
    for o in model.opset_import:
        need(o.domain, "an opset_import domain")
    for p in model.metadata_props:
        need(p.key, "a metadata_props key")
        need(p.value, "metadata_props %r" % p.key)
    for kind, items in (("input", g.input), ("output", g.output), ("value_info", g.value_info),
                        ("initializer", g.initializer)):
        for i, vi in enumerate(items):
            need(vi.name, "graph %s %d's name" % (kind, i))
    for i, n in enumerate(g.node):
        for v, what in [(n.op_type, "op_type"), (n.name, "name"), (n.domain, "domain")] + \
                [(x, "input") for x in n.input] + [(x, "output") for x in n.output] + \
                [(a.name, "attribute name") for a in n.attribute]:
            need(v, "node %d's %s" % (i, what))
    # the graph's inputs and outputs keep their names in the model file, where names
    # must be printable text (model_format): no control characters
    inits = {t.name for t in g.initializer}
    for kind, items in (("input", g.input), ("output", g.output)):
        for vi in items:
            if vi.name not in inits and not vi.name.isprintable():
                raise ConvertError("graph %s %s: the name holds a character that is not "
                                   "printable (names must be printable text)"
                                   % (kind, ascii(vi.name)))


MAX_ELEMENTS = 2**31 - 1  # per tensor: the runtime counts elements in int32
MAX_VECTOR = 1 << 16      # a 1-D tensor made from a constant shape (ConstantOfShape, Range, ...)
# ops with a constant input that sets the output's shape -> that input's index
_SHAPE_INPUT = {"ConstantOfShape": 0, "Expand": 1, "Tile": 1, "Reshape": 1, "Pad": 1, "Resize": 3}


def _check_shape_constants(g, consts):
    """ConvertError for a node whose constant input asks for an output of more than
    MAX_ELEMENTS elements, or a vector of more than MAX_VECTOR (ConstantOfShape / Expand /
    Reshape / Resize shapes, Tile repeats, Pad pads, Range bounds):
    onnx's shape inference with data propagation, and constant folding, would try to
    materialise it -- a few bytes of ONNX could exhaust the memory.  No tensor that large
    can be converted anyway."""
    known = dict(consts)
    for i, n in enumerate(g.node):
        if n.domain not in ("", "ai.onnx"):
            continue
        name = n.name or "%s_%d" % (n.op_type, i)
        where = "%s node %r" % (n.op_type, name)
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.type == a.TENSOR:
                    known[n.output[0]] = _to_array(a.t, "%s attribute 'value'" % where)
                elif a.name == "value_ints":
                    known[n.output[0]] = np.array(a.ints, np.int64)
                elif a.name == "value_int":
                    known[n.output[0]] = np.array(a.i, np.int64)
            continue

        def const(j):
            v = known.get(n.input[j]) if len(n.input) > j and n.input[j] else None
            if v is None or v.dtype.kind not in "iuf" or v.size > 64:
                return None
            return [float(x) if v.dtype.kind == "f" else int(x) for x in v.ravel()]

        count = rank = None
        if n.op_type in _SHAPE_INPUT:
            dims = const(_SHAPE_INPUT[n.op_type])
            if dims is not None:
                count = math.prod(abs(int(d)) for d in dims if math.isfinite(d) and d)
                rank = len(dims) if n.op_type in ("ConstantOfShape", "Expand", "Reshape") else None
                if n.op_type == "Pad":  # pads: each one bounds an output dimension
                    count = max([abs(int(d)) for d in dims if math.isfinite(d)] + [0])
        elif n.op_type == "Range":
            b = [const(j) for j in range(3)]
            if all(x is not None and len(x) == 1 for x in b) and b[2][0] != 0 and \
                    all(math.isfinite(x[0]) for x in b):
                count, rank = max(math.ceil((b[1][0] - b[0][0]) / b[2][0]), 0), 1
        if count is not None and count > MAX_ELEMENTS:
            raise ConvertError("%s: its constant input asks for an output of %d elements, more "
                               "than %d (the runtime's limit)" % (where, count, MAX_ELEMENTS))
        if rank == 1 and count > MAX_VECTOR:
            raise ConvertError("%s: its constant input asks for a vector of %d elements, more "
                               "than %d (no parameter of a supported layer is that long, and onnx's "
                               "shape inference would expand it element by element)"
                               % (where, count, MAX_VECTOR))


def import_graph(src, input_shapes=None) -> Graph:
    """Loads, fixes shapes, folds constants.  input_shapes: {name: shape} for inputs
    with dynamic dimensions (a dynamic batch dimension alone defaults to 1)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model, size = load_model(src)
    _check_strings(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    g = model.graph
    consts = {i.name: _to_array(i, "initializer %r" % i.name) for i in g.initializer}
    input_shapes = dict(input_shapes or {})

    # fix input shapes
    inputs = []
    for vi in g.input:
        if vi.name in consts:
            continue
        dims = _dims(vi)
        if vi.name in input_shapes:
            shape = tuple(int(d) for d in input_shapes.pop(vi.name))
        else:
            if dims is None:
                raise ConvertError("input %r has no shape; pass input_shapes={%r: (...)}" % (vi.name, vi.name))
            shape = list(dims)
            if shape and not isinstance(shape[0], int) or (shape and shape[0] == 0):
                shape[0] = 1  # dynamic batch -> 1
            bad = [i for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
            if bad:
                raise ConvertError(
                    "input %r has dynamic dimensions %s (shape %s): the converter needs static shapes; "
                    "pass input_shapes={%r: (n, c, h, w)} (--input-shape %s=1,3,224,224)"
                    % (vi.name, bad, dims, vi.name, vi.name))
            shape = tuple(shape)
        et = vi.type.tensor_type.elem_type
        if et != onnx.TensorProto.FLOAT:
            et = onnx.TensorProto.DataType.Name(et) if et in onnx.TensorProto.DataType.values() else et
            raise ConvertError("input %r has element type %s; only float32 inputs are supported"
                               % (vi.name, et))
        inputs.append((vi.name, shape))
    if input_shapes:
        raise ConvertError("input_shapes names unknown inputs %s" % sorted(input_shapes))
    if not inputs:
        raise ConvertError("the ONNX graph has no inputs (other than initializers): nothing to convert")
    if not g.output:
        raise ConvertError("the ONNX graph has no outputs: nothing to convert")
    for name, shape in inputs:
        if math.prod(shape) > MAX_ELEMENTS:
            raise ConvertError("input %r has shape %s: more than %d elements (the runtime's limit)"
                               % (name, list(shape), MAX_ELEMENTS))
    _check_shape_constants(g, consts)

    # re-run shape inference with the fixed input shapes
    m2 = onnx.ModelProto()
    m2.CopyFrom(model)
    for vi in m2.graph.input:
        for name, shape in inputs:
            if vi.name == name:
                dims = vi.type.tensor_type.shape.dim
                del dims[:]
                for d in shape:
                    dims.add().dim_value = d
    del m2.graph.value_info[:]
    for o in m2.graph.output:
        o.type.tensor_type.ClearField("shape")
    try:
        m2 = shape_inference.infer_shapes(m2, data_prop=True)
    except Exception as e:  # noqa: BLE001
        raise ConvertError("ONNX shape inference failed: %s" % e) from None
    shapes = {name: tuple(shape) for name, shape in inputs}
    # the shapes the graph carries, where onnx's inference stops (it cannot see through the
    # custom ops of QONNX); the lowering computes every shape it uses itself and checks them
    for vi in list(g.value_info) + list(m2.graph.value_info) + list(m2.graph.output):
        d = _dims(vi)
        if d is not None and all(isinstance(x, int) and x > 0 for x in d):
            shapes[vi.name] = tuple(d)
    for k, v in consts.items():
        shapes[k] = tuple(v.shape)

    nodes = []
    for i, n in enumerate(m2.graph.node):
        name = n.name or "%s_%d" % (n.op_type, i)
        _check_arity(n, "%s node %r" % (n.op_type, name), opset)
        nodes.append(Node(n.op_type, name, list(n.input), list(n.output),
                          _attrs(n, "%s node %r" % (n.op_type, name), opset), n.domain, n))
    nodes = _fold(nodes, consts, shapes, opset)
    metadata = {p.key: p.value for p in model.metadata_props}
    return Graph(nodes, consts, shapes, inputs, [o.name for o in g.output], metadata, opset, size)


def _fold(nodes, consts, shapes, opset):
    """Evaluates every node whose inputs are all constant (and Shape of a static value)."""
    from onnx.reference import ReferenceEvaluator

    from . import qonnx

    kept = []
    for n in nodes:
        if n.op == "Constant":
            a = n.attrs
            if "value" in a:
                consts[n.outputs[0]] = np.asarray(a["value"])
            elif "value_float" in a:
                consts[n.outputs[0]] = np.array(a["value_float"], np.float32)
            elif "value_floats" in a:
                consts[n.outputs[0]] = np.array(a["value_floats"], np.float32)
            elif "value_int" in a:
                consts[n.outputs[0]] = np.array(a["value_int"], np.int64)
            elif "value_ints" in a:
                consts[n.outputs[0]] = np.array(a["value_ints"], np.int64)
            else:
                raise ConvertError("Constant node %r: unsupported value attribute %s" % (n.name, sorted(a)))
            shapes[n.outputs[0]] = consts[n.outputs[0]].shape
            continue
        if n.op == "Shape" and n.domain in ("", "ai.onnx") and n.inputs[0] in shapes:
            s = np.array(shapes[n.inputs[0]], np.int64)
            start, end = n.attrs.get("start", 0), n.attrs.get("end", None)
            consts[n.outputs[0]] = s[start:end]
            shapes[n.outputs[0]] = consts[n.outputs[0]].shape
            continue
        ins = [i for i in n.inputs if i]
        if n.domain in qonnx.DOMAINS and n.op in qonnx.OPS and ins and all(i in consts for i in ins):
            consts[n.outputs[0]] = qonnx.evaluate(n, consts)  # binarised / quantised weights
            shapes[n.outputs[0]] = consts[n.outputs[0]].shape
            continue
        if (n.domain in ("", "ai.onnx") and n.op not in _NEVER_FOLD and ins and all(i in consts for i in ins)):
            try:
                ev = ReferenceEvaluator(n.proto, opsets={"": opset or 17})
                outs = ev.run(None, {i: consts[i] for i in ins})
            except Exception as e:  # noqa: BLE001
                raise ConvertError("constant folding failed for %s node %r: %s" % (n.op, n.name, e)) from None
            for name, v in zip(n.outputs, outs):
                consts[name] = np.asarray(v)
                shapes[name] = consts[name].shape
            continue
        if n.op in ("Identity", "Dropout") and n.inputs[0] in consts:
            consts[n.outputs[0]] = consts[n.inputs[0]]
            continue
        kept.append(n)
    return kept
