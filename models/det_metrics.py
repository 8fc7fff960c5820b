"""mAP@0.5 and mAP@0.5:0.95 for box detections, COCO's definition in numpy.

Follows pycocotools' COCOeval for bounding boxes (area range "all", no crowd regions,
at most ``max_det`` detections per image and class): per image and class, detections in
descending score order are matched greedily to the unmatched ground-truth box of highest
IoU >= t; over all images the detections of a class are ranked by score, precision is
made monotone, and sampled at the 101 recall points 0, 0.01, ..., 1 (0 past the highest
recall reached); AP is their mean, mAP the mean over the classes with ground truth and
over the IoU thresholds 0.50, 0.55, ..., 0.95.  IoU is computed on xyxy boxes with
area = w * h (no +1).  tests/test_detect.py checks it against pycocotools.
"""
from __future__ import annotations

import numpy as np

from firmware_py.detect import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)



def _match(ious, thresholds):
    """ious (n_det, n_gt), detections sorted by score -> matched (n_t, n_det) bool"""
    nd, ng = ious.shape
    matched = np.zeros((len(thresholds), nd), bool)
    for ti, t in enumerate(thresholds):
        gt_used = np.zeros(ng, bool)
        for d in range(nd):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(ng):
                if gt_used[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                gt_used[m] = True
                matched[ti, d] = True
    return matched


def evaluate(preds, gts, max_det=100, iou_thresholds=IOU_THRESHOLDS):
    """preds: per image (boxes xyxy (n, 4), scores (n,), classes (n,));
    gts: per image (classes (m,), boxes xyxy (m, 4)).
    Returns {"map50", "map", "ap_per_class" {cls: [AP at each threshold]}, "n_gt"}."""
    iou_thresholds = np.asarray(iou_thresholds, np.float64)
    classes = sorted({int(c) for g in gts for c in np.asarray(g[0]).reshape(-1)})
    per_class = {}
    n_gt_total = 0
    for c in classes:
        scores_all, matched_all = [], []
        n_gt = 0
        for (pb, ps, pc), (gc, gb) in zip(preds, gts):
            pb, ps, pc = np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)
            gc, gb = np.asarray(gc).reshape(-1), np.asarray(gb).reshape(-1, 4)
            g = gb[gc == c]
            n_gt += len(g)
            m = pc == c
            b, s = pb[m], ps[m]
            if not len(s):
                continue
            order = np.argsort(-s, kind="mergesort")[:max_det]
            b, s = b[order], s[order]
            scores_all.append(s)
            if len(g):
                matched_all.append(_match(box_iou(b, g), iou_thresholds))
            else:
                matched_all.append(np.zeros((len(iou_thresholds), len(s)), bool))
        n_gt_total += n_gt
        if n_gt == 0:
            continue
        if not scores_all:
            per_class[c] = np.zeros(len(iou_thresholds))
            continue
        scores = np.concatenate(scores_all)
        matched = np.concatenate(matched_all, 1)
        order = np.argsort(-scores, kind="mergesort")
        matched = matched[:, order]
        tp = np.cumsum(matched, 1).astype(np.float64)
        fp = np.cumsum(~matched, 1).astype(np.float64)
        aps = np.zeros(len(iou_thresholds))
        for ti in range(len(iou_thresholds)):
            rc = tp[ti] / n_gt
            pr = tp[ti] / (fp[ti] + tp[ti] + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]
            inds = np.searchsorted(rc, RECALL_POINTS, side="left")
            q = np.zeros(len(RECALL_POINTS))
            ok = inds < len(pr)
            q[ok] = pr[inds[ok]]
            aps[ti] = q.mean()
        per_class[c] = aps
    if per_class:
        allap = np.stack(list(per_class.values()))
        i50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
        map50, mapall = float(allap[:, i50].mean()), float(allap.mean())
    else:
        map50 = mapall = 0.0
    return {"map50": map50, "map": mapall, "ap_per_class": {c: v.tolist() for c, v in per_class.items()},
            "n_gt": n_gt_total, "n_images": len(gts)}


def evaluate_pycocotools(preds, gts, max_det=100):
    """the same through pycocotools (the tests and eval_detector --pycocotools): (map50, map)"""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({int(c) for g in gts for c in np.asarray(g[0]).reshape(-1)})
    images, anns, dets = [], [], []
    for i, ((pb, ps, pc), (gc, gb)) in enumerate(zip(preds, gts)):
        images.append({"id": i + 1, "width": 10000, "height": 10000})
        for c, b in zip(np.asarray(gc).reshape(-1), np.asarray(gb).reshape(-1, 4)):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in classes]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_det]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])
