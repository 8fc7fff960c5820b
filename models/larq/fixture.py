"""A tf2onnx export stored small and losslessly: every initializer whose values are
+-alpha per slice of one axis (a binary kernel, with or without a folded scale) is kept as
its sign bits and the per-slice alpha; everything else (the graph, float weights) as the
ONNX bytes.  ``unpack_onnx`` gives back a ModelProto whose initializers equal the export's
bit for bit (``pack_onnx`` checks that before it writes).  Needs numpy and onnx only; no
pickle (the npz holds plain arrays)."""
import numpy as np


def _pm_alpha(a):
    """(axis, alpha, bits) when a is +-alpha along one axis, else None"""
    if a.dtype != np.float32 or a.size < 4096:
        return None
    for axis in range(a.ndim):
        m = np.moveaxis(np.abs(a), axis, 0).reshape(a.shape[axis], -1)
        if np.all(m == m[:, :1]):
            alpha = m[:, 0].copy()
            bits = np.packbits(np.signbit(a).reshape(-1))
            if np.array_equal(_rebuild(a.shape, axis, alpha, bits).view(np.uint32), a.view(np.uint32)):
                return axis, alpha, bits
    return None


def _rebuild(shape, axis, alpha, bits):
    n = int(np.prod(shape))
    neg = np.unpackbits(bits, count=n).reshape(shape).astype(bool)
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    mag = np.broadcast_to(alpha.reshape(bshape), shape)
    return np.where(neg, -mag, mag).astype(np.float32)


def pack_onnx(onnx_path, out_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    arrays = {}
    for i, t in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(t)
        packed = _pm_alpha(a)
        if packed is None:
            continue
        axis, alpha, bits = packed
        arrays["w%d.shape" % i] = np.array(a.shape, np.int64)
        arrays["w%d.axis" % i] = np.array(axis, np.int64)
        arrays["w%d.alpha" % i] = alpha
        arrays["w%d.bits" % i] = bits
        t.CopyFrom(numpy_helper.from_array(np.zeros(0, np.float32), t.name))
    arrays["onnx"] = np.frombuffer(model.SerializeToString(), np.uint8)
    np.savez_compressed(out_path, **arrays)
    again = unpack_onnx(out_path)
    orig = onnx.load(onnx_path)
    for t0, t1 in zip(orig.graph.initializer, again.graph.initializer):
        if t0.name != t1.name or not np.array_equal(numpy_helper.to_array(t0), numpy_helper.to_array(t1)):
            raise AssertionError("fixture of %s: initializer %s does not round-trip" % (onnx_path, t0.name))


def unpack_onnx(path):
    """the ModelProto stored by pack_onnx"""
    import onnx
    from onnx import numpy_helper

    with np.load(path, allow_pickle=False) as z:
        model = onnx.load_model_from_string(z["onnx"].tobytes())
        for i, t in enumerate(model.graph.initializer):
            if "w%d.bits" % i in z:
                a = _rebuild(tuple(z["w%d.shape" % i]), int(z["w%d.axis" % i]), z["w%d.alpha" % i], z["w%d.bits" % i])
                t.CopyFrom(numpy_helper.from_array(a, t.name))
    return model
