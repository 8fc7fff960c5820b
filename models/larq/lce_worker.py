"""Larq Compute Engine's interpreter behind a pipe, for models/larq/bench.py (which runs in
the project's venv and cannot import TensorFlow).  Runs in the TensorFlow venv.

Reads lines from stdin, answers one line each on stdout:
  load KEY PATH THREADS KERNEL   (KERNEL: default | indirect_bgemm)  -> "ok INPUT_SHAPE"
  run KEY                        -> milliseconds of one predict() on a fixed random input
  quit
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: E402


def main():
    loaded = {}
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "load":
            key, path, threads, kernel = cmd[1], cmd[2], int(cmd[3]), cmd[4]
            with open(path, "rb") as f:
                it = Interpreter(f.read(), num_threads=threads, use_indirect_bgemm=kernel == "indirect_bgemm")
            shape = tuple(it.input_shapes[0])
            x = rng.standard_normal(shape).astype(np.float32)
            it.predict(x)  # warm-up
            loaded[key] = (it, x)
            print("ok", ",".join(map(str, shape)), flush=True)
        elif cmd[0] == "run":
            it, x = loaded[cmd[1]]
            t0 = time.perf_counter()
            it.predict(x)
            print("%.6f" % ((time.perf_counter() - t0) * 1e3), flush=True)
        else:
            print("error unknown command %r" % cmd[0], flush=True)


if __name__ == "__main__":
    main()
