"""A tf2onnx export stored small and losslessly (tests/larq/*.fixture.npz).

export.py draws each binary kernel's signs from a seed (``sign_bits``: PCG64's raw output,
the same on every numpy), so an initializer that is +-alpha per slice of one axis (a
binary kernel as tf2onnx wrote it: transposed to OIHW, a BatchNorm scale perhaps folded
in) is kept as: which seed, the axis permutation from the Keras kernel, the slices whose
sign flipped, and alpha.  Any other +-alpha initializer keeps its sign bits; everything
else (the graph, float weights) stays in the ONNX bytes.  ``pack_onnx`` checks that
``unpack_onnx`` gives back every initializer bit for bit before it writes.  numpy and
onnx only; no pickle (the npz holds plain arrays)."""
import itertools

import numpy as np


def sign_bits(seed, shape):
    """bool array of `shape`, True = negative, from PCG64(seed)'s raw 64-bit words"""
    n = int(np.prod(shape))
    raw = np.random.PCG64(int(seed)).random_raw((n + 63) // 64).astype("<u8")
    return np.unpackbits(raw.view(np.uint8), count=n, bitorder="little").reshape(shape).astype(bool)


def _pm_alpha(a):
    """(axis, alpha) when a is +-alpha along one axis, else None"""
    if a.dtype != np.float32 or a.size < 4096:
        return None
    for axis in range(a.ndim):
        m = np.moveaxis(np.abs(a), axis, 0).reshape(a.shape[axis], -1)
        if np.all(m == m[:, :1]):
            return axis, m[:, 0].copy()
    return None


def _seeded(neg, axis, seeds):
    """(seed index, perm, flipped slices) with neg == sign_bits(seed).transpose(perm),
    negated on the flipped slices of `axis`; None when no seed gives it"""
    for k, (seed, shape) in enumerate(seeds):
        if int(np.prod(shape)) != neg.size:
            continue
        bits = None
        for perm in itertools.permutations(range(len(shape))):
            if tuple(shape[i] for i in perm) != neg.shape:
                continue
            bits = sign_bits(seed, shape) if bits is None else bits
            diff = np.moveaxis(bits.transpose(perm) ^ neg, axis, 0).reshape(neg.shape[axis], -1)
            if np.all(diff == diff[:, :1]):
                return k, np.array(perm, np.int64), diff[:, 0].copy()
    return None


def _rebuild(shape, axis, alpha, neg):
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    mag = np.broadcast_to(alpha.reshape(bshape), shape)
    return np.where(neg, -mag, mag).astype(np.float32)


def pack_onnx(onnx_path, out_path, seeds=(), **extra):
    """writes out_path (.npz): the ONNX file packed (seeds: [(seed, Keras kernel shape)] of
    the binary kernels' signs) and the arrays in extra"""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    arrays = {"seeds": np.array([s for s, _ in seeds], np.uint64).reshape(-1),
              "seed_shapes": np.array([list(sh) + [0] * (4 - len(sh)) for _, sh in seeds], np.int64).reshape(-1, 4)}
    for i, t in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(t)
        packed = _pm_alpha(a)
        if packed is None:
            continue
        axis, alpha = packed
        neg = np.signbit(a)
        key = "w%d." % i
        arrays.update({key + "shape": np.array(a.shape, np.int64), key + "axis": np.array(axis, np.int64),
                       key + "alpha": alpha})
        found = _seeded(neg, axis, seeds)
        if found is None:
            arrays[key + "bits"] = np.packbits(neg.reshape(-1))
        else:
            arrays[key + "seed"], arrays[key + "perm"], flip = np.array(found[0], np.int64), found[1], found[2]
            arrays[key + "flip"] = np.packbits(flip)
        t.CopyFrom(numpy_helper.from_array(np.zeros(0, np.float32), t.name))
    arrays["onnx"] = np.frombuffer(model.SerializeToString(), np.uint8)
    np.savez_compressed(out_path, **arrays, **extra)
    again = unpack_onnx(out_path)
    orig = onnx.load(onnx_path)
    for t0, t1 in zip(orig.graph.initializer, again.graph.initializer):
        a0, a1 = numpy_helper.to_array(t0), numpy_helper.to_array(t1)
        if t0.name != t1.name or a0.dtype != a1.dtype or a0.tobytes() != a1.tobytes():
            raise AssertionError("fixture of %s: initializer %s does not round-trip" % (onnx_path, t0.name))


def unpack_onnx(path):
    """the ModelProto stored by pack_onnx"""
    import onnx
    from onnx import numpy_helper

    with np.load(path, allow_pickle=False) as z:
        model = onnx.load_model_from_string(z["onnx"].tobytes())
        seeds = [(int(s), tuple(int(d) for d in sh if d)) for s, sh in zip(z["seeds"], z["seed_shapes"])]
        for i, t in enumerate(model.graph.initializer):
            key = "w%d." % i
            if key + "alpha" not in z:
                continue
            shape, axis = tuple(int(d) for d in z[key + "shape"]), int(z[key + "axis"])
            if key + "bits" in z:
                neg = np.unpackbits(z[key + "bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
            else:
                seed, kshape = seeds[int(z[key + "seed"])]
                neg = sign_bits(seed, kshape).transpose(z[key + "perm"])
                flip = np.unpackbits(z[key + "flip"], count=shape[axis]).astype(bool)
                bshape = [1] * len(shape)
                bshape[axis] = shape[axis]
                neg = neg ^ flip.reshape(bshape)
            t.CopyFrom(numpy_helper.from_array(_rebuild(shape, axis, z[key + "alpha"], neg), t.name))
    return model
