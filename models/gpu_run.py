"""CIFAR-10 with the modern recipe on one GPU, prepared so that a session with a GPU
machine runs it in one call (the device tool sends the working tree plus at most 64 MiB
of carried paths; nothing can be downloaded there):

    # here (CPU): the data, 20 MB (the JPEG tarball as ../shared/data has it: 50000 + 10000
    # images; decoding the JPEGs again costs seconds), and the runtime library
    python -m models.gpu_run pack                      # -> .gpu/ (listed in .git/info/exclude)
    ./build.sh host                                    # firmware_py/_lib/x86_64/libbnn.so

    # there: run(command="PYTHONUNBUFFERED=1 python3 -m models.gpu_run train --out $OUT
    #             --minutes 8", carry=[".gpu", "firmware_py/_lib"], timeout_s=600)
    # trains fp, then bwn, xnor and xnor_k (each starts from and distils fp), checkpoints
    # after every epoch into $OUT (they come back); at the time limit it stops, and the
    # same call with the returned checkpoints copied to .gpu/ckpt resumes.  When the
    # runtime works there too (cffi carried as wheels), it also writes $OUT/cifar10-zoo.tar:
    # the exported models and table.md/json (the tool returns at most 8 files).

    # here (or there, when cffi travels as wheels: see /work/.library/device/README.md):
    python -m models.gpu_run finish --ckpt-dir DIR     # export, convert, runtime accuracy,
                                                       # models/zoo/cifar10/table.md/json

    python -m models.gpu_run smoke                     # the whole thing on the CPU, a few batches

`train` writes train.json beside the checkpoints (per variant: epochs, seconds, seconds
per epoch, PyTorch test accuracy); `finish` is `python -m models.table --recipe modern`
on the finished checkpoints (table.md/json: PyTorch and the runtime on the full test set).
Epochs and width (EPOCHS, WIDTH) are an estimate for an H200 (not yet measured there): a
session with the GPU should read the seconds per epoch in train.json and adjust.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"
TARBALL = "cifar10-jpg.tar.gz"
ORDER = ("fp", "bwn", "xnor", "xnor_k")  # fp first: the others start from it and distil it
EPOCHS = 40
WIDTH = "64,128,128,256,256"
SETTINGS = ["width=%s" % WIDTH, "batch=256"]


def pack(out=PACK):
    """copies the CIFAR-10 tarball into `out` and keeps `out` out of git"""
    from . import data

    src = data.SHARED / TARBALL
    if not src.exists():
        raise SystemExit("%s not found (set BNN_SHARED_DATA)" % src)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out / TARBALL)
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir():  # a worktree's .git is a file: it has no info/exclude of its own
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if "/.gpu/" not in lines:
            exclude.write_text("\n".join(lines + ["/.gpu/"]) + "\n")
    mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20
    print("packed %s: %.1f MiB (carry at most 64 MiB)" % (out, mb))


def _use_pack(pack_dir):
    """train on the packed tarball when there is one (else ../shared/data as usual)"""
    from . import data

    if (Path(pack_dir) / TARBALL).exists():
        data.SHARED = Path(pack_dir)


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
    _, _, x_te, y_te = data.load("cifar10")
    x_te, y_te = data.subset(x_te, y_te, test_limit)
    for v in ORDER:
        left = minutes - (time.time() - t0) / 60 if minutes else 0
        if minutes and left <= 0:
            return False, rows
        t = time.time()
        model, done = train("cifar10", v, epochs, threads=threads, recipe_name="modern", overrides=parse_sets(settings),
                            ckpt_dir=out, limit=limit, device=device, time_limit=left)
        ran = checkpoint.load(Path(out) / ("%s.npz" % v))["epoch"]
        row = {"variant": v, "epochs_done": ran, "epochs": epochs, "seconds_this_run": round(time.time() - t, 1)}
        if done:
            row["acc_pytorch"] = round(evaluate_torch(model, x_te, y_te), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (Path(out) / "train.json").write_text(json.dumps({"device": str(next(model.parameters()).device),
                                                          "gpu": torch.cuda.get_device_name(0)
                                                          if torch.cuda.is_available() else None,
                                                          "settings": settings, "rows": rows}, indent=1) + "\n")
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
    ap.add_argument("what", choices=("pack", "train", "finish", "smoke"))
    ap.add_argument("--pack-dir", default=str(PACK))
    ap.add_argument("--out", default=None, help="train: checkpoints and train.json (default .gpu/ckpt); "
                                                "finish: models and tables (default models/zoo/cifar10)")
    ap.add_argument("--ckpt-dir", default=None, help="finish: the checkpoints of train (default .gpu/ckpt)")
    ap.add_argument("--minutes", type=float, default=8.0, help="train: stop (resumably) after this many minutes")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more recipe settings (default %s)" % " ".join(SETTINGS))
    a = ap.parse_args(argv)
    settings = SETTINGS + a.set
    if a.what == "pack":
        return pack(Path(a.pack_dir))
    _use_pack(a.pack_dir)
    if a.what == "smoke":  # every stage on the CPU: 2 epochs of 512 images, narrow, 200 test images
        import tempfile
        tmp = Path(tempfile.mkdtemp(prefix="gpu_run_smoke_"))
        s = ["width=8,16,16,32,32", "batch=64"] + a.set
        done, _ = train_all(tmp / "ckpt", 0, 2, s, device="cpu", limit=512, test_limit=200, threads=2)
        assert done
        rc = finish(tmp / "ckpt", 2, s, out=tmp / "zoo", test_limit=200)
        print("smoke run in %s: %s" % (tmp, sorted(p.name for p in (tmp / "zoo").iterdir())))
        return rc
    if a.what == "finish":
        return finish(Path(a.ckpt_dir or PACK / "ckpt"), a.epochs, settings, out=a.out)
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
    # the exported models and tables as one file (the device tool returns at most 8)
    import tarfile
    import tempfile
    zoo = Path(tempfile.mkdtemp()) / "cifar10"
    rc = finish(ckpt, a.epochs, settings, out=zoo)
    with tarfile.open(ckpt / "cifar10-zoo.tar", "w") as tf:
        tf.add(zoo, arcname="cifar10")
    return rc

if __name__ == "__main__":
    sys.exit(main())
