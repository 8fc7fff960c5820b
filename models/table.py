"""The seed's accuracy table on real data, PyTorch and the runtime side by side:

    python -m models.table --dataset fashion-mnist            # trains what is missing (resumable)

For every variant (fp, naive, bwn, xnor, xnor_k): test accuracy in PyTorch and of the
converted model run by firmware_py on the same test set, model sizes, and the runtime's
latency (batch 1, 1 thread, median).  Writes models/zoo/<dataset>/table.md and table.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from . import data
from .nets import TRAINED, VARIANTS
from .progress import Progress
from .train import ZOO, evaluate_torch, export, load_trained, recipe, train

# epochs per trained variant, sized for 2 CPU cores (README: "Train your own")
EPOCHS = {"fashion-mnist": 10, "mnist": 1, "cifar10": 5}


def latency_ms(model, x1, runs=200) -> float:
    """median ms of model.run(x1), after 10 warm-up runs"""
    for _ in range(10):
        model.run(x1)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run(x1)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def evaluate_runtime(bnn_path, x_u8, y, threads=1):
    import firmware_py
    model = firmware_py.load(str(bnn_path), num_threads=threads)
    correct = 0
    bar = Progress(len(x_u8), "runtime %s" % bnn_path.name)
    for i in range(len(x_u8)):
        out = model.run(x_u8[i:i + 1].astype(np.float32) / np.float32(255))
        correct += int(out.argmax() == y[i])
        if i % 500 == 499 or i == len(x_u8) - 1:
            bar.update(500 if i % 500 == 499 else (i % 500) + 1)
    bar.close()
    return 100.0 * correct / len(x_u8), latency_ms(model, x_u8[:1].astype(np.float32) / np.float32(255))


def remeasure_latency(a, epochs, x_te):
    """--latency-only: times the shipped .bnn files again (e.g. on a quiet machine) and
    rewrites the tables; accuracies are kept as they are."""
    import firmware_py
    prev = json.loads((ZOO / a.dataset / "table.json").read_text())
    if prev.get("epochs") != epochs or prev.get("seed") != a.seed:
        raise SystemExit("table.json is for %s epochs, seed %s" % (prev.get("epochs"), prev.get("seed")))
    rows = prev["rows"]
    for r in rows:
        model = firmware_py.load(str(ZOO / a.dataset / ("%s.bnn" % r["variant"])), num_threads=1)
        r["latency_ms_1thread"] = round(latency_ms(model, x_te[:1].astype(np.float32) / np.float32(255)), 3)
        print(json.dumps(r), flush=True)
    return write_tables(a, epochs, x_te, rows)


def _names(vs):
    return " and ".join(vs) if len(vs) <= 2 else ", ".join(vs[:-1]) + " and " + vs[-1]


def describe(recipes) -> str:
    """the training recipes of the trained variants, in words"""
    parts = []
    trained = [v for v in VARIANTS if v in TRAINED]
    for src in dict.fromkeys(r["init"] for r in recipes.values() if r["init"]):
        vs = [v for v in trained if recipes[v]["init"] == src]
        parts.append("%s start%s from %s's trained weights" % (_names(vs), "" if len(vs) > 1 else "s", src))
    for v in trained:
        if recipes[v]["distill"]:
            parts.append("%s is distilled from %s" % (v, recipes[v]["distill"]))
        if not recipes[v]["augment"]:
            parts.append("%s trains without the random shifts/flips" % v)
    scratch = [v for v in trained if not recipes[v]["init"]]
    parts.append("%s start%s from scratch" % (_names(scratch), "" if len(scratch) > 1 else "s"))
    return "; ".join(parts)


def write_tables(a, epochs, x_te, rows):
    out = ZOO / a.dataset
    # keep the rows of variants not evaluated in this run (same epochs and seed)
    old = out / "table.json"
    if old.exists():
        prev = json.loads(old.read_text())
        if prev.get("epochs") == epochs and prev.get("seed") == a.seed:
            done = {r["variant"] for r in rows}
            rows = [r for r in prev["rows"] if r["variant"] not in done] + rows
    rows.sort(key=lambda r: VARIANTS.index(r["variant"]))
    cmd = "python -m models.table --dataset %s --epochs %d --seed %d" % (a.dataset, epochs, a.seed)
    recipes = {v: recipe(a.dataset, v) for v in VARIANTS}
    meta = {"dataset": a.dataset, "epochs": epochs, "seed": a.seed, "command": cmd, "recipe": recipes,
            "test_images": int(len(x_te)), "host": platform.machine(), "python": sys.version.split()[0],
            "rows": rows}
    (out / "table.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = ["# %s: test accuracy, PyTorch vs the runtime" % a.dataset, "",
             "`%s` (%d epochs per trained variant, seed %d; naive = fp's weights binarised without retraining; "
             "%s). Latency: the converted model, batch 1, 1 thread, median of 200 runs on the machine that made the "
             "table (%s)." % (cmd, epochs, a.seed, describe(recipes), platform.machine()), "",
             "| variant | PyTorch top-1 % | runtime top-1 % | ONNX bytes | model file bytes | latency ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.2f | %.2f | %s | %s | %.3f |" % (r["variant"], r["acc_pytorch"], r["acc_runtime"],
                                                                f"{r['onnx_bytes']:,}", f"{r['bnn_bytes']:,}",
                                                                r["latency_ms_1thread"]))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=data.DATASETS, required=True)
    ap.add_argument("--epochs", type=int, default=None, help="default: %s" % EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    ap.add_argument("--latency-only", action="store_true", help="only time the shipped .bnn files again")
    a = ap.parse_args(argv)
    epochs = a.epochs or EPOCHS[a.dataset]
    variants = a.variants.split(",")
    _, _, x_te, y_te = data.load(a.dataset)
    if a.latency_only:
        print("\n".join(remeasure_latency(a, epochs, x_te)))
        return
    rows = []
    ready = set()  # trained (or found complete) in this run: train() loads the whole training set
    for v in variants:
        # what v starts from, is distilled from (naive: is derived from) first
        how = recipe(a.dataset, v)
        deps = (how["init"], how["distill"], "fp" if v == "naive" else None, v if v in TRAINED else None)
        for t in dict.fromkeys(d for d in deps if d and d not in ready):
            train(a.dataset, t, epochs, a.seed, a.threads, quiet=True)  # a no-op when its checkpoint is complete
            ready.add(t)
        model = load_trained(a.dataset, v, epochs, a.seed)
        acc_torch = evaluate_torch(model, x_te, y_te)
        onnx_path = export(model, a.dataset, v)
        bnn_path = onnx_path.with_suffix(".bnn")
        acc_rt, ms = evaluate_runtime(bnn_path, x_te, y_te)
        rows.append({"variant": v, "acc_pytorch": round(acc_torch, 2), "acc_runtime": round(acc_rt, 2),
                     "onnx_bytes": onnx_path.stat().st_size, "bnn_bytes": bnn_path.stat().st_size,
                     "latency_ms_1thread": round(ms, 3)})
        print(json.dumps(rows[-1]), flush=True)
        lines = write_tables(a, epochs, x_te, list(rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
