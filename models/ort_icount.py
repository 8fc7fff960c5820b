"""onnxruntime's guest instructions per inference on aarch64, for the benchmarks' ``--icount``.

The Debian arm64 userland of ../shared/tools/arm-rootfs has no onnxruntime (Debian does not
package it), so the official PyPI wheel for CPython 3.11 aarch64 (pinned below: version and
sha256) is downloaded once with pip and unpacked under models/.cache/ort-aarch64/<version>/
(ignored by git); the userland's python3 imports it from there.  ``import onnxruntime``,
``InferenceSession`` and ``run`` need only numpy (the userland's 1.24; the wheel asks for
>= 1.21.6): protobuf, flatbuffers, sympy and coloredlogs are imported only by its tools
(quantisation, transformers, symbolic shapes), not here.

Under qemu-user onnxruntime crashes while importing (SIGSEGV in its cpuinfo library, which
parses /proc/cpuinfo: qemu 7.2 passes the host's x86 one through).  The guest therefore runs
with ``-L`` pointing at a view of the userland (a folder of symlinks to its top-level entries)
whose /proc/cpuinfo is a file describing the emulated core (``-cpu``): its MIDR and the
feature line a Raspberry Pi's kernel prints.  The core matters: under qemu's default ``max``
core onnxruntime takes its SVE/SME kernels, which no Raspberry Pi has (the fp twin: 28.5M
instructions per frame under ``max``, 115M under ``cortex-a72``), so counts are taken on a
Pi's core, ours under the same ``-cpu``.

The count is the difference of two runs of the same program that differ only in the number
of inferences (1 + N against 1), divided by N, as for our runtime (models/bench_detector.py).
onnxruntime runs on 1 thread: intra_op_num_threads = inter_op_num_threads = 1, sequential
execution, CPUExecutionProvider.  onnxruntime publishes no armv7 (armhf) wheel: aarch64 only.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ORT_VERSION = "1.32.0"  # the same as requirements/constraints.txt's x86-64 onnxruntime
ORT_WHEEL = f"onnxruntime-{ORT_VERSION}-cp311-cp311-manylinux_2_28_aarch64.whl"
ORT_SHA256 = "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c"  # PyPI's digest of ORT_WHEEL
CACHE = ROOT / "models" / ".cache" / "ort-aarch64"

# the cores whose /proc/cpuinfo the view can show: MIDR fields as qemu emulates them (= the
# Pis' cores) and the "Features" line of a Raspberry Pi OS kernel on that Pi
CPUS = {
    "cortex-a53": (0x0, 0xd03, 4, "fp asimd evtstrm crc32 cpuid"),  # Pi 3, Zero 2 W
    "cortex-a72": (0x0, 0xd08, 3, "fp asimd evtstrm crc32 cpuid"),  # Pi 4, Pi 400, CM4
    "cortex-a76": (0x4, 0xd0b, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                  "asimdrdm lrcpc dcpop asimddp"),  # Pi 5
}
DEFAULT_CPU = "cortex-a72"


def pip_command(dest) -> list:
    """the pip command that downloads the pinned wheel into ``dest``"""
    return [sys.executable, "-m", "pip", "download", f"onnxruntime=={ORT_VERSION}", "--no-deps",
            "--only-binary=:all:", "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "-d", str(dest)]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ort_site(cache=CACHE) -> Path:
    """the folder to put on the aarch64 guest's sys.path for ``import onnxruntime``: the pinned
    wheel unpacked (``cache/<version>``), downloaded with pip on first use (``cache/<wheel>``,
    kept) and checked against ORT_SHA256 before anything is unpacked"""
    cache = Path(cache)
    site = cache / ORT_VERSION
    if (site / ".complete").exists():
        return site
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / ORT_WHEEL
    if not wheel.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = pip_command(tmp)
            try:
                res = subprocess.run(cmd, capture_output=True, text=True)
                err = res.stderr.strip().splitlines()[-3:] if res.returncode else None
            except OSError as e:
                err = [str(e)]
            if err is not None or not (Path(tmp) / ORT_WHEEL).exists():
                why = " / ".join(err or ["pip wrote no " + ORT_WHEEL])
                raise RuntimeError(f"could not download onnxruntime {ORT_VERSION} for aarch64 ({why}); run: "
                                   f"{' '.join(pip_command(cache))}  (needs pypi.org), or put {ORT_WHEEL} in {cache}")
            os.replace(Path(tmp) / ORT_WHEEL, wheel)
    got = _sha256(wheel)
    if got != ORT_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {got}, expected {ORT_SHA256} (pinned in models/ort_icount.py): "
                           f"not unpacked; delete it and run again to download it anew")
    tmp = Path(tempfile.mkdtemp(prefix=f".{ORT_VERSION}.", dir=cache))
    tmp.chmod(0o755)
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        for p in tmp.rglob("*.so*"):  # zipfile drops the mode bits
            p.chmod(0o755)
        (tmp / ".complete").write_text(f"{ORT_WHEEL} {ORT_SHA256}\n")
        if site.exists():  # an unpacking cut short earlier
            shutil.rmtree(site)
        os.replace(tmp, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return site


def _processors() -> int:
    """the host's CPU count as the guest's libraries see it (/sys is the host's under qemu-user)"""
    try:
        last = Path("/sys/devices/system/cpu/possible").read_text().strip().split(",")[-1]
        return int(last.split("-")[-1]) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def cpuinfo_text(cpu: str, n: int) -> str:
    variant, part, revision, features = CPUS[cpu]
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: {variant:#x}\nCPU part\t: {part:#05x}\n"
                   f"CPU revision\t: {revision}\n\n" for i in range(n))


def rootfs_view(rootfs: Path, cpu: str, where) -> Path:
    """a folder for qemu's -L: symlinks to ``rootfs``'s top-level entries, and a proc/cpuinfo of
    ``cpu`` (qemu -L looks a guest path up under the prefix first)"""
    view = Path(where) / "rootfs"
    view.mkdir()
    for e in Path(rootfs).iterdir():
        if e.name not in ("proc", ".complete"):
            (view / e.name).symlink_to(e)
    (view / "proc").mkdir()
    (view / "proc" / "cpuinfo").write_text(cpuinfo_text(cpu, _processors()))
    return view


# Run by the userland's python3 (-S, as in models/bench_detector.py).  argv: the unpacked
# wheel, the model, the input (.npy), the number of inferences.
_GUEST = r"""
import sys
site, model, x_path, n = sys.argv[1:]
sys.path[:0] = [site]
sys.path.append(sys.prefix + "/lib/python3/dist-packages")
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.log_severity_level = 3
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
feed = {sess.get_inputs()[0].name: np.load(x_path)}
for _ in range(int(n)):
    sess.run(None, feed)
print("onnxruntime", ort.__version__, file=sys.stderr)
"""


def check(arch="aarch64", cpu=DEFAULT_CPU):
    """what ``count`` needs, before anything slow: exits with the command to run when something
    is missing; downloads and unpacks the wheel on first use"""
    from models.bench_detector import icount_rootfs

    if arch != "aarch64":
        sys.exit(f"onnxruntime is counted on aarch64 only (PyPI has no {arch} wheel of it)")
    if cpu not in CPUS:
        sys.exit(f"--icount-cpu {cpu!r}: one of {', '.join(CPUS)}")
    icount_rootfs(arch)
    try:
        return ort_site()
    except RuntimeError as e:
        sys.exit(f"--icount {arch}: {e}")


def count(onnx_path, x, frames=1, cpu=DEFAULT_CPU, noise=False, arch="aarch64") -> dict:
    """guest instructions per inference of ``onnx_path`` in onnxruntime on ``x`` (float32, the
    model's input), 1 thread, on aarch64 under qemu-user ``-cpu cpu``: the difference of runs
    with 1 + ``frames`` and 1 inference, divided by ``frames``; ``noise``: also the difference of
    two identical runs, divided by ``frames``"""
    from models.bench_detector import guest_python, icount_rootfs

    site = check(arch, cpu)
    with tempfile.TemporaryDirectory() as tmp:
        view = rootfs_view(icount_rootfs(arch), cpu, tmp)
        x_path = os.path.join(tmp, "x.npy")
        np.save(x_path, np.ascontiguousarray(x, dtype=np.float32))

        def total(n):
            return guest_python(arch, [_GUEST, site, os.path.abspath(onnx_path), x_path, n], cpu, sysroot=view)

        base = total(1)
        res = {"onnxruntime": ORT_VERSION, "wheel": ORT_WHEEL, "qemu_cpu": cpu, "threads": 1, "frames": frames,
               "instructions_per_frame": round((total(1 + frames) - base) / frames)}
        if noise:
            res["noise_per_frame"] = round(abs(total(1) - base) / frames)
    return res
