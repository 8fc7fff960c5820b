"""Detector speed on this machine: ours (.bnn, firmware_py) vs the fp twin in
onnxruntime, 1 thread and all threads; one JSON line per measurement.

    python -m models.bench_detector [--bnn models/zoo/person/binary.bnn]
                                    [--onnx models/zoo/person/fp_twin.onnx] [--seconds 3]

Each line: model, runtime, threads, fps of the whole Detector.detect (letterbox, network,
decode, NMS) on a 640x480 frame, and the network alone (ms per run).  When the zoo files
are missing (nothing trained yet) an untrained model of the same architecture is built
(needs torch) and measured instead -- speed does not depend on the weights; the line
then says "untrained": true.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "models" / "zoo" / "person"


def _untrained(tmp, imgsz):
    from firmware_py.convert import convert

    from . import detector as D

    paths = {}
    for v, name in (("binary", "binary"), ("fp", "fp_twin")):
        m = D.build_detector(D.default_config(v, imgsz))
        D.randomize_bn(m)
        p = os.path.join(tmp, name + ".onnx")
        D.export_onnx(m, p, ["person"])
        paths[v] = p
    bnn = os.path.join(tmp, "binary.bnn")
    convert(paths["binary"], bnn)
    return bnn, paths["fp"]


def _rate(fn, seconds):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= 3:
            return n / el


def bench(bnn, onnx_path, seconds=3.0, untrained=False, threads=None):
    from firmware_py.detect import Detector

    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    all_threads = os.cpu_count() or 1
    rows = []
    for path, runtime in ((bnn, "firmware_py"), (onnx_path, "onnxruntime")):
        if not path:
            continue
        for nt in threads or sorted({1, all_threads}):
            det = Detector(path, num_threads=nt, conf=0.25)
            x, _ = det.preprocess(frame)
            net = _rate(lambda: det.raw(x), seconds)
            full = _rate(lambda: det.detect(frame), seconds)
            row = {"model": os.path.basename(path), "runtime": runtime, "threads": nt,
                   "input": list(det.input_size), "frame": [480, 640], "fps": round(full, 2),
                   "net_ms": round(1000 / net, 2), "untrained": untrained, "machine": platform.machine()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.bench_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnn", default=str(ZOO / "binary.bnn"))
    ap.add_argument("--onnx", default=str(ZOO / "fp_twin.onnx"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--imgsz", type=int, default=256, help="for the untrained stand-ins")
    ap.add_argument("--threads", default="", help="comma-separated thread counts (default 1 and all)")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")] if a.threads else None
    with tempfile.TemporaryDirectory() as tmp:
        bnn, onnx_path, untrained = a.bnn, a.onnx, False
        if not (os.path.exists(bnn) and os.path.exists(onnx_path)):
            bnn, onnx_path = _untrained(tmp, a.imgsz)
            untrained = True
        return bench(bnn, onnx_path, a.seconds, untrained, threads)


if __name__ == "__main__":
    main()
