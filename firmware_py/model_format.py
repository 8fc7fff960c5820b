"""The ``.bnn`` model file (docs/model-format.md): write it, read and validate it.

A model file is data only: a 64-byte header, the graph as UTF-8 JSON, zero padding and
the tensor data, every tensor on a 64-byte boundary of the file so that it can be
memory-mapped.  No serialized Python objects, no code, nothing executed on load.

``read_model`` validates everything before anything uses it -- sizes, offsets,
checksums, the JSON, every tensor, value and node (per op: inputs, outputs, attributes,
parameters and the shapes they imply) -- and raises :class:`ModelFormatError` (a
``ValueError``) naming the field, node or tensor that is wrong.  I/O problems (a
missing file, no permission) raise ``OSError`` as usual.

Only numpy and the standard library are used here (no native library).
"""

import errno
import json
import mmap as _mmap
import os
import stat
import struct
import tempfile
import zlib

import numpy as np

from .bits import pack_signs, packed_words  # noqa: F401 - part of this module's API
from .registry import OPS  # noqa: F401 - one spec per op: what a node may be

__all__ = [
    "ModelFormatError",
    "MAGIC",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "HEADER_SIZE",
    "ALIGN",
    "MAX_GRAPH_SIZE",
    "DTYPES",
    "OPS",
    "write_model",
    "read_model",
    "validate_graph",
    "packed_words",
    "pack_signs",
    "open_regular",
    "file_kind",
]


class ModelFormatError(ValueError):
    """A model file (or a graph given to write_model) is malformed, truncated or corrupt."""


class GraphSizeError(ModelFormatError):
    """write_model: the graph's JSON is larger than the format allows (MAX_GRAPH_SIZE)."""


MAGIC = b"BNNMODEL"
VERSION_MAJOR = 1
VERSION_MINOR = 4  # 1.1: softmax; 1.2: quant; 1.3: fconv2d groups; 1.4: NHWC input layout
HEADER_SIZE = 64
ALIGN = 64
MAX_GRAPH_SIZE = 16 * 1024 * 1024
_HEADER = struct.Struct("<8sHHIQQQQIIII")
assert _HEADER.size == HEADER_SIZE

DTYPES = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "uint8": np.dtype("u1"),
    "int8": np.dtype("i1"),
}

_MAX_ELEMENTS = 2**31 - 1  # per tensor and per value (the C library counts in int32)
_MAX_NDIM = 8

_GRAPH_KEYS = {"format", "producer", "metadata", "inputs", "outputs", "values", "tensors", "nodes"}
_GRAPH_REQUIRED = ("format", "inputs", "outputs", "values", "tensors", "nodes")
_NODE_KEYS = {"op", "name", "inputs", "outputs", "attrs", "params"}

def _fail(msg, *args):
    raise ModelFormatError(msg % args if args else msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_name(where, key, name):
    """A name (tensor, value, node, producer): a non-empty string of printable characters.
    str.isprintable() is False for control characters (newlines, escapes), for separators
    other than the space and for lone surrogates ("\\ud800" in the JSON: not UTF-8), so a
    name can always be printed, logged and encoded."""
    if not isinstance(name, str) or not name:
        _fail("%s: %r must be a non-empty string, got %r", where, key, name)
    if not name.isprintable():
        bad = next(ch for ch in name if not ch.isprintable())
        _fail("%s: %r %s holds a character that is not printable UTF-8 (U+%04X); names "
              "must be printable text", where, key, ascii(name), ord(bad))


def _check_strings(graph):
    """Every string in the graph JSON (keys included) must be encodable as UTF-8: JSON
    escapes can spell lone surrogates ("\\udc80"), which no UTF-8 text holds and which
    make printing or re-encoding the graph fail later."""
    try:  # the common case, in one C pass
        json.dumps(graph, ensure_ascii=False, check_circular=False).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    except (TypeError, ValueError):  # not plain JSON data: the walk below
        pass
    stack = [("graph", graph)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                stack.append((where, k))
                stack.append(("%s.%s" % (where, ascii(k)[1:-1]) if isinstance(k, str)
                              else where, x))
        elif isinstance(v, (list, tuple)):
            stack.extend(("%s[%d]" % (where, i), x) for i, x in enumerate(v))
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                _fail("%s: the string %s is not valid UTF-8 (a lone surrogate at %d)",
                      where, ascii(v[:80]), e.start)


def _prod(shape):
    p = 1
    for s in shape:
        p *= s
    return p


# ---- graph validation -----------------------------------------------------------------------------
class _Graph:
    """What validation learns about a graph (used by the reader, writer and executor)."""

    def __init__(self):
        self.tensors = {}  # name -> (dtype name, shape tuple, offset, nbytes)
        self.values = {}  # name -> (kind, shape tuple)


def _where_node(i, node):
    name = node.get("name") if isinstance(node, dict) else None
    op = node.get("op") if isinstance(node, dict) else None
    return "node %r (nodes[%d], op %r)" % (name, i, op)


def _check_keys(where, d, allowed, required=()):
    if not isinstance(d, dict):
        _fail("%s must be a JSON object, got %s", where, type(d).__name__)
    for k in required:
        if k not in d:
            _fail("%s: missing required key %r", where, k)
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        _fail("%s: unknown key(s) %s (allowed: %s)", where, extra, sorted(allowed))


def _shape(where, s, positive, min_ndim=0, max_ndim=_MAX_NDIM):
    if not isinstance(s, list):
        _fail("%s must be a list of ints, got %s", where, type(s).__name__)
    if not (min_ndim <= len(s) <= max_ndim):
        _fail("%s must have %d..%d dimensions, got %d", where, min_ndim, max_ndim, len(s))
    lo = 1 if positive else 0
    for d in s:
        if not _is_int(d) or d < lo:
            _fail("%s must hold %s ints, got %r", where, "positive" if positive else "non-negative", s)
        if d > _MAX_ELEMENTS:
            _fail("%s: dimension %d is too large (> %d)", where, d, _MAX_ELEMENTS)
    if _prod(s) > _MAX_ELEMENTS:
        _fail("%s: %r has more than %d elements", where, s, _MAX_ELEMENTS)
    return tuple(s)


def _check_tensors(graph, data_size, g):
    tensors = graph["tensors"]
    if not isinstance(tensors, list):
        _fail("graph 'tensors' must be a list, got %s", type(tensors).__name__)
    spans = []
    for i, t in enumerate(tensors):
        where = "tensors[%d]" % i
        _check_keys(where, t, {"name", "dtype", "shape", "offset", "nbytes"},
                    ("name", "dtype", "shape", "offset", "nbytes"))
        name = t["name"]
        _check_name(where, "name", name)
        where = "tensor %r (tensors[%d])" % (name, i)
        if name in g.tensors:
            _fail("%s: duplicate tensor name", where)
        dt = t["dtype"]
        if not isinstance(dt, str) or dt not in DTYPES:
            _fail("%s: dtype %r is not one of %s", where, dt, sorted(DTYPES))
        shape = _shape(where + " shape", t["shape"], positive=False)
        off, nb = t["offset"], t["nbytes"]
        if not _is_int(off) or off < 0:
            _fail("%s: offset must be a non-negative int, got %r", where, off)
        if not _is_int(nb) or nb < 0:
            _fail("%s: nbytes must be a non-negative int, got %r", where, nb)
        if off % ALIGN:
            _fail("%s: offset %d is not a multiple of %d", where, off, ALIGN)
        want = _prod(shape) * DTYPES[dt].itemsize
        if nb != want:
            _fail("%s: nbytes %d != product(shape %s) * itemsize %d = %d",
                  where, nb, list(shape), DTYPES[dt].itemsize, want)
        if data_size is not None and off + nb > data_size:
            _fail("%s: bytes [%d, %d) lie outside the data section (%d bytes)",
                  where, off, off + nb, data_size)
        g.tensors[name] = (dt, shape, off, nb)
        if nb:
            spans.append((off, off + nb, name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            _fail("tensors %r [%d, %d) and %r [%d, %d) overlap", an, a0, a1, bn, b0, b1)


def _check_values(graph, g):
    values = graph["values"]
    if not isinstance(values, list):
        _fail("graph 'values' must be a list, got %s", type(values).__name__)
    for i, v in enumerate(values):
        where = "values[%d]" % i
        _check_keys(where, v, {"name", "kind", "shape"}, ("name", "kind", "shape"))
        name = v["name"]
        _check_name(where, "name", name)
        where = "value %r (values[%d])" % (name, i)
        if name in g.values:
            _fail("%s: duplicate value name", where)
        kind = v["kind"]
        if kind not in ("float", "bits"):
            _fail("%s: kind must be 'float' or 'bits', got %r", where, kind)
        shape = _shape(where + " shape", v["shape"], positive=True, min_ndim=2, max_ndim=4)
        if len(shape) == 3 and kind != "float":
            _fail("%s: a 3-D value (an xnor_scale output [n, oh, ow]) must be float", where)
        if kind == "bits" and _prod(shape[:-1]) * packed_words(shape[-1]) > _MAX_ELEMENTS:
            _fail("%s: too large", where)
        g.values[name] = (kind, shape)


def _check_io(graph, key, g):
    items = graph[key]
    if not isinstance(items, list) or not items:
        _fail("graph %r must be a non-empty list", key)
    seen = set()
    for i, it in enumerate(items):
        where = "%s[%d]" % (key, i)
        _check_keys(where, it, {"name", "shape", "layout"}, ("name", "shape", "layout"))
        name = it["name"]
        if not isinstance(name, str) or name not in g.values:
            _fail("%s: name %r is not a value of the graph", where, name)
        where = "%s[%d] %r" % (key, i, name)
        if name in seen:
            _fail("%s: listed twice", where)
        seen.add(name)
        kind, vshape = g.values[name]
        shape = _shape(where + " shape", it["shape"], positive=True, min_ndim=2, max_ndim=4)
        layout = it["layout"]
        if layout == "NCHW":
            if len(vshape) != 4:
                _fail("%s: layout NCHW needs a 4-D value, the value is %s", where, list(vshape))
            want = (vshape[0], vshape[3], vshape[1], vshape[2])
        elif layout == "NHWC":
            if len(vshape) != 4:
                _fail("%s: layout NHWC needs a 4-D value, the value is %s", where, list(vshape))
            want = vshape
        elif layout == "NC":
            if len(vshape) != 2:
                _fail("%s: layout NC needs a 2-D value, the value is %s", where, list(vshape))
            want = vshape
        else:
            _fail("%s: layout must be 'NCHW', 'NHWC' or 'NC', got %r", where, layout)
        if shape != want:
            _fail("%s: shape %s does not match the value's shape %s (internal layout) for "
                  "layout %s: expected %s", where, list(shape), list(vshape), layout, list(want))
        if key == "inputs" and kind != "float":
            _fail("%s: a graph input must be a float value, got %r", where, kind)


class NodeCheck:
    """One node as its op's spec sees it while validating (registry.OpSpec.check): the node's
    attributes (already type- and range-checked against the spec), its input values, its
    output value, and helpers that fail with a ModelFormatError naming the node."""

    def __init__(self, where, node, spec, in_vals, out_kind, out_shape, g):
        self.where, self.spec, self.g = where, spec, g
        self.attrs, self.params = node.get("attrs", {}), node.get("params", {})
        self.ins, self.out_name = node["inputs"], node["outputs"][0]
        self.in_vals, self.out_kind, self.out_shape = in_vals, out_kind, out_shape

    @staticmethod
    def fail(msg, *args):
        _fail(msg, *args)

    def need_in(self, j, kinds, ndims):
        """the shape of input j, which must be of one of `kinds` with one of `ndims` dimensions"""
        kind, shape = self.in_vals[j]
        if kind not in kinds or len(shape) not in ndims:
            _fail("%s: input %r must be a %s value of %s dimensions, got %s %s", self.where, self.ins[j],
                  "/".join(kinds), "/".join(map(str, ndims)), kind, list(shape))
        return shape

    def out_channels(self, ndim):
        """the output's channels (its last dimension), which must have `ndim` dimensions"""
        if len(self.out_shape) != ndim:
            _fail("%s: output %r must be %s, got %s", self.where, self.out_name,
                  "4-D NHWC" if ndim == 4 else "2-D [n, out]", list(self.out_shape))
        return self.out_shape[-1]

    def param(self, pname, shape, required=True):
        """checks parameter `pname` (its dtype from the spec) has `shape` (or one of a list)"""
        if pname not in self.params:
            if required:
                _fail("%s: missing parameter %r", self.where, pname)
            return None
        tn = self.params[pname]
        if not isinstance(tn, str) or tn not in self.g.tensors:
            _fail("%s: parameter %r names tensor %r, which is not in 'tensors'", self.where, pname, tn)
        dtype = self.spec.params[pname]
        tdt, tshape = self.g.tensors[tn][:2]
        if tdt != dtype:
            _fail("%s: parameter %r (tensor %r) must be %s, got %s", self.where, pname, tn, dtype, tdt)
        shapes = shape if isinstance(shape, list) else [shape]
        if tshape not in [tuple(s) for s in shapes]:
            _fail("%s: parameter %r (tensor %r) must have shape %s, got %s", self.where, pname, tn,
                  " or ".join(str(list(s)) for s in shapes), list(tshape))
        return tn

    def no_params(self, *names):
        for p in names:
            if p in self.params:
                _fail("%s: parameter %r is not used with these attributes", self.where, p)

    def window(self, conv, in_hw):
        """kernel / stride / pads (their ranges checked by the spec) against the input:
        returns (kernel, stride, pads, (oh, ow))"""
        (kh, kw), (sh, sw) = self.attrs["kernel"], self.attrs["stride"]
        pads = pt, pl, pb, pr = tuple(self.attrs["pads"])
        if pt >= kh or pb >= kh or pl >= kw or pr >= kw:
            _fail("%s: attrs.pads %r: each pad must be smaller than the kernel %r", self.where,
                  list(pads), [kh, kw])
        h, w = in_hw
        if h + pt + pb < kh or w + pl + pr < kw:
            _fail("%s: kernel %r is larger than the padded input %r", self.where, [kh, kw],
                  [h + pt + pb, w + pl + pr])
        return (kh, kw), (sh, sw), pads, ((h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1)


def _check_node(i, node, g, written):
    where0 = "nodes[%d]" % i
    _check_keys(where0, node, _NODE_KEYS, ("op", "name", "inputs", "outputs"))
    op = node["op"]
    if not isinstance(op, str) or op not in OPS:
        _fail("%s (name %r): unknown op %r (this reader, format %d.%d, knows %s)", where0,
              node.get("name"), op, VERSION_MAJOR, VERSION_MINOR, sorted(OPS))
    name = node["name"]
    _check_name("%s (op %r)" % (where0, op), "name", name)
    where = _where_node(i, node)
    spec = OPS[op]
    attrs = node.get("attrs", {})
    params = node.get("params", {})
    _check_keys(where + " attrs", attrs, set(spec.attrs))
    _check_keys(where + " params", params, set(spec.params))

    ins, outs = node["inputs"], node["outputs"]
    for key, lst in (("inputs", ins), ("outputs", outs)):
        if not isinstance(lst, list) or not all(isinstance(s, str) for s in lst):
            _fail("%s: %r must be a list of value names", where, key)
    lo, hi = spec.inputs
    if not lo <= len(ins) <= hi:
        _fail("%s: takes %s input(s), got %d", where, lo if lo == hi else "%d..%d" % (lo, hi), len(ins))
    if len(outs) != 1:
        _fail("%s: must have exactly 1 output, got %d", where, len(outs))
    in_vals = []
    for nm in ins:
        if nm not in g.values:
            _fail("%s: input %r is not a value of the graph", where, nm)
        if nm not in written:
            _fail("%s: input %r is read before it is written (by a graph input or an "
                  "earlier node)", where, nm)
        in_vals.append(g.values[nm])
    out_name = outs[0]
    if out_name not in g.values:
        _fail("%s: output %r is not a value of the graph", where, out_name)
    if out_name in written:
        _fail("%s: output %r is already written (%s)", where, out_name, written[out_name])
    out_kind, out_shape = g.values[out_name]

    v = NodeCheck(where, node, spec, in_vals, out_kind, out_shape, g)
    for aname, (atype, required) in spec.attrs.items():
        if aname in attrs:
            atype.check(v, aname, attrs[aname])
        elif required:
            _fail("%s: missing attribute %r", where, aname)
    kinds_out, want = spec.check(v)
    if isinstance(kinds_out, str):
        kinds_out = (kinds_out,)
    if out_kind not in kinds_out:
        _fail("%s: output %r must be a %s value, got %r", where, out_name, " or ".join(kinds_out),
              out_kind)
    if tuple(out_shape) != tuple(want):
        _fail("%s: output %r has shape %s but %s gives %s", where, out_name, list(out_shape), op,
              list(want))
    written[out_name] = "by node %r" % name


def validate_graph(graph, data_size=None):
    """Validates a graph dict (as decoded from the JSON); data_size: the data section's
    size in bytes (None: tensor bounds are not checked).  Raises ModelFormatError."""
    if not isinstance(graph, dict):
        _fail("the graph JSON must be an object, got %s", type(graph).__name__)
    _check_keys("graph", graph, _GRAPH_KEYS, _GRAPH_REQUIRED)
    if graph["format"] != "bnn-graph":
        _fail("graph 'format' must be 'bnn-graph', got %r", graph["format"])
    if "producer" in graph and not isinstance(graph["producer"], str):
        _fail("graph 'producer' must be a string, got %r", graph["producer"])
    if graph.get("producer"):
        _check_name("graph", "producer", graph["producer"])
    if "metadata" in graph and not isinstance(graph["metadata"], dict):
        _fail("graph 'metadata' must be an object, got %s", type(graph["metadata"]).__name__)
    g = _Graph()
    _check_tensors(graph, data_size, g)
    _check_values(graph, g)
    _check_io(graph, "inputs", g)
    _check_io(graph, "outputs", g)
    nodes = graph["nodes"]
    if not isinstance(nodes, list):
        _fail("graph 'nodes' must be a list, got %s", type(nodes).__name__)
    written = {it["name"]: "as a graph input" for it in graph["inputs"]}
    names = set()
    for i, node in enumerate(nodes):
        _check_node(i, node, g, written)
        if node["name"] in names:
            _fail("%s: duplicate node name", _where_node(i, node))
        names.add(node["name"])
    for v in graph["values"]:
        if v["name"] not in written:
            _fail("value %r is never written (neither a graph input nor a node's output)",
                  v["name"])
    _check_strings(graph)
    return g


def _check_tensor_data(graph, arrays):
    """Checks on the tensor contents: packed weights have zero tail bits, flip is 0/1."""
    channels = {v["name"]: v["shape"][-1] for v in graph["values"]}
    for i, node in enumerate(graph["nodes"]):
        params = node.get("params", {})
        op = node["op"]
        if op in ("bconv2d", "bdense"):
            wname = params["weights"]
            wt = arrays[wname]
            # in_c is the input value's channel count
            c = channels[node["inputs"][0]]
            tail = c % 32
            if tail and wt.size:
                mask = np.uint32((0xFFFFFFFF << tail) & 0xFFFFFFFF)
                if np.any(wt[..., -1] & mask):
                    _fail("%s: parameter 'weights' (tensor %r) has bits set past channel %d "
                          "(the tail bits of packed weights must be 0)", _where_node(i, node),
                          wname, c)
        if op == "bconv2d" and "flip" in params:
            f = arrays[params["flip"]]
            if f.size and f.max() > 1:
                _fail("%s: parameter 'flip' (tensor %r) must hold only 0 and 1",
                      _where_node(i, node), params["flip"])


# ---- reading --------------------------------------------------------------------------------------
def file_kind(mode):
    """What a st_mode is, in words (for the messages about files that are not regular)."""
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return what
    return "not a regular file"


def open_regular(path, not_regular=None):
    """Opens ``path`` for reading, only when it is a regular file (a symlink to one is
    fine); returns a binary file object.  The open itself cannot block: it is made with
    O_NONBLOCK (opening a FIFO that no one writes would wait forever, a device may never
    end), and the type is checked on the opened descriptor (fstat), so nothing can be
    swapped in between a check and the open.  A directory raises IsADirectoryError;
    anything else that is not a regular file raises ``not_regular(message)`` (default
    ModelFormatError)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            raise (not_regular or ModelFormatError)(
                "%s is %s, not a regular file (only regular files are read)"
                % (os.fspath(path), file_kind(st.st_mode)))
        if flags & getattr(os, "O_NONBLOCK", 0):
            import fcntl
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _reject_constant(s):
    raise ValueError("non-standard JSON constant %s" % s)


# Python 3.11 (and the 3.9.14 / 3.10.7 security releases) refuse to convert an integer of over 4300
# digits (quadratic time, CVE-2020-10735); Python 3.9.2 (Raspberry Pi OS bullseye) converts any: the
# same limit here, on every version.
_MAX_INT_DIGITS = 4300


def _parse_int(s):
    digits = len(s) - s.startswith("-")
    if digits > _MAX_INT_DIGITS:
        raise ValueError("an integer of %d digits (more than %d)" % (digits, _MAX_INT_DIGITS))
    return int(s)


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def _parse_header(buf, size):
    if size < HEADER_SIZE:
        _fail("file too short for the header: %d bytes < %d", size, HEADER_SIZE)
    head = bytes(buf[:HEADER_SIZE])
    (magic, major, minor, header_size, graph_offset, graph_size, data_offset, data_size,
     graph_crc, data_crc, reserved, header_crc) = _HEADER.unpack(head)
    if magic != MAGIC:
        _fail("bad magic %r: not a .bnn model file (expected %r)", magic, MAGIC)
    if major != VERSION_MAJOR:
        _fail("unsupported model format version %d.%d: this reader reads version %d.x "
              "(it is %d.%d)", major, minor, VERSION_MAJOR, VERSION_MAJOR, VERSION_MINOR)
    crc = zlib.crc32(head[:60]) & 0xFFFFFFFF
    if crc != header_crc:
        _fail("header CRC mismatch: stored 0x%08x, computed 0x%08x (corrupt header)",
              header_crc, crc)
    if header_size != HEADER_SIZE:
        _fail("header_size is %d, expected %d", header_size, HEADER_SIZE)
    if reserved != 0:
        _fail("header reserved field is %d, expected 0", reserved)
    if graph_offset != HEADER_SIZE:
        _fail("graph_offset is %d, expected %d", graph_offset, HEADER_SIZE)
    if not 1 <= graph_size <= MAX_GRAPH_SIZE:
        _fail("graph_size %d is out of range 1..%d", graph_size, MAX_GRAPH_SIZE)
    if data_offset % ALIGN:
        _fail("data_offset %d is not a multiple of %d", data_offset, ALIGN)
    if data_offset < graph_offset + graph_size:
        _fail("data_offset %d lies inside the graph JSON (which ends at %d)", data_offset,
              graph_offset + graph_size)
    if data_offset > size:
        _fail("data_offset %d is past the end of the file (%d bytes; truncated?)", data_offset,
              size)
    if data_offset + data_size != size:
        _fail("file size mismatch: data_offset %d + data_size %d = %d, but the file has %d "
              "bytes (truncated or extended?)", data_offset, data_size, data_offset + data_size,
              size)
    return graph_offset, graph_size, data_offset, data_size, graph_crc, data_crc


def _parse(buf, size):
    """Validates buf (a memoryview of the whole file); returns (graph, data_offset, data_size)."""
    graph_offset, graph_size, data_offset, data_size, graph_crc, data_crc = _parse_header(buf, size)
    gend = graph_offset + graph_size
    if bytes(buf[gend:data_offset]).count(0) != data_offset - gend:
        _fail("the padding between the graph JSON and data_offset is not zero")
    graph_bytes = bytes(buf[graph_offset:gend])
    crc = zlib.crc32(graph_bytes) & 0xFFFFFFFF
    if crc != graph_crc:
        _fail("graph CRC mismatch: stored 0x%08x, computed 0x%08x (corrupt graph JSON)",
              graph_crc, crc)
    crc = zlib.crc32(buf[data_offset:size]) & 0xFFFFFFFF
    if crc != data_crc:
        _fail("data CRC mismatch: stored 0x%08x, computed 0x%08x (corrupt tensor data)",
              data_crc, crc)
    try:
        text = graph_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        _fail("the graph is not valid UTF-8: %s", e)
    try:
        graph = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                           parse_int=_parse_int)
    except RecursionError:
        _fail("the graph JSON is nested too deeply")
    except ValueError as e:
        _fail("the graph is not valid JSON: %s", e)
    if not isinstance(graph, dict):
        _fail("the graph JSON must be an object, got %s", type(graph).__name__)
    try:
        validate_graph(graph, data_size)
    except RecursionError:
        _fail("the graph JSON is nested too deeply")
    return graph, data_offset, data_size


def _arrays(graph, source, data_offset):
    out = {}
    for t in graph["tensors"]:
        dt = DTYPES[t["dtype"]]
        count = t["nbytes"] // dt.itemsize
        a = np.frombuffer(source, dtype=dt, count=count, offset=data_offset + t["offset"])
        a = a.reshape(t["shape"])
        if a.flags.writeable:
            a.flags.writeable = False
        out[t["name"]] = a
    return out


def read_model(path_or_bytes, mmap=True):
    """Reads and validates a model: returns (graph dict, {tensor name: numpy array}).

    path_or_bytes: a path (str / os.PathLike) or the file's bytes (bytes, bytearray,
    memoryview).  With a path and mmap=True the arrays are read-only views into a
    read-only memory map of the file (nothing is copied; the map lives as long as an
    array does); mmap=False reads the file into memory.  The arrays are always read-only.
    Raises ModelFormatError for anything malformed (and for a path that is not a
    regular file: a FIFO, a device, a socket -- never opened in a way that could block),
    OSError for I/O errors.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        try:
            mv = memoryview(path_or_bytes).cast("B")
        except TypeError as e:
            raise TypeError("path_or_bytes: a non-contiguous buffer: %s" % e) from None
        mv = mv.toreadonly()
        graph, data_offset, _ = _parse(mv, len(mv))
        arrays = _arrays(graph, mv, data_offset)
        _check_tensor_data(graph, arrays)
        return graph, arrays
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise TypeError("path_or_bytes must be a path or bytes, got %s"
                        % type(path_or_bytes).__name__)
    with open_regular(path_or_bytes) as f:  # never blocks on a FIFO or a device
        size = os.fstat(f.fileno()).st_size
        if not mmap:
            data = f.read()
            if len(data) != size:
                _fail("the file changed size while being read")
            return read_model(data)
        if size < HEADER_SIZE:
            _fail("file too short for the header: %d bytes < %d", size, HEADER_SIZE)
        mm = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
    try:
        with memoryview(mm) as mv:
            graph, data_offset, _ = _parse(mv, len(mm))
    except BaseException:
        try:
            mm.close()
        except BufferError:  # pragma: no cover - a view still alive
            pass
        raise
    arrays = _arrays(graph, mm, data_offset)
    _check_tensor_data(graph, arrays)
    return graph, arrays


# ---- writing --------------------------------------------------------------------------------------
def _as_tensor(name, a):
    if not isinstance(name, str) or not name:
        _fail("tensor names must be non-empty strings, got %r", name)
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" or a.dtype.name not in DTYPES:
        _fail("tensor %r: dtype %s is not one of %s", name, a.dtype, sorted(DTYPES))
    dt = DTYPES[a.dtype.name]
    return np.ascontiguousarray(a.astype(dt, copy=False))


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def write_model(path, graph, tensors, minor=VERSION_MINOR, check=None):
    """Writes a model file.

    graph: the graph dict without its tensor table: ``graph["tensors"]`` is (re)filled
    here, in the caller's dict, from ``tensors`` (a {name: array} dict, in its order;
    dtypes float32 / int32 / uint32 / uint8 / int8; written as C-contiguous
    little-endian copies, each on a 64-byte boundary).  The graph is validated exactly
    as read_model would (ModelFormatError) before anything is written.  The file is
    written atomically: a temporary file in the same folder, fsync, os.replace; on any
    error nothing is left behind.  ``check``: a function called with the validated graph
    (as a reader will see it, with its tensor table) before anything is written; what it
    raises stops the write (the converter checks the memory budget there).  Returns the
    path.
    """
    if not isinstance(graph, dict):
        _fail("graph must be a dict, got %s", type(graph).__name__)
    if not isinstance(tensors, dict):
        _fail("tensors must be a dict of name -> numpy array, got %s", type(tensors).__name__)
    arrays = [(n, _as_tensor(n, a)) for n, a in tensors.items()]
    table, off = [], 0
    for name, a in arrays:
        table.append({"name": name, "dtype": a.dtype.name, "shape": [int(s) for s in a.shape],
                      "offset": off, "nbytes": int(a.nbytes)})
        off = _align(off + a.nbytes)
    data_size = arrays and table[-1]["offset"] + table[-1]["nbytes"] or 0
    graph["tensors"] = table
    try:
        text = json.dumps(graph, separators=(",", ":"), sort_keys=True, allow_nan=False,
                          ensure_ascii=False)
    except (TypeError, ValueError) as e:
        _fail("the graph cannot be written as JSON: %s", e)
    try:
        graph_bytes = text.encode("utf-8")
    except UnicodeEncodeError:
        _check_strings(graph)  # names the string
        raise
    if not 1 <= len(graph_bytes) <= MAX_GRAPH_SIZE:
        raise GraphSizeError("the graph JSON is %d bytes (the limit is %d)"
                             % (len(graph_bytes), MAX_GRAPH_SIZE))
    # Validate what a reader will see (the JSON round trip), then the tensor contents.
    check_graph = json.loads(text)
    validate_graph(check_graph, data_size)
    _check_tensor_data(check_graph, {n: a for n, a in arrays})
    if check is not None:
        check(check_graph)

    data_offset = _align(HEADER_SIZE + len(graph_bytes))
    data_crc = 0
    pos = 0
    chunks = []
    for (name, a), t in zip(arrays, table):
        if t["offset"] > pos:
            chunks.append(bytes(t["offset"] - pos))
        chunks.append(memoryview(a).cast("B") if a.nbytes else b"")
        pos = t["offset"] + a.nbytes
    for ch in chunks:
        data_crc = zlib.crc32(ch, data_crc)
    head = _HEADER.pack(MAGIC, VERSION_MAJOR, int(minor), HEADER_SIZE, HEADER_SIZE,
                        len(graph_bytes), data_offset, data_size,
                        zlib.crc32(graph_bytes) & 0xFFFFFFFF, data_crc & 0xFFFFFFFF, 0, 0)
    head = head[:60] + struct.pack("<I", zlib.crc32(head[:60]) & 0xFFFFFFFF)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.write(graph_bytes)
            f.write(bytes(data_offset - HEADER_SIZE - len(graph_bytes)))
            for ch in chunks:
                f.write(ch)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable (best effort: not every filesystem allows it)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path
