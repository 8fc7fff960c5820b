"""python -m firmware_py convert model.onnx [model.bnn] [--no-check] [--report]
python -m firmware_py info model.bnn [--profile]"""
from __future__ import annotations

import argparse
import sys


def _shape_arg(text):
    try:
        name, dims = text.split("=", 1)
        return name, tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected NAME=D0,D1,..., got %r" % text) from None


def _size_arg(text):
    from .memory import parse_size
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threads_arg(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError("expected a number of threads 1..256, got %r" % text)
    return n


MEMORY_HELP = ("what the model may need at run time: bytes or 512M / 2G; 0 or 'none': no "
               "limit (default: $BNN_MEMORY_LIMIT, else the memory available now)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m firmware_py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert an ONNX model to the runtime's model file")
    c.add_argument("src", help="model.onnx (external data next to it is read too)")
    c.add_argument("dst", nargs="?", help="output file (default: src with .bnn)")
    chk = c.add_mutually_exclusive_group()
    chk.add_argument("--check", action="store_true", default=None,
                     help="compare against onnxruntime, end to end and layer by layer, before writing (the "
                          "default when onnxruntime is installed; --check requires it)")
    chk.add_argument("--no-check", dest="check", action="store_false", help="skip that comparison")
    c.add_argument("--check-data", help=".npy array of real inputs (NCHW float32) for --check")
    c.add_argument("--report", action="store_true",
                   help="print a per-layer table and why each layer with binary weights stayed float")
    c.add_argument("--input-shape", action="append", type=_shape_arg, default=[],
                   help="NAME=1,3,224,224 for inputs with dynamic dimensions")
    c.add_argument("--memory-limit", type=_size_arg, default=None, help=MEMORY_HELP)
    c.add_argument("--input-layout", choices=["auto", "NCHW", "NHWC"], default="auto",
                   help="4-D inputs: NHWC (a TensorFlow export without inputs_as_nchw: the graph reads "
                        "the input through Transpose(0,3,1,2)); auto (default) detects that")
    i = sub.add_parser("info", help="validate a model file and print its layers")
    i.add_argument("path")
    i.add_argument("--profile", action="store_true", help="time each layer on a random input")
    i.add_argument("--threads", type=_threads_arg, default=None)
    i.add_argument("--memory-limit", type=_size_arg, default=None, help=MEMORY_HELP)
    a = ap.parse_args(argv)

    if a.cmd == "convert":
        import numpy as np

        from .convert import ConvertError, convert
        check_inputs = None
        if a.check_data:
            check_inputs = np.load(a.check_data, allow_pickle=False)
        try:
            check = True if a.check_data and a.check is None else a.check
            res = convert(a.src, a.dst, input_shapes=dict(a.input_shape) or None, check=check,
                          check_inputs=check_inputs, memory_limit=a.memory_limit, input_layout=a.input_layout)
        except ConvertError as e:
            print("error: %s" % e, file=sys.stderr)
            return 1
        if a.report:
            print(res.report())
        else:
            print("wrote %s (%d bytes)" % (res.path, res.file_bytes))
            from .convert.report import float_reason_lines
            for line in float_reason_lines(res) + ["note: " + n for n in res.notes]:
                print(line)
            if res.check:
                print("check: " + res.check["summary"])
        return 0
    if a.cmd == "info":
        import numpy as np

        from . import load
        from .model_format import ModelFormatError
        try:
            m = load(a.path, num_threads=a.threads, memory_limit=a.memory_limit)
        except (ModelFormatError, ValueError, OSError) as e:
            print("error: %s" % e, file=sys.stderr)
            return 1
        print(m.summary())
        if a.profile:
            rng = np.random.default_rng(0)
            x = [rng.random(s.shape, dtype=np.float32) for s in m.inputs]
            print(m.profile(x[0] if len(x) == 1 else x))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
