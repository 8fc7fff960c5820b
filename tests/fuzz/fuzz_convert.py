"""Fuzz target: bytes -> the converter's ONNX intake (onnx parse + firmware_py.convert).

    ./build.sh fuzz convert [SECONDS]          # the ASan+UBSan libbnn.so, seeds, a corpus
    python3 tests/fuzz/fuzz_convert.py [libFuzzer flags] [corpus dirs]   # by hand

The harness body, :func:`one_input`, needs no atheris (tests/test_fuzz_regressions.py
replays the seeds and the regression inputs through it); only the ``__main__`` driver does.

The input is an ONNX file.  It is converted the way ``python -m firmware_py convert``
does it -- ``convert(path, dst)`` on a file (onnx.load, external data, shape inference,
constant folding, lowering, write_model) -- or, for inputs whose CRC-32 is odd, parsed
here (``onnx.ModelProto.FromString``; a protobuf ``DecodeError`` is the parser's
documented answer to bytes that are not a ModelProto) and given to ``convert`` as a
ModelProto.

Allowed outcome: ``ConvertError`` with a message and no output file left behind (the
converter's documented error: "Raises ConvertError naming the node for anything
unsupported; nothing is written then"), or a written ``.bnn`` that ``firmware_py.load``
accepts and that runs on an input of its declared shapes (within the loader harness'
budget).  Anything else -- another exception (``ModelFormatError`` from write_model
included: the converter built an invalid graph), a crash or a sanitizer report -- is a
finding.
"""
import os
import sys
import tempfile
import warnings
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

if __name__ == "__main__":  # the fuzzer: coverage instrumentation of firmware_py's bytecode
    from instrument import instrument

    instrument("firmware_py.executor", "firmware_py.convert", "firmware_py.convert.lower",
               "firmware_py.convert.onnx_graph", "firmware_py.convert.passes")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402

import firmware_py  # noqa: E402
from firmware_py.convert import ConvertError, convert  # noqa: E402
from fuzz_model_loader import MAX_COST, MAX_VALUE_ELEMENTS, Finding, cost  # noqa: E402

_TMP = None


def _tmpdir():
    global _TMP
    if _TMP is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _TMP = tempfile.mkdtemp(prefix="bnn-fuzz-convert-", dir=base)
    return _TMP


def _run_converted(dst, graph):
    elems, macs = cost(graph)
    if elems > MAX_VALUE_ELEMENTS or macs > MAX_COST:
        return "converted (too large to run)"
    model = firmware_py.load(dst, num_threads=1)
    try:
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal(s.shape, dtype=np.float32) for s in model.inputs]
        with np.errstate(all="ignore"):
            outs = model.run(xs)
        if len(model.outputs) == 1:
            outs = [outs]
        for spec, y in zip(model.outputs, outs):
            if y.dtype != np.float32 or y.shape != spec.shape:
                raise Finding("output %r: got %s %s, declared %s" % (spec.name, y.dtype, y.shape,
                                                                     list(spec.shape)))
    finally:
        model.close()
    return "converted"


def one_input(data):
    """Runs one fuzz input; returns normally when the outcome is allowed (see the module
    docstring), raises otherwise (or libbnn crashes / the sanitizer aborts)."""
    data = bytes(data)
    tmp = _tmpdir()
    src, dst = os.path.join(tmp, "model.onnx"), os.path.join(tmp, "model.bnn")
    for p in (src, dst):
        if os.path.exists(p):
            os.unlink(p)
    if zlib.crc32(data) & 1:
        try:
            model = onnx.ModelProto.FromString(data)
        except DecodeError:
            return "not a ModelProto"
        what = model
    else:
        with open(src, "wb") as f:
            f.write(data)
        what = src
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = convert(what, dst)
    except ConvertError as e:
        if not str(e):
            raise Finding("ConvertError without a message") from e
        if os.path.exists(dst):
            raise Finding("the conversion failed (%s) but %s was written" % (e, dst)) from e
        return "rejected"
    finally:
        if os.path.exists(src):
            os.unlink(src)
    try:
        return _run_converted(dst, res.graph)
    finally:
        os.unlink(dst)


def main(argv=None):
    import atheris

    from firmware_py import _native

    _native.lib()
    print("fuzz_convert: libbnn %s" % _native.library_path(), file=sys.stderr)
    atheris.Setup(list(sys.argv if argv is None else argv), one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
