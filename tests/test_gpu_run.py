"""models/gpu_run.py's data pack (models/data.pack_cifar): within its byte budget, balanced
over the classes, and lossless: every packed image decodes to exactly the pixels of its
JPEG in ../shared/data's CIFAR-10 tarball; and its aside/back, which take tracked files out
of the working tree for the device call and put them back.  (The whole GPU run on the CPU,
a few batches: python -m models.gpu_run smoke.)"""
import subprocess

import cv2
import numpy as np
import pytest

from models import data, gpu_run


def test_pack_is_small_balanced_and_lossless(tmp_path, monkeypatch):
    if not (data.SHARED / "cifar10-jpg.tar.gz").exists():
        pytest.skip("needs ../shared/data/cifar10-jpg.tar.gz")
    budget = 300 * 1024
    r = data.pack_cifar(tmp_path / "p.npz", budget, test_images=50)
    assert r["bytes"] <= budget and r["test_images"] == 50 and 600 < r["train_images"] < 1100, r
    monkeypatch.setattr(data, "CIFAR_PACK", str(tmp_path / "p.npz"))
    x_tr, y_tr, x_te, y_te = data.load("cifar10")
    assert x_tr.shape == (r["train_images"], 3, 32, 32) and x_tr.dtype == np.uint8
    assert np.bincount(y_tr, minlength=10).max() - np.bincount(y_tr, minlength=10).min() <= 1
    assert np.array_equal(np.bincount(y_te, minlength=10), [5] * 10)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        index = {"train": z["train_index"], "test": z["test_index"]}
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        want = {int(i): k for k, i in enumerate(index[split])}
        seen = 0
        for i, (jpeg, label) in enumerate(data._jpegs(split)):
            if i in want:
                k = want[i]
                ref = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].transpose(2, 0, 1)
                assert np.array_equal(x[k], ref) and y[k] == label, (split, i)
                seen += 1
        assert seen == len(x)


def test_a_damaged_pack_is_refused(tmp_path):
    n = 3
    np.savez(tmp_path / "bad.npz", header=np.zeros(10, np.uint8), train_payload=np.zeros(5, np.uint8),
             train_offsets=np.array([0, 2, 9, 5]), train_labels=np.zeros(n, np.int64),
             test_payload=np.zeros(0, np.uint8), test_offsets=np.array([0]), test_labels=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="offsets do not match"):
        data._load_pack(tmp_path / "bad.npz")


def _repo(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "zoo" / "a").mkdir(parents=True)
    (tmp_path / "zoo" / "a" / "big.onnx").write_bytes(b"x" * 5000)
    (tmp_path / "zoo" / "card.md").write_text("card")
    (tmp_path / "keep.py").write_text("print(1)")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "zoo" / "run.log").write_text("ignored")  # ignored: neither sent nor touched
    return tmp_path


def test_aside_takes_tracked_files_out_and_back_restores_them(tmp_path):
    root = _repo(tmp_path)
    sent_all, sent_without = gpu_run.tree_bytes((), root), gpu_run.tree_bytes(("zoo",), root)
    assert sent_all - sent_without == 5000 + 4
    assert gpu_run.aside(("zoo",), root) == 2
    assert not (root / "zoo" / "a").exists() and not (root / "zoo" / "card.md").exists()
    assert (root / "zoo" / "run.log").read_text() == "ignored" and (root / "keep.py").exists()
    assert gpu_run.tree_bytes((), root) == sent_without
    gpu_run.back(("zoo",), root)
    assert (root / "zoo" / "a" / "big.onnx").read_bytes() == b"x" * 5000
    assert (root / "zoo" / "card.md").read_text() == "card"


def test_aside_refuses_uncommitted_changes_and_removes_nothing(tmp_path):
    root = _repo(tmp_path)
    (root / "zoo" / "card.md").write_text("edited, not committed")
    with pytest.raises(SystemExit, match="uncommitted changes"):
        gpu_run.aside(("zoo",), root)
    assert (root / "zoo" / "a" / "big.onnx").exists() and (root / "zoo" / "card.md").read_text().startswith("edited")
