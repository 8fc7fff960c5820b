"""The shipped classifiers (models/zoo/<dataset>/<variant>.{onnx,bnn} and table.json):
the runtime's accuracy in table.json is what firmware_py really scores on the full test
set, it equals PyTorch's within 0.1 point, the .bnn computes what its ONNX computes in
onnxruntime, and the table shows the seed's claims (naive collapses, BWN keeps accuracy,
XNOR costs a little)."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, load_dataset

ZOO = os.path.join(ROOT, "models", "zoo")
DATASETS = ("fashion-mnist", "mnist", "cifar10")
VARIANTS = ("fp", "naive", "bwn", "xnor", "xnor_k")
_data = {}


def _table(dataset):
    path = os.path.join(ZOO, dataset, "table.json")
    with open(path) as f:
        return json.load(f)


def _row(dataset, variant):
    rows = [r for r in _table(dataset)["rows"] if r["variant"] == variant]
    assert len(rows) == 1, "%s/table.json has %d rows for %s" % (dataset, len(rows), variant)
    return rows[0]


def _test_set(dataset):
    """(x uint8 NCHW, y) of the dataset's test split; skips when the data is not here"""
    if dataset not in _data:
        _, _, x, y = load_dataset(dataset)
        _data[dataset] = (x, y)
    return _data[dataset]


def _pixels(x_u8):
    return x_u8.astype(np.float32) / np.float32(255)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_table_accuracy_is_what_the_runtime_scores(dataset, variant):
    import firmware_py

    row = _row(dataset, variant)
    x, y = _test_set(dataset)
    assert _table(dataset)["test_images"] == len(x)
    model = firmware_py.load(os.path.join(ZOO, dataset, variant + ".bnn"), num_threads=1)
    correct = sum(int(model.run(_pixels(x[i:i + 1])).argmax() == y[i]) for i in range(len(x)))
    acc = 100.0 * correct / len(x)
    assert abs(acc - row["acc_runtime"]) < 0.005, (acc, row)
    assert abs(row["acc_runtime"] - row["acc_pytorch"]) <= 0.1, row


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_bnn_computes_what_its_onnx_computes(dataset, variant):
    import onnxruntime as ort
    import firmware_py

    _row(dataset, variant)
    x, _ = _test_set(dataset)
    model = firmware_py.load(os.path.join(ZOO, dataset, variant + ".bnn"), num_threads=1)
    sess = ort.InferenceSession(os.path.join(ZOO, dataset, variant + ".onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    same, errs = 0, []
    n = 200
    for i in range(n):
        xi = _pixels(x[i:i + 1])
        a = np.asarray(model.run(xi)).reshape(-1)
        b = sess.run(None, {name: xi})[0].reshape(-1)
        same += int(a.argmax() == b.argmax())
        errs.append(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-6)))
    # float accumulation order differs (first conv, head), so a sign whose input lies
    # within rounding of 0 may flip (CIFAR-10's xnor: 5% on one image's logits): most
    # images agree to float rounding, and the class on 99% of them
    assert np.median(errs) < 1e-5, (np.median(errs), max(errs))
    assert same >= n - 2, (same, max(errs))


@pytest.mark.parametrize("dataset", DATASETS)
def test_table_shows_the_seeds_claims(dataset):
    t = _table(dataset)
    acc = {r["variant"]: r["acc_runtime"] for r in t["rows"]}
    assert sorted(acc) == sorted(VARIANTS)
    # naive post-training binarisation collapses toward chance (10 classes: 10%)
    assert acc["naive"] < 20.0 and acc["naive"] < acc["fp"] - 50, acc
    # BWN keeps the float network's accuracy (within 1.5 points)
    assert acc["bwn"] >= acc["fp"] - 1.5, acc
    # XNOR costs accuracy, within 3 points on Fashion-MNIST; everywhere it beats naive by far
    if dataset == "fashion-mnist":
        assert acc["xnor"] >= acc["fp"] - 3.0, acc
    if dataset == "cifar10":  # the modern recipe (issue 18): fp converged, XNOR within 5 points of it
        assert acc["fp"] >= 88.0, acc
        assert acc["xnor"] >= acc["fp"] - 5.0, acc
    assert min(acc["xnor"], acc["xnor_k"]) > acc["naive"] + 40, acc
