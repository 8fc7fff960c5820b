"""The detector's training side: the YOLO data loader (labels, mosaic, box ranges), the
loss, a 2-batch smoke training on 16 images of ../shared/data/people that resumes from
its checkpoint, and the export of the result."""
import os

import numpy as np
import pytest

import torch
import cv2  # noqa: F401

from models import yolo_data  # noqa: E402

PEOPLE = yolo_data.DATASETS["people"][0]
needs_people = pytest.mark.skipif(not (PEOPLE / "images" / "train").is_dir(),
                                  reason="needs ../shared/data/people")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@needs_people
def test_labels_parsed():
    ds = yolo_data.YoloDataset("people", "train", 96, limit=8, quiet=True)
    assert len(ds) == 8
    for f, lab in zip(ds.files, ds.labels):
        rows = [list(map(float, ln.split())) for ln in open(PEOPLE / "labels" / "train" / (f.stem + ".txt"))
                if ln.strip()]
        np.testing.assert_allclose(lab, np.array(rows, np.float32).reshape(-1, 5), atol=1e-6)
        assert ds.image(ds.files.index(f)).shape == (96, 96, 3)
    cls, boxes = ds.gt_boxes(0)
    assert boxes.shape[1] == 4 and np.all(boxes >= 0) and np.all(boxes <= 288) and np.all(cls == 0)


@needs_people
def test_mosaic_and_augment_ranges():
    ds = yolo_data.YoloDataset("people", "train", 96, limit=16, augment=True, quiet=True)
    n_boxes = 0
    for i in range(16):
        for mosaic in (1.0, 0.0):
            ds.hyp["mosaic"] = mosaic
            img, lab = ds.sample(i, yolo_data.sample_rng(0, 0, i))
            assert img.shape == (96, 96, 3) and img.dtype == np.uint8
            assert lab.shape[1] == 5
            assert np.all(lab[:, 1:] >= 0) and np.all(lab[:, 1:] <= 1)
            assert np.all(lab[:, 3:] > 0)
            assert np.all(lab[:, 1:3] - lab[:, 3:5] / 2 >= -1e-6) and np.all(lab[:, 1:3] + lab[:, 3:5] / 2 <= 1 + 1e-6)
            n_boxes += len(lab)
    assert n_boxes > 0
    # same seed, same sample; another epoch, another sample
    a = ds.sample(3, yolo_data.sample_rng(0, 0, 3))[0]
    assert np.array_equal(a, ds.sample(3, yolo_data.sample_rng(0, 0, 3))[0])
    assert not np.array_equal(a, ds.sample(3, yolo_data.sample_rng(0, 1, 3))[0])
    x, t = yolo_data.to_tensor_batch([ds.sample(i, yolo_data.sample_rng(0, 0, i)) for i in range(4)])
    assert x.shape == (4, 3, 96, 96) and x.dtype == torch.uint8 and t.shape[1] == 6
    assert set(t[:, 0].long().tolist()) <= {0, 1, 2, 3}


@needs_people
def test_disk_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(yolo_data, "CACHE", tmp_path)
    a = yolo_data.YoloDataset("people", "val", 64, limit=4, cache="disk", quiet=True)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    b = yolo_data.YoloDataset("people", "val", 64, limit=4, cache="disk", quiet=True)
    for i in range(4):
        assert np.array_equal(a.image(i), b.image(i))


def test_loss_and_anchor_matching():
    from models import detector as D

    m = D.build_detector(D.default_config("binary", 64, widths=(16, 32, 32, 64, 64)))
    loss_fn = D.YoloLoss(m)
    x = torch.rand(2, 3, 64, 64)
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.6], [1, 0, 0.2, 0.3, 0.1, 0.2]])
    outs = m(x)
    loss, parts = loss_fn(m.split(outs), t)
    assert loss.item() > 0 and parts.shape == (3,)
    loss.backward()
    assert m.stem[0].weight.grad is not None and m.stages[1][0].conv.weight.grad.abs().sum() > 0
    tcls, tbox, indices, anch = loss_fn.build_targets(m.split(outs), t)
    assert sum(len(b[0]) for b in indices) > 0
    empty, _ = loss_fn(m.split(m(x)), torch.zeros(0, 6))
    assert torch.isfinite(empty)


def _args(tmp_path, **kw):
    from models.train_detector import parser

    a = parser().parse_args(["--variant", "binary", "--epochs", "1", "--imgsz", "64", "--batch", "8", "--limit", "16",
                             "--widths", "16,32,32,64,64", "--threads", "1", "--workers", "0", "--val-every", "0",
                             "--ckpt-dir", str(tmp_path), "--name", "smoke"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_binary_fraction_schedule():
    from models.train_detector import binary_fraction

    # 10 epochs of 4 steps, two-step: real for epochs 0-4, then a ramp over half of the 20 binary steps
    t = [binary_fraction(k, 40, 4, 10, True, 0.5) for k in range(40)]
    assert t[:20] == [0.0] * 20 and t[20] == 0.1 and t[29] == 1.0 and t[29:] == [1.0] * 11
    assert all(a < b for a, b in zip(t[20:29], t[21:30]))
    assert [binary_fraction(k, 40, 4, 10, True, 0) for k in (19, 20)] == [0.0, 1.0]  # the switch at once
    assert [binary_fraction(k, 40, 4, 10, False, 0.25) for k in (0, 9, 10)] == [0.1, 1.0, 1.0]
    assert binary_fraction(0, 36, 4, 9, True, 0) == 0.0 and binary_fraction(20, 36, 4, 9, True, 0) == 1.0  # odd: 5 real


@needs_people
def test_smoke_training_resumes(tmp_path):
    from models import train_detector as T

    # an interrupted run (1 step) resumed to the end (2 steps) ...
    m1, s1 = T.train(_args(tmp_path / "a", max_steps=1), quiet=True)
    assert s1["step"] == 1 and not s1["done"] and (tmp_path / "a" / "smoke.npz").exists()
    from models import checkpoint
    ck = checkpoint.load(tmp_path / "a" / "smoke.npz")
    assert ck["step"] == 1
    m2, s2 = T.train(_args(tmp_path / "a"), quiet=True)
    assert s2["step"] == 2 and s2["done"]
    # ... equals an uninterrupted run (seeded data order and augmentation)
    m3, s3 = T.train(_args(tmp_path / "b"), quiet=True)
    for (k, v2), v3 in zip(m2.state_dict().items(), m3.state_dict().values()):
        assert torch.allclose(v2, v3, atol=1e-6), k
    assert (tmp_path / "a" / "smoke.log.jsonl").exists()
    # a changed flag is refused, naming what differs, and the checkpoint is left as it was
    before = (tmp_path / "a" / "smoke.npz").read_bytes()
    with pytest.raises(checkpoint.OtherConfig, match=r"lr: 0.001 -> 0.002.*another --name"):
        T.train(_args(tmp_path / "a", lr=2e-3), quiet=True)
    assert (tmp_path / "a" / "smoke.npz").read_bytes() == before
    # a finished run exports: ONNX with the metadata, converted and checked
    import json

    import onnx
    paths = T.export(m2, "binary", tmp_path / "zoo")
    meta = {p.key: p.value for p in onnx.load(paths[0]).metadata_props}
    assert json.loads(meta["class_names"]) == ["person"]
    det = json.loads(meta["detector"])
    assert det["strides"] == [16, 32] and det["decode"] == "yolov5" and det["input_size"] == [64, 64]
    assert len(det["anchors"]) == 2 and len(det["anchors"][0]) == 3
    assert os.path.exists(paths[1])


@needs_people
def test_init_from_fp_and_distill(tmp_path):
    from models import train_detector as T

    T.train(_args(tmp_path, variant="fp", name="fp", max_steps=1), quiet=True)
    # the student and the teacher under bf16 autocast; the losses and the checkpoint in float32
    m, s = T.train(_args(tmp_path, name="bin", init_from="fp", distill="1,1", max_steps=1, precision="bf16"),
                   quiet=True)
    assert s["step"] == 1 and np.isfinite(s["loss"])
    from models import checkpoint
    ck = checkpoint.load(tmp_path / "bin.npz")
    assert {v.dtype for v in ck["model"].values()} <= {torch.float32, torch.int64}


def test_widen_computes_the_same_function():
    from models import detector as D
    from models.layers import BinaryConv2d

    x = torch.rand(2, 3, 64, 64)
    for variant in ("fp", "binary"):
        torch.manual_seed(0)
        m = D.build_detector(D.default_config(variant, 64, widths=[8, 16, 16, 32, 64]))
        D.randomize_bn(m)
        for c in m.modules():
            if isinstance(c, BinaryConv2d):
                c.binary_weights = 0.0  # the two-step schedule's first step
        m.eval()
        # the stem, the stage widths and the neck's inputs (C4 into fuse and head4, C5 into lateral and head5)
        for widths in ([16, 16, 16, 32, 64], [8, 32, 32, 32, 64], [16, 32, 64, 128, 256]):
            w = D.widen(m, widths).eval()
            assert w.cfg["widths"] == widths and w.stages[0][0].conv.weight.shape[0] == widths[1]
            with torch.no_grad():
                for a, b in zip(m(x), w(x)):
                    assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
            noisy = D.widen(m, widths, noise=0.01).eval()  # the copies told apart, the function nearly kept
            assert any(not torch.equal(a, b) for a, b in zip(noisy.state_dict().values(), w.state_dict().values()))
    with pytest.raises(ValueError, match="whole multiple"):
        D.widen(m, [12, 16, 16, 32, 64])
    with pytest.raises(ValueError, match="multiple of the one before"):
        D.widen(m, [24, 16, 16, 32, 64])
    for c in m.modules():
        if isinstance(c, BinaryConv2d):
            c.binary_weights = 1.0
    with pytest.raises(ValueError, match="binary weights"):
        D.widen(m, [16, 16, 16, 32, 64])


@needs_people
def test_init_from_a_narrower_model_widens_it(tmp_path):
    from models import train_detector as T

    T.train(_args(tmp_path, variant="fp", name="fp", max_steps=1), quiet=True)
    narrow, _ = T.load_checkpoint_model(tmp_path / "fp.npz")
    wide, s = T.train(_args(tmp_path, name="wide", widths="32,32,32,64,64", init_from="fp", max_steps=1, lr=1e-7),
                      quiet=True)
    assert s["step"] == 1 and wide.cfg["widths"] == [32, 32, 32, 64, 64]
    # the stem's 16 channels twice (up to the 1% noise that tells the copies apart)
    w0, n0 = wide.stem[0].weight.detach(), narrow.stem[0].weight.detach()
    for copy in (w0[:16], w0[16:]):
        assert (copy - n0).abs().max() < 0.05 * n0.abs().max()
    w1, n1 = wide.stages[0][0].conv.weight.detach(), narrow.stages[0][0].conv.weight.detach()
    for copy in (w1[:, :16], w1[:, 16:]):  # the weights reading the widened stem: halved
        assert (copy * 2 - n1).abs().max() < 0.1 * n1.abs().max()


@needs_people
def test_two_step_schedule(tmp_path):
    from models import checkpoint
    from models import train_detector as T
    from models.layers import BinaryConv2d

    m1, s1 = T.train(_args(tmp_path / "a", epochs=2, two_step=True), quiet=True)
    m2, _ = T.train(_args(tmp_path / "b", epochs=2, two_step=False), quiet=True)
    assert s1["done"] and checkpoint.load(tmp_path / "a" / "smoke.npz")["config"]["two_step"]
    # the result has binary weights (what is exported) ...
    assert all(m.binary_weights == 1 for m in m1.modules() if isinstance(m, BinaryConv2d))
    # ... and the first epoch with real weights changed the training (same seed and data)
    assert any(not torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    # a checkpoint is loaded (as a teacher, by eval_detector) with its weights as they were at its step
    T.train(_args(tmp_path / "c", epochs=2, two_step=True, max_steps=1), quiet=True)
    step1, ck = T.load_checkpoint_model(tmp_path / "c" / "smoke.npz")
    assert ck["binary_fraction"] == 0.0 and all(m.binary_weights == 0 for m in step1.modules()
                                                if isinstance(m, BinaryConv2d))
    done, _ = T.load_checkpoint_model(tmp_path / "a" / "smoke.npz")
    assert all(m.binary_weights == 1 for m in done.modules() if isinstance(m, BinaryConv2d))


@needs_people
def test_export_detector_widened_twin_and_slim(tmp_path):
    import onnxruntime as ort

    from models import checkpoint
    from models import export_detector as E
    from models import train_detector as T

    T.train(_args(tmp_path, variant="fp", name="fp", max_steps=1), quiet=True)
    narrow, ck = T.load_checkpoint_model(tmp_path / "fp.npz")
    E.main(["--weights", str(tmp_path / "fp.npz"), "--widths", "32,32,32,64,64", "--out-dir", str(tmp_path / "zoo"),
            "--slim", str(tmp_path / "slim.npz")])
    # the exported twin is wider and computes what the narrow checkpoint does
    sess = ort.InferenceSession(str(tmp_path / "zoo" / "fp_twin.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 64, 64]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = narrow(x)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a.numpy(), rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    # the slim checkpoint: the EMA weights in float16, loadable as the model
    s = checkpoint.load(tmp_path / "slim.npz")
    assert set(s) == {"config", "step", "ema", "binary_fraction"} and s["config"] == ck["config"]
    assert all(v.dtype == torch.float16 for v in s["ema"].values() if v.is_floating_point())
    m, _ = T.load_checkpoint_model(tmp_path / "slim.npz")
    for k, v in m.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, ck["ema"][k].half().float()), k
    with pytest.raises(SystemExit, match="whole multiple"):
        E.main(["--weights", str(tmp_path / "fp.npz"), "--widths", "24,32,32,64,64", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="no checkpoint"):
        E.main(["--weights", str(tmp_path / "nope.npz")])


@needs_people
def test_compacted_checkpoint_resumes(tmp_path):
    from models import checkpoint
    from models import train_detector as T

    T.train(_args(tmp_path / "a", max_steps=1), quiet=True)
    path = tmp_path / "a" / "smoke.npz"
    full = checkpoint.load(path)
    before = path.stat().st_size
    checkpoint.main(["compact", str(path), str(path)])
    small = checkpoint.load(path)
    assert path.stat().st_size < 0.7 * before
    # bfloat16 moments and float16 EMA weights read back bit for bit; the model's weights untouched
    moments = [v for st in small["opt"]["state"].values() for k, v in st.items() if k != "step"]
    assert moments and all(v.dtype == torch.bfloat16 for v in moments)
    for st, st0 in zip(small["opt"]["state"].values(), full["opt"]["state"].values()):
        assert torch.equal(st["exp_avg"], st0["exp_avg"].bfloat16()) and torch.equal(st["step"], st0["step"])
    assert all(v.dtype == torch.float16 for v in small["ema"].values() if v.is_floating_point())
    assert all(torch.equal(small["model"][k], v) for k, v in full["model"].items())
    # the run resumes from it, near an uninterrupted one
    m2, s2 = T.train(_args(tmp_path / "a"), quiet=True)
    assert s2["step"] == 2 and s2["done"]
    m3, _ = T.train(_args(tmp_path / "b"), quiet=True)
    for (k, v2), v3 in zip(m2.state_dict().items(), m3.state_dict().values()):
        assert v2.dtype == v3.dtype and torch.allclose(v2.float(), v3.float(), rtol=1e-2, atol=1e-3), k
    # (not trained again from scratch, which would equal the uninterrupted run bit for bit)
    assert any(not torch.equal(a, b) for a, b in zip(m2.state_dict().values(), m3.state_dict().values()))
