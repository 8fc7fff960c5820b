"""A small synthetic detector (.bnn) for tests and benchmarks of the app when no trained
detector is at hand.  Random (seeded) weights -- its boxes mean nothing -- but it is a
real ``firmware_py`` model: a float stem, binary convolutions (XNOR + popcount) and a
YOLO-style head with the ``detector`` metadata that firmware_py.detect.Detector reads.

    python -m bnn_camera.testmodel out.bnn [--size 160]
"""

import sys

import numpy as np

__all__ = ["write_synthetic_detector"]


def write_synthetic_detector(path, size=160, width=32, seed=0, class_names=("person",)):
    """Writes the model; returns its path.  size: square input (a multiple of 16)."""
    from firmware_py.model_format import pack_signs, write_model

    rng = np.random.default_rng(seed)
    nc = len(class_names)
    na = 3
    values, nodes, tensors = [], [], {}

    def value(name, kind, shape):
        values.append({"name": name, "kind": kind, "shape": list(shape)})
        return name

    def node(op, inputs, out, kind, shape, attrs=None, params=None):
        name = "n%d_%s" % (len(nodes), op)
        value(out, kind, shape)
        nd = {"op": op, "name": name, "inputs": list(inputs), "outputs": [out]}
        if attrs:
            nd["attrs"] = attrs
        if params:
            nd["params"] = {}
            for k, a in params.items():
                tensors[name + "." + k] = a
                nd["params"][k] = name + "." + k
        nodes.append(nd)
        return out

    def win(k, s):
        p = k // 2
        return {"kernel": [k, k], "stride": [s, s], "pads": [p, p, p, p]}

    h = w = size
    value("images", "float", [1, h, w, 3])
    c0 = width // 2
    x = node("fconv2d", ["images"], "stem", "float", [1, h // 2, w // 2, c0], win(3, 2),
             {"weights": rng.normal(0, 0.3, (c0, 3, 3, 3)).astype(np.float32),
              "bias": rng.normal(0, 0.1, c0).astype(np.float32)})
    h, w = h // 2, w // 2
    x = node("bitpack", [x], "stem_bits", "bits", [1, h, w, c0])
    cin = c0
    for i, (cout, s) in enumerate([(width, 2), (2 * width, 2), (2 * width, 1), (4 * width, 2)]):
        h, w = h // s, w // s
        wt = np.where(rng.random((cout, 3, 3, cin)) < 0.5, -1.0, 1.0).astype(np.float32)
        x = node("bconv2d", [x], "b%d" % i, "bits", [1, h, w, cout], dict(win(3, s), output="bits"),
                 {"weights": pack_signs(wt),
                  "threshold": rng.integers(-3, 4, cout).astype(np.int32)})
        cin = cout
    no = na * (5 + nc)
    wt = np.where(rng.random((no, 1, 1, cin)) < 0.5, -1.0, 1.0).astype(np.float32)
    add = np.zeros(no, np.float32)
    for a in range(na):
        add[a * (5 + nc) + 4] = -4.0  # objectness: a few boxes pass conf 0.25
    x = node("bconv2d", [x], "head", "float", [1, h, w, no], dict(win(1, 1), output="float"),
             {"weights": pack_signs(wt), "mul": np.full(no, 1.7 / np.sqrt(cin), np.float32), "add": add})
    stride = size // h
    graph = {
        "format": "bnn-graph", "producer": "bnn_camera.testmodel (synthetic, random weights)",
        "metadata": {
            "class_names": list(class_names),
            "detector": {"decode": "yolov5", "input_size": [size, size], "strides": [stride],
                         "anchors": [[10, 13, 16, 30, 33, 23]], "num_classes": nc,
                         "outputs": ["head"]},
            "note": "synthetic model with random weights: for tests and benchmarks only",
        },
        "inputs": [{"name": "images", "shape": [1, 3, size, size], "layout": "NCHW"}],
        "outputs": [{"name": "head", "shape": [1, no, h, w], "layout": "NCHW"}],
        "values": values, "nodes": nodes,
    }
    write_model(path, graph, tensors)
    return path


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--width", type=int, default=32)
    a = ap.parse_args()
    print(write_synthetic_detector(a.out, a.size, a.width))
    sys.exit(0)
