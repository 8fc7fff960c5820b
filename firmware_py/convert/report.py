"""--report: a per-layer table of the converted graph and the size against the source."""
from __future__ import annotations

import numpy as np

BINARY_OPS = {"bconv2d", "bdense", "bmaxpool2d", "bitpack"}


def layer_rows(graph, tensors):
    values = {v["name"]: v for v in graph["values"]}
    rows = []
    for n in graph["nodes"]:
        ins = [values[i]["shape"] for i in n["inputs"] if i in values]
        out = values[n["outputs"][0]]["shape"]
        nbytes = sum(int(tensors[t].nbytes) for t in n["params"].values())
        params, ops = 0, 0
        op = n["op"]
        if op in ("bconv2d", "fconv2d"):
            w = tensors[n["params"]["weights"]]
            kh, kw = n["attrs"]["kernel"]
            in_c = values[n["inputs"][0]]["shape"][3]
            params = w.shape[0] * kh * kw * in_c
            ops = out[0] * out[1] * out[2] * params
        elif op in ("dense", "bdense"):
            w = tensors[n["params"]["weights"]]
            params = w.shape[0] * values[n["inputs"][0]]["shape"][1]
            ops = out[0] * params
        rows.append({"name": n["name"], "op": op, "binary": op in BINARY_OPS or values[n["outputs"][0]]["kind"] == "bits",
                     "in": ins[0] if ins else None, "out": out, "params": params, "bytes": nbytes, "macs": ops})
    return rows


def float_reason_lines(result):
    return ["float although its weights are binary: %s: %s" % kv for kv in result.float_reasons.items()]


def report_text(result) -> str:
    rows = layer_rows(result.graph, result.tensors)
    head = ["layer", "op", "kind", "input", "output", "params", "bytes", "MACs"]
    table = [[r["name"], r["op"], "binary" if r["binary"] else "float", "x".join(map(str, r["in"] or [])),
              "x".join(map(str, r["out"])), f"{r['params']:,}", f"{r['bytes']:,}", f"{r['macs']:,}"] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table]
    bmacs = sum(r["macs"] for r in rows if r["op"] in ("bconv2d", "bdense"))
    fmacs = sum(r["macs"] for r in rows if r["op"] in ("fconv2d", "dense"))
    lines.append("")
    lines.append("binary MACs %s, float MACs %s (%.1f%% binary)" % (
        f"{bmacs:,}", f"{fmacs:,}", 100.0 * bmacs / max(1, bmacs + fmacs)))
    src = result.source_bytes
    lines.append("model file %s bytes; source ONNX %s bytes%s" % (
        f"{result.file_bytes:,}", f"{src:,}", " (%.1fx smaller)" % (src / result.file_bytes) if src else ""))
    lines += float_reason_lines(result)
    for note in result.notes:
        lines.append("note: " + note)
    if result.check:
        lines.append("check: " + result.check["summary"])
    return "\n".join(lines)
