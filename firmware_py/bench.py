"""Benchmarks (scripts, not tests): ``python -m firmware_py.bench conv``.

``conv``: binary convolution (this runtime, packed input -> float output) against
onnxruntime's fp32 Conv of the same shape and thread count, for the layer shapes of
XNOR-Net's speedup figure.  Prints a table, or one JSON object per row with ``--json``.

``conv --arch aarch64`` (or ``armhf``): cross-builds the static benchmark program
(csrc/bench/bench_bconv.c) and counts the guest instructions of one convolution under
qemu-user with ../shared/tools/arm-icount (exact and repeatable, unlike qemu's wall time):
``instructions_per_binary_mac`` per row.  ``--qemu-cpu cortex-a53`` emulates that core
(its MIDR), so the library runs its in-order bconv2d kernel.

``grouped``: grouped and depthwise float convolutions (QuickNet's stem and blur pools)
against onnxruntime's Conv with ``group``, 1 thread, alternating rounds, medians.

``inorder``: the aarch64 binary convolution's inner loop (one trip: one word of 4 pixels x
16 channels = 2,048 binary MACs), for the default kernel (bnn_tile_neon_4, compiled as
./build.sh does) and the in-order one (bnn_tile_neon_a53_4, chosen on Cortex-A53/A55/A35),
through llvm-mca: cycles per trip (per 2,048 binary MACs) on Cortex-A53 and A72, and the
loop's resource bound.  Needs aarch64-linux-gnu-gcc (./build.sh aarch64 installs it) and
llvm-mca (Debian package llvm).  Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CROSS = {
    "aarch64": ("aarch64-linux-gnu-gcc", ["-march=armv8-a", "-mtune=cortex-a72"], "qemu-aarch64",
                "/usr/aarch64-linux-gnu"),
    "armhf": ("arm-linux-gnueabihf-gcc",
              ["-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard", "-mtune=cortex-a53"], "qemu-arm",
              "/usr/arm-linux-gnueabihf"),
}


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _ort_conv(cin: int, cout: int, k: int, h: int, w: int, threads: int, weight: np.ndarray, stride=1, group=1):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    pad = k // 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2,
                            group=group)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench_conv_host(channels, kernels, size, threads_list, reps):
    from . import ops

    rng = np.random.default_rng(0)
    rows = []
    for threads in threads_list:
        ctx = ops.Context(num_threads=threads)
        for c in channels:
            for k in kernels:
                h = w = size
                weight = rng.standard_normal((c, c, k, k)).astype(np.float32)
                x = np.sign(rng.standard_normal((1, c, h, w))).astype(np.float32)
                x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                alpha = np.abs(weight).mean(axis=(1, 2, 3)).astype(np.float32)
                layer = ops.BConv2d(weight, (1, h, w, c), padding="same", output="float", mul=alpha,
                                    add=np.zeros(c, np.float32))
                xb = ops.bitpack(x_nhwc, ctx=ctx)
                ms_bin = _median_ms(lambda: layer.run(xb, ctx=ctx), reps)
                ms_pack = _median_ms(lambda: ops.bitpack(x_nhwc, ctx=ctx), reps)
                sess = _ort_conv(c, c, k, h, w, threads, np.sign(weight) * alpha[:, None, None, None])
                ms_ort = _median_ms(lambda: sess.run(None, {"x": x}), reps)
                macs = h * w * c * c * k * k
                rows.append({
                    "cin": c, "cout": c, "k": k, "h": h, "w": w, "threads": ctx.num_threads, "path": ctx.path,
                    "ms_binary": round(ms_bin, 4), "ms_bitpack_input": round(ms_pack, 4),
                    "ms_onnxruntime": round(ms_ort, 4), "speedup": round(ms_ort / ms_bin, 2),
                    "gops_binary": round(2 * macs / ms_bin / 1e6, 1), "gops_onnxruntime": round(2 * macs / ms_ort / 1e6, 1),
                })
        ctx.close()
    return rows


GROUPED_CASES = [  # (name, channels in, out, kernel, stride, groups, size)
    ("depthwise 3x3 s2 (blur pool)", 64, 64, 3, 2, 64, 112),
    ("depthwise 3x3 s1", 256, 256, 3, 1, 256, 28),
    ("group 8 3x3 s1", 64, 64, 3, 1, 8, 56),
]


def bench_grouped(reps, rounds=30):
    """grouped / depthwise float convolutions: ours vs onnxruntime's Conv(group=), 1 thread,
    alternating rounds of ``reps`` calls, medians; the outputs are compared first"""
    from . import ops

    rng = np.random.default_rng(0)
    ctx = ops.Context(num_threads=1)
    rows = []
    for name, c, o, k, s, g, h in GROUPED_CASES:
        wt = rng.standard_normal((o, c // g, k, k)).astype(np.float32)
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        layer = ops.FConv2d(wt, (1, h, h, c), stride=s, padding=(k // 2,) * 4, groups=g)
        y = np.empty(layer.out_shape, np.float32)
        sess = _ort_conv(c, o, k, h, h, 1, wt, stride=s, group=g)
        ref = sess.run(None, {"x": x})[0].transpose(0, 2, 3, 1)
        if not np.allclose(layer.run(xn, ctx=ctx, out=y), ref, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"{name}: ours differs from onnxruntime")
        ours, theirs = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                layer.run(xn, ctx=ctx, out=y)
            ours.append((time.perf_counter() - t0) / reps)
            t0 = time.perf_counter()
            for _ in range(reps):
                sess.run(None, {"x": x})
            theirs.append((time.perf_counter() - t0) / reps)
        rows.append({"case": name, "cin": c, "cout": o, "k": k, "stride": s, "groups": g, "h": h, "w": h,
                     "threads": 1, "path": ctx.path, "ms": round(float(np.median(ours)) * 1e3, 4),
                     "ms_onnxruntime": round(float(np.median(theirs)) * 1e3, 4),
                     "speedup": round(float(np.median(np.array(theirs) / np.array(ours))), 2)})
    ctx.close()
    return rows


def icount_plugin() -> Path:
    plugin = ROOT / "build" / "tools" / "libicount.so"
    if plugin.exists():
        return plugin
    tool = ROOT.parent / "shared" / "tools" / "arm-icount" / "build.sh"
    if not tool.exists():
        sys.exit(f"--arch needs ../shared/tools/arm-icount (not found at {tool})")
    plugin.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", str(tool), str(plugin)], check=True, stdout=subprocess.DEVNULL)
    return plugin


def build_static_bench(arch: str) -> Path:
    cc, flags, _, _ = CROSS[arch]
    if not shutil.which(cc):
        sys.exit(f"{cc} not found: run ./build.sh {arch} first (it installs the cross compiler)")
    out = ROOT / "build" / arch / "bench_bconv"
    out.parent.mkdir(parents=True, exist_ok=True)
    srcs = [str(p) for p in sorted((ROOT / "csrc" / "neon").rglob("*.c"))] + [str(ROOT / "csrc/bench/bench_bconv.c")]
    subprocess.run([cc, "-std=c11", "-O3", "-ffp-contract=off", *flags, "-static", f"-I{ROOT}/csrc/neon/include",
                    *srcs, "-lm", "-lpthread", "-o", str(out)], check=True)
    return out


def guest_instructions(arch: str, exe: Path, plugin: Path, args, qemu_args=()) -> int:
    """the guest instructions of one run of ``exe args`` under qemu-user (``qemu_args``
    go to qemu, e.g. ``-L rootfs``)"""
    _, _, qemu, _ = CROSS[arch]
    res = subprocess.run(["env", "-i", qemu, *map(str, qemu_args), "-plugin", str(plugin), "-d", "plugin", str(exe),
                          *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{qemu} {exe} failed (exit {res.returncode}): {res.stderr[-2000:]}")
    m = re.search(r"icount total (\d+)", res.stdout + res.stderr)
    if not m:
        raise RuntimeError(f"no icount in output: {res.stderr[-500:]}")
    return int(m.group(1))


def bench_conv_icount(arch, channels, kernels, size, paths=("neon", "portable"), qemu_cpu=None):
    exe = build_static_bench(arch)
    plugin = icount_plugin()
    path_ids = {"portable": 1, "neon": 2}
    rows = []
    for c in channels:
        for k in kernels:
            macs = size * size * c * c * k * k
            for path in paths:
                # the program runs one warm-up convolution, then REPS more: the difference of
                # the totals for REPS=1 and REPS=0 is exactly one convolution
                base = [c, c, k, size, size]
                qa = ["-cpu", qemu_cpu] if qemu_cpu else []
                n0 = guest_instructions(arch, exe, plugin, base + [0, 1, path_ids[path]], qa)
                n1 = guest_instructions(arch, exe, plugin, base + [1, 1, path_ids[path]], qa)
                rows.append({"arch": arch, "path": path, "qemu_cpu": qemu_cpu or "default", "cin": c, "cout": c,
                             "k": k, "h": size, "w": size,
                             "threads": 1, "binary_macs": macs, "instructions": n1 - n0,
                             "instructions_per_binary_mac": round((n1 - n0) / macs, 4)})
    return rows


def _loops_of(asm: str, fn: str):
    """(label, body lines) of each loop (a label and a later branch back to it) in the
    assembly of function ``fn``."""
    text = asm[asm.index(fn + ":"):]
    text = text[:text.index(".size\t" + fn)] if ".size\t" + fn in text else text
    lines = [ln.strip() for ln in text.splitlines()]
    loops = []
    for i, ln in enumerate(lines):
        m = re.match(r"(b(?:\.?[a-z]{2})?|cbn?z\s+\w+,)\s+(\S+)$", ln.replace("\t", " "))
        if not m:
            continue
        target = m.group(2)
        label = target[:-1] if target.endswith("b") and target[:-1].isdigit() else target
        starts = [j for j in range(i) if lines[j] == label + ":"]
        if starts:
            body = [x for x in lines[starts[-1] + 1:i + 1] if x and not x.startswith(("#", "//", ".p2align"))]
            loops.append((label, body))
    return loops


def bench_inorder(cpus=("cortex-a53", "cortex-a72")):
    cc = CROSS["aarch64"][0]
    mca = shutil.which("llvm-mca")
    if not shutil.which(cc):
        sys.exit(f"{cc} not found: run ./build.sh aarch64 first (it installs the cross compiler)")
    if not mca:
        sys.exit("llvm-mca not found: install the Debian package llvm (apt-get install llvm)")
    out = ROOT / "build" / "aarch64"
    out.mkdir(parents=True, exist_ok=True)
    src = out / "inorder_loops.c"
    src.write_text('#include "bconv2d/kernels_neon.h"\n'
                   "void old_tile(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int32_t *pop)"
                   " { bnn_tile_neon_4(g, x, w, pop); }\n"
                   "void new_tile(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int32_t *pop)"
                   " { bnn_tile_neon_a53_4(g, x, w, pop); }\n")
    tune = os.environ.get("BNN_TUNE", "cortex-a72")  # as build.sh
    res = subprocess.run([cc, "-std=c11", "-O3", "-march=armv8-a", f"-mtune={tune}", f"-I{ROOT}/csrc/neon",
                          f"-I{ROOT}/csrc/neon/include", "-S", str(src), "-o", "-"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    loops = {}
    for name, fn in (("old", "old_tile"), ("new", "new_tile")):
        # the innermost loop of the 16 CNT (outer loops hold it too)
        inner = [body for _, body in _loops_of(res.stdout, fn) if sum(x.startswith("cnt") for x in body) == 16]
        if not inner:
            raise RuntimeError(f"{fn}: no loop of 16 CNT in the compiler's output")
        loops[name] = min(inner, key=len)
    iters = 500
    rows = []
    for name, body in loops.items():
        text = "\n".join(body) + "\n"
        for cpu in cpus:
            r = subprocess.run([mca, "-mtriple=aarch64", f"-mcpu={cpu}", f"-iterations={iters}"], input=text,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            cycles = int(re.search(r"Total Cycles:\s+(\d+)", r.stdout).group(1))
            bound = float(re.search(r"Block RThroughput:\s+([\d.]+)", r.stdout).group(1))
            rows.append({"loop": name, "kernel": "bnn_tile_neon_4" if name == "old" else "bnn_tile_neon_a53_4",
                         "mcpu": cpu, "instructions": len(body), "binary_macs": 2048,
                         "cycles_per_2048_binary_macs": round(cycles / iters, 2), "resource_bound_cycles": bound})
    return {"compiler": cc, "tune": tune, "llvm_mca": mca, "iterations": iters, "rows": rows}


def _print_table(rows, keys):
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r[k]).rjust(w) for k, w in zip(keys, widths)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m firmware_py.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["conv", "grouped", "inorder"])
    ap.add_argument("--channels", default="64,128,256,512")
    ap.add_argument("--kernels", default="1,3")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--threads", default="1", help="comma list; 0 = all cores")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--arch", choices=sorted(CROSS), help="count ARM guest instructions under qemu instead")
    ap.add_argument("--qemu-cpu", help="with --arch: the CPU qemu emulates (e.g. cortex-a53)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    a = ap.parse_args(argv)
    if a.what == "inorder":
        print(json.dumps(bench_inorder(), indent=1))
        return
    if a.what == "grouped":
        rows = bench_grouped(max(1, a.reps // 2))
        if a.json:
            for r in rows:
                print(json.dumps(r))
        else:
            _print_table(rows, ["case", "cin", "cout", "h", "path", "ms", "ms_onnxruntime", "speedup"])
        return
    channels = [int(v) for v in a.channels.split(",")]
    kernels = [int(v) for v in a.kernels.split(",")]
    if a.arch:
        rows = bench_conv_icount(a.arch, channels, kernels, a.size, qemu_cpu=a.qemu_cpu)
        keys = ["arch", "path", "qemu_cpu", "cin", "cout", "k", "h", "w", "instructions", "instructions_per_binary_mac"]
    else:
        threads = [int(v) if int(v) > 0 else (os.cpu_count() or 1) for v in a.threads.split(",")]
        rows = bench_conv_host(channels, kernels, a.size, threads, a.reps)
        keys = ["cin", "cout", "k", "h", "w", "threads", "path", "ms_binary", "ms_onnxruntime", "speedup",
                "gops_binary", "gops_onnxruntime", "ms_bitpack_input"]
    if a.json:
        for r in rows:
            print(json.dumps(r))
    else:
        _print_table(rows, keys)


if __name__ == "__main__":
    main()
