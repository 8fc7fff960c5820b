"""The shipped person detector (models/zoo/person): its files load, carry what the device
needs, agree with their ONNX source in onnxruntime, and find people in real video."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT

ZOO = os.path.join(ROOT, "models", "zoo", "person")
BNN, ONNX, TWIN = (os.path.join(ZOO, f) for f in ("binary.bnn", "binary.onnx", "fp_twin.onnx"))
SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")
PERSON_CLIP = os.path.join(ROOT, "..", "shared", "data", "videos", "one-by-one-person-detection.mp4")


def _frames(path, n, step=1):
    import cv2
    cap = cv2.VideoCapture(path)
    out, i = [], 0
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(f)
        i += 1
    cap.release()
    assert out, "no frames read from %s" % path
    return out


def test_shipped_files_carry_the_detector_metadata():
    from firmware_py.detect import Detector

    for path in (BNN, TWIN):
        det = Detector(path, num_threads=1)
        assert det.class_names == ["person"]
        assert det.input_size[0] == det.input_size[1] and det.input_size[0] % 32 == 0
    # the binary file is the small one
    assert os.path.getsize(TWIN) >= 20 * os.path.getsize(BNN)


def test_shipped_bnn_matches_its_onnx_in_onnxruntime(tmp_path):
    import onnxruntime  # noqa: F401
    from firmware_py.convert import convert
    from firmware_py.detect import Detector

    ours, ort = Detector(BNN, num_threads=1), Detector(ONNX, num_threads=1)
    apart = []
    frames = _frames(SAMPLE, 8, step=10)
    for frame in frames:
        x, _ = ours.preprocess(frame)
        a, b = ours.raw(x), ort.raw(x)
        worst = max(float(np.max(np.abs(u - v)) / (np.max(np.abs(v)) + 1e-6)) for u, v in zip(a, b))
        if worst >= 1e-3:
            apart.append(x)
    # float accumulation order differs (stem, heads), so a sign whose input lies within
    # rounding of its threshold may flip and the flip grows through the layers: most frames
    # agree end to end to float rounding ...
    assert len(apart) <= len(frames) // 4, "%d of %d frames apart" % (len(apart), len(frames))
    if apart:  # ... and on the others every layer, run on onnxruntime's own input to it,
        # reproduces onnxruntime's output (bits exactly except within rounding of a threshold)
        r = convert(ONNX, str(tmp_path / "m.bnn"), check=True, check_inputs=apart, check_samples=0)
        assert r.check["ok"] and r.check["first_bad_layer"] is None, r.check["summary"]
        assert "layer by layer: %d layers agree" % r.check["layers"] in r.check["summary"], r.check["summary"]


@pytest.mark.skipif(not os.path.isfile(PERSON_CLIP), reason="needs ../shared/data/videos")
def test_shipped_detector_finds_the_person_in_real_video():
    """one-by-one-person-detection.mp4: people walk through a corridor.  The binary
    detector must find a person in most frames where its fp twin finds one, and the
    boxes must overlap."""
    from firmware_py.detect import Detector
    from models.det_metrics import box_iou

    ours, twin = Detector(BNN, num_threads=1, conf=0.25), Detector(TWIN, num_threads=1, conf=0.25)
    frames = _frames(PERSON_CLIP, 60, step=5)
    both = twin_hits = 0
    for f in frames:
        t = twin.detect(f)
        if len(t) == 0:
            continue
        twin_hits += 1
        o = ours.detect(f)
        if len(o) and box_iou(o.boxes, t.boxes[int(np.argmax(t.scores))]).max() > 0.3:
            both += 1
    print("\nfp twin found a person in %d of %d frames; the binary model agreed in %d"
          % (twin_hits, len(frames), both))
    assert twin_hits >= len(frames) // 4
    assert both >= 0.5 * twin_hits


def test_app_runs_the_shipped_detector_by_default(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "e.jsonl"
    r = subprocess.run([sys.executable, "-m", "bnn_camera", "--source", SAMPLE, "--max-frames", "30", "--threads", "1",
                        "--out", str(out), "--format", "json", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["frames_total"] == 30
    assert os.path.join("zoo", "person", "binary.bnn") in r.stderr  # "model PATH (...)" at start
