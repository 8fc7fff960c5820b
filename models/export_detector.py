"""Export a trained person detector from one of our training checkpoints (its EMA weights).

    python -m models.export_detector --weights models/.ckpt/person/fp60r2.npz
    python -m models.export_detector --weights models/.ckpt/person/fp60r2.npz --widths 16,64,128,256,512
    python -m models.export_detector --weights models/.ckpt/person/bin100w.npz --slim /tmp/bin100w_slim.npz

Writes models/zoo/person/fp_twin.onnx for the fp variant, binary.onnx + binary.bnn
(converted and checked against onnxruntime) for the binary one (--out-dir: elsewhere).
--widths widens the model first with the same function (models/detector.py widen, no
noise): the fp twin of a wider binary detector without training it again.  --slim PATH
also writes the checkpoint's EMA weights alone, as float16, with its configuration (the
form of the finished twins committed under models/.ckpt/person/, an eighth of a training
checkpoint's bytes; it cannot be resumed, so give it its own name while a run is unfinished;
the export itself is made from the weights as loaded, before that rounding).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import checkpoint
from . import detector as D
from .train_detector import export, load_checkpoint_model


def slim(ck: dict, out) -> None:
    """the EMA weights (float16) and the configuration of a training checkpoint"""
    ema = ck["ema"] if "ema" in ck else ck["model"]
    keep = {"config": ck["config"], "step": ck["step"],
            "ema": checkpoint.half_state(ema)}
    if "binary_fraction" in ck:
        keep["binary_fraction"] = ck["binary_fraction"]
    checkpoint.save(out, keep)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.export_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a checkpoint of models.train_detector (.npz)")
    ap.add_argument("--widths", default="", help="widen to these 5 widths first (whole multiples of the model's)")
    ap.add_argument("--out-dir", default=None, help="default models/zoo/person")
    ap.add_argument("--slim", default=None, help="also write the EMA weights alone (float16) to this .npz")
    a = ap.parse_args(argv)
    path = Path(a.weights)
    if not path.is_file():
        raise SystemExit("export_detector: no checkpoint %s" % path)
    model, ck = load_checkpoint_model(path)
    if a.widths:
        try:
            widths = [int(v) for v in a.widths.split(",")]
            model = D.widen(model, widths).eval()
        except ValueError as e:
            raise SystemExit("export_detector: --widths %s: %s" % (a.widths, e))
    if a.slim:
        slim(ck, a.slim)  # after loading: --slim may name the checkpoint itself
    with torch.no_grad():
        paths = export(model, model.cfg["variant"], a.out_dir)
    print(json.dumps({"weights": str(path), "widths": model.cfg["widths"], "exported": paths,
                      "slim": a.slim, "macs": D.count_macs(model)}))


if __name__ == "__main__":
    main()
