"""This runtime against Larq Compute Engine and onnxruntime fp32 on larq-zoo models.

    # once, in the TensorFlow venv (models/larq/tf_venv.sh): the models at 224x224, 1000 classes
    /work/venvs/tf/bin/python models/larq/export.py --out models/.cache/larq --size 224 --classes 1000
    # then, in the project's venv
    .venv/bin/python -m models.larq.bench --dir models/.cache/larq --json docs/bench/larq_zoo.json

Per model and thread count (1, 2): ours (the ONNX export converted with the plain
``convert``), LCE's interpreter on LCE's own conversion of the same Keras model
(``convert_keras_model``) with its default kernels and with the indirect BGEMM kernels
(``use_indirect_bgemm``), and onnxruntime fp32 on the ONNX export.  LCE runs in a worker
process of the TensorFlow venv (models/larq/lce_worker.py; firmware_py never imports
TensorFlow) and times its own ``predict`` calls.  Rounds are interleaved (each round times
one inference of every engine, in a rotating order) and the table shows medians; the JSON
holds every median and the ratios.

``--icount aarch64`` adds guest instructions per inference (1 thread) under qemu-user with
../shared/tools/arm-icount, in the Debian arm64 userland (models/bench_detector.py's set-up:
./build.sh aarch64, ../shared/tools/arm-rootfs), each the difference of a run of 2
inferences and a run of 1: ours, and onnxruntime fp32 on the same ONNX export and input
(its official PyPI aarch64 wheel, pinned in models/ort_icount.py and downloaded once into
models/.cache/ort-aarch64/; 1 thread, sequential), with the ratio onnxruntime / ours.  Both
run on the emulated core of ``--icount-cpu`` (default cortex-a72, the Pi 4's; qemu's default
``max`` core would give onnxruntime SVE/SME kernels that no Pi has).  LCE is not counted: it
publishes no aarch64 wheel on PyPI.  ``--icount-only`` skips the timing (no LCE worker, no
TensorFlow venv): it converts the exports and counts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ZOO = ["QuickNetSmall", "QuickNet", "BinaryDenseNet28", "BiRealNet", "XNORNet"]


class LCE:
    """the LCE worker process"""

    def __init__(self, python):
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.p = subprocess.Popen([python, str(HERE / "lce_worker.py")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline().strip()
        if not out or out.startswith("error"):
            raise RuntimeError("LCE worker: %r -> %r" % (line, out))
        return out

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=30)


def _timer(fn):
    def run():
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return run


def bench_model(name, d, threads, rounds, lce, out_dir):
    import onnxruntime as ort

    import firmware_py
    from firmware_py.convert import convert
    from firmware_py.convert.report import layer_rows

    res = convert(str(d / (name + ".onnx")), str(out_dir / (name + ".bnn")))
    rows = layer_rows(res.graph, res.tensors)
    bmacs = sum(r["macs"] for r in rows if r["op"] in ("bconv2d", "bdense"))
    fmacs = sum(r["macs"] for r in rows if r["op"] in ("fconv2d", "dense"))
    shape = tuple(res.graph["inputs"][0]["shape"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = []
    for t in threads:
        model = firmware_py.load(res.path, num_threads=t)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = t, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(d / (name + ".onnx")), so, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        engines = {"ours": _timer(lambda: model.run(x)),
                   "onnxruntime_fp32": _timer(lambda: sess.run(None, {in_name: x}))}
        for kernel in ("default", "indirect_bgemm"):
            key = "%s.%d.%s" % (name, t, kernel)
            lce.ask("load %s %s %d %s" % (key, d / (name + ".tflite"), t, kernel))
            engines["lce_" + kernel] = (lambda k=key: float(lce.ask("run " + k)))
        for fn in engines.values():
            fn()  # warm-up
        times = {k: [] for k in engines}
        keys = list(engines)
        for r in range(rounds):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                times[k].append(engines[k]())
        med = {k: round(float(np.median(v)), 3) for k, v in times.items()}
        best = min(("lce_default", "lce_indirect_bgemm"), key=lambda k: med[k])
        lce_best = med[best]
        # the ratio within each round (the engines ran back to back), its median: steadier than
        # the ratio of medians when the machine's speed changes between rounds
        per_round = [b / a for a, b in zip(times["ours"], times[best])]
        out.append({"model": name, "input": list(shape), "threads": t, "rounds": rounds, "ms_median": med,
                    "speedup_vs_lce_best": round(lce_best / med["ours"], 2),
                    "speedup_vs_lce_best_round_median": round(float(np.median(per_round)), 2),
                    "speedup_vs_onnxruntime": round(med["onnxruntime_fp32"] / med["ours"], 2),
                    "binary_mac_fraction": round(bmacs / max(1, bmacs + fmacs), 4), "path": model._ctx.path})
        model.close()
        print("%-18s %d thread(s): ours %8.2f ms  LCE default %8.2f  LCE indirect %8.2f  onnxruntime %8.2f  "
              "-> %.2fx LCE's best (per round: %.2fx)" % (
                  name, t, med["ours"], med["lce_default"], med["lce_indirect_bgemm"], med["onnxruntime_fp32"],
                  lce_best / med["ours"], float(np.median(per_round))), flush=True)
    return out


_GUEST = r"""
import sys
root, model, n = sys.argv[1:]
sys.path[:0] = [root]
sys.path.append(sys.prefix + "/lib/python3/dist-packages")
import numpy as np
import firmware_py
m = firmware_py.load(model, num_threads=1)
x = np.random.default_rng(0).standard_normal(m.inputs[0].shape).astype(np.float32)
for _ in range(int(n)):
    m.run(x)
print("path", m._ctx.path, file=sys.stderr)
"""


def icount(arch, bnn, cpu=None):
    """our guest instructions per inference of ``bnn`` on ``arch`` (1 thread; ``cpu``: qemu's -cpu,
    its default when None)"""
    from models.bench_detector import ROOT, guest_python

    def total(n):
        return guest_python(arch, [_GUEST, ROOT, os.path.abspath(bnn), n], cpu)
    return total(2) - total(1)


def icount_onnxruntime(onnx_path, bnn, cpu):
    """onnxruntime's guest instructions per inference of ``onnx_path`` on aarch64 (1 thread), on
    the input ours gets in ``icount`` (the converted model's input shape, the same seed)"""
    import firmware_py
    from models import ort_icount

    m = firmware_py.load(str(bnn), num_threads=1)
    shape = m.inputs[0].shape
    m.close()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return ort_icount.count(onnx_path, x, frames=1, cpu=cpu)["instructions_per_frame"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(HERE.parent / ".cache" / "larq"), help="export.py's output")
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--tf-python", default="/work/venvs/tf/bin/python", help="the TensorFlow venv's python")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--icount", choices=["aarch64"],
                    help="also count guest instructions per inference (ours and onnxruntime)")
    ap.add_argument("--icount-cpu", default="cortex-a72", choices=["cortex-a53", "cortex-a72", "cortex-a76"],
                    help="the aarch64 core qemu emulates for --icount (Pi 3 / Pi 4 / Pi 5)")
    ap.add_argument("--icount-only", action="store_true", help="with --icount: convert and count, time nothing")
    a = ap.parse_args(argv)
    if a.icount_only and not a.icount:
        ap.error("--icount-only needs --icount")
    d = Path(a.dir)
    threads = [int(t) for t in a.threads.split(",")]
    if a.icount:  # before anything slow: a missing prerequisite stops with what to run
        from firmware_py.bench import icount_plugin
        from models import ort_icount

        ort_icount.check(a.icount, a.icount_cpu)
        icount_plugin()
    lce = None if a.icount_only else LCE(a.tf_python)
    results, errors = [], {}
    out_dir = d / "bnn"
    out_dir.mkdir(exist_ok=True)
    try:
        for name in a.models.split(","):
            try:
                if a.icount_only:
                    from firmware_py.convert import convert

                    convert(str(d / (name + ".onnx")), str(out_dir / (name + ".bnn")))
                else:
                    results += bench_model(name, d, threads, a.rounds, lce, out_dir)
            except ValueError as e:  # ConvertError: reported, the others still run
                errors[name] = str(e)
                print("%s: %s" % (name, e), flush=True)
    finally:
        if lce is not None:
            lce.close()
    icounts, ort_counts = {}, {}
    for name in (a.models.split(",") if a.icount else []):
        if name not in errors:
            icounts[name] = icount(a.icount, out_dir / (name + ".bnn"), a.icount_cpu)
            ort_counts[name] = icount_onnxruntime(d / (name + ".onnx"), out_dir / (name + ".bnn"), a.icount_cpu)
            print("%-18s %s (%s): %s guest instructions per inference (ours, 1 thread), onnxruntime fp32 %s: %.2fx"
                  % (name, a.icount, a.icount_cpu, f"{icounts[name]:,}", f"{ort_counts[name]:,}",
                     ort_counts[name] / icounts[name]), flush=True)
    what = ("aarch64 guest instructions per inference (one image), this runtime vs onnxruntime fp32; nothing timed "
            "(--icount-only)" if a.icount_only else
            "this runtime vs Larq Compute Engine (default and indirect BGEMM kernels) vs onnxruntime fp32; medians of "
            "interleaved rounds, ms per inference (one image)")
    doc = {"what": "larq-zoo models (random weights, calibrated BatchNorm): " + what,
           "command": "python -m models.larq.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
           "results": results, "not_converted": errors}
    if icounts:
        from models import ort_icount

        doc["icount"] = {"arch": a.icount, "qemu_cpu": a.icount_cpu, "threads": 1,
                         "ours_instructions_per_inference": icounts,
                         "onnxruntime_fp32_instructions_per_inference": ort_counts,
                         "onnxruntime_over_ours": {k: round(ort_counts[k] / v, 2) for k, v in icounts.items()},
                         "onnxruntime": "%s (PyPI wheel %s), 1 thread, sequential" % (ort_icount.ORT_VERSION,
                                                                                      ort_icount.ORT_WHEEL),
                         "lce": "not counted: no aarch64 wheel of larq-compute-engine on PyPI"}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if not errors else 1


def _cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
