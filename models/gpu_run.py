"""CIFAR-10 with the modern recipe on one GPU, prepared so that a session with a GPU
machine runs it in one call.  The device tool sends the checkout (tracked and untracked,
not ignored files) plus the carried paths, 64 MiB in all, and nothing can be downloaded
there.  The tracked tree is ~177 MiB today, all but ~1.6 of it what the run never reads: the
shipped models (models/zoo, 128: the CIFAR-10 table's 66, the person detector's ONNX files 48),
the committed training checkpoints (models/.ckpt, 40: the run trains its own), the tests'
fixtures and the docs.  So
they leave the working tree for the call (ASIDE; tracked, so git puts them back) and the data
gets the rest (every training image: 15.6 MiB):

    # here (CPU): the data and the runtime library
    python -m models.gpu_run pack          # -> .gpu/cifar10-pack.npz (ignored by git), sized
                                           #    to what the tree without ASIDE leaves (--mib)
    ./build.sh host                        # firmware_py/_lib/x86_64/libbnn.so (114 KB)
    python -m models.gpu_run aside         # removes ASIDE's tracked files (refused when they
                                           #    have uncommitted changes)

    # there: run(command="PYTHONUNBUFFERED=1 python3 -m models.gpu_run train --out $OUT
    #             --minutes 8", carry=[".gpu", "firmware_py/_lib"], timeout_s=600)
    # trains fp, then bwn, xnor and xnor_k (each starts from and distils fp), checkpoints
    # after every epoch into $OUT (they come back); at the time limit it stops, and the
    # same call with the returned checkpoints copied to .gpu/ckpt resumes.  When the
    # runtime works there too (cffi carried as wheels), it also writes $OUT/cifar10-zoo.tar:
    # the exported models and table.md/json (the tool returns at most 8 files).

    # here: the files back, then export, convert, PyTorch and runtime accuracy on the full
    # test set
    python -m models.gpu_run back          # git checkout -- models/zoo models/.ckpt tests docs
    python -m models.gpu_run finish --ckpt-dir DIR    # -> models/zoo/cifar10/table.md/json

    python -m models.gpu_run smoke         # every stage on the CPU, a few batches

The pack (models/data.pack_cifar) keeps the source JPEGs bit for bit (their shared header
once, then each image's entropy-coded bytes, ~300 B): all 50000 training images and 1000
test images take 15.6 MiB; a smaller --mib packs a seeded, class-balanced subset.  Fewer training
images cost accuracy: train.json and table.json say how many were used.
`train` writes train.json beside the checkpoints (per variant: epochs, seconds, accuracy
on the pack's test images).  Epochs and settings (EPOCHS, SETTINGS) are not measured on a GPU
yet: a session with the GPU should read the seconds in train.json
and adjust: they are the CPU run's (fp 88.24% after 60 epochs on all 50000 images there).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"
PACK_FILE = "cifar10-pack.npz"
LIMIT = 64 * 2 ** 20  # what the device tool sends in one call
ORDER = ("fp", "bwn", "xnor", "xnor_k")  # fp first: the others start from it and distil it
# the recipe whose fp reached 88.24% on 2 CPU cores (docs/training.md): six inner convs at
# these widths, Cutout and label smoothing for fp and bwn, neither for the binary-activation
# variants, bwn with binary weights from its first epoch
EPOCHS = 60
WIDTH = "64,64,128,128,256,256,512"
SETTINGS = ["width=%s" % WIDTH, "batch=256", "shift=4", "cutout=16", "label_smoothing=0.1",
            "xnor:cutout=0", "xnor:label_smoothing=0", "xnor_k:cutout=0", "xnor_k:label_smoothing=0",
            "bwn:two_step=false"]


ASIDE = ("models/zoo", "models/.ckpt", "tests", "docs")  # tracked, never read by `train`: out of the tree for the call


def _git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True).stdout.decode()


def tree_bytes(without=ASIDE, root=ROOT) -> int:
    """bytes of the files the device tool sends besides the carried paths (tracked and
    untracked, not ignored), the tracked files under `without` left out"""
    names = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    gone = set(_git(root, "ls-files", "-z", "--", *without).split("\0")) if without else set()
    return sum((root / n).stat().st_size for n in names
               if n and n not in gone and (root / n).is_file() and not (root / n).is_symlink())


def aside(paths=ASIDE, root=ROOT) -> int:
    """removes the tracked files under `paths` from the working tree (git restores them:
    back()); refused, nothing removed, when one of them has uncommitted changes"""
    dirty = _git(root, "status", "--porcelain", "--", *paths).strip()
    if dirty:
        raise SystemExit("uncommitted changes under %s (commit or stash them first):\n%s" % (", ".join(paths), dirty))
    names = [n for n in _git(root, "ls-files", "-z", "--", *paths).split("\0") if n]
    total = 0
    for n in names:
        f = root / n
        if f.is_file() or f.is_symlink():
            total += f.lstat().st_size
            f.unlink()
    for p in paths:  # the folders left empty
        for d in sorted((root / p).rglob("*"), key=lambda q: len(q.parts), reverse=True) if (root / p).is_dir() else ():
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    print("removed %d tracked files (%.1f MiB) under %s; python -m models.gpu_run back restores them"
          % (len(names), total / 2 ** 20, ", ".join(paths)))
    return len(names)


def back(paths=ASIDE, root=ROOT):
    """restores what aside() removed (git checkout of the tracked files under `paths`)"""
    _git(root, "checkout", "--", *paths)
    print("restored %s" % ", ".join(paths))


def pack(out=PACK, mib=None):
    """writes out/cifar10-pack.npz, as large as the tree without ASIDE leaves room for (or
    `mib`)"""
    from . import data

    lib = sum(f.stat().st_size for f in (ROOT / "firmware_py" / "_lib").rglob("*") if f.is_file())
    room = LIMIT - tree_bytes() - lib - 2 ** 20  # 1 MiB to spare
    budget = int(mib * 2 ** 20) if mib else room
    if budget > room:
        print("warning: %.1f MiB is more than the tree leaves (%.1f MiB)" % (budget / 2 ** 20, room / 2 ** 20))
    if budget < 2 ** 20:
        raise SystemExit("the tree (without %s) leaves %.1f MiB of %d for the data"
                         % (", ".join(ASIDE), room / 2 ** 20, LIMIT >> 20))
    out.mkdir(parents=True, exist_ok=True)
    r = data.pack_cifar(out / PACK_FILE, budget)
    print("packed %s: %d training and %d test images, %.2f MiB (room: %.2f MiB)"
          % (out / PACK_FILE, r["train_images"], r["test_images"], r["bytes"] / 2 ** 20, room / 2 ** 20))
    return r


def _use_pack(pack_dir):
    """train on the pack (models.data.CIFAR_PACK)"""
    from . import data

    f = Path(pack_dir) / PACK_FILE
    if not f.exists():
        raise SystemExit("%s not found: run python -m models.gpu_run pack (here) and carry %s" % (f, pack_dir))
    data.CIFAR_PACK = str(f)


def runtime_available() -> bool:
    try:
        from firmware_py import _native
        _native.lib()
        return True
    except Exception:  # cffi missing, or libbnn.so not built/carried
        return False


def train_all(out, minutes, epochs, settings, device="auto", limit=None, test_limit=None, threads=0):
    """trains ORDER into `out` (resumes what is there); returns (all done, train.json rows)"""
    import torch

    from . import checkpoint, data
    from .train import evaluate_torch, parse_sets, train

    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.time()
    rows = []
    x_tr, _, x_te, y_te = data.load("cifar10")
    x_te, y_te = data.subset(x_te, y_te, test_limit)
    for v in ORDER:
        left = minutes - (time.time() - t0) / 60 if minutes else 0
        if minutes and left <= 0:
            return False, rows
        t = time.time()
        model, done = train("cifar10", v, epochs, threads=threads, recipe_name="modern",
                            overrides=parse_sets(settings, v), ckpt_dir=out, limit=limit, device=device, time_limit=left)
        ck = checkpoint.load(Path(out) / ("%s.npz" % v))
        row = {"variant": v, "epochs_done": ck["epoch"], "epochs": ck["config"]["epochs"],
               "seconds_this_run": round(time.time() - t, 1)}
        if done:
            row["acc_pytorch"] = round(evaluate_torch(model, x_te, y_te), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (Path(out) / "train.json").write_text(json.dumps({"device": str(next(model.parameters()).device),
                                                          "gpu": torch.cuda.get_device_name(0)
                                                          if torch.cuda.is_available() else None,
                                                          "settings": settings, "train_images": len(x_tr)
                                                          if limit is None else min(limit, len(x_tr)),
                                                          "test_images": len(x_te), "rows": rows}, indent=1) + "\n")
        if not done:
            return False, rows
    return True, rows


def finish(ckpt_dir, epochs, settings, out=None, test_limit=None):
    from . import table

    argv = ["--dataset", "cifar10", "--recipe", "modern", "--epochs", str(epochs), "--ckpt-dir", str(ckpt_dir),
            "--eval-only"]
    argv += sum((["--set", s] for s in settings), [])
    if out:
        argv += ["--out", str(out)]
    if test_limit:
        argv += ["--test-limit", str(test_limit)]
    return table.main(argv)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.gpu_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("pack", "aside", "train", "back", "finish", "smoke"))
    ap.add_argument("--pack-dir", default=str(PACK))
    ap.add_argument("--out", default=None, help="train: checkpoints and train.json (default .gpu/ckpt); "
                                                "finish: models and tables (default models/zoo/cifar10)")
    ap.add_argument("--ckpt-dir", default=None, help="finish: the checkpoints of train (default .gpu/ckpt)")
    ap.add_argument("--mib", type=float, default=None, help="pack: its size (default: what the tree leaves)")
    ap.add_argument("--minutes", type=float, default=8.0, help="train: stop (resumably) after this many minutes")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--set", action="append", default=[], metavar="[VARIANT:]KEY=VALUE",
                    help="more recipe settings (after the defaults: %s)" % " ".join(SETTINGS))
    a = ap.parse_args(argv)
    settings = SETTINGS + a.set
    if a.what == "pack":
        pack(Path(a.pack_dir), a.mib)
        return 0
    if a.what == "aside":
        aside()
        return 0
    if a.what == "back":
        back()
        return 0
    if a.what == "finish":  # the full test set, from ../shared/data
        return finish(Path(a.ckpt_dir or PACK / "ckpt"), a.epochs, settings, out=a.out)
    if a.what == "smoke":  # every stage on the CPU: a 1 MiB pack, 2 epochs of 512 images, narrow
        import tempfile
        from . import data
        tmp = Path(tempfile.mkdtemp(prefix="gpu_run_smoke_"))
        pack(tmp, 1.0)
        _use_pack(tmp)
        s = ["width=8,16,16,32,32", "batch=64"] + a.set
        done, _ = train_all(tmp / "ckpt", 0, 2, s, device="cpu", limit=512, threads=2)
        data.CIFAR_PACK = None
        rc = finish(tmp / "ckpt", 2, s, out=tmp / "zoo", test_limit=200)
        print("smoke run in %s: %s" % (tmp, sorted(p.name for p in (tmp / "zoo").iterdir())))
        return rc if done else 1
    _use_pack(a.pack_dir)
    ckpt = Path(a.out or PACK / "ckpt")
    resume = PACK / "ckpt"
    if ckpt != resume and resume.is_dir() and not any(ckpt.glob("*.npz")):  # checkpoints of an earlier call
        ckpt.mkdir(parents=True, exist_ok=True)
        for f in resume.glob("*.npz"):
            shutil.copyfile(f, ckpt / f.name)
    done, _ = train_all(ckpt, a.minutes, a.epochs, settings)
    if not done:
        print("stopped at the time limit: the same call with these checkpoints in %s resumes" % resume)
        return 3
    if not runtime_available():
        print("trained; the runtime is not available here: python -m models.gpu_run finish --ckpt-dir DIR")
        return 0
    # the exported models and tables (the pack's test images) as one file: the tool
    # returns at most 8
    import tarfile
    import tempfile
    zoo = Path(tempfile.mkdtemp()) / "cifar10"
    rc = finish(ckpt, a.epochs, settings, out=zoo)
    with tarfile.open(ckpt / "cifar10-zoo.tar", "w") as tf:
        tf.add(zoo, arcname="cifar10")
    return rc


if __name__ == "__main__":
    sys.exit(main())
