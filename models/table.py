"""The seed's accuracy table on real data, PyTorch and the runtime side by side:

    python -m models.table --dataset fashion-mnist            # trains what is missing (resumable)
    python -m models.table --dataset cifar10 --recipe modern --epochs 40 --out DIR --ckpt-dir DIR

For every variant (fp, naive, bwn, xnor, xnor_k): test accuracy in PyTorch and of the
converted model run by firmware_py on the same test set, model sizes, and the runtime's
latency (batch 1, 1 thread, median).  Writes models/zoo/<dataset>/table.md and table.json
(or in --out).  --train-only trains what is missing and stops (e.g. on a GPU machine
without the runtime; run the same command without it where firmware_py works).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import checkpoint, data
from . import precision as P
from .nets import TRAINED, VARIANTS, binary_activations
from .train import (BASE, RECIPES, ZOO, SettingError, ckpt_path, evaluate_torch, export, load_trained, own_epochs,
                    parse_sets, recipe, train)

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
    for i in tqdm(range(len(x_u8)), desc="runtime %s" % bnn_path.name, mininterval=1.0, leave=False):
        out = model.run(x_u8[i:i + 1].astype(np.float32) / np.float32(255))
        correct += int(out.argmax() == y[i])
    return 100.0 * correct / len(x_u8), latency_ms(model, x_u8[:1].astype(np.float32) / np.float32(255))


def remeasure_latency(a, epochs, x_te):
    """--latency-only: times the shipped .bnn files again (e.g. on a quiet machine) and
    rewrites the tables; accuracies are kept as they are."""
    import firmware_py
    prev = json.loads((_out(a) / "table.json").read_text())
    if prev.get("epochs") != epochs or prev.get("seed") != a.seed:
        raise SystemExit("table.json is for %s epochs, seed %s" % (prev.get("epochs"), prev.get("seed")))
    rows = prev["rows"]
    for r in rows:
        model = firmware_py.load(str(_out(a) / ("%s.bnn" % r["variant"])), num_threads=1)
        r["latency_ms_1thread"] = round(latency_ms(model, x_te[:1].astype(np.float32) / np.float32(255)), 3)
        print(json.dumps(r), flush=True)
    return write_tables(a, epochs, x_te, rows)


def _out(a):
    return Path(a.out) if a.out else ZOO / a.dataset


def _names(vs):
    return " and ".join(vs) if len(vs) <= 2 else ", ".join(vs[:-1]) + " and " + vs[-1]


def describe(recipes) -> str:
    """the training recipes of the trained variants, in words"""
    parts = []
    trained = [v for v in VARIANTS if v in TRAINED]

    def grouped(key, text):  # "a and b <verb> <text with the source>", one clause per source
        for src in dict.fromkeys(recipes[v][key] for v in trained if recipes[v][key]):
            vs = [v for v in trained if recipes[v][key] == src]
            parts.append("%s %s" % (_names(vs), text[len(vs) > 1] % src))

    grouped("init", ("starts from %s's trained weights", "start from %s's trained weights"))
    grouped("distill", ("is distilled from %s", "are distilled from %s"))
    for v in trained:
        if not recipes[v]["augment"]:
            parts.append("%s trains without the random shifts/flips" % v)
    scratch = [v for v in trained if not recipes[v]["init"]]
    parts.append("%s start%s from scratch" % (_names(scratch), "" if len(scratch) > 1 else "s"))
    settings = {}  # the settings that differ from BASE -> the variants trained with them
    for v in trained:
        # options of sign activations; epochs are said in the caption (epochs_text)
        unused = ("epochs",) if binary_activations(v) else ("epochs", "rsign", "rprelu")
        changed = ", ".join("%s=%s" % (k, recipes[v][k]) for k in BASE
                            if recipes[v][k] != BASE[k] and k not in unused)
        if changed:
            settings.setdefault(changed, []).append(v)
    for changed, vs in settings.items():
        parts.append("settings of %s (models/train.py) %s" % (_names(vs), changed))
    return "; ".join(parts)


def epochs_text(recipes, epochs) -> str:
    """"N epochs per trained variant", or each variant's own where their settings differ"""
    own = {v: own_epochs(recipes[v], epochs) for v in VARIANTS if v in TRAINED}
    if len(set(own.values())) == 1:
        return "%d epochs per trained variant" % own["fp"]
    return "epochs per trained variant: %s" % ", ".join("%s %d" % kv for kv in own.items())


def _train_images(rows) -> str:
    """the training set size when a row says (older tables do not)"""
    n = sorted({r["train_images"] for r in rows if r.get("train_images")})
    return " Trained on %s training images." % " / ".join(map(str, n)) if n else ""


def command(a, epochs) -> str:
    """the command that makes this table again: the recipe, its settings, the precision and
    the checkpoints it starts from (a --ckpt-dir with a committed fp)"""
    cmd = "python -m models.table --dataset %s --epochs %d --seed %d" % (a.dataset, epochs, a.seed)
    if a.recipe != "xnor-net" or a.set:
        cmd += " --recipe %s" % a.recipe + "".join(" --set %s" % kv for kv in a.set)
    if a.precision != "fp32":
        cmd += " --precision %s" % a.precision
    if a.ckpt_dir:
        cmd += " --ckpt-dir %s" % a.ckpt_dir
    return cmd


def write_tables(a, epochs, x_te, rows):
    out = _out(a)
    # keep the rows of variants not evaluated in this run (same epochs and seed)
    old = out / "table.json"
    if old.exists():
        prev = json.loads(old.read_text())
        if prev.get("epochs") == epochs and prev.get("seed") == a.seed:
            done = {r["variant"] for r in rows}
            rows = [r for r in prev["rows"] if r["variant"] not in done] + rows
    rows.sort(key=lambda r: VARIANTS.index(r["variant"]))
    cmd = command(a, epochs)
    recipes = {v: recipe(a.dataset, v, a.recipe, parse_sets(a.set, v)) for v in VARIANTS}
    meta = {"dataset": a.dataset, "epochs": epochs, "seed": a.seed, "command": cmd, "recipe_name": a.recipe,
            "recipe": recipes,
            "test_images": int(len(x_te)), "host": platform.machine(), "python": sys.version.split()[0],
            "rows": rows}
    (out / "table.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = ["# %s: test accuracy, PyTorch vs the runtime" % a.dataset, "",
             "`%s` (%s, seed %d; naive = fp's weights binarised without retraining; "
             "%s). Latency: the converted model, batch 1, 1 thread, median of 200 runs on the machine that made the "
             "table (%s).%s" % (cmd, epochs_text(recipes, epochs), a.seed, describe(recipes), platform.machine(),
                                 _train_images(rows)), "",
             "| variant | PyTorch top-1 % | runtime top-1 % | ONNX bytes | model file bytes | latency ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.2f | %.2f | %s | %s | %.3f |" % (r["variant"], r["acc_pytorch"], r["acc_runtime"],
                                                                f"{r['onnx_bytes']:,}", f"{r['bnn_bytes']:,}",
                                                                r["latency_ms_1thread"]))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return lines


def parser():
    ap = argparse.ArgumentParser(prog="python -m models.table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=data.DATASETS, required=True)
    ap.add_argument("--epochs", type=int, default=None, help="default: %s" % EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="xnor-net")
    ap.add_argument("--set", action="append", default=[], metavar="[VARIANT:]KEY=VALUE",
                    help="change a recipe setting (of every variant, or with VARIANT: of that one)")
    ap.add_argument("--device", default="auto", help="training device: auto (CUDA when available), cpu, cuda")
    P.add_argument(ap)
    ap.add_argument("--ckpt-dir", default=None, help="checkpoints (default models/.ckpt/<dataset>/<recipe>)")
    ap.add_argument("--out", default=None, help="models and tables (default models/zoo/<dataset>)")
    ap.add_argument("--limit", type=int, default=None, help="train on N random images (smoke runs)")
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on N random test images")
    ap.add_argument("--time-limit", type=float, default=0, help="minutes of training in this run, then stop "
                                                                  "after an epoch (the same command resumes)")
    ap.add_argument("--train-only", action="store_true", help="train what is missing, then stop")
    ap.add_argument("--eval-only", action="store_true", help="train nothing: evaluate the finished checkpoints")
    ap.add_argument("--latency-only", action="store_true", help="only time the shipped .bnn files again")
    return ap


def training_order(a, variants) -> list:
    """the trained variants that `variants` need, each after the ones it starts from or is
    distilled from (naive needs fp)"""
    order, path = [], []

    def visit(v):
        if v in order:
            return
        if v in path:
            raise SettingError("--set: a loop of init/distill sources: %s" % " -> ".join(path + [v]))
        path.append(v)
        how = recipe(a.dataset, v, a.recipe, parse_sets(a.set, v))
        for src in (how["init"], how["distill"]):
            if src:
                visit(src)
        order.append(path.pop())

    for v in variants:
        visit("fp" if v == "naive" else v)
    return order


def variant_epochs(a, v, epochs) -> int:
    """the epochs a variant trains for: its own setting, else the command's (naive: fp's)"""
    v = "fp" if v == "naive" else v
    return own_epochs(recipe(a.dataset, v, a.recipe, parse_sets(a.set, v)), epochs)


def train_all(a, epochs, variants) -> bool:
    """trains every variant `variants` need, sources first; False when the time limit
    stopped it (the checkpoints resume)"""
    t0 = time.time()
    for t in training_order(a, variants):
        left = a.time_limit - (time.time() - t0) / 60 if a.time_limit else 0
        if a.time_limit and left <= 0:
            return False
        _, done = train(a.dataset, t, epochs, a.seed, a.threads, recipe_name=a.recipe, overrides=parse_sets(a.set, t),
                        ckpt_dir=a.ckpt_dir, limit=a.limit, device=a.device, time_limit=left,
                        precision=a.precision)
        if not done:
            return False
    return True


def main(argv=None):
    a = parser().parse_args(argv)
    epochs = a.epochs or EPOCHS[a.dataset]
    variants = a.variants.split(",")
    _, _, x_te, y_te = data.load(a.dataset)
    x_te, y_te = data.subset(x_te, y_te, a.test_limit)
    if a.latency_only:
        print("\n".join(remeasure_latency(a, epochs, x_te)))
        return 0
    if not a.eval_only and not train_all(a, epochs, variants):
        print("stopped at the time limit: run the same command again to resume")
        return 3
    if a.train_only:
        return 0
    rows = []
    for v in variants:
        model = load_trained(a.dataset, v, variant_epochs(a, v, epochs), a.recipe, a.ckpt_dir)
        ck = checkpoint.load(ckpt_path(a.dataset, "fp" if v == "naive" else v, a.recipe, a.ckpt_dir))
        acc_torch = evaluate_torch(model, x_te, y_te)
        onnx_path = export(model, a.dataset, v, out_dir=_out(a))
        bnn_path = onnx_path.with_suffix(".bnn")
        acc_rt, ms = evaluate_runtime(bnn_path, x_te, y_te)
        rows.append({"variant": v, "acc_pytorch": round(acc_torch, 2), "acc_runtime": round(acc_rt, 2),
                     "onnx_bytes": onnx_path.stat().st_size, "bnn_bytes": bnn_path.stat().st_size,
                     "latency_ms_1thread": round(ms, 3), "train_images": ck["config"].get("train_images"),
                     "epochs": ck["config"]["epochs"]})
        print(json.dumps(rows[-1]), flush=True)
        lines = write_tables(a, epochs, x_te, list(rows))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (checkpoint.OtherConfig, SettingError) as e:  # said plainly, without a traceback
        raise SystemExit("error: %s" % e)
