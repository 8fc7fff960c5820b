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
        return _cifar()
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
