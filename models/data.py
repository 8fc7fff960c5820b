"""Datasets for the classifier recipes, as uint8 NCHW arrays + int64 labels (no pickle).

fashion-mnist: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, idx),
               installed by ensure_fashion_mnist() with apt when missing;
mnist:         ../shared/data/mnist.npz (x_train, y_train, x_test, y_test);
cifar10:       ../shared/data/cifar10-jpg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg),
               decoded once and cached as .npy under models/.cache/.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE = ROOT / "models" / ".cache"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("fashion-mnist", "mnist", "cifar10")


class DataUnavailable(RuntimeError):
    pass


def ensure_fashion_mnist():
    if (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        raise DataUnavailable("Fashion-MNIST not found in %s: sudo apt-get install dataset-fashion-mnist" % FASHION_DIR)


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim < 1 or ndim > 4:
        raise ValueError("%s is not an idx uint8 file" % path)
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError("%s is truncated" % path)
    return arr.reshape(dims)


def _cifar():
    CACHE.mkdir(parents=True, exist_ok=True)
    files = {k: CACHE / ("cifar10_%s.npy" % k) for k in ("x_train", "y_train", "x_test", "y_test")}
    if all(f.exists() for f in files.values()):
        return tuple(np.load(files[k], allow_pickle=False) for k in ("x_train", "y_train", "x_test", "y_test"))
    src = SHARED / "cifar10-jpg.tar.gz"
    if not src.exists():
        raise DataUnavailable("CIFAR-10 not found at %s" % src)
    import cv2
    out = {"train": ([], []), "test": ([], [])}
    with tarfile.open(src) as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = Path(m.name).parts
            split = next((p for p in parts if p in out), None)
            cls = parts[-2]
            if split is None or cls not in CIFAR_CLASSES:
                continue
            buf = np.frombuffer(tf.extractfile(m).read(), np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if img is None or img.shape != (32, 32, 3):
                continue
            out[split][0].append(img[:, :, ::-1].transpose(2, 0, 1))  # RGB CHW
            out[split][1].append(CIFAR_CLASSES.index(cls))
    arrays = {"x_train": np.stack(out["train"][0]), "y_train": np.array(out["train"][1], np.int64),
              "x_test": np.stack(out["test"][0]), "y_test": np.array(out["test"][1], np.int64)}
    for k, v in arrays.items():
        np.save(files[k], v, allow_pickle=False)
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


# CIFAR-10 packed small for a machine the shared data cannot reach (models/gpu_run.py):
# when set, load("cifar10") reads this file (pack_cifar) instead of the tarball
CIFAR_PACK = os.environ.get("BNN_CIFAR_PACK") or None


def _jpegs(split):
    """(JPEG bytes, label) of a split of the CIFAR-10 tarball, in the tarball's order"""
    src = SHARED / "cifar10-jpg.tar.gz"
    if not src.exists():
        raise DataUnavailable("CIFAR-10 not found at %s" % src)
    with tarfile.open(src) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if m.isfile() and m.name.endswith(".jpg") and split in parts and parts[-2] in CIFAR_CLASSES:
                yield tf.extractfile(m).read(), CIFAR_CLASSES.index(parts[-2])


def pack_cifar(out, max_bytes, test_images=1000, seed=0) -> dict:
    """Writes CIFAR-10 as small as it goes without touching a pixel: every JPEG of the
    tarball has the same 600-byte header (tables), so it is stored once and each image
    as its entropy-coded bytes (about 300).  Training images are drawn at random, in turn
    per class (balanced), until the file would exceed max_bytes; test_images test images
    likewise (a check on the machine; the full test set is evaluated where the data is);
    <split>_index says which images of the tarball's split they are.
    An .npz of plain arrays (read with allow_pickle=False).  Returns what it packed."""
    arrays, header = {}, None
    for split, limit in (("test", test_images), ("train", None)):
        items = list(_jpegs(split))
        for b, _ in items:
            s = b.find(b"\xff\xda")
            h = b[:s + 2 + int.from_bytes(b[s + 2:s + 4], "big")]  # through the SOS segment
            header = header or h
            if s < 0 or h != header or not b.endswith(b"\xff\xd9"):
                raise ValueError("a CIFAR-10 JPEG with another header: cannot pack without re-encoding")
        rng = np.random.default_rng([seed, 8191])
        per_class = [[i for i in rng.permutation(len(items)) if items[i][1] == c] for c in range(10)]
        order = [i for row in zip(*per_class) for i in row]  # class 0, 1, ..., 9, 0, 1, ...
        budget = max_bytes - sum(a.nbytes for a in arrays.values()) - len(header) - 4096
        chosen, used = [], 0
        for i in order[:limit]:
            n = len(items[i][0]) - len(header) - 2 + 8 + 8 + 8  # payload, offset, label, index
            if used + n > budget:
                break
            chosen.append(i)
            used += n
        chosen.sort()
        payload = [items[i][0][len(header):-2] for i in chosen]
        arrays[split + "_payload"] = np.frombuffer(b"".join(payload), np.uint8)
        arrays[split + "_offsets"] = np.concatenate([[0], np.cumsum([len(p) for p in payload])]).astype(np.int64)
        arrays[split + "_labels"] = np.array([items[i][1] for i in chosen], np.int64)
        arrays[split + "_index"] = np.array(chosen, np.int64)  # in the tarball's order of the split
    arrays["header"] = np.frombuffer(header, np.uint8)
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return {"train_images": len(arrays["train_labels"]), "test_images": len(arrays["test_labels"]),
            "bytes": os.path.getsize(out)}


def _load_pack(path):
    import cv2
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    header, out = a["header"].tobytes(), []
    for split in ("train", "test"):
        pay, off, lab = a[split + "_payload"], a[split + "_offsets"], a[split + "_labels"]
        if (off.ndim != 1 or len(off) != len(lab) + 1 or off[0] != 0 or off[-1] != len(pay)
                or np.any(np.diff(off) <= 0)):
            raise ValueError("%s: the %s offsets do not match the payload" % (path, split))
        imgs = []
        for i in range(len(lab)):
            img = cv2.imdecode(np.frombuffer(header + pay[off[i]:off[i + 1]].tobytes() + b"\xff\xd9", np.uint8),
                               cv2.IMREAD_COLOR)
            if img is None or img.shape != (32, 32, 3):
                raise ValueError("%s: %s image %d does not decode to 32x32" % (path, split, i))
            imgs.append(img[:, :, ::-1].transpose(2, 0, 1))  # RGB CHW
        out += [np.stack(imgs), lab.astype(np.int64)]
    return tuple(out)


def load(name: str):
    """(x_train uint8 NCHW, y_train int64, x_test, y_test)"""
    if name == "fashion-mnist":
        ensure_fashion_mnist()
        d = FASHION_DIR
        return (_idx(d / "train-images-idx3-ubyte.gz")[:, None], _idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64),
                _idx(d / "t10k-images-idx3-ubyte.gz")[:, None], _idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    if name == "mnist":
        p = SHARED / "mnist.npz"
        if not p.exists():
            raise DataUnavailable("MNIST not found at %s" % p)
        with np.load(p, allow_pickle=False) as z:
            return (z["x_train"][:, None], z["y_train"].astype(np.int64), z["x_test"][:, None],
                    z["y_test"].astype(np.int64))
    if name == "cifar10":
        return _load_pack(CIFAR_PACK) if CIFAR_PACK else _cifar()
    raise ValueError("unknown dataset %r (one of %s)" % (name, ", ".join(DATASETS)))


def subset(x, y, n, seed=0):
    """n samples drawn at random (seeded; the files are sorted by class, so the first n
    would be one class), in their original order; all of them when n is None"""
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng([seed, 4099]).permutation(len(x))[:n])
    return x[idx], y[idx]


# per-dataset normalisation, applied inside the network (the graph takes [0, 1] pixels)
STATS = {
    "fashion-mnist": ([0.2860], [0.3530]),
    "mnist": ([0.1307], [0.3081]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
}
