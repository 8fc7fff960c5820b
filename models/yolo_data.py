"""YOLO-format detection data (the Ultralytics layout) for training and evaluation.

    root/images/<split>/*.jpg|png     root/labels/<split>/<stem>.txt ("class cx cy w h", normalised)
    root/<name>.yaml                  (path, train/val/test, names)

Images are decoded once (OpenCV, or Pillow when OpenCV is missing), resized so the long
side is ``imgsz`` (aspect kept) and held in memory as uint8 BGR; ``cache="disk"`` also
keeps them under models/.cache/det/ as two .npy files (pixels flat uint8, an int64 index
of offset/h/w/h0/w0) and a JSON stamp of the source files -- no pickle.

Training samples (``sample(i, rng)``): mosaic of 4 images (probability ``mosaic``) or one
letterboxed image, then a random affine (scale, translation), HSV jitter and a horizontal
flip; evaluation samples are letterboxed only.  Sample: uint8 (imgsz, imgsz, 3) BGR and
labels (n, 5) class, cx, cy, w, h normalised to the sample.  Randomness comes from a
numpy Generator seeded per (seed, epoch, index), so results do not depend on the number
of loader workers and a resumed run repeats the interrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "models" / ".cache" / "det"
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")
PAD = 114

# named data sets: (root, {split: images dir}, class map source->ours, class names)
DATASETS = {
    "people": (SHARED / "people", {"train": "images/train", "val": "images/val", "test": "images/test"},
               {0: 0}, ["person"]),
    "coco128": (SHARED / "coco128", {"val": "images/val2017", "test": "images/val2017"}, {0: 0}, ["person"]),
}

HYP = {"mosaic": 1.0, "scale": 0.5, "translate": 0.1, "fliplr": 0.5, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}


class DataUnavailable(RuntimeError):
    pass


def _imdecode(path):
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        img = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("cannot decode %s" % path)
        return img
    try:
        from PIL import Image
    except ImportError:
        raise DataUnavailable("decoding images needs OpenCV (pip install opencv-python-headless) or Pillow") from None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))[:, :, ::-1].copy()


def _resize(img, nw, nh):
    try:
        import cv2
        interp = cv2.INTER_AREA if nw < img.shape[1] else cv2.INTER_LINEAR
        return cv2.resize(img, (nw, nh), interpolation=interp)
    except ImportError:
        from firmware_py.detect import resize_nearest
        return resize_nearest(img, nw, nh)


def read_labels(path, class_map=None) -> np.ndarray:
    """(n, 5) float32 class, cx, cy, w, h; classes not in class_map dropped (remapped otherwise)"""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 5:
                    continue
                c = int(float(parts[0]))
                if class_map is not None:
                    if c not in class_map:
                        continue
                    c = class_map[c]
                rows.append([c] + [float(v) for v in parts[1:5]])
    lab = np.array(rows, np.float32).reshape(-1, 5)
    if len(lab):
        lab[:, 1:] = lab[:, 1:].clip(0, 1)
        lab = lab[(lab[:, 3] > 0) & (lab[:, 4] > 0)]
    return lab


def resolve(name_or_root, split):
    """(images dir, labels dir, class_map, names) for a named data set or a root folder with a yaml"""
    if name_or_root in DATASETS:
        root, splits, cmap, names = DATASETS[name_or_root]
        if split not in splits:
            raise ValueError("%s has no split %r (%s)" % (name_or_root, split, ", ".join(splits)))
        img_dir = root / splits[split]
    else:
        root = Path(name_or_root)
        yml = root if root.suffix in (".yaml", ".yml") else next(iter(sorted(root.glob("*.yaml"))), None)
        if yml is None:
            raise DataUnavailable("no data yaml in %s" % root)
        import yaml
        d = yaml.safe_load(open(yml))
        root = (yml.parent / d.get("path", ".")).resolve()
        img_dir = root / d[split]
        names = d["names"]
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        cmap = None
    if not img_dir.is_dir():
        raise DataUnavailable("images not found: %s" % img_dir)
    parts = list(img_dir.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    lab_dir = Path(*parts[:i], "labels", *parts[i + 1:])
    return img_dir, lab_dir, cmap, names


class YoloDataset:
    def __init__(self, data="people", split="train", imgsz=256, limit=None, cache="ram", augment=False,
                 hyp=None, quiet=False):
        self.img_dir, self.lab_dir, self.class_map, self.names = resolve(data, split)
        self.imgsz, self.augment = int(imgsz), augment
        self.hyp = dict(HYP, **(hyp or {}))
        files = sorted(p for p in self.img_dir.iterdir() if p.suffix.lower() in IMG_EXT)
        if limit:
            files = files[:limit]
        if not files:
            raise DataUnavailable("no images in %s" % self.img_dir)
        self.files = files
        self.labels = [read_labels(self.lab_dir / (p.stem + ".txt"), self.class_map) for p in files]
        self._load_images(cache, quiet, "%s_%s" % (Path(str(data)).name, split))

    # ---- images ------------------------------------------------------------------------------
    def _stamp(self):
        h = hashlib.sha1()
        for p in self.files:
            st = p.stat()
            h.update(("%s %d %d\n" % (p.name, st.st_size, int(st.st_mtime))).encode())
        return h.hexdigest()[:16]

    def _load_images(self, cache, quiet, key):
        stamp = self._stamp()
        base = CACHE / ("%s_%d_%s" % (key, self.imgsz, stamp))
        if cache == "disk" and base.with_suffix(".index.npy").exists():
            idx = np.load(base.with_suffix(".index.npy"), allow_pickle=False)
            pix = np.load(base.with_suffix(".pixels.npy"), allow_pickle=False)
            if len(idx) == len(self.files):
                self._set(pix, idx)
                return
        from tqdm import tqdm
        imgs, shapes0 = [], []
        for p in tqdm(self.files, desc="decode %s" % key, disable=quiet, mininterval=1.0, leave=False):
            img = _imdecode(p)
            h0, w0 = img.shape[:2]
            r = self.imgsz / max(h0, w0)
            if r != 1:
                img = _resize(img, max(1, round(w0 * r)), max(1, round(h0 * r)))
            imgs.append(np.ascontiguousarray(img))
            shapes0.append((h0, w0))
        sizes = np.array([im.size for im in imgs], np.int64)
        idx = np.zeros((len(imgs), 5), np.int64)
        idx[1:, 0] = np.cumsum(sizes)[:-1]
        idx[:, 1] = [im.shape[0] for im in imgs]
        idx[:, 2] = [im.shape[1] for im in imgs]
        idx[:, 3:] = np.array(shapes0, np.int64)
        pix = np.concatenate([im.reshape(-1) for im in imgs]) if imgs else np.zeros(0, np.uint8)
        if cache == "disk":
            CACHE.mkdir(parents=True, exist_ok=True)
            for suffix, arr in ((".pixels.npy", pix), (".index.npy", idx)):
                tmp = base.with_suffix(".tmp" + suffix)
                np.save(tmp, arr, allow_pickle=False)
                os.replace(tmp, base.with_suffix(suffix))
        self._set(pix, idx)

    def _set(self, pix, idx):
        self.pixels, self.index = pix, idx
        self.shapes0 = idx[:, 3:5].copy()  # original (h, w)

    def __len__(self):
        return len(self.files)

    def image(self, i):
        """cached uint8 BGR image (long side imgsz)"""
        o, h, w = self.index[i, :3]
        return self.pixels[o:o + h * w * 3].reshape(h, w, 3)

    # ---- samples -----------------------------------------------------------------------------
    def _letterboxed(self, i):
        """image i on an imgsz x imgsz canvas (centred), labels as pixel xyxy"""
        s = self.imgsz
        img = self.image(i)
        h, w = img.shape[:2]
        top, left = (s - h) // 2, (s - w) // 2
        canvas = np.full((s, s, 3), PAD, np.uint8)
        canvas[top:top + h, left:left + w] = img
        return canvas, _to_xyxy(self.labels[i], w, h, left, top), (h, w, top, left)

    def _mosaic(self, i, rng):
        s = self.imgsz
        yc, xc = (int(rng.uniform(s * 0.5, s * 1.5)) for _ in range(2))
        ids = [i] + list(rng.integers(0, len(self), 3))
        canvas = np.full((2 * s, 2 * s, 3), PAD, np.uint8)
        labs = []
        for k, j in enumerate(ids):
            img = self.image(j)
            h, w = img.shape[:2]
            if k == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif k == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif k == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            labs.append(_to_xyxy(self.labels[j], w, h, x1a - x1b, y1a - y1b))
        labs = np.concatenate(labs, 0)
        labs[:, 1:] = labs[:, 1:].clip(0, 2 * s)
        return canvas, labs

    def sample(self, i, rng=None):
        """(uint8 imgsz x imgsz x 3 BGR, labels (n, 5) class cx cy w h normalised)"""
        s = self.imgsz
        if not self.augment:
            img, lab, _ = self._letterboxed(i)
            return img, _to_cxcywh(lab, s)
        hyp = self.hyp
        if rng.random() < hyp["mosaic"]:
            img, lab = self._mosaic(i, rng)
            border = s // 2
        else:
            img, lab, _ = self._letterboxed(i)
            border = 0
        img, lab = _random_affine(img, lab, s, hyp["scale"], hyp["translate"], border, rng)
        _augment_hsv(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"], rng)
        lab = _to_cxcywh(lab, s)
        if rng.random() < hyp["fliplr"]:
            img = np.ascontiguousarray(img[:, ::-1])
            lab[:, 1] = 1 - lab[:, 1]
        return img, lab

    def gt_boxes(self, i):
        """ground truth of image i in original pixels: (classes (n,), xyxy (n, 4))"""
        h0, w0 = self.shapes0[i]
        lab = _to_xyxy(self.labels[i], w0, h0, 0, 0)
        return lab[:, 0].astype(np.int64), lab[:, 1:]

    def all_wh(self):
        """label sizes in pixels of the letterboxed imgsz image (for anchors)"""
        out = []
        for i, lab in enumerate(self.labels):
            h, w = self.index[i, 1:3]
            out.append(lab[:, 3:5] * np.array([w, h], np.float32))
        return np.concatenate(out, 0) if out else np.zeros((0, 2), np.float32)


def _to_xyxy(lab, w, h, padx, pady):
    out = np.zeros((len(lab), 5), np.float32)
    if len(lab):
        out[:, 0] = lab[:, 0]
        out[:, 1] = w * (lab[:, 1] - lab[:, 3] / 2) + padx
        out[:, 2] = h * (lab[:, 2] - lab[:, 4] / 2) + pady
        out[:, 3] = w * (lab[:, 1] + lab[:, 3] / 2) + padx
        out[:, 4] = h * (lab[:, 2] + lab[:, 4] / 2) + pady
    return out


def _to_cxcywh(lab, s):
    out = np.zeros((len(lab), 5), np.float32)
    if len(lab):
        b = lab[:, 1:].clip(0, s)
        out[:, 0] = lab[:, 0]
        out[:, 1] = (b[:, 0] + b[:, 2]) / 2 / s
        out[:, 2] = (b[:, 1] + b[:, 3]) / 2 / s
        out[:, 3] = (b[:, 2] - b[:, 0]) / s
        out[:, 4] = (b[:, 3] - b[:, 1]) / s
        out = out[(out[:, 3] > 0) & (out[:, 4] > 0)]
    return out


def _random_affine(img, lab, s, scale, translate, border, rng):
    """scale about the centre and translate; output s x s; labels xyxy pixels (filtered)"""
    import cv2

    h, w = img.shape[:2]
    c = np.eye(3)
    c[0, 2], c[1, 2] = -w / 2, -h / 2
    sc = rng.uniform(1 - scale, 1 + scale)
    S = np.diag([sc, sc, 1.0])
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * s
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * s
    M = T @ S @ c
    out = cv2.warpAffine(img, M[:2], dsize=(s, s), borderValue=(PAD, PAD, PAD))
    if len(lab):
        xy = np.ones((len(lab) * 4, 3))
        xy[:, :2] = lab[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(-1, 2)
        xy = (xy @ M.T)[:, :2].reshape(-1, 8)
        x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
        new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1).clip(0, s)
        w0, h0 = (lab[:, 3] - lab[:, 1]) * sc, (lab[:, 4] - lab[:, 2]) * sc
        w1, h1 = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
        ar = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
        keep = (w1 > 2) & (h1 > 2) & (w1 * h1 / (w0 * h0 + 1e-16) > 0.1) & (ar < 20)
        lab = np.concatenate((lab[keep, :1], new[keep]), 1).astype(np.float32)
    return out, lab


def _augment_hsv(img, hgain, sgain, vgain, rng):
    import cv2

    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)


def sample_rng(seed, epoch, i):
    return np.random.default_rng([int(seed), int(epoch), int(i)])


def to_tensor_batch(samples):
    """[(img uint8 HWC BGR, labels)] -> (uint8 NCHW RGB tensor, targets (nt, 6) image, class, cx, cy, w, h)"""
    import torch

    imgs = np.stack([s[0][:, :, ::-1].transpose(2, 0, 1) for s in samples])
    t = [np.concatenate((np.full((len(s[1]), 1), k, np.float32), s[1]), 1) for k, s in enumerate(samples)]
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(np.concatenate(t, 0).reshape(-1, 6))
