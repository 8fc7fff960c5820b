"""Train the person detector (models/detector.py), resumably:

    python -m models.train_detector --variant fp --epochs 50
    python -m models.train_detector --variant binary --epochs 25 --init-from fp --distill 1,1

Data: ../shared/data/people (train split; val split evaluated every --val-every epochs),
decoded once, resized (long side = imgsz) and cached in memory (--cache disk also keeps a
uint8 .npy copy under models/.cache/det/).  Augmentation: mosaic, random scale and
translation, HSV, horizontal flip.  Loss: YOLOv5's (CIoU box, BCE objectness and
class, anchor-ratio matching); anchors by k-means on the training boxes.  AdamW with a
linear warm-up and a cosine decay, an EMA of the weights (evaluated and exported),
gradient clipping.  Device: CUDA when available (--device cpu|cuda to choose).

Seeded: the order of the images and every augmentation are drawn from generators seeded
by (seed, epoch, image), so a resumed run repeats the interrupted one.  Checkpoints
(models/.ckpt/person/<name>.npz: arrays and JSON, no pickle -- models/checkpoint.py)
are written after every epoch, every --save-every steps and when --time-limit runs out;
running the same command again resumes (another configuration is refused, naming what
differs: a changed flag never trains over a checkpoint).  Progress: tqdm; one JSON line
per epoch in models/.ckpt/person/<name>.log.jsonl.

Several processes: ``torchrun --nproc_per_node N -m models.train_detector ...`` (DDP, gloo
on CPU, nccl on GPU; models/distributed.py): --batch is the global batch, each process
takes its share of it; rank 0 alone checkpoints, logs, validates and exports.

--two-step trains the first half of the epochs with real-valued weights behind the binary
activations, the second with binary weights (Real-to-Binary); binary latent weights never
get weight decay (make_optimizer).  --binarize-ramp F binarises the weights gradually: over
the first fraction F of the binary-weight steps the layers compute with (1 - t) W +
t alpha sign(W), t rising linearly from 0 to 1 (then binary to the end and in the export).

--init-from fp starts the binary model from the trained fp twin's checkpoint (EMA
weights); from a narrower checkpoint (its --widths whole fractions of this run's) the
model is first widened to this run's widths with the same function (models/detector.py
widen: each channel copied, plus 1% noise), so a wider twin starts where a trained one
is.  --distill W_OUT,W_FEAT adds output distillation (objectness/class BCE against the
twin's probabilities, box MSE weighted by its objectness) and attention-transfer feature
distillation from the twin on every stage output.  --teacher NAME distils from
another checkpoint (default fp), loaded with its weights as they were at its step (real in
the first step of a two-step run: Real-to-Binary's teacher for the second; binary after).

At the end (all epochs done) the EMA model is exported: models/zoo/person/binary.onnx +
binary.bnn (converted with --check) or models/zoo/person/fp_twin.onnx, with the ONNX
metadata class_names = ["person"] and detector = the decoding parameters.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from tqdm import tqdm

from . import checkpoint, distributed
from . import detector as D
from . import precision as P
from .layers import set_binary_weights
from .yolo_data import YoloDataset, sample_rng, to_tensor_batch

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "models" / ".ckpt" / "person"
ZOO = ROOT / "models" / "zoo" / "person"
EXPORT_NAMES = {"binary": "binary", "fp": "fp_twin"}
# --init-from a narrower model (models/detector.py widen): Gaussian noise of this fraction of
# each widened weight's standard deviation, so that the channel copies can learn apart
WIDEN_NOISE = 0.01


# ---------------------------------------------------------------------------------------
class ModelEMA:
    """exponential moving average of the weights and float buffers (YOLOv5's ramp)"""

    def __init__(self, model, decay=0.9999, tau=2000, updates=0):
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])


class _SampleSet(torch.utils.data.Dataset):
    def __init__(self, ds, seed, epoch):
        self.ds, self.seed, self.epoch = ds, seed, epoch

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds.sample(i, sample_rng(self.seed, self.epoch, i))


def _loader(ds, seed, epoch, batch, start_batch, workers, steps):
    """this rank's share of the global batches start_batch.. of an epoch"""
    batches = distributed.rank_batches(len(ds), batch, seed, epoch, steps)[start_batch:]
    return torch.utils.data.DataLoader(_SampleSet(ds, seed, epoch), batch_sampler=batches, num_workers=workers,
                                       collate_fn=to_tensor_batch, persistent_workers=False,
                                       pin_memory=torch.cuda.is_available())


def lr_at(step, total, warmup, lr, lrf=0.01):
    if step < warmup:
        return lr * (0.01 + 0.99 * step / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return lr * (lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def binary_fraction(step, total, steps_per_epoch, epochs, two_step, ramp):
    """how binary the weights are at `step` (0: real, 1: binary): the two-step schedule's
    first half is real; the binary-weight steps start with a linear ramp over `ramp` of them"""
    start = -(-epochs // 2) * steps_per_epoch if two_step else 0
    if step < start:
        return 0.0
    n = round(ramp * (total - start))
    return 1.0 if n <= 0 else min(1.0, (step - start + 1) / n)


def make_optimizer(model, variant, lr, wd):
    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name == "weight" and isinstance(m, torch.nn.Conv2d) and not isinstance(m, D.BinaryConv2d):
                decay.append(p)  # float conv weights (binary latent weights: no decay)
            else:
                no_decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999))


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ckpt_path(name, ckpt_dir=None) -> Path:
    return Path(ckpt_dir or CKPT) / ("%s.npz" % name)


def load_checkpoint_model(path, which="ema"):
    """a trained model from one of our checkpoints"""
    ck = checkpoint.load(path)
    model = D.build_detector(ck["config"]["model"])
    model.load_state_dict(ck[which] if which in ck else ck["model"])
    # its weights as they were at that step: real in the two-step schedule's first step
    # (a teacher for the second), binary at the end (checkpoints before this key: binary)
    set_binary_weights(model, ck.get("binary_fraction", 1.0))
    return model.eval(), ck


# ---------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, ds, device, batch=32, conf=0.001, iou=0.6, max_det=300, limit=None):
    """detections of a letterboxed, non-augmented data set, in original image pixels"""
    model.eval()
    n = len(ds) if limit is None else min(limit, len(ds))
    s = ds.imgsz
    preds = []
    for b0 in range(0, n, batch):
        ids = list(range(b0, min(n, b0 + batch)))
        x, _ = to_tensor_batch([ds.sample(i) for i in ids])
        outs = model(x.to(device).float().div_(255))
        for i, (boxes, scores, cls) in zip(ids, D.postprocess(D.decode(model, outs), conf, iou, max_det)):
            h, w = ds.index[i, 1:3]
            h0, w0 = ds.shapes0[i]
            top, left = (s - h) // 2, (s - w) // 2
            bx = boxes.cpu().numpy().astype(np.float64)
            bx[:, [0, 2]] = ((bx[:, [0, 2]] - left) / (w / w0)).clip(0, w0)
            bx[:, [1, 3]] = ((bx[:, [1, 3]] - top) / (h / h0)).clip(0, h0)
            preds.append((bx.astype(np.float32), scores.cpu().numpy(), cls.cpu().numpy()))
    return preds


def evaluate_model(model, ds, device, batch=32, limit=None):
    from .det_metrics import evaluate

    preds = predict(model, ds, device, batch, limit=limit)
    gts = [ds.gt_boxes(i) for i in range(len(preds))]
    return evaluate(preds, gts)


# ---------------------------------------------------------------------------------------
def _float(tensors):
    """float32 copies of a list of tensors (the losses run in float32 under bf16 autocast)"""
    return [t.float() for t in tensors]


def train(a, quiet=False):
    """a: parsed arguments (see main).  Returns (EMA model in eval mode, summary dict)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    rank, world, device = distributed.start(pick_device(a.device))
    quiet = quiet or rank != 0
    torch.manual_seed(a.seed)
    name = a.name or a.variant
    path = ckpt_path(name, a.ckpt_dir)
    train_ds = YoloDataset(a.data, "train", a.imgsz, limit=a.limit, cache=a.cache, augment=True,
                           hyp={"mosaic": a.mosaic}, quiet=quiet)
    anchors = D.kmeans_anchors(train_ds.all_wh(), 6, seed=a.seed) if not a.default_anchors else None
    mcfg = D.default_config(a.variant, a.imgsz, len(train_ds.names), anchors, arch=a.arch,
                            downsample=a.downsample, learn_scale=a.learn_scale,
                            **({"widths": [int(v) for v in a.widths.split(",")]} if a.widths else {}))
    batch = a.batch
    steps_per_epoch = max(1, len(train_ds) // batch)
    total = a.epochs * steps_per_epoch
    warmup = min(max(100, 3 * steps_per_epoch), total // 3) if total > 3 else 0
    config = {"model": mcfg, "epochs": a.epochs, "seed": a.seed, "batch": batch, "lr": a.lr, "wd": a.wd,
              "data": str(a.data), "limit": a.limit, "init_from": a.init_from, "distill": a.distill,
              "mosaic": a.mosaic, "ema": not a.no_ema}
    if a.two_step:
        config["two_step"] = True
    if a.binarize_ramp:
        if a.variant == "fp" or not 0 < a.binarize_ramp <= 1:
            raise SystemExit("--binarize-ramp needs the binary variant and a fraction in (0, 1]")
        config["binarize_ramp"] = a.binarize_ramp
    distributed.share(batch)  # a multiple of the number of processes
    model = D.build_detector(mcfg).to(device)
    opt = make_optimizer(model, a.variant, a.lr, a.wd)
    ema = None if a.no_ema else ModelEMA(model)
    step = 0
    log_path = path.with_suffix(".log.jsonl")
    if path.exists():
        ck = checkpoint.load(path)
        checkpoint.check_resumable(path, ck["config"], config, "pass another --name")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if ema is not None:
            ema.ema.load_state_dict(ck["ema"])
            ema.updates = int(ck["ema_updates"])
        step = int(ck["step"])
        if not quiet:
            print("resuming %s at step %d/%d (epoch %d)" % (path, step, total, step // steps_per_epoch))
    if step == 0 and a.init_from:
        src = ckpt_path(a.init_from, a.ckpt_dir)
        fp_model, _ = load_checkpoint_model(src)
        narrow = fp_model.cfg["widths"]
        if narrow != mcfg["widths"]:  # a narrower source: its channels copied (Net2Net)
            fp_model = D.widen(fp_model, mcfg["widths"], noise=WIDEN_NOISE, seed=a.seed)
            if not quiet:
                print("widened %s from widths %s" % (src.name, ",".join(map(str, narrow))))
        missing = D.init_from_fp(model, fp_model.state_dict())
        if ema is not None:
            ema = ModelEMA(model)
        if not quiet:
            print("initialised from %s (%d keys not in it)" % (src, len(missing)))
    teacher = None
    w_out, w_feat = (float(v) for v in a.distill.split(","))
    if w_out or w_feat:
        teacher, _ = load_checkpoint_model(ckpt_path(a.teacher or "fp", a.ckpt_dir))
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    loss_fn = D.YoloLoss(model)
    ddp = distributed.wrap(model, device)
    val_ds = None
    t_start = time.time()
    stop_reason = None

    def save():
        if rank:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(path, {"model": model.state_dict(), "opt": opt.state_dict(),
                               "ema": (ema.ema if ema else model).state_dict(),
                               "ema_updates": ema.updates if ema else 0, "step": step, "config": config,
                               "binary_fraction": t})

    last = {}
    t = binary_fraction(step, total, steps_per_epoch, a.epochs, a.two_step, a.binarize_ramp)
    while step < total and stop_reason is None:
        epoch, b0 = divmod(step, steps_per_epoch)
        model.train()
        bar = tqdm(total=steps_per_epoch - b0, desc="%s epoch %d/%d" % (name, epoch + 1, a.epochs), disable=quiet,
                   mininterval=1.0, leave=False)
        parts_sum, nb = torch.zeros(3), 0
        for imgs, targets in _loader(train_ds, a.seed, epoch, batch, b0, a.workers, steps_per_epoch):
            # the two-step schedule (real weights behind binary activations for the first half)
            # and the gradual binarisation
            t = binary_fraction(step, total, steps_per_epoch, a.epochs, a.two_step, a.binarize_ramp)
            for m in (model, ema.ema if ema else model):
                set_binary_weights(m, t)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, a.lr)
            x = imgs.to(device, non_blocking=True).float().div_(255)
            targets = targets.to(device)
            with P.autocast(a.precision, device):
                outs, feats = ddp(x, feats=True)
                if teacher is not None:
                    with torch.no_grad():
                        t_outs, t_feats = teacher(x, feats=True)
            outs, feats = _float(outs), _float(feats)
            loss, parts = loss_fn(model.split(outs), targets)
            if teacher is not None:
                t_outs, t_feats = _float(t_outs), _float(t_feats)
                loss = loss + D.distill_loss(outs, t_outs, feats, t_feats, model, w_out, w_feat) * x.shape[0]
            # the loss is a sum over this process's share; DDP averages the shares' gradients,
            # so x world: the gradient of one process's loss over the whole batch
            loss = loss * world
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            parts_sum += parts.cpu()
            nb += 1
            last = {"loss": float(loss.item()) / (x.shape[0] * world)}
            if not quiet:
                bar.set_postfix_str("box %.4f obj %.4f cls %.4f" % tuple((parts_sum / nb).tolist()), refresh=False)
                bar.update(1)
            if a.max_steps and step >= a.max_steps:
                stop_reason = "max-steps"
            elif a.time_limit and distributed.any_rank(time.time() - t_start > a.time_limit * 60):
                stop_reason = "time-limit"
            if a.save_every and step % a.save_every == 0 and step % steps_per_epoch:
                save()
            if stop_reason:
                break
        bar.close()
        save()
        rec = {"epoch": epoch + 1, "step": step, "time_s": round(time.time() - t_start, 1),
               "box": float(parts_sum[0] / max(nb, 1)), "obj": float(parts_sum[1] / max(nb, 1)),
               "cls": float(parts_sum[2] / max(nb, 1))}
        epoch_done = step % steps_per_epoch == 0
        if rank == 0 and epoch_done and a.val_every and ((step // steps_per_epoch) % a.val_every == 0
                                                         or step == total):
            if val_ds is None:
                val_ds = YoloDataset(a.data, "val", a.imgsz, limit=a.val_limit, cache=a.cache, quiet=quiet)
            r = evaluate_model(ema.ema if ema else model, val_ds, device, limit=a.val_limit)
            rec.update(val_map50=round(r["map50"], 4), val_map=round(r["map"], 4))
            if not quiet:
                print("val mAP@0.5 %.4f  mAP@0.5:0.95 %.4f" % (r["map50"], r["map"]))
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        distributed.barrier()
        last.update(rec)
    final = (ema.ema if ema else model).eval()
    set_binary_weights(final, True)
    summary = dict(last, step=step, total=total, done=step >= total, stopped=stop_reason, checkpoint=str(path))
    return final, summary


def export(model, variant, out_dir=None, class_names=("person",), check=True):
    """ONNX (+ converted .bnn for the binary variant) in models/zoo/person/"""
    out = Path(out_dir or ZOO)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ("%s.onnx" % EXPORT_NAMES[variant])
    D.export_onnx(model, onnx_path, class_names)
    paths = [str(onnx_path)]
    if variant == "binary":
        from firmware_py.convert import convert

        res = convert(str(onnx_path), str(onnx_path.with_suffix(".bnn")), check=check)
        paths.append(res.path)
    return paths


def parser():
    ap = argparse.ArgumentParser(prog="python -m models.train_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=D.VARIANTS, required=True)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=D.IMGSZ)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05, help="AdamW weight decay of float conv weights")
    ap.add_argument("--data", default="people", help="people, coco128 or a folder with a YOLO data yaml")
    ap.add_argument("--arch", choices=("bireal", "plain"), default="bireal")
    ap.add_argument("--downsample", choices=("real", "avg"), default="avg")
    ap.add_argument("--learn-scale", action="store_true", help="learnable per-channel scales of the binary convs")
    ap.add_argument("--widths", default="", help="channel widths, 5 comma-separated (default %s)" % ",".join(map(str, D.WIDTHS)))
    ap.add_argument("--default-anchors", action="store_true", help="fixed anchors instead of k-means on the data")
    ap.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability")
    ap.add_argument("--init-from", default=None, help="checkpoint name to initialise from (e.g. fp); a narrower "
                    "model is widened to --widths first (its channels copied)")
    ap.add_argument("--distill", default="0,0", help="W_OUT,W_FEAT distillation weights from the teacher")
    ap.add_argument("--teacher", default=None, help="teacher checkpoint name (default fp)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1")
    P.add_argument(ap)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader processes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", choices=("ram", "disk"), default="ram")
    ap.add_argument("--limit", type=int, default=None, help="use the first N training images (smoke runs)")
    ap.add_argument("--val-limit", type=int, default=None)
    ap.add_argument("--val-every", type=int, default=5, help="evaluate on val every N epochs (0: never)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop (and save) after this many steps in all")
    ap.add_argument("--time-limit", type=float, default=0, help="stop (and save) after this many minutes")
    ap.add_argument("--save-every", type=int, default=200, help="also checkpoint every N steps")
    ap.add_argument("--name", default=None, help="checkpoint name (default: the variant)")
    ap.add_argument("--ckpt-dir", default=None)
    ap.add_argument("--no-ema", action="store_true")
    ap.add_argument("--two-step", action="store_true", help="binary variant: real-valued weights for the first half "
                                                             "of the epochs, then binary (Real-to-Binary's schedule)")
    ap.add_argument("--binarize-ramp", type=float, default=0.0,
                    help="binary variant: binarise the weights gradually over this fraction of the binary-weight "
                         "steps (0: at once)")
    ap.add_argument("--export-dir", default=None, help="default models/zoo/person")
    ap.add_argument("--no-export", action="store_true")
    return ap


def main(argv=None):
    a = parser().parse_args(argv)
    model, summary = train(a)
    if distributed.rank() == 0:
        print(json.dumps(dict(summary, world_size=distributed.world_size())))
        if summary["done"] and not a.no_export:
            print("exported", export(model, a.variant, a.export_dir))
            print("MACs", json.dumps(D.count_macs(model)))
    distributed.stop()


if __name__ == "__main__":
    try:
        main()
    except checkpoint.OtherConfig as e:  # said plainly, without a traceback
        raise SystemExit("error: %s" % e)
