"""The app's overhead: the full pipeline (capture thread -> queue -> inference thread ->
JSON-lines event log + per-second reports) against a bare ``Detector.detect`` loop on the
same decoded frames, same model, same threads.  Prints one JSON object.

    python -m bnn_camera.bench_overhead [--model M] [--source CLIP] [--frames 200] [--rounds 3]

Rounds alternate bare / app so drifting machine load hits both alike; the overhead is
taken from the medians (min and all rounds are reported too).  Without --model it uses
the shipped detector, or -- when that does not exist yet -- a synthetic detector of
realistic cost (bnn_camera.testmodel, 256x256, random weights), and says so.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bnn_camera import DEFAULT_MODEL  # noqa: E402
from bnn_camera.sources import bundled_sample  # noqa: E402


def decode_frames(path, n):
    import cv2
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            if not frames:
                raise SystemExit("cannot read frames from %s" % path)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(f)
    cap.release()
    return frames


def bare(det, frames):
    t = time.perf_counter()
    for f in frames:
        det.detect(f)
    return time.perf_counter() - t


def app_run(det, frames, out_path, queue=2):
    from bnn_camera.pipeline import Pipeline
    from bnn_camera.report import dumps
    from bnn_camera.sinks import EventLog
    from bnn_camera.sources import MemorySource
    from firmware_py import power

    sink = []
    ev = EventLog(out_path)

    def emit(rec):  # what the CLI does for stdout, minus the terminal
        sink.append(dumps(rec))

    pipe = Pipeline(det, MemorySource(frames, name="bench"), max_frames=len(frames),
                    queue_size=queue, power_meter=power.open_power_meter(vcgencmd=""),
                    emit=emit, sinks=[ev])
    t = time.perf_counter()
    summary = pipe.run()
    dt = time.perf_counter() - t
    ev.close()
    if summary["frames_total"] != len(frames):
        raise SystemExit("the app processed %d of %d frames" % (summary["frames_total"],
                                                                 len(frames)))
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--source", default=None, help="video file (default: the bundled clip)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--synthetic-size", type=int, default=256)
    ap.add_argument("--limit-pct", type=float, default=10.0)
    a = ap.parse_args(argv)

    from firmware_py.detect import Detector
    tmp = tempfile.mkdtemp(prefix="bnn-bench-")
    model, synthetic = a.model, False
    if not model:
        if os.path.isfile(DEFAULT_MODEL):
            model = DEFAULT_MODEL
        else:
            from bnn_camera.testmodel import write_synthetic_detector
            model = write_synthetic_detector(os.path.join(tmp, "synthetic.bnn"),
                                             size=a.synthetic_size, width=64)
            synthetic = True
    src = a.source or bundled_sample()
    frames = decode_frames(src, a.frames)
    det = Detector(model, num_threads=a.threads)
    for f in frames[:10]:  # warm-up
        det.detect(f)
    t_bare, t_app = [], []
    for r in range(a.rounds):
        t_bare.append(bare(det, frames))
        t_app.append(app_run(det, frames, os.path.join(tmp, "events-%d.jsonl" % r)))
    n = len(frames)
    mb, ma = statistics.median(t_bare), statistics.median(t_app)
    res = {
        "model": model,
        "synthetic_model": synthetic,
        "source": src,
        "frames": n,
        "rounds": a.rounds,
        "threads": a.threads,
        "bare_fps": round(n / mb, 2),
        "app_fps": round(n / ma, 2),
        "bare_ms_per_frame": round(1000 * mb / n, 3),
        "app_ms_per_frame": round(1000 * ma / n, 3),
        "overhead_pct": round(100.0 * (ma - mb) / mb, 2),
        "overhead_pct_min": round(100.0 * (min(t_app) - min(t_bare)) / min(t_bare), 2),
        "bare_s": [round(x, 4) for x in t_bare],
        "app_s": [round(x, 4) for x in t_app],
        "limit_pct": a.limit_pct,
    }
    res["ok"] = res["overhead_pct"] <= a.limit_pct
    print(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
