"""Train one classifier variant, resumably:

    python -m models.train --dataset fashion-mnist --variant xnor --epochs 10
    python -m models.train --dataset cifar10 --variant xnor --recipe modern --set two_step=false
    torchrun --nproc_per_node 2 -m models.train --dataset mnist --variant fp   # DDP: models/distributed.py

Seeded; a checkpoint after every epoch (models/.ckpt/<dataset>/<recipe>/<variant>.npz, or
--ckpt-dir: arrays and JSON, no pickle; running the same command again resumes); a
progress bar (tqdm).  The trained network is exported to ONNX (models/zoo/<dataset>/
<variant>.onnx, or --out; batch 1, float32 NCHW pixels in [0, 1]) and converted for the
runtime beside it (<variant>.bnn).

Recipes (``RECIPES``; every setting can be changed with --set key=value, or for one variant
--set variant:key=value):
  xnor-net  the Fashion-MNIST/MNIST zoo's recipe: plain XNOR-Net stack, Adam, one-cycle;
  modern    the CIFAR-10 zoo's recipe: Bi-Real shortcuts around every binary conv,
            ReActNet's RSign and RPReLU, distillation from the trained fp network (KL to
            its softmax), Real-to-Binary's two-step schedule (binary activations with real
            weights for the first half of the epochs, then binary weights), AdamW with a
            linear decay per step and weight decay on the float conv/linear weights only
            (none on the latent binary weights, BN, shifts and slopes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, data, distributed
from . import precision as P
from .layers import latent_binary_weights, set_binary_weights
from .nets import TRAINED, VARIANTS, VGGSmall, naive_from_fp

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "models" / "zoo"
CKPT = ROOT / "models" / ".ckpt"
WIDTH = (32, 64, 64, 128, 128)

# XNOR variants start from the trained fp network's weights (common BNN practice: the
# latent real weights and BN statistics of a trained float net are a far better start
# than random ones for sign-activated layers); fp starts from scratch, and so does bwn
# except on CIFAR-10: there, 5 epochs from scratch left bwn 2.71 points below fp
# (74.95 vs 77.66), so CIFAR-10's bwn starts from fp too.  Fashion-MNIST's and MNIST's
# bwn met the 1.5-point target from scratch.
# xnor is also distilled from the trained fp network (loss = (1 - w) CE + w T^2 KL(teacher_T
# || student_T), w = kd_weight, T = kd_t): the binary net learns the float net's soft outputs.
# Variants trained on the images without the random shifts/flips: XNOR underfits: after
# 10 Fashion-MNIST epochs with augmentation it scored 90.8% on training images and 90.06%
# on test; the same recipe without augmentation reached 91.30% on test (fp: 93.14%).
# Measured on Fashion-MNIST only, so only there.
# shift: the random shifts' range in pixels (+-shift, zero border); cutout: the side of a
# square zeroed at a random place in every augmented image (DeVries & Taylor 2017; 0: none);
# label_smoothing: of the cross-entropy with the labels (not of the distillation term);
# epochs: this variant's own number of epochs (0: the command's --epochs).
BASE = {"width": list(WIDTH), "batch": 128, "lr": 2e-3, "wd": 0.0, "optimizer": "adam-onecycle",
        "arch": "plain", "rsign": False, "rprelu": False, "two_step": False, "kd_t": 2.0, "kd_weight": 0.5,
        "shift": 2, "cutout": 0, "label_smoothing": 0.0, "epochs": 0}
# the recipe's sources, changeable with --set too: the trained variant a variant starts
# from (init) and the one it is distilled from (distill); "none": from scratch / no teacher
SOURCES = ("init", "distill")
RECIPES = {
    "xnor-net": {
        "settings": {},
        "init": {"xnor": "fp", "xnor_k": "fp", ("cifar10", "bwn"): "fp"},
        "distill": {"xnor": "fp"},
        "no_augment": {("fashion-mnist", "xnor")},
    },
    # untuned (no GPU yet): the literature's options together; models/gpu_run.py trains it
    "modern": {
        "settings": {"arch": "bireal", "rsign": True, "rprelu": True, "two_step": True, "optimizer": "adam-linear",
                     "wd": 5e-2},
        "init": {"bwn": "fp", "xnor": "fp", "xnor_k": "fp"},
        "distill": {"bwn": "fp", "xnor": "fp", "xnor_k": "fp"},
        "no_augment": set(),
    },
}
OPTIMIZERS = ("adam-onecycle", "adam-linear")


class SettingError(ValueError):
    """a bad recipe setting (--set, --recipe) or run size: the CLIs say it without a traceback"""


def _parse_value(key, text):
    base = BASE[key]
    if isinstance(base, bool):
        if text.lower() not in ("true", "false", "1", "0", "on", "off"):
            raise SettingError("%s takes true or false, got %r" % (key, text))
        return text.lower() in ("true", "1", "on")
    if isinstance(base, list):
        return [int(v) for v in text.split(",")]
    return type(base)(text)


def parse_sets(items, variant=None) -> dict:
    """["key=value" or "variant:key=value", ...] (--set) -> {key: value} of `variant`, typed
    like BASE's defaults: a setting named with a variant is that variant's alone (and wins
    over the same key without one), so each variant can have its own recipe"""
    out, own = {}, {}
    for it in items or ():
        head, sep, text = it.partition("=")
        var, colon, key = head.rpartition(":")
        if not sep or key not in (*BASE, *SOURCES) or (colon and var not in VARIANTS):
            raise SettingError("--set %r: expected [variant:]key=value with key one of %s and variant one of %s"
                               % (it, ", ".join(sorted((*BASE, *SOURCES))), ", ".join(VARIANTS)))
        if key in SOURCES:
            if text != "none" and text not in TRAINED:
                raise SettingError("--set %r: %s takes a trained variant (%s) or none"
                                   % (it, key, ", ".join(TRAINED)))
            value = None if text == "none" else text
        else:
            try:
                value = _parse_value(key, text)
            except SettingError:
                raise
            except ValueError as e:  # int("x"), float("x")
                raise SettingError("--set %r: %s" % (it, e)) from None
        if not colon:
            out[key] = value
        elif var == variant:
            own[key] = value
    out.update(own)
    return out


def own_epochs(settings, epochs) -> int:
    """the epochs a variant trains for: its own setting, else the command's"""
    return settings["epochs"] or epochs


def recipe(dataset, variant, name="xnor-net", overrides=None) -> dict:
    """How a variant is trained on a dataset: every setting of BASE, the variant it starts
    from (init: None = from scratch), the one it is distilled from (distill), whether it is
    augmented."""
    if name not in RECIPES:
        raise SettingError("unknown recipe %r (one of %s)" % (name, ", ".join(RECIPES)))
    r = RECIPES[name]
    s = dict(BASE, **r["settings"])
    s.update(init=r["init"].get((dataset, variant), r["init"].get(variant)),
             distill=r["distill"].get(variant), augment=(dataset, variant) not in r["no_augment"])
    s.update(overrides or {})
    if s["optimizer"] not in OPTIMIZERS:
        raise SettingError("optimizer must be one of %s, got %r" % (OPTIMIZERS, s["optimizer"]))
    if not 0 <= s["shift"] <= 8:
        raise SettingError("shift must be 0 to 8 pixels, got %d" % s["shift"])
    if not 0 <= s["cutout"] <= 16:
        raise SettingError("cutout must be 0 to 16 pixels, got %d" % s["cutout"])
    if not 0.0 <= s["label_smoothing"] < 1.0:
        raise SettingError("label_smoothing must be in [0, 1), got %g" % s["label_smoothing"])
    if s["two_step"] and s["optimizer"] != "adam-linear":
        raise SettingError("two_step needs optimizer=adam-linear (a linear decay per step)")
    if s["epochs"] < 0:
        raise SettingError("epochs must be 0 (the command's) or more, got %d" % s["epochs"])
    if variant == "fp":
        if any((overrides or {}).get(k) for k in SOURCES):
            raise SettingError("fp trains from scratch without a teacher: it takes no init or distill")
        s.update(init=None, distill=None, two_step=False)
    if variant in (s["init"], s["distill"]):
        raise SettingError("%s cannot start from or be distilled from itself" % variant)
    return s


def net_config(dataset, variant, settings) -> dict:
    return {"dataset": dataset, "variant": variant, "width": list(settings["width"]), "arch": settings["arch"],
            "rsign": settings["rsign"], "rprelu": settings["rprelu"]}


def build_net(cfg: dict) -> VGGSmall:
    mean, std = data.STATS[cfg["dataset"]]
    return VGGSmall(cfg["variant"], len(mean), 10, mean, std, width=cfg["width"], arch=cfg["arch"],
                    rsign=cfg["rsign"], rprelu=cfg["rprelu"])


def build(dataset, variant, recipe_name="xnor-net"):
    return build_net(net_config(dataset, variant, recipe(dataset, variant, recipe_name)))


def _augment(x: torch.Tensor, flip: bool, gen: torch.Generator, shift: int = 2, cutout: int = 0) -> torch.Tensor:
    """random shifts by up to `shift` pixels (zero border), for natural images horizontal
    flips, and a `cutout` x `cutout` square of zeros centred anywhere in the image (cut
    where it overhangs the border) (random numbers from the CPU generator `gen`, so a run
    repeats on any device)"""
    n, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (shift,) * 4)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(dev)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(dev)
    rows = (dy.view(n, 1) + torch.arange(h, device=dev).view(1, h))
    cols = (dx.view(n, 1) + torch.arange(w, device=dev).view(1, w))
    out = xp[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1),
             rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    if flip:
        m = (torch.rand(n, generator=gen) < 0.5).to(dev)
        out[m] = out[m].flip(3)
    if cutout:
        cy = torch.randint(0, h, (n, 1), generator=gen).to(dev)
        cx = torch.randint(0, w, (n, 1), generator=gen).to(dev)
        ys, xs = torch.arange(h, device=dev).view(1, h), torch.arange(w, device=dev).view(1, w)
        in_y = (ys >= cy - cutout // 2) & (ys < cy - cutout // 2 + cutout)
        in_x = (xs >= cx - cutout // 2) & (xs < cx - cutout // 2 + cutout)
        out = out.masked_fill((in_y.view(n, 1, h, 1) & in_x.view(n, 1, 1, w)), 0.0)
    return out


def evaluate_torch(model, x_u8, y, batch=500, device=None) -> float:
    model.eval()
    device = device or next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = torch.from_numpy(x_u8[i:i + batch]).to(device).float().div_(255)
            correct += int((model(xb).argmax(1).cpu().numpy() == y[i:i + batch]).sum())
    return 100.0 * correct / len(x_u8)


def ckpt_path(dataset, variant, recipe_name="xnor-net", ckpt_dir=None) -> Path:
    base = Path(ckpt_dir) if ckpt_dir else CKPT / dataset / recipe_name
    return base / ("%s.npz" % variant)


def load_checkpoint(path, complete=True):
    """(model in eval mode, checkpoint) from a checkpoint of this module; complete: refuse
    an unfinished one"""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError("no checkpoint %s: train that variant first" % path)
    ck = checkpoint.load(path)
    if complete and ck["epoch"] != ck["config"]["epochs"]:
        raise RuntimeError("%s is at epoch %d of %d: train it to the end first" % (path, ck["epoch"],
                                                                                  ck["config"]["epochs"]))
    model = build_net(ck["config"]["net"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def load_init(model, state):
    """the weights of a trained network into `model`; the options the source lacks (RSign
    shifts, RPReLU) keep their initial values"""
    try:
        res = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a size mismatch
        raise RuntimeError("cannot initialise from a network of another shape: %s" % str(e).splitlines()[1:2]) from None
    new = (".shift", ".gamma", ".zeta", ".prelu.weight")
    bad = [k for k in res.missing_keys if not k.endswith(new)] + list(res.unexpected_keys)
    if bad:
        raise RuntimeError("cannot initialise from a network of another shape: %s" % bad[:5])


def make_optimizer(model, s):
    """Adam(W): weight decay s["wd"] on the float conv/linear weights only"""
    latent = latent_binary_weights(model)
    decay, rest = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            float_weight = name == "weight" and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
            (decay if float_weight and id(p) not in latent else rest).append(p)
    groups = [{"params": decay, "weight_decay": s["wd"]}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s["lr"]) if s["wd"] else torch.optim.Adam(groups, lr=s["lr"])


def schedule(s, epochs):
    """[(first epoch, end epoch, binary weights)]: one step, or the two-step schedule"""
    if not s["two_step"]:
        return [(0, epochs, True)]
    half = epochs // 2
    if half < 1:
        raise SettingError("the two-step schedule needs at least 2 epochs")
    return [(0, half, False), (half, epochs, True)]


def _lr_linear(s, steps, step, epochs, steps_per_epoch):
    """linear decay from lr to 0 within each step of the schedule"""
    e = step // steps_per_epoch
    a, b, _ = next(st for st in steps if st[0] <= e < st[1])
    n = (b - a) * steps_per_epoch
    return s["lr"] * (1.0 - (step - a * steps_per_epoch) / n)


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(dataset: str, variant: str, epochs: int, seed: int = 0, threads: int = 0, quiet=False, augment=None,
          recipe_name="xnor-net", overrides=None, ckpt_dir=None, limit=None, device="auto", teacher_path=None,
          time_limit=0.0, precision="fp32"):
    """Trains (or resumes) and returns (model in eval mode, done).  augment: None = the
    recipe's default; overrides: recipe settings; limit: the first N training images;
    time_limit: minutes, then stop after the epoch (the checkpoint resumes); precision:
    fp32, or bf16 autocast of the forward pass (weights, optimizer and checkpoints stay
    float32, so a run may change it when it resumes).  Under torchrun every process calls
    this (see models/distributed.py)."""
    if variant not in TRAINED:
        raise ValueError("variant %r is not trained (one of %s)" % (variant, TRAINED))
    P.check(precision)  # before any work
    if threads:
        torch.set_num_threads(threads)
    rank, world, dev = distributed.start(pick_device(device))
    quiet = quiet or rank != 0
    torch.manual_seed(seed)
    np.random.seed(seed)
    s = recipe(dataset, variant, recipe_name, overrides)
    epochs = own_epochs(s, epochs)
    if augment is not None:
        s["augment"] = bool(augment)
    x_tr, y_tr, _, _ = data.load(dataset)
    x_tr, y_tr = data.subset(x_tr, y_tr, limit)
    ncfg = net_config(dataset, variant, s)
    raw = build_net(ncfg).to(dev, memory_format=torch.channels_last)
    steps_per_epoch = len(x_tr) // s["batch"]
    if steps_per_epoch < 1:
        raise SettingError("%d training images make no batch of %d" % (len(x_tr), s["batch"]))
    config = {"epochs": epochs, "seed": seed, "net": ncfg, "recipe": recipe_name, "settings": s, "limit": limit,
              "train_images": len(x_tr)}
    path = ckpt_path(dataset, variant, recipe_name, ckpt_dir)
    if s["init"]:
        src, src_ck = load_checkpoint(path.with_name("%s.npz" % s["init"]))
        config["init_epochs"] = src_ck["epoch"]
        load_init(raw, src.state_dict())
    teacher = None
    if s["distill"] or teacher_path:
        tpath = Path(teacher_path) if teacher_path else path.with_name("%s.npz" % s["distill"])
        teacher, t_ck = load_checkpoint(tpath)
        config["teacher"] = {"path": tpath.name, "epochs": t_ck["epoch"], "net": t_ck["config"]["net"]}
        teacher = teacher.to(dev, memory_format=torch.channels_last)
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = make_optimizer(raw, s)
    sched = None
    if s["optimizer"] == "adam-onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.15)
    steps = schedule(s, epochs)
    start = 0
    if path.exists():
        ck = checkpoint.load(path)
        for k, v in BASE.items():  # a setting added after the checkpoint was written: its default then
            ck["config"]["settings"].setdefault(k, v)
        checkpoint.check_resumable(path, ck["config"], config, "pass another --ckpt-dir")
        raw.load_state_dict(ck["model"])
        start = ck["epoch"]
        if start < epochs:  # a finished run's checkpoint has no optimizer state (nothing is left to train)
            opt.load_state_dict(ck["opt"])
            if sched is not None:
                sched.load_state_dict(ck["sched"])
    model = distributed.wrap(raw, dev)
    flip = s["augment"] and dataset != "mnist"
    xt = torch.from_numpy(np.array(x_tr)).to(dev)  # a writable copy
    yt = torch.from_numpy(y_tr).to(dev)
    t0 = time.time()
    for epoch in range(start, epochs):
        if time_limit and distributed.any_rank(time.time() - t0 > time_limit * 60):
            break
        set_binary_weights(raw, next(b for a, e, b in steps if a <= epoch < e))
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000003 + epoch * 1009 + rank)
        batches = distributed.rank_batches(len(xt), s["batch"], seed, epoch, steps_per_epoch)
        bar = tqdm(batches, desc="%s/%s epoch %d/%d" % (dataset, variant, epoch + 1, epochs), disable=quiet,
                   mininterval=1.0, leave=False)
        loss_avg = None
        for b, idx in enumerate(bar):
            step = epoch * steps_per_epoch + b
            if sched is None:
                for g in opt.param_groups:
                    g["lr"] = _lr_linear(s, steps, step, epochs, steps_per_epoch)
            idx = torch.as_tensor(idx, device=dev)
            xb = xt[idx].float().div_(255)
            if s["augment"]:
                xb = _augment(xb, flip, gen, s["shift"], s["cutout"])
            xb = xb.contiguous(memory_format=torch.channels_last)
            with P.autocast(precision, dev):
                logits = model(xb).float()
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(xb).float()
            loss = F.cross_entropy(logits, yt[idx], label_smoothing=s["label_smoothing"])
            if teacher is not None:
                t = s["kd_t"]
                soft = F.softmax(t_logits / t, dim=1)
                kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t ** 2
                loss = (1 - s["kd_weight"]) * loss + s["kd_weight"] * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if not quiet:
                lv = loss.item()
                loss_avg = lv if loss_avg is None else 0.98 * loss_avg + 0.02 * lv
                bar.set_postfix_str("loss %.3f" % loss_avg, refresh=False)
        bar.close()
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            last = epoch + 1 == epochs  # a finished run keeps its weights alone (1/3 of the bytes with Adam)
            checkpoint.save(path, {"model": raw.state_dict(), "opt": {} if last else opt.state_dict(),
                                   "sched": sched.state_dict() if sched is not None and not last else {},
                                   "epoch": epoch + 1, "config": config})
            if not quiet:
                print("%s/%s epoch %d/%d: loss %.4f (%.0f s)" % (dataset, variant, epoch + 1, epochs,
                                                               loss_avg or 0.0, time.time() - t0), flush=True)
        distributed.barrier()
        start = epoch + 1
    set_binary_weights(raw, True)
    return raw.eval(), start >= epochs


def load_trained(dataset, variant, epochs=None, recipe_name="xnor-net", ckpt_dir=None):
    """The finished model from its checkpoint (naive: derived from fp's); epochs: the
    number it must have been trained for (None: any)."""
    src = "fp" if variant == "naive" else variant
    model, ck = load_checkpoint(ckpt_path(dataset, src, recipe_name, ckpt_dir))
    if epochs is not None and ck["epoch"] != epochs:
        raise RuntimeError("%s/%s checkpoint is at epoch %d of %d" % (dataset, src, ck["epoch"], epochs))
    return naive_from_fp(model).eval() if variant == "naive" else model


def export(model, dataset, variant, class_names=None, out_dir=None) -> Path:
    """ONNX (batch 1, [0, 1] pixels) and the converted model beside it."""
    import onnx

    from firmware_py.convert import convert

    out = Path(out_dir) if out_dir else ZOO / dataset
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ("%s.onnx" % variant)
    c = len(data.STATS[dataset][0])
    hw = 32 if dataset == "cifar10" else 28
    x = torch.rand(1, c, hw, hw)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    torch.onnx.export(model, (x,), str(onnx_path), dynamo=False, opset_version=17, input_names=["pixels"],
                      output_names=["logits"])
    m = onnx.load(str(onnx_path))
    names = class_names or (data.CIFAR_CLASSES if dataset == "cifar10" else [str(i) for i in range(10)])
    m.metadata_props.add(key="class_names", value=json.dumps(names))
    onnx.save(m, str(onnx_path))
    convert(str(onnx_path), str(out / ("%s.bnn" % variant)), check=True)
    return onnx_path


def parser():
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=data.DATASETS, required=True)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="xnor-net")
    ap.add_argument("--set", action="append", default=[], metavar="[VARIANT:]KEY=VALUE",
                    help="change a recipe setting (%s); VARIANT: for that variant alone"
                         % ", ".join(sorted((*BASE, *SOURCES))))
    ap.add_argument("--augment", choices=("on", "off"), default=None,
                    help="random shifts/flips (default: the recipe's)")
    ap.add_argument("--teacher", default=None, help="distil from this checkpoint (.npz of models.train)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    P.add_argument(ap)
    ap.add_argument("--limit", type=int, default=None, help="train on N random images (smoke runs)")
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on N random test images")
    ap.add_argument("--time-limit", type=float, default=0, help="minutes; then stop after the epoch (resumable)")
    ap.add_argument("--ckpt-dir", default=None, help="default models/.ckpt/<dataset>/<recipe>")
    ap.add_argument("--out", default=None, help="export folder (default models/zoo/<dataset>)")
    ap.add_argument("--no-export", action="store_true")
    return ap


def main(argv=None):
    a = parser().parse_args(argv)
    t0 = time.time()
    overrides = parse_sets(a.set, a.variant)
    if a.variant == "naive":
        model, done = load_trained(a.dataset, "naive", a.epochs, a.recipe, a.ckpt_dir), True
    else:
        aug = None if a.augment is None else a.augment == "on"
        model, done = train(a.dataset, a.variant, a.epochs, a.seed, a.threads, augment=aug, recipe_name=a.recipe,
                            overrides=overrides, ckpt_dir=a.ckpt_dir, limit=a.limit, device=a.device,
                            teacher_path=a.teacher, time_limit=a.time_limit, precision=a.precision)
    if distributed.rank() == 0:
        _, _, x_te, y_te = data.load(a.dataset)
        x_te, y_te = data.subset(x_te, y_te, a.test_limit)
        n = len(x_te)
        acc = evaluate_torch(model, x_te, y_te)
        print(json.dumps({"dataset": a.dataset, "variant": a.variant, "recipe": a.recipe, "done": done,
                          "test_images": n, "acc_pytorch": round(acc, 2), "world_size": distributed.world_size(),
                          "seconds": round(time.time() - t0, 1)}), flush=True)
        if done and not a.no_export:
            print("exported", export(model, a.dataset, a.variant, out_dir=a.out))
    distributed.stop()


if __name__ == "__main__":
    try:
        main()
    except (checkpoint.OtherConfig, SettingError) as e:  # said plainly, without a traceback
        raise SystemExit("error: %s" % e)
