"""A demo on bundled data: the shipped XNOR-Net Fashion-MNIST classifier run by the C
runtime on 32 bundled test images (Fashion-MNIST, MIT licence).

    python -m firmware_py.demo [--model models/zoo/fashion-mnist/xnor.bnn] [--threads N]

Prints each prediction, the accuracy on the samples and the latency per image.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import load, zoo_path

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m firmware_py.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=zoo_path("fashion-mnist", "xnor.bnn"))
    ap.add_argument("--samples", default=zoo_path("fashion-mnist", "samples.npz"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    for p in (a.model, a.samples):
        if not Path(p).exists():
            print("demo: %s not found" % p, file=sys.stderr)
            return 2
    with np.load(a.samples, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    model = load(a.model, num_threads=a.threads)
    times, correct = [], 0
    for img, label in zip(images, labels):
        x = (img[None].astype(np.float32) / np.float32(255))
        t0 = time.perf_counter()
        logits = model.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
        pred = int(np.argmax(logits))
        correct += pred == int(label)
        print("%-12s %s (true: %s)" % (CLASSES[pred], "ok  " if pred == label else "MISS", CLASSES[int(label)]))
    summary = {"model": a.model, "images": len(labels), "correct": correct,
               "accuracy_percent": round(100.0 * correct / len(labels), 1),
               "latency_ms_median": round(float(np.median(times)), 3), "threads": model_threads(model, a.threads)}
    print(json.dumps(summary))
    return 0


def model_threads(model, requested):
    return getattr(getattr(model, "_ctx", None), "num_threads", requested)


if __name__ == "__main__":
    sys.exit(main())
