"""Every shipped model (models/zoo/**/*.bnn) run on fixed inputs, for comparing two versions of
the runtime bit for bit (a refactoring must not change one bit):

    python -m tests.zoo_outputs OUT.npz [--threads N] [--no-fuse]
    python -m tests.zoo_outputs --compare A.npz B.npz

Run the first form once per version (e.g. an old checkout's firmware_py on PYTHONPATH with its
BNN_LIBRARY), then compare: exit 0 when every output array is identical."""
import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def outputs(threads=1, fuse=True):
    import firmware_py
    res = {}
    for p in sorted(glob.glob(os.path.join(ROOT, "models", "zoo", "*", "*.bnn"))):
        m = firmware_py.load(p, num_threads=threads, fuse=fuse)
        rng = np.random.default_rng(0)
        for i in range(3):
            xs = [rng.standard_normal(s.shape).astype(np.float32) * (1 + i) for s in m.inputs]
            ys = m.run(xs if len(xs) > 1 else xs[0])
            for j, y in enumerate(ys if isinstance(ys, list) else [ys]):
                res["%s:%d:%d" % (os.path.relpath(p, ROOT), i, j)] = y
        m.close()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-fuse", action="store_true")
    a = ap.parse_args(argv)
    if a.compare:
        with np.load(a.compare[0], allow_pickle=False) as za, np.load(a.compare[1], allow_pickle=False) as zb:
            if sorted(za.files) != sorted(zb.files):
                print("different keys")
                return 1
            bad = [k for k in za.files if not np.array_equal(za[k], zb[k])]
            print("%d arrays, %d models, %d differ%s" % (len(za.files), len({k.split(":")[0] for k in za.files}),
                                                         len(bad), (": " + ", ".join(bad[:5])) if bad else ""))
            return 1 if bad else 0
    np.savez(a.out, **outputs(a.threads, fuse=not a.no_fuse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
