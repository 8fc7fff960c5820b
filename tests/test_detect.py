"""firmware_py.detect: decode, NMS, letterbox geometry, the Detector on a converted
binary detector and on an ONNX twin (against PyTorch), and the mAP implementation
against pycocotools."""
import os
import subprocess
import sys

import numpy as np
import pytest

from firmware_py.detect import Letterbox, decode, letterbox, nms, postprocess, scale_boxes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _head(nc=1):
    return {"strides": [16, 32], "nc": nc, "input_size": (64, 64),
            "anchors": [np.array([[10, 20], [20, 40]], np.float32), np.array([[30, 60], [60, 60]], np.float32)]}


def _raw(head):
    no = 5 + head["nc"]
    return [np.full((1, 2 * no, 64 // s, 64 // s), -20.0, np.float32) for s in head["strides"]]


def test_decode_hand_made():
    head = _head(nc=2)
    no = 7
    out = _raw(head)
    # stride 16, anchor 1, cell (row 1, col 2): t = 0 -> centre of the cell, anchor size
    out[0][0, 1 * no:2 * no, 1, 2] = [0, 0, 0, 0, 3.0, -5, 2.0]
    # stride 32, anchor 0, cell (0, 1): tx large -> x offset 1.5 cells, tw -> 2x anchor? sig(t)=1 -> (2)^2=4x
    out[1][0, 0:no, 0, 1] = [20, -20, 20, 0, 1.0, 1.0, -3]
    pred = decode(out, head)
    assert pred.shape == (2 * 16 + 2 * 4, 7)
    s = 1 / (1 + np.exp(-np.array([3.0, -5, 2.0])))
    i = 1 * 16 + 1 * 4 + 2  # anchor 1, row 1, col 2 in the stride-16 block
    np.testing.assert_allclose(pred[i, :4], [(2 + 0.5) * 16, (1 + 0.5) * 16, 20, 40], rtol=1e-6)
    np.testing.assert_allclose(pred[i, 4:], s, rtol=1e-6)
    j = 32 + 0 * 4 + 0 * 2 + 1
    np.testing.assert_allclose(pred[j, :4], [(1 + 1.5) * 32, (0 - 0.5) * 32, 4 * 30, 60], rtol=1e-5, atol=1e-4)
    boxes, scores, classes = postprocess(pred, conf=0.3, iou=0.45)
    assert len(boxes) == 2
    np.testing.assert_allclose(scores, sorted([s[0] * s[2], 1 / (1 + np.exp(-1.0)) ** 2])[::-1], rtol=1e-6)
    np.testing.assert_array_equal(classes, [1, 0])
    np.testing.assert_allclose(boxes[0], [40 - 10, 24 - 20, 40 + 10, 24 + 20], atol=1e-4)


def test_nms_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60], [2, 0, 12, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    classes = np.array([0, 0, 1, 0, 0])
    keep = nms(boxes, scores, 0.5, classes)
    # 4 (0.95) suppresses 0 (IoU 8/12) and 1 (IoU 0.68 > 0.5 -> check), class 1 box kept
    ious = lambda a, b: (max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))) / (
        100 + 100 - max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1])))
    assert ious(boxes[4], boxes[0]) > 0.5 and ious(boxes[4], boxes[1]) > 0.5
    np.testing.assert_array_equal(keep, [4, 2, 3])
    assert list(nms(boxes, scores, 0.5)) == [4, 3]  # class-agnostic: the class-1 box goes too
    assert list(nms(boxes, scores, 0.99, classes, max_det=2)) == [4, 0]


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (240, 320), (256, 256), (100, 300), (37, 53)])
@pytest.mark.parametrize("use_cv2", [False, True])
def test_letterbox_geometry(hw, use_cv2):
    if use_cv2:
        import cv2  # noqa: F401
    fh, fw = hw
    frame = np.zeros((fh, fw, 3), np.uint8)
    x0, y0, x1, y1 = fw // 4, fh // 3, fw // 4 + fw // 2, fh // 3 + fh // 2
    frame[y0:y1, x0:x1] = (0, 0, 255)  # red in BGR
    x, lb = letterbox(frame, (128, 160), use_cv2=use_cv2)
    assert x.shape == (1, 3, 128, 160) and x.dtype == np.float32
    # aspect kept, padded symmetrically
    assert abs(lb.sx - lb.sy) < 0.02 and (lb.left == 0 or lb.top == 0)
    assert np.all(x[0, :, :lb.top] == np.float32(114 / 255)) and np.all(x[0, :, :, :lb.left] == np.float32(114 / 255))
    # exact inverse of the forward transform
    box = np.array([[x0, y0, x1, y1]], np.float32)
    fwd = box * [lb.sx, lb.sy, lb.sx, lb.sy] + [lb.left, lb.top, lb.left, lb.top]
    np.testing.assert_allclose(scale_boxes(fwd, lb), box, atol=1e-3)
    # the rendered rectangle (red = RGB channel 0) found in the input maps back to it
    red = (x[0, 0] > 0.5) & (x[0, 2] < 0.5)
    ys, xs = np.nonzero(red)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    back = scale_boxes(found, lb)
    tol = 1.0 / min(lb.sx, lb.sy) + 1.0
    np.testing.assert_allclose(back, box, atol=tol)


def test_scale_boxes_clips():
    lb = Letterbox(0.5, 0.5, 0, 16, (100, 200))
    b = scale_boxes([[-10, 0, 120, 80]], lb)
    np.testing.assert_allclose(b, [[0, 0, 200, 100]])


def test_firmware_py_detect_does_not_import_torch():
    code = "import sys, firmware_py.detect; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- against PyTorch ----------------------------------------------------------------------------
def _frames():
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((480, 640), (200, 300), (256, 256)):
        yy, xx = np.mgrid[:h, :w]
        f = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 128 // (h + w))], -1).astype(np.uint8)
        f = np.clip(f.astype(np.int16) + rng.integers(-40, 40, f.shape), 0, 255).astype(np.uint8)
        f[h // 4:h // 2, w // 3:w // 2] = rng.integers(0, 255, 3)
        out.append(f)
    return out


def _torch_detect(model, det, frame, conf, iou):
    import torch

    from models import detector as D

    x, lb = det.preprocess(frame)
    with torch.no_grad():
        outs = model(torch.from_numpy(x))
    boxes, scores, classes = D.postprocess(D.decode(model, outs), conf, iou)[0]
    return scale_boxes(boxes.numpy(), lb), scores.numpy(), classes.numpy()


def _compare(model, det, conf, iou=0.45):
    n_total = 0
    for f in _frames():
        b_ref, s_ref, c_ref = _torch_detect(model, det, f, conf, iou)
        r = det.detect(f)
        assert len(r) == len(b_ref), (len(r), len(b_ref))
        np.testing.assert_allclose(r.boxes, b_ref, atol=1.0)
        np.testing.assert_allclose(r.scores, s_ref, rtol=1e-3)
        np.testing.assert_array_equal(r.classes, c_ref)
        n_total += len(r)
    assert n_total > 0, "no detections to compare; lower conf"
    return n_total


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    import torch
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    from models import detector as D

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("det")
    models = {}
    for v in ("binary", "fp"):
        m = D.build_detector(D.default_config(v, 128, widths=(32, 32, 64, 64, 128)))
        D.randomize_bn(m, seed=1)
        m.eval()
        path = tmp / ("%s.onnx" % v)
        D.export_onnx(m, path, ["person"])
        models[v] = (m, path)
    return models


def test_detector_bnn_matches_pytorch(untrained):
    from firmware_py.convert import convert
    from firmware_py.detect import Detector

    model, onnx_path = untrained["binary"]
    bnn = str(onnx_path).replace(".onnx", ".bnn")
    res = convert(str(onnx_path), bnn, check=True)
    ops = [n["op"] for n in res.graph["nodes"]]
    assert ops.count("bconv2d") == 11  # every conv between the stem and the heads
    # stem and 2 heads; the downsampling shortcuts (avg-pool, channels repeated) have no float MACs
    assert ops.count("fconv2d") == 3
    det = Detector(bnn, num_threads=1, conf=0.1, iou=0.45)
    assert det.class_names == ["person"] and det.input_size == (128, 128)
    assert _compare(model, det, 0.1) >= 3


def test_detector_real_downsampling_matches_pytorch(tmp_path):
    """downsample="real": AvgPool -> float 1x1 conv -> BN shortcuts, run as fconv2d."""
    import torch
    import onnxruntime  # noqa: F401
    from firmware_py.convert import convert
    from firmware_py.detect import Detector
    from models import detector as D

    torch.manual_seed(2)
    model = D.build_detector(D.default_config("binary", 128, widths=(32, 32, 64, 64, 128), downsample="real"))
    D.randomize_bn(model, seed=2)
    model.eval()
    onnx_path = tmp_path / "real.onnx"
    D.export_onnx(model, onnx_path, ["person"])
    res = convert(str(onnx_path), str(tmp_path / "real.bnn"), check=True)
    ops = [n["op"] for n in res.graph["nodes"]]
    assert ops.count("bconv2d") == 11 and ops.count("fconv2d") == 3 + 4, ops  # + 4 shortcut convs
    det = Detector(str(tmp_path / "real.bnn"), num_threads=1, conf=0.1, iou=0.45)
    assert _compare(model, det, 0.1) >= 3


def test_detector_onnx_twin_matches_pytorch(untrained):
    from firmware_py.detect import Detector

    model, onnx_path = untrained["fp"]
    det = Detector(str(onnx_path), num_threads=1, conf=0.05, iou=0.45)
    assert det.class_names == ["person"]
    assert det.head["strides"] == [16, 32] and det.head["nc"] == 1
    _compare(model, det, 0.05)


# ---- mAP ------------------------------------------------------------------------------------------
def _synthetic(seed, n_img=12, nc=2):
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n_img):
        k = int(rng.integers(0, 6))
        xy = rng.uniform(0, 400, (k, 2))
        wh = rng.uniform(10, 120, (k, 2))
        gb = np.concatenate((xy, xy + wh), 1)
        gc = rng.integers(0, nc, k)
        pb, ps, pc = [], [], []
        for b, c in zip(gb, gc):  # noisy detections of the truth, some missed, some duplicated
            for _ in range(int(rng.integers(0, 3))):
                pb.append(b + rng.normal(0, 8, 4))
                ps.append(rng.uniform())
                pc.append(c if rng.uniform() > 0.1 else rng.integers(0, nc))
        for _ in range(int(rng.integers(0, 4))):  # false positives
            xy = rng.uniform(0, 400, 2)
            pb.append(np.concatenate((xy, xy + rng.uniform(10, 100, 2))))
            ps.append(rng.uniform())
            pc.append(rng.integers(0, nc))
        pb = np.array(pb, np.float64).reshape(-1, 4)
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        preds.append((pb, np.array(ps), np.array(pc, np.int64)))
        gts.append((gc, gb))
    return preds, gts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_matches_pycocotools(seed):
    import pycocotools  # noqa: F401
    from models.det_metrics import evaluate, evaluate_pycocotools

    preds, gts = _synthetic(seed)
    ours = evaluate(preds, gts)
    ref50, ref = evaluate_pycocotools(preds, gts)
    assert 0 < ours["map"] < 1
    assert abs(ours["map50"] - ref50) < 1e-9 and abs(ours["map"] - ref) < 1e-9, (ours, ref50, ref)


def test_map_perfect_and_empty():
    from models.det_metrics import evaluate

    gts = [(np.array([0, 0]), np.array([[0, 0, 10, 10], [20, 20, 40, 50]], float))]
    perfect = [(gts[0][1], np.array([0.9, 0.8]), np.array([0, 0]))]
    assert evaluate(perfect, gts)["map"] == pytest.approx(1.0)
    none = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))]
    assert evaluate(none, gts)["map"] == 0.0
