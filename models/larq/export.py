"""Builds larq-zoo models with random weights and calibrated BatchNorm statistics, exports
each as a user would (tf2onnx, opset 17, ``inputs_as_nchw``) and with Larq Compute Engine
(``convert_keras_model`` -> .tflite), and saves Keras' and LCE's outputs on fixed inputs.

Runs in the TensorFlow venv (models/larq/tf_venv.sh), never in the project's .venv:

    TF_USE_LEGACY_KERAS=1 /work/venvs/tf/bin/python models/larq/export.py --out DIR [--size 224]

Writes per model, into DIR: NAME.onnx (as tf2onnx wrote it), NAME.tflite (LCE), NAME.npz
(x: the NCHW inputs, keras: Keras' outputs, lce / lce_indirect: LCE's outputs (default / indirect
BGEMM kernels), logits: Keras' pre-softmax logits, sign.LAYER: the signs of the input of each
layer's input quantiser, for tracing differences layer by layer).  ``--fixture`` also writes NAME.fixture.npz: those arrays and
the ONNX file with every +-alpha initializer stored as the seed of its signs and its
scales (models/larq/fixture.py, lossless: the test rebuilds the exact tensors), which is what tests/larq/ commits.

Weights: binary (quantised) kernels are +-alpha per output channel (alpha in [0.5, 1], the
signs from a seed per layer: fixture.sign_bits), so
every larq quantiser (ste_sign, magnitude_aware_sign, XNOR-Net's weight scale) sees exactly
what it would binarise; float kernels He-normal; BatchNorm gamma in +-[0.5, 1.5] (one in
ten negative), beta N(0, 0.3), and moving mean/variance set to the batch statistics of a
calibration batch (momentum 0, one training-mode pass), so that every BatchNorm moves its
input by its real statistics.  No pickle: numpy's npz without object arrays.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture import pack_onnx, sign_bits  # noqa: E402

MODELS = {  # name -> (module path, function, input size for the fixtures)
    "QuickNetSmall": ("larq_zoo.sota", "QuickNetSmall", 64),
    "QuickNet": ("larq_zoo.sota", "QuickNet", 64),
    "BinaryDenseNet28": ("larq_zoo.literature", "BinaryDenseNet28", 64),
    "BiRealNet": ("larq_zoo.literature", "BiRealNet", 64),
    "XNORNet": ("larq_zoo.literature", "XNORNet", 224),  # its 6x6 valid conv needs an input >= 217
}


def build(name, size, classes):
    import importlib
    mod, fn, _ = MODELS[name]
    return getattr(importlib.import_module(mod), fn)(input_shape=(size, size, 3), weights=None,
                                                      num_classes=classes)


def randomise(model, rng, calib):
    """random weights (see the module doc); returns [(seed, shape)] of the binary kernels'
    signs (fixture.sign_bits)"""
    import tensorflow as tf

    sign_seeds = []
    for layer in model.layers:
        quantizer = getattr(layer, "kernel_quantizer", None) or getattr(layer, "depthwise_quantizer", None)
        kernel = getattr(layer, "kernel", None)
        kernel = getattr(layer, "depthwise_kernel", None) if kernel is None else kernel
        if kernel is None or not layer.trainable:
            pass  # e.g. QuickNet's fixed blur-pool filter
        elif quantizer is not None:
            shape = tuple(kernel.shape.as_list())
            sign_seed = int(rng.integers(1 << 62))  # the signs come from a seed: the fixture keeps only it
            sign_seeds.append((sign_seed, shape))
            alpha = rng.uniform(0.5, 1.0, shape[-1]).astype(np.float32)
            kernel.assign(np.where(sign_bits(sign_seed, shape), -1.0, 1.0).astype(np.float32) * alpha)
        else:
            shape = kernel.shape.as_list()
            fan_in = int(np.prod(shape[:2] if "depthwise" in kernel.name else shape[:-1]))
            kernel.assign(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32))
        if getattr(layer, "bias", None) is not None and layer.bias.trainable:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(np.float32))
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.gamma is not None:
                g = rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 0.1, -1, 1)
                layer.gamma.assign(g.astype(np.float32))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.3, c).astype(np.float32))
            layer.momentum = 0.0
    model(calib, training=True)  # momentum 0: moving statistics := this batch's statistics
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            var = layer.moving_variance.numpy()
            if not np.all(np.isfinite(var)) or not np.all(np.isfinite(layer.moving_mean.numpy())):
                sys.exit("%s: calibration gave non-finite statistics" % layer.name)
    return sign_seeds


def logits_model(model):
    """the model up to the input of its final softmax (the logits)"""
    import tensorflow as tf
    last = model.layers[-1]
    if isinstance(last, tf.keras.layers.Activation) and last.get_config()["activation"] == "softmax":
        return tf.keras.Model(model.input, last.input)
    return model


def quantiser_signs(model, x):
    """{"sign.LAYER": bits}: where Keras' input of each layer's input quantiser is < 0 (the
    -1s of larq's binarisation), every sample, NCHW order, np.packbits"""
    import tensorflow as tf
    layers = [layer for layer in model.layers if getattr(layer, "input_quantizer", None) is not None]
    probe = tf.keras.Model(model.input, [layer.input for layer in layers])
    vals = [probe(x[i:i + 1], training=False) for i in range(len(x))]
    vals = [v if isinstance(v, (list, tuple)) else [v] for v in vals]
    return {"sign." + layer.name: np.packbits(np.concatenate(
        [np.asarray(v[k]).transpose(0, 3, 1, 2).reshape(-1) < 0 for v in vals])) for k, layer in enumerate(layers)}


def export(name, out, size, classes, seed, samples, fixture):
    import larq_compute_engine as lce
    import tensorflow as tf
    import tf2onnx
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    tf.keras.utils.set_random_seed(seed)
    model = build(name, size, classes)
    calib = rng.normal(0, 1, (16, size, size, 3)).astype(np.float32)
    sign_seeds = randomise(model, rng, calib)
    x = rng.normal(0, 1, (samples, size, size, 3)).astype(np.float32)
    keras = np.stack([model(x[i:i + 1], training=False).numpy()[0] for i in range(samples)])
    logits = np.stack([logits_model(model)(x[i:i + 1], training=False).numpy()[0] for i in range(samples)])

    spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)
    onnx_path = os.path.join(out, name + ".onnx")
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, inputs_as_nchw=["input"],
                               output_path=onnx_path)
    flat = lce.convert_keras_model(model)
    with open(os.path.join(out, name + ".tflite"), "wb") as f:
        f.write(flat)
    lce_out = {}
    for kernel, kw in (("default", {}), ("indirect_bgemm", {"use_indirect_bgemm": True})):
        it = Interpreter(flat, num_threads=1, **kw)
        lce_out[kernel] = np.stack([np.asarray(it.predict(x[i:i + 1]))[0] for i in range(samples)])
    outputs = dict(x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)), keras=keras, logits=logits,
                   lce=lce_out["default"], lce_indirect=lce_out["indirect_bgemm"], **quantiser_signs(model, x))
    np.savez(os.path.join(out, name + ".npz"), **outputs)
    if fixture:
        pack_onnx(onnx_path, os.path.join(out, name + ".fixture.npz"), sign_seeds, **outputs)
    d = np.abs(lce_out["default"] - keras)
    print("%s: %s params, onnx %d bytes, tflite %d bytes; LCE vs Keras max |diff| %.3g, top-1 agree %d/%d"
          % (name, f"{model.count_params():,}", os.path.getsize(onnx_path), len(flat), d.max(),
             int((lce_out["default"].argmax(1) == keras.argmax(1)).sum()), samples), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=0, help="input height = width (default: the fixture size per model)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", action="store_true", help="also write NAME.fixture.npz (tests/larq)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in a.models.split(","):
        seed = a.seed + list(MODELS).index(name)  # a model's weights do not depend on the others
        export(name, a.out, a.size or MODELS[name][2], a.classes, seed, a.samples, a.fixture)


if __name__ == "__main__":
    main()
