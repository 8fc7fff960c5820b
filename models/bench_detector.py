"""Detector speed and size on this machine: ours (.bnn, firmware_py) vs the fp twin in
onnxruntime, 1 thread and all threads.  Prints one JSON document.

    python -m models.bench_detector [--bnn models/zoo/person/binary.bnn]
                                    [--onnx models/zoo/person/fp_twin.onnx] [--seconds 3]
                                    [--threads 1,2] [--downsample avg] [--widths 16,32,64,128,512]
                                    [--icount aarch64,armhf]

For each thread count the two runtimes are timed in alternating rounds (ours, then
onnxruntime, again and again for --seconds each in total), so that a machine whose load
changes (other jobs, frequency scaling) slows both alike; ``ms`` is the median of the
per-call times, ``speedup`` the median of the per-round ratios onnxruntime / ours.  On a
busy machine a long call is preempted more often than a short one, which inflates the
slower runtime's median more: ``speedup_p10`` (the ratio of the 10th-percentile times,
the calls that ran nearly undisturbed) is then the better estimate of the quiet ratio.  Two
measurements: ``net`` (the network alone on a letterboxed input: Detector.raw) and
``detect`` (Detector.detect on a 640x480 frame: letterbox, network, decode, NMS).

``files``: the sizes of the two model files and their ratio (fp twin ONNX / ours).
``profile``: our network's per-op time at 1 thread (Model.profile, medians, ms).

When the zoo files are missing (nothing trained yet) untrained models of the same
architecture are built (needs torch; seeded) with random BatchNorm statistics -- speed
does not depend on the weights -- and ``"untrained": true``; --downsample / --widths /
--imgsz change that architecture (models/detector.py default_config) to measure
alternatives.  (A binary conv weight of exactly 0 would binarise to 0, not +-1, and the
converter would keep that conv float: the stand-ins nudge such weights to 1e-6.)

``--icount aarch64,armhf`` adds ``icount``: per ARM architecture the guest instructions
per frame of our runtime, 1 thread, for ``net`` (Detector.raw) and ``detect`` (a 640x480
frame), counted under qemu-user with ../shared/tools/arm-icount.  The Python of the Debian
ARM userland of ../shared/tools/arm-rootfs runs firmware_py with the package's ARM library
(firmware_py/_lib/<arch>/libbnn.so, built by ./build.sh <arch>); ``path`` is the code path
that library chose.  Each count is the difference of two runs that differ only in the
number of frames (1 + N vs 1, N = ICOUNT_FRAMES), divided by N, so start-up, imports and
model loading cancel.  Start-up is not quite repeatable (libraries poll the clock: under
qemu-arm importing OpenCV varies by ~2M instructions a run, under qemu-aarch64 by
thousands): ``noise_per_frame`` is the difference of two identical runs divided by N.

On aarch64 the fp twin is counted too, for ``net`` (the network alone on the same
letterboxed input size as ours), in onnxruntime's official PyPI wheel (models/ort_icount.py:
pinned version and sha256, downloaded once into models/.cache/ort-aarch64/), 1 thread,
sequential, the same difference of runs: ``fp_twin_onnxruntime`` and
``net_ratio_onnxruntime_over_ours``.  aarch64 counts run on the emulated core of
``--icount-cpu`` (qemu -cpu; default cortex-a72, the Pi 4's), ours and onnxruntime alike:
under qemu's default ``max`` core onnxruntime would take SVE/SME kernels that no Pi has.
armhf runs on qemu-arm's default core, and its fp twin is not counted (onnxruntime
publishes no armv7 wheel).  A missing userland, qemu, library or wheel download stops the
benchmark before anything is timed, with the command to run.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "models" / "zoo" / "person"
ROOTFS = Path("/var/cache/arm-rootfs")  # ../shared/tools/arm-rootfs/build.sh puts its userlands here
ROOTFS_ARCH = {"aarch64": "arm64", "armhf": "armhf"}  # our name -> Debian's
ICOUNT_FRAMES = 10

# Run by the ARM userland's python3 under qemu -L: with -S, as site would also read the
# host's /usr/local .pth files (-L falls back to host paths), and with Debian's packages on
# their host path (sys.prefix is one), as qemu-arm's -L does not redirect statx.  argv: repo,
# model, net frames, detect frames, where to write what it ran on.
_GUEST = r"""
import json, platform, sys
root, model, n_net, n_detect, info = sys.argv[1:]
sys.path[:0] = [root]
sys.path.append(sys.prefix + "/lib/python3/dist-packages")
import numpy as np
from firmware_py import _native
from firmware_py.detect import Detector
try:
    import cv2
    cv2.setNumThreads(1)
except ImportError:
    cv2 = None
det = Detector(model, num_threads=1, conf=0.25)
frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
x, _ = det.preprocess(frame)
for _ in range(int(n_net)):
    det.raw(x)
for _ in range(int(n_detect)):
    det.detect(frame)
with open(info, "w") as f:
    json.dump({"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
               "opencv": cv2.__version__ if cv2 is not None else None, "library": _native.library_path(),
               "path": det.runner.model._ctx.path, "input": list(det.input_size)}, f)
"""


def _untrained(tmp, imgsz, overrides, seed=0):
    import torch

    from firmware_py.convert import convert

    from . import detector as D
    from .layers import BinaryConv2d

    paths = {}
    for v, name in (("binary", "binary"), ("fp", "fp_twin")):
        torch.manual_seed(seed)
        m = D.build_detector(D.default_config(v, imgsz, **overrides))
        D.randomize_bn(m)
        with torch.no_grad():  # a weight of exactly 0 has Sign 0: that conv would stay float
            for mod in m.modules():
                if isinstance(mod, BinaryConv2d):
                    mod.weight[mod.weight == 0] = 1e-6
        p = os.path.join(tmp, name + ".onnx")
        D.export_onnx(m, p, ["person"])
        paths[v] = p
    bnn = os.path.join(tmp, "binary.bnn")
    convert(paths["binary"], bnn)
    return bnn, paths["fp"]


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _interleaved(fns, seconds, round_s=0.25):
    """Times each fn of ``fns`` (a dict name -> fn) in alternating rounds of about round_s
    seconds until each has run ~seconds in total.  Returns {name: per-call times (s)} and
    the per-round mean times {name: [...]} (rounds aligned across names)."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    calls = {k: [] for k in fns}
    rounds = {k: [] for k in fns}
    total = {k: 0.0 for k in fns}
    clock = time.perf_counter
    while min(total.values()) < seconds or len(next(iter(rounds.values()))) < 3:
        for k, fn in fns.items():
            ts = []
            t_end = clock() + round_s
            while True:
                t0 = clock()
                fn()
                ts.append(clock() - t0)
                if t0 + ts[-1] >= t_end and len(ts) >= 2:
                    break
            calls[k] += ts
            rounds[k].append(statistics.mean(ts))
            total[k] += sum(ts)
    return calls, rounds


def _p10(ts):
    return sorted(ts)[len(ts) // 10]


def _stats(ts):
    med = statistics.median(ts)
    return {"ms": round(med * 1e3, 3), "fps": round(1.0 / med, 1), "p10_ms": round(_p10(ts) * 1e3, 3),
            "min_ms": round(min(ts) * 1e3, 3), "calls": len(ts)}


def icount_rootfs(arch):
    """the ARM userland for ``arch``; exits with the command to run when something is missing"""
    from firmware_py.bench import CROSS

    qemu, rootfs = CROSS[arch][2], ROOTFS / ROOTFS_ARCH[arch]
    lib = ROOT / "firmware_py" / "_lib" / arch / "libbnn.so"
    if shutil.which(qemu) is None:
        sys.exit(f"--icount {arch}: {qemu} not found: run apt-get install qemu-user")
    if not (rootfs / ".complete").exists():
        sys.exit(f"--icount {arch}: no ARM Python userland at {rootfs}: run "
                 f"../shared/tools/arm-rootfs/build.sh {ROOTFS_ARCH[arch]} (as root, ~7 minutes once)")
    if not lib.exists():
        sys.exit(f"--icount {arch}: {lib.relative_to(ROOT)} is missing: run ./build.sh {arch}")
    return rootfs


def guest_python(arch, args, cpu=None, sysroot=None) -> int:
    """the guest instructions of one run of the ARM userland's ``python3 -S -B -c args...``
    under qemu-user with ../shared/tools/arm-icount: ``-L`` the userland (or ``sysroot``, a
    view of it), its OpenBLAS on LD_LIBRARY_PATH with one thread, a fixed hash seed; ``cpu``:
    the core qemu emulates (-cpu), its default when None"""
    from firmware_py.bench import CROSS, guest_instructions, icount_plugin

    rootfs = icount_rootfs(arch)
    # libblas.so.3 is an absolute symlink into /etc/alternatives, which -L does not follow;
    # a host path, as qemu-arm's -L does not redirect statx (what ld.so checks dirs with)
    blas = rootfs / "usr" / "lib" / Path(CROSS[arch][3]).name / "openblas-pthread"
    return guest_instructions(
        arch, rootfs / "usr" / "bin" / "python3", icount_plugin(), ["-S", "-B", "-c", *args],
        qemu_args=[*(["-cpu", cpu] if cpu else []), "-L", sysroot or rootfs, "-E", f"LD_LIBRARY_PATH={blas}",
                   "-E", "PYTHONHASHSEED=0", "-E", "OPENBLAS_NUM_THREADS=1"])


def icount(arch, bnn, frames=ICOUNT_FRAMES, cpu=None):
    """guest instructions per frame of ``bnn`` on ``arch`` (see the module docstring); ``cpu``:
    the core qemu emulates (-cpu), its default when None"""
    with tempfile.TemporaryDirectory() as tmp:
        info = os.path.join(tmp, "info.json")

        def total(n_net, n_detect):
            return guest_python(arch, [_GUEST, ROOT, os.path.abspath(bnn), n_net, n_detect, info], cpu)

        base = total(1, 1)
        with open(info) as f:
            res = json.load(f)
        res["library"] = os.path.relpath(res["library"], ROOT)
        res.update(qemu_cpu=cpu or "default", threads=1, frames=frames,
                   net={"instructions_per_frame": round((total(1 + frames, 1) - base) / frames)},
                   detect={"instructions_per_frame": round((total(1, 1 + frames) - base) / frames)},
                   noise_per_frame=round(abs(total(1, 1) - base) / frames))  # two identical runs
    return res


def icount_fp_twin(onnx_path, input_size, frames=ICOUNT_FRAMES, cpu=None):
    """onnxruntime's guest instructions per frame for ``net`` of the fp twin on aarch64: the
    network alone on a letterboxed 640x480 frame of ``input_size`` (h, w), 1 thread"""
    from firmware_py.detect import letterbox

    from . import ort_icount

    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    x, _ = letterbox(frame, tuple(input_size))
    r = ort_icount.count(onnx_path, x, frames, cpu or ort_icount.DEFAULT_CPU, noise=True)
    return {"onnxruntime": r["onnxruntime"], "wheel": r["wheel"], "qemu_cpu": r["qemu_cpu"], "threads": 1,
            "frames": frames, "input": list(x.shape), "net": {"instructions_per_frame": r["instructions_per_frame"]},
            "noise_per_frame": r["noise_per_frame"]}


def bench(bnn, onnx_path, seconds=3.0, untrained=False, threads=None, config=None, icount_archs=(),
          icount_cpu=None):
    from firmware_py.detect import Detector

    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    all_threads = os.cpu_count() or 1
    res = {"machine": platform.machine(), "cpu": _cpu_name(), "cpus": all_threads, "untrained": untrained,
           "files": {"ours": {"path": str(bnn), "bytes": os.path.getsize(bnn)},
                     "fp_twin_onnx": {"path": str(onnx_path), "bytes": os.path.getsize(onnx_path)}}}
    res["files"]["size_ratio"] = round(res["files"]["fp_twin_onnx"]["bytes"] / res["files"]["ours"]["bytes"], 2)
    if config is not None:
        res["config"] = config
    res["threads"] = {}
    for nt in threads or sorted({1, all_threads}):
        ours = Detector(bnn, num_threads=nt, conf=0.25)
        ort = Detector(onnx_path, num_threads=nt, conf=0.25)
        res["input"] = list(ours.input_size)
        res["path"] = ours.runner.model._ctx.path
        x, _ = ours.preprocess(frame)
        row = {}
        for what, fo, fr in (("net", lambda: ours.raw(x), lambda: ort.raw(x)),
                             ("detect", lambda: ours.detect(frame), lambda: ort.detect(frame))):
            calls, rounds = _interleaved({"ours": fo, "onnxruntime": fr}, seconds)
            ratios = [r / o for o, r in zip(rounds["ours"], rounds["onnxruntime"])]
            row[what] = {"ours": _stats(calls["ours"]), "onnxruntime": _stats(calls["onnxruntime"]),
                         "speedup": round(statistics.median(ratios), 2),
                         "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)], "rounds": len(ratios),
                         "speedup_p10": round(_p10(calls["onnxruntime"]) / _p10(calls["ours"]), 2)}
        if nt == 1:
            prof = ours.runner.model.profile(x, repeat=20)
            by = collections.defaultdict(float)
            for p in prof:
                by[p["op"]] += p["ms"]
            row["profile"] = {"nodes_ms": round(prof.nodes_ms, 3), "total_ms": round(prof.total_ms, 3),
                              "by_op_ms": {k: round(v, 3) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}}
        res["threads"][str(nt)] = row
        ours.runner.model.close()
    if icount_archs:
        from . import ort_icount

        res["icount"] = {}
        for arch in icount_archs:
            cpu = (icount_cpu or ort_icount.DEFAULT_CPU) if arch == "aarch64" else None
            r = res["icount"][arch] = icount(arch, bnn, cpu=cpu)
            if arch == "aarch64":
                fp = r["fp_twin_onnxruntime"] = icount_fp_twin(onnx_path, r["input"], cpu=cpu)
                r["net_ratio_onnxruntime_over_ours"] = round(
                    fp["net"]["instructions_per_frame"] / r["net"]["instructions_per_frame"], 2)
            else:
                r["fp_twin_onnxruntime"] = "not counted: onnxruntime publishes no armv7 wheel"
    print(json.dumps(res, indent=1), flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.bench_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnn", default=str(ZOO / "binary.bnn"))
    ap.add_argument("--onnx", default=str(ZOO / "fp_twin.onnx"))
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime and measurement")
    ap.add_argument("--imgsz", type=int, default=192, help="for the untrained stand-ins (models/detector.py IMGSZ)")
    ap.add_argument("--downsample", choices=("real", "avg"), help="for the untrained stand-ins")
    ap.add_argument("--widths", help="for the untrained stand-ins: 5 comma-separated widths")
    ap.add_argument("--threads", default="", help="comma-separated thread counts (default 1 and all)")
    ap.add_argument("--icount", default="", metavar="ARCHS",
                    help="also count ARM guest instructions per frame under qemu: aarch64 and/or armhf")
    ap.add_argument("--icount-cpu", default="cortex-a72", choices=["cortex-a53", "cortex-a72", "cortex-a76"],
                    help="the aarch64 core qemu emulates for --icount (Pi 3 / Pi 4 / Pi 5)")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")] if a.threads else None
    archs = [v for v in a.icount.split(",") if v]
    for arch in archs:  # before anything slow: a missing prerequisite stops with what to run
        if arch not in ROOTFS_ARCH:
            ap.error(f"--icount: {arch!r} is not one of {', '.join(ROOTFS_ARCH)}")
        icount_rootfs(arch)
    if archs:
        from firmware_py.bench import icount_plugin

        from . import ort_icount

        icount_plugin()  # builds build/tools/libicount.so once
        if "aarch64" in archs:
            ort_icount.check("aarch64", a.icount_cpu)  # the onnxruntime wheel, downloaded once
    overrides = {}
    if a.downsample:
        overrides["downsample"] = a.downsample
    if a.widths:
        overrides["widths"] = [int(w) for w in a.widths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        bnn, onnx_path, untrained, config = a.bnn, a.onnx, False, None
        if overrides or not (os.path.exists(bnn) and os.path.exists(onnx_path)):
            from . import detector as D

            bnn, onnx_path = _untrained(tmp, a.imgsz, overrides)
            untrained = True
            cfg = D.default_config("binary", a.imgsz, **overrides)
            config = {k: cfg[k] for k in ("imgsz", "widths", "depths", "neck", "arch", "downsample")}
        return bench(bnn, onnx_path, a.seconds, untrained, threads, config, archs, a.icount_cpu)


if __name__ == "__main__":
    main()
