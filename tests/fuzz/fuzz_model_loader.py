"""Fuzz target: bytes -> the model loader (firmware_py.model_format + firmware_py.load + one run).

    ./build.sh fuzz loader [SECONDS]          # the ASan+UBSan libbnn.so, seeds, a corpus
    python3 tests/fuzz/fuzz_model_loader.py [libFuzzer flags] [corpus dirs]   # by hand

The harness body, :func:`one_input`, needs no atheris (tests/test_fuzz_regressions.py
replays the seeds and the regression inputs through it); only :func:`main` does.

Input: one mode byte, then a ``.bnn`` file.  Model files carry CRC-32 checksums
(docs/model-format.md), so blind mutation would nearly always stop at the CRC check; the
mode byte decides how far a mutated file gets:

* ``mode & 7 == 0``: the bytes as they are (fuzzes the header checks and the CRC gate);
* ``mode & 7 == 1``: the header fields as they are, the three CRCs recomputed over the
  regions the header declares (fuzzes the size / offset checks behind the CRC gate);
* ``mode & 7 == 7``: the rest of the input drives a generator (:func:`generate`) that
  writes a *valid* model -- a random chain of ops with random shapes, windows, channel
  counts (tails of 32-bit words included), kinds and weights -- so that the C layers are
  created and run with sizes no seed has (a mutated seed nearly always fails validation);
* otherwise (5 of 8): the container is rebuilt around the mutated content -- the JSON
  is bytes 64 .. (end - data_size) without the trailing zero padding, the data section
  is the last ``data_size`` bytes (so insertions and deletions in the JSON keep the data
  intact), ``graph_size`` / ``data_offset`` / ``data_size`` and the CRCs are recomputed;
  magic, version, header_size and reserved stay as mutated.  This is what gets
  mutations into the JSON graph, the tensor validation and the C layers.

Higher bits: ``0x08`` inputs hold NaN / inf / huge values, ``0x10`` load through a file
(``firmware_py.load``: the mmap path) instead of bytes, ``0x20`` two worker threads,
``0xC0`` the code path (auto, portable, avx2, avx512; the best available when the CPU
lacks it); bit 1 of the input's CRC-32 turns the executor's elementwise fusion off.

Allowed outcome: ``ModelFormatError`` from the reader, or a model that builds its C
layers, runs on an input of the declared shapes and returns float32 arrays of the
declared output shapes.  Anything else -- another exception anywhere (a validator gap:
the reader accepted a file the executor cannot build or run), a wrong output shape, or a
crash / sanitizer report in libbnn -- is a finding.  Models whose activations or
arithmetic exceed a budget (:data:`MAX_VALUE_ELEMENTS`, :data:`MAX_COST`) are validated
but not built: the format allows activations of 2**31 elements, a fuzzer cannot run them.
"""
import os
import struct
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

if __name__ == "__main__":  # the fuzzer: coverage instrumentation of firmware_py's bytecode
    from instrument import instrument

    instrument("firmware_py.executor")

import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402

import firmware_py  # noqa: E402
from firmware_py import _native, model_format as mf  # noqa: E402
from firmware_py.executor import Model  # noqa: E402

MAX_VALUE_ELEMENTS = 1 << 21   # all activations of a model together (8 MiB of float32)
MAX_COST = 20_000_000          # multiply-adds (binary ones counted per 32-bit word)
_HEADER = struct.Struct("<8sHHIQQQQIIII")
_PATHS = (_native.BNN_PATH_AUTO, _native.BNN_PATH_PORTABLE, _native.BNN_PATH_AVX2,
          _native.BNN_PATH_AVX512)


class Finding(AssertionError):
    """The target did something the documentation does not allow (not a crash)."""


# ---- container fix-ups ---------------------------------------------------------------------------
def _crc(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def _seal(head60):
    return head60 + struct.pack("<I", _crc(head60))


def fix_crcs(blob):
    """The header's own fields, the graph / data / header CRCs recomputed over the regions
    it declares (clamped to the file)."""
    if len(blob) < mf.HEADER_SIZE:
        return blob
    f = list(_HEADER.unpack_from(blob))
    goff, gsize, doff = f[4], f[5], f[6]
    f[8] = _crc(blob[goff:goff + gsize]) if goff < len(blob) else 0
    f[9] = _crc(blob[doff:]) if doff <= len(blob) else 0
    return _seal(_HEADER.pack(*f)[:60]) + blob[mf.HEADER_SIZE:]


def rebuild(blob):
    """The container rebuilt around the (mutated) JSON and data; see the module docstring."""
    if len(blob) < mf.HEADER_SIZE:
        return blob
    f = list(_HEADER.unpack_from(blob))
    dsize = min(f[7], len(blob) - mf.HEADER_SIZE)
    data = blob[len(blob) - dsize:] if dsize else b""
    text = blob[mf.HEADER_SIZE:len(blob) - dsize].rstrip(b"\0")[:mf.MAX_GRAPH_SIZE]
    doff = (mf.HEADER_SIZE + len(text) + mf.ALIGN - 1) // mf.ALIGN * mf.ALIGN
    f[4:10] = [mf.HEADER_SIZE, len(text), doff, len(data), _crc(text), _crc(data)]
    pad = bytes(doff - mf.HEADER_SIZE - len(text))
    return _seal(_HEADER.pack(*f)[:60]) + text + pad + data


def container(data):
    """(mode, the model file's bytes) from a fuzz input."""
    if not data:
        return 0, b""
    mode, blob = data[0], data[1:]
    if mode & 7 == 0:
        return mode, blob
    if mode & 7 == 1:
        return mode, fix_crcs(blob)
    if mode & 7 == 7:
        return mode, generate(blob)
    return mode, rebuild(blob)


def serialize(graph, tensors):
    """A .bnn file in memory (docs/model-format.md), without write_model's validation (the
    reader validates) and without a file."""
    table, chunks, off = [], [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        pad = (-off) % mf.ALIGN
        chunks.append(bytes(pad))
        off += pad
        table.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": off,
                      "nbytes": a.nbytes})
        chunks.append(a.tobytes())
        off += a.nbytes
    text = json.dumps(dict(graph, tensors=table), separators=(",", ":")).encode()
    data = b"".join(chunks)
    doff = (mf.HEADER_SIZE + len(text) + mf.ALIGN - 1) // mf.ALIGN * mf.ALIGN
    head = _HEADER.pack(mf.MAGIC, mf.VERSION_MAJOR, mf.VERSION_MINOR, mf.HEADER_SIZE,
                        mf.HEADER_SIZE, len(text), doff, len(data), _crc(text), _crc(data), 0, 0)
    return _seal(head[:60]) + text + bytes(doff - mf.HEADER_SIZE - len(text)) + data


# ---- generator: valid models with random structure ------------------------------------------------
class _Bytes:
    """Reads small ints from the fuzz input; 0 (the lowest choice) once it is used up."""

    def __init__(self, b):
        self.b, self.i = b, 0

    def int(self, lo, hi):
        if hi <= lo or self.i >= len(self.b):
            return lo
        v = self.b[self.i]
        self.i += 1
        return lo + v % (hi - lo + 1)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, n):  # 1 in n
        return self.int(0, n - 1) == 0


def _win(r, h, w, conv):
    """(attrs, oh, ow) of a random valid window over an h x w input."""
    kmax = 15 if conv else 64
    kh = r.int(1, min(kmax, h + 2 * (kmax - 1)))
    kw = r.int(1, min(kmax, w + 2 * (kmax - 1)))
    pads = [r.int(0, kh - 1), r.int(0, kw - 1), r.int(0, kh - 1), r.int(0, kw - 1)]
    if h + pads[0] + pads[2] < kh:
        pads[2] = min(kh - 1, kh - h - pads[0])
        pads[0] = kh - h - pads[2] if h + pads[0] + pads[2] < kh else pads[0]
    if w + pads[1] + pads[3] < kw:
        pads[3] = min(kw - 1, kw - w - pads[1])
        pads[1] = kw - w - pads[3] if w + pads[1] + pads[3] < kw else pads[1]
    sh, sw = r.int(1, 8), r.int(1, 8)
    if not conv and r.chance(8):
        sh, sw = r.pick([9, 64, 65536]), r.pick([9, 64, 65536])
    oh = (h + pads[0] + pads[2] - kh) // sh + 1
    ow = (w + pads[1] + pads[3] - kw) // sw + 1
    return {"kernel": [kh, kw], "stride": [sh, sw], "pads": pads}, oh, ow


def _packed(rng, shape, c):
    """Random packed weights [..., words(c)] with the tail bits past c cleared."""
    words = mf.packed_words(c)
    w = rng.integers(0, 1 << 32, size=tuple(shape) + (words,), dtype=np.uint64).astype(np.uint32)
    if c % 32:
        w[..., -1] &= np.uint32((1 << (c % 32)) - 1)
    return w


def generate(blob):
    """A valid .bnn (bytes) whose structure the bytes decide (weights: a generator seeded
    with their CRC).  Shapes stay small; the reader still validates everything."""
    r = _Bytes(blob)
    rng = np.random.default_rng(_crc(blob))
    f32 = lambda *s: (rng.standard_normal(s) * r.pick([1, 1, 1e-3, 1e3])).astype(np.float32)  # noqa: E731
    values, nodes, tensors = [], [], {}
    vals = {}

    def value(kind, shape):
        name = "v%d" % len(values)
        values.append({"name": name, "kind": kind, "shape": list(shape)})
        vals[name] = (kind, list(shape))
        return name

    def node(op, ins, kind, shape, attrs=None, params=None):
        out = value(kind, shape)
        nd = {"op": op, "name": "n%d" % len(nodes), "inputs": ins, "outputs": [out]}
        if attrs:
            nd["attrs"] = attrs
        if params:
            nd["params"] = {}
            for k, a in params.items():
                tensors["%s.%s" % (nd["name"], k)] = a
                nd["params"][k] = "%s.%s" % (nd["name"], k)
        nodes.append(nd)
        return out

    n = r.int(1, 2)
    if r.chance(4):
        x = value("float", [n, r.int(1, 80)])
        inputs = [{"name": x, "shape": vals[x][1], "layout": "NC"}]
    else:
        h, w, c = r.int(1, 16), r.int(1, 16), r.int(1, 70)
        x = value("float", [n, h, w, c])
        inputs = [{"name": x, "shape": [n, c, h, w], "layout": "NCHW"}]
    cur = x
    for _ in range(r.int(1, 6)):
        kind, shape = vals[cur]
        same = [v for v in vals if vals[v] == (kind, shape)]
        if kind == "float" and len(shape) == 4:
            n, h, w, c = shape
            op = r.pick(["fconv2d", "bitpack", "bitpack", "maxpool2d", "avgpool2d", "global_avgpool",
                         "relu", "sigmoid", "leaky_relu", "prelu", "clip", "affine", "add", "concat",
                         "resize_nearest", "pad", "flatten", "bconv_k"])
            if op == "fconv2d":
                a, oh, ow = _win(r, h, w, True)
                oc = r.int(1, 70)
                p = {"weights": f32(oc, a["kernel"][0], a["kernel"][1], c)}
                if r.chance(2):
                    p["bias"] = f32(oc)
                cur = node(op, [cur], "float", [n, oh, ow, oc], a, p)
            elif op == "bitpack":
                cur = node(op, [cur], "bits", shape, {"threshold": float(f32(1)[0])} if r.chance(2) else None)
            elif op in ("maxpool2d", "avgpool2d"):
                a, oh, ow = _win(r, h, w, False)
                if op == "avgpool2d" and r.chance(2):
                    a["count_include_pad"] = 1
                cur = node(op, [cur], "float", [n, oh, ow, c], a)
            elif op == "global_avgpool":
                cur = node(op, [cur], "float", [n, 1, 1, c])
            elif op == "concat":
                other = r.pick([v for v in vals if vals[v][0] == "float" and len(vals[v][1]) == 4
                                and vals[v][1][:3] == shape[:3]])
                cur = node(op, [cur, other], "float", [n, h, w, c + vals[other][1][3]], {"axis": 3})
            elif op == "resize_nearest":
                cur = node(op, [cur], "float", [n, h * 2, w, c], {"scale": [2, 1]}) if r.chance(2) else \
                    node(op, [cur], "float", [n, h, w * 3, c], {"scale": [1, 3]})
            elif op == "pad":
                pd = [r.int(0, 3) for _ in range(4)]
                cur = node(op, [cur], "float", [n, h + pd[0] + pd[2], w + pd[1] + pd[3], c],
                           {"pads": pd, "value": float(f32(1)[0])})
            elif op == "flatten":
                cur = node(op, [cur], "float", [n, c * h * w])
            elif op == "bconv_k":  # bitpack -> bconv2d with the K input of xnor_scale
                b = node("bitpack", [cur], "bits", shape)
                a, oh, ow = _win(r, h, w, True)
                k = node("xnor_scale", [cur], "float", [n, oh, ow], a)
                oc = r.int(1, 70)
                cur = node("bconv2d", [b, k], "float", [n, oh, ow, oc], dict(a, output="float"),
                           {"weights": _packed(rng, (oc, a["kernel"][0], a["kernel"][1]), c),
                            "mul": f32(oc)})
            else:
                cur = _elementwise(r, node, op, cur, shape, same, f32)
        elif kind == "bits" and len(shape) == 4:
            n, h, w, c = shape
            op = r.pick(["bconv2d", "bconv2d", "bconv2d", "bmaxpool2d", "unpack", "resize_nearest",
                         "flatten", "flatten_bits"])
            if op == "bconv2d":
                a, oh, ow = _win(r, h, w, True)
                oc = r.int(1, 70)
                a["pad_mode"] = r.pick(["zero", "one"])
                p = {"weights": _packed(rng, (oc, a["kernel"][0], a["kernel"][1]), c)}
                if r.chance(2):
                    a["output"] = "bits"
                    kk = a["kernel"][0] * a["kernel"][1] * c
                    p["threshold"] = rng.integers(-kk - 1, kk + 2, oc).astype(np.int32)
                    if r.chance(2):
                        p["flip"] = rng.integers(0, 2, oc).astype(np.uint8)
                    cur = node(op, [cur], "bits", [n, oh, ow, oc], a, p)
                else:
                    a["output"] = "float"
                    if r.chance(2):
                        p["mul"], p["add"] = f32(oc), f32(oc)
                    cur = node(op, [cur], "float", [n, oh, ow, oc], a, p)
            elif op == "bmaxpool2d":
                a, oh, ow = _win(r, h, w, False)
                cur = node(op, [cur], "bits", [n, oh, ow, c], a)
            elif op == "unpack":
                cur = node(op, [cur], "float", shape)
            elif op == "resize_nearest":
                s2 = [r.int(1, 3), r.int(1, 3)]
                cur = node(op, [cur], "bits", [n, h * s2[0], w * s2[1], c], {"scale": s2})
            else:
                cur = node("flatten", [cur], "bits" if op == "flatten_bits" else "float", [n, c * h * w])
        elif kind == "float":  # [n, f]
            n, f = shape
            op = r.pick(["dense", "dense", "bitpack", "relu", "sigmoid", "leaky_relu", "prelu", "clip",
                         "affine", "add", "concat"])
            if op == "dense":
                oc = r.int(1, 70)
                p = {"weights": f32(oc, f)}
                if r.chance(2):
                    p["bias"] = f32(oc)
                cur = node(op, [cur], "float", [n, oc], None, p)
            elif op == "bitpack":
                cur = node(op, [cur], "bits", shape)
            elif op == "concat":
                other = r.pick([v for v in vals if vals[v][0] == "float" and len(vals[v][1]) == 2
                                and vals[v][1][0] == n])
                cur = node(op, [other, cur], "float", [n, f + vals[other][1][1]], {"axis": 1})
            else:
                cur = _elementwise(r, node, op, cur, shape, same, f32)
        else:  # bits [n, f]
            n, f = shape
            if r.chance(3):
                cur = node("unpack", [cur], "float", shape)
            else:
                oc = r.int(1, 70)
                p = {"weights": _packed(rng, (oc,), f)}
                if r.chance(2):
                    p["mul"], p["add"] = f32(oc), f32(oc)
                cur = node("bdense", [cur], "float", [n, oc], None, p)
    outs = [cur] + ([v for v in list(vals)[1:-1] if len(vals[v][1]) != 3][-1:] if r.chance(3) else [])
    outputs = []
    for v in dict.fromkeys(outs):
        s = vals[v][1]
        outputs.append({"name": v, "shape": [s[0], s[3], s[1], s[2]], "layout": "NCHW"} if len(s) == 4
                       else {"name": v, "shape": s, "layout": "NC"})
    graph = {"format": "bnn-graph", "producer": "fuzz_model_loader.generate", "inputs": inputs,
             "outputs": outputs, "values": values, "nodes": nodes}
    return serialize(graph, tensors)


def _elementwise(r, node, op, cur, shape, same, f32):
    c = shape[-1]
    if op == "relu" or op == "sigmoid":
        return node(op, [cur], "float", shape)
    if op == "leaky_relu":
        return node(op, [cur], "float", shape, {"alpha": r.pick([0.1, 0.0, 1.0, 2.5, -1.0])})
    if op == "prelu":
        return node(op, [cur], "float", shape, None, {"slope": f32(r.pick([c, 1]))})
    if op == "clip":
        a = {}
        if r.chance(2):
            a["min"] = -1.0
        if r.chance(2):
            a["max"] = r.pick([1.0, 6.0, -1.0])
        return node(op, [cur], "float", shape, a)
    if op == "affine":
        return node(op, [cur], "float", shape, None, {"scale": f32(c), "bias": f32(c)})
    # add: with itself or an earlier value of the same shape
    return node("add", [cur, r.pick(same)], "float", shape)


# ---- budget --------------------------------------------------------------------------------------
def cost(graph):
    """(activation elements, multiply-adds) of a validated graph."""
    vals = {v["name"]: v for v in graph["values"]}
    elems = 0
    for v in graph["values"]:
        s = v["shape"]
        n = math.prod(s)
        if v["kind"] == "bits":
            n = math.prod(s[:-1]) * mf.packed_words(s[-1])
        elems += n
    macs = 0
    for node in graph["nodes"]:
        ins = [vals[n]["shape"] for n in node["inputs"]]
        out = vals[node["outputs"][0]]["shape"]
        out_n = math.prod(out)
        k = node.get("attrs", {}).get("kernel", [1, 1])
        op = node["op"]
        c = ins[0][-1]
        if op in ("bconv2d", "bdense"):
            macs += out_n * k[0] * k[1] * mf.packed_words(c)
        elif op in ("fconv2d", "dense"):
            macs += out_n * k[0] * k[1] * c
        elif op == "xnor_scale":
            macs += out_n * k[0] * k[1] + math.prod(ins[0])
        elif op in ("maxpool2d", "avgpool2d", "bmaxpool2d"):
            macs += out_n * k[0] * k[1]
        macs += out_n + sum(math.prod(s) for s in ins)
    return elems, macs


# ---- the harness ---------------------------------------------------------------------------------
def _inputs(model, seed, special):
    rng = np.random.default_rng(seed)
    xs = []
    for spec in model.inputs:
        x = rng.standard_normal(spec.shape, dtype=np.float32)
        if special and x.size:
            pick = rng.integers(0, 8, size=x.shape)
            x[pick == 0] = np.nan
            x[pick == 1] = np.inf
            x[pick == 2] = -np.inf
            x[pick == 3] = np.float32(3e38)
            x[pick == 4] = 0.0
        xs.append(x)
    return xs


def _build_and_run(model, mode, seed):
    try:
        path = _PATHS[mode >> 6]
        if path and not _native.lib().bnn_path_available(path):
            path = _native.BNN_PATH_AUTO
        if path:
            _native.check(_native.lib().bnn_ctx_set_path(model._ctx._handle(), path),
                          "bnn_ctx_set_path")
        with np.errstate(all="ignore"):  # fuzzed weights overflow float32: not a finding
            outs = model.run(_inputs(model, seed, mode & 0x08))
        if len(model.outputs) == 1:
            outs = [outs]
        for spec, y in zip(model.outputs, outs):
            if not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.shape != spec.shape:
                raise Finding("output %r: got %s %s, declared float32 %s"
                              % (spec.name, type(y).__name__, getattr(y, "shape", None),
                                 list(spec.shape)))
    finally:
        model.close()


_TMP = None


def _tmpdir():
    global _TMP
    if _TMP is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _TMP = tempfile.mkdtemp(prefix="bnn-fuzz-", dir=base)
    return _TMP


def one_input(data, budget=True):
    """Runs one fuzz input; returns normally when the outcome is allowed (see the module
    docstring), raises otherwise (or libbnn crashes / the sanitizer aborts).  Returns
    "rejected", "too large" or "ran".  budget=False: run any size."""
    data = bytes(data)
    mode, blob = container(data)
    try:
        graph, arrays = mf.read_model(blob)
    except mf.ModelFormatError as e:
        if not str(e):
            raise Finding("ModelFormatError without a message") from e
        return "rejected"
    elems, macs = cost(graph)
    if budget and (elems > MAX_VALUE_ELEMENTS or macs > MAX_COST):
        return "too large"
    nt = 2 if mode & 0x20 else 1
    seed = _crc(data)
    fuse = not seed & 2
    if mode & 0x10:  # the public entry point, through a file and its memory map
        path = os.path.join(_tmpdir(), "m.bnn")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            model = firmware_py.load(path, num_threads=nt, fuse=fuse)
        finally:
            os.unlink(path)
    else:
        model = Model(graph, arrays, num_threads=nt, fuse=fuse, _validated=True)
    _build_and_run(model, mode, seed)
    return "ran"


def main(argv=None):
    import atheris  # only the driver needs it

    argv = list(sys.argv if argv is None else argv)
    _native.lib()
    print("fuzz_model_loader: libbnn %s" % _native.library_path(), file=sys.stderr)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
