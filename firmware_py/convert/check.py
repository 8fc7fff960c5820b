"""--check: the converted model against onnxruntime on the source graph."""
from __future__ import annotations

import numpy as np

from .errors import ConvertError


def check_against_onnxruntime(src, dst, graph, inputs=None, samples=4, seed=0, rtol=1e-3, atol=1e-4,
                              memory_limit=None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConvertError("--check needs onnxruntime (pip install onnxruntime)") from None
    from .. import load

    model = load(dst, num_threads=1, memory_limit=memory_limit)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(src if isinstance(src, str) else src.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = []
    in_specs = graph["inputs"]
    for _ in range(samples):
        feeds.append({s["name"]: rng.random(s["shape"], dtype=np.float32) for s in in_specs})
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
    worst = 0.0
    n_bad = 0
    n_total = 0
    argmax_same = argmax_total = 0
    for feed in feeds:
        ref = sess.run([o["name"] for o in graph["outputs"]], feed)
        x = feed[in_specs[0]["name"]] if len(in_specs) == 1 else [feed[s["name"]] for s in in_specs]
        got = model.run(x)
        got = got if isinstance(got, list) else [got]
        for r, g in zip(ref, got):
            r = np.asarray(r, np.float32)
            if r.shape != g.shape:
                raise ConvertError("output shape %s differs from onnxruntime's %s" % (g.shape, r.shape))
            scale = float(np.max(np.abs(r))) or 1.0
            err = np.abs(g - r)
            worst = max(worst, float(err.max() / scale)) if err.size else worst
            bad = err > atol * scale + rtol * np.abs(r)
            n_bad += int(bad.sum())
            n_total += r.size
            if r.ndim == 2 and r.shape[1] > 1:
                argmax_same += int((r.argmax(1) == g.argmax(1)).sum())
                argmax_total += r.shape[0]
    ok = n_bad == 0
    summary = "%d inputs, %d of %d output values outside rtol=%g/atol=%g*max|ref| (max error %.3g of max|ref|)" % (
        len(feeds), n_bad, n_total, rtol, atol, worst)
    if argmax_total:
        summary += ", argmax agrees on %d/%d" % (argmax_same, argmax_total)
    return {"ok": ok, "summary": summary, "inputs": len(feeds), "mismatched": n_bad, "values": n_total,
            "max_rel_error": worst}
