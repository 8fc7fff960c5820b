"""Evaluate a person detector: mAP@0.5 and mAP@0.5:0.95 (COCO's definition,
models/det_metrics.py) on a YOLO-format data set.

    python -m models.eval_detector --weights models/zoo/person/binary.bnn --data people --split test
    python -m models.eval_detector --weights models/zoo/person/fp_twin.onnx --data coco128
    python -m models.eval_detector --weights models/.ckpt/person/binary.npz --data people

--weights: a .bnn (firmware_py) or .onnx (onnxruntime) file, run through
firmware_py.detect.Detector on the original images (letterbox, decode, NMS exactly as on
the Pi), or one of our training checkpoints (.npz, its EMA weights, in PyTorch, with the
weights as real or binary as they were at its step: a first-step checkpoint of a two-step
run scores its real weights).
--data: people (../shared/data/people; split test by default) or coco128 (its person
class; the 128 val2017 images).  Detections: conf 0.001, NMS IoU 0.6, at most 300 per
image (the usual mAP protocol).  Prints one JSON object.  --pycocotools also scores the
same predictions with pycocotools (``coco_map50``, ``coco_map50_95``) as a cross-check.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .det_metrics import evaluate, evaluate_pycocotools
from .yolo_data import DATASETS, YoloDataset, _imdecode


def evaluate_file(path, data="people", split="test", conf=0.001, iou=0.6, threads=None, limit=None, quiet=False,
                  pycocotools=False):
    from firmware_py.detect import Detector

    from tqdm import tqdm

    det = Detector(path, num_threads=threads, conf=conf, iou=iou)
    ds = YoloDataset(data, split, det.input_size[0], limit=limit, quiet=True)
    preds, gts = [], []
    t0 = time.time()
    for i, f in enumerate(tqdm(ds.files, desc="eval %s" % data, disable=quiet, mininterval=1.0, leave=False)):
        r = det.detect(_imdecode(f))
        preds.append((r.boxes, r.scores, r.classes))
        gts.append(ds.gt_boxes(i))
    res = evaluate(preds, gts)
    res["seconds_per_image"] = (time.time() - t0) / max(1, len(ds))
    if pycocotools:
        res["coco_map50"], res["coco_map50_95"] = evaluate_pycocotools(preds, gts)
    return res


def evaluate_checkpoint(path, data="people", split="test", device="auto", limit=None):
    from .train_detector import evaluate_model, load_checkpoint_model, pick_device

    model, ck = load_checkpoint_model(path)
    dev = pick_device(device)
    ds = YoloDataset(data, split, model.cfg["imgsz"], limit=limit, quiet=True)
    res = evaluate_model(model.to(dev), ds, dev)
    res["step"] = int(ck["step"])
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.eval_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="people", help="%s or a folder with a YOLO data yaml" % "|".join(DATASETS))
    ap.add_argument("--split", default=None, help="default: test (people), val (coco128)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="for .npz checkpoints")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--pycocotools", action="store_true", help="also score with pycocotools (.bnn/.onnx)")
    a = ap.parse_args(argv)
    split = a.split or ("val" if a.data == "coco128" else "test")
    if a.weights.endswith(".npz"):
        res = evaluate_checkpoint(a.weights, a.data, split, a.device, a.limit)
    else:
        res = evaluate_file(a.weights, a.data, split, threads=a.threads, limit=a.limit, pycocotools=a.pycocotools)
    out = {"weights": a.weights, "data": a.data, "split": split, "map50": round(res["map50"], 4),
           "map50_95": round(res["map"], 4), "images": res["n_images"], "boxes": res["n_gt"]}
    for k in ("coco_map50", "coco_map50_95", "seconds_per_image", "step"):
        if k in res:
            out[k] = round(res[k], 4) if isinstance(res[k], float) else res[k]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
