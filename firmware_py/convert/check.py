"""--check: the converted model against onnxruntime on the source graph (QONNX quantisers
lowered to standard ops: convert/qonnx.py), end to end and layer by layer.

Deep BNNs legitimately differ between correct implementations: float reordering flips a
sign near 0 and the flip grows through the layers.  So each converted layer -- the nodes
between two values the ONNX graph also has (its *anchors*) -- runs on onnxruntime's own input
to it and must reproduce onnxruntime's output: floats within rtol / atol of max|ref|, bits
exactly except where onnxruntime's value before the binarisation is within rtol of its
threshold (relative to that tensor's max).  The check passes when every layer does; the
end-to-end error is reported beside it.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .errors import ConvertError


def _session(src, extra):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from .onnx_graph import load_model
    from .qonnx import to_standard_onnx

    model, _ = load_model(src)
    m = to_standard_onnx(model)
    have = {o.name for o in m.graph.output}
    for name in extra:
        if name not in have:
            m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            have.add(name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's many error types
        raise ConvertError("--check: onnxruntime cannot run the source graph: %s" % str(e).splitlines()[0]) from None


def _close(g, r, rtol, atol):
    """(number of values outside tolerance, max error / max|ref|)"""
    scale = float(np.max(np.abs(r))) if r.size else 1.0
    scale = scale or 1.0
    err = np.abs(g - r)
    return int((err > atol * scale + rtol * np.abs(r)).sum()), float(err.max() / scale) if err.size else 0.0


def _layers(graph, anchors):
    """[(end value, [nodes], [input values])]: every anchored value a node writes, with the
    nodes from the anchored values before it"""
    prod = {o: n for n in graph["nodes"] for o in n["outputs"]}
    order = {id(n): i for i, n in enumerate(graph["nodes"])}
    inputs = {i["name"] for i in graph["inputs"]}
    out = []
    for v in sorted((v for v in anchors if v in prod), key=lambda v: order[id(prod[v])]):
        nodes, ins, stack, seen = [], [], [prod[v]], set()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            nodes.append(n)
            for i in n["inputs"]:
                if i in anchors or i in inputs:
                    if i not in ins:
                        ins.append(i)
                elif i in prod:
                    stack.append(prod[i])
        nodes.sort(key=lambda n: order[id(n)])
        out.append((v, nodes, ins))
    return out


def _layer_model(graph, tensors, anchors, end, nodes, ins, tmp):
    """a model of one layer: float inputs (ONNX layout) packed to bits where the layer reads
    bits, its nodes, its output unpacked to the ONNX values"""
    from .. import load
    from ..model_format import write_model

    values = {v["name"]: v for v in graph["values"]}
    g = {"format": graph["format"], "producer": graph["producer"], "metadata": {}, "inputs": [], "outputs": [],
         "values": [], "nodes": []}
    t = {}

    def value(name, kind, shape):
        g["values"].append({"name": name, "kind": kind, "shape": list(shape)})

    def affine(name, x, y, scale, bias, c):
        t[name + ".s"], t[name + ".b"] = np.full(c, scale, np.float32), np.full(c, bias, np.float32)
        g["nodes"].append({"op": "affine", "name": name, "inputs": [x], "outputs": [y], "attrs": {},
                           "params": {"scale": name + ".s", "bias": name + ".b"}})

    for k, name in enumerate(ins):
        v = values[name]
        shape = v["shape"]
        onnx_shape = (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)
        layout = "NCHW" if len(shape) == 4 else "NC"
        if any(i["name"] == name and i["layout"] == "NHWC" for i in graph["inputs"]):  # as ONNX has it
            onnx_shape, layout = tuple(shape), "NHWC"
        src = "check.in%d" % k
        g["inputs"].append({"name": src, "shape": list(onnx_shape), "layout": layout})
        if v["kind"] == "float":
            value(src, "float", shape)
            for n in nodes:  # the layer reads the input under its own name: rename
                n["inputs"] = [src if i == name else i for i in n["inputs"]]
            continue
        value(src, "float", shape)
        hi, lo = (np.float32(x) for x in anchors[name][1])
        mid = np.float32((np.float64(hi) + np.float64(lo)) / 2)
        packed_from = src
        if hi < lo:  # bit +1 where x <= mid: pack -x >= -mid
            packed_from = src + ".neg"
            value(packed_from, "float", shape)
            affine(src + ".negate", src, packed_from, -1.0, 0.0, shape[-1])
            mid = -mid
        value(name, "bits", shape)
        g["nodes"].append({"op": "bitpack", "name": src + ".pack", "inputs": [packed_from], "outputs": [name],
                           "attrs": {"threshold": float(mid)}, "params": {}})
    for n in nodes:
        for o in n["outputs"]:
            value(o, values[o]["kind"], values[o]["shape"])
        g["nodes"].append(n)
        for p in n["params"].values():
            t[p] = tensors[p]
    v = values[end]
    shape = v["shape"]
    out = end
    if v["kind"] == "bits":
        hi, lo = (float(x) for x in anchors[end][1])
        value(end + ".unpacked", "float", shape)
        g["nodes"].append({"op": "unpack", "name": end + ".unpack", "inputs": [end], "outputs": [end + ".unpacked"],
                           "attrs": {}, "params": {}})
        value(end + ".levels", "float", shape)
        affine(end + ".levels", end + ".unpacked", end + ".levels", (hi - lo) / 2, (hi + lo) / 2, shape[-1])
        out = end + ".levels"
    onnx_shape = (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)
    g["outputs"].append({"name": out, "shape": list(onnx_shape), "layout": "NCHW" if len(shape) == 4 else "NC"})
    path = os.path.join(tmp, "layer.bnn")
    write_model(path, g, t)
    return load(path, num_threads=1)


def check_against_onnxruntime(src, graph, tensors, anchors, inputs=None, samples=4, seed=0, rtol=1e-3, atol=1e-4,
                              memory_limit=None, layers=2):
    """compares; returns {"ok", "summary", "first_bad_layer", ...}.  anchors: {converted value:
    (ONNX value, bits levels or None, ONNX value before the binarisation or None, its threshold)}.
    layers: how many of the inputs the layer-by-layer comparison uses."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConvertError("--check needs onnxruntime (pip install onnxruntime)") from None
    from ..executor import Model

    model = Model(graph, tensors, num_threads=1, memory_limit=memory_limit)
    in_specs = graph["inputs"]
    extra = sorted({a[0] for a in anchors.values()} | {a[2] for a in anchors.values() if a[2]})
    sess = _session(src, extra)
    rng = np.random.default_rng(seed)
    feeds = [{s["name"]: rng.random(s["shape"], dtype=np.float32) for s in in_specs} for _ in range(samples)]
    if inputs is not None:
        arrs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if len(in_specs) != 1:
            raise ConvertError("check inputs are only supported for single-input models")
        shape = tuple(in_specs[0]["shape"])
        for a in arrs:
            a = np.asarray(a, np.float32)
            a = a.reshape((-1,) + shape[1:])
            for i in range(0, a.shape[0] - shape[0] + 1, shape[0]):
                feeds.append({in_specs[0]["name"]: np.ascontiguousarray(a[i:i + shape[0]])})
    names = [o["name"] for o in graph["outputs"]]
    worst, n_bad, n_total, argmax_same, argmax_total = 0.0, 0, 0, 0, 0
    oracle = []
    for feed in feeds:
        ref = dict(zip(names + extra, sess.run(names + extra, feed)))
        oracle.append(ref)
        x = feed[in_specs[0]["name"]] if len(in_specs) == 1 else [feed[s["name"]] for s in in_specs]
        got = model.run(x)
        got = got if isinstance(got, list) else [got]
        for name, g in zip(names, got):
            r = np.asarray(ref[name], np.float32)
            if r.shape != g.shape:
                raise ConvertError("output %r has shape %s, onnxruntime's %s" % (name, g.shape, r.shape))
            bad, err = _close(g, r, rtol, atol)
            n_bad, n_total, worst = n_bad + bad, n_total + r.size, max(worst, err)
            if r.ndim == 2 and r.shape[1] > 1:
                argmax_same += int((r.argmax(1) == g.argmax(1)).sum())
                argmax_total += r.shape[0]
    summary = "%d inputs, end to end: %d of %d output values outside rtol=%g/atol=%g*max|ref| (max error %.3g of " \
              "max|ref|)" % (len(feeds), n_bad, n_total, rtol, atol, worst)
    if argmax_total:
        summary += ", argmax agrees on %d/%d" % (argmax_same, argmax_total)
    result = {"inputs": len(feeds), "mismatched": n_bad, "values": n_total, "max_rel_error": worst,
              "first_bad_layer": None, "layers": 0}
    # layer by layer: each on onnxruntime's input to it
    all_in = {i["name"]: (i["name"], None, None, 0.0) for i in in_specs}
    anchors = dict(all_in, **anchors)
    layer_list = _layers(graph, anchors)
    with tempfile.TemporaryDirectory(prefix="bnn-check-") as tmp:
        for end, nodes, ins in layer_list:
            nodes = [dict(n, inputs=list(n["inputs"])) for n in nodes]
            m = _layer_model(graph, tensors, anchors, end, nodes, ins, tmp)
            onnx_end, levels, pre, thr = anchors[end]
            for feed, ref in list(zip(feeds, oracle))[:layers]:
                xs = [np.asarray(feed[i] if i in all_in else ref[anchors[i][0]], np.float32) for i in ins]
                g = m.run(xs[0] if len(xs) == 1 else xs)
                r = np.asarray(ref[onnx_end], np.float32)
                if levels is None:
                    bad, err = _close(g, r, rtol, atol)
                else:  # bits: exact, except where onnxruntime's input to the binarisation is at its threshold
                    near = np.zeros(r.shape, bool)
                    if pre is not None:
                        p = np.asarray(ref[pre], np.float32) - np.float32(thr)
                        near = np.abs(p) <= rtol * (float(np.max(np.abs(p))) or 1.0)
                    wrong = (g != r) & ~near
                    bad, err = int(wrong.sum()), float(wrong.mean()) if wrong.size else 0.0
                if bad:
                    result["first_bad_layer"] = nodes[-1]["name"]
                    summary += "; layer by layer: %r (%s, ONNX value %r) disagrees with onnxruntime on %d of %d " \
                               "values (max error %.3g)" % (nodes[-1]["name"], nodes[-1]["op"], onnx_end, bad, r.size,
                                                            err)
                    break
            m.close()
            result["layers"] += 1
            if result["first_bad_layer"]:
                break
    if not result["first_bad_layer"]:
        summary += "; layer by layer: %d layers agree" % len(layer_list)
    result["ok"] = result["first_bad_layer"] is None
    result["summary"] = summary
    return result
