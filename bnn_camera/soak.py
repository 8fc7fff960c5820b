"""Soak test: runs ``python -m bnn_camera --loop`` on a clip for N frames and records, from its
per-second JSON reports, RSS / fps / drops over time; writes a CSV (and a PNG plot when
matplotlib is importable) and prints a JSON verdict on RSS drift.

    python -m bnn_camera.soak --frames 100000 --csv soak.csv [--png soak.png] [--model M]

RSS drift = (last RSS - RSS after warm-up) / RSS after warm-up, where the warm-up is the
first ``--warmup`` fraction of the samples (default 0.2) and the last RSS the last record
while the app runs (the record written at shutdown, after the threads stopped, is kept
in the CSV with shutdown=1 but left out); flat means |drift| <= 5% (and the max after
warm-up within 5% too).

Frame accounting (from the app's summary): every frame read from the source must be
either processed, dropped (inference lagged), bad (skipped and counted) or still queued
when the run stopped -- captured_total == frames_total + dropped_total + bad_frames_total
+ discarded_at_stop; the verdict fails otherwise.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def frame_accounting(summary):
    """captured == processed + dropped + bad + discarded at stop, from the app's summary."""
    acc = {"captured": summary.get("captured_total"), "processed": summary.get("frames_total"),
           "dropped": summary.get("dropped_total"), "bad": summary.get("bad_frames_total"),
           "discarded_at_stop": summary.get("discarded_at_stop")}
    if any(v is None for v in acc.values()):
        acc["ok"] = False
        acc["why"] = "the summary lacks a counter: %s" % sorted(k for k, v in acc.items()
                                                                 if v is None)
        return acc
    accounted = acc["processed"] + acc["dropped"] + acc["bad"] + acc["discarded_at_stop"]
    acc["unaccounted"] = acc["captured"] - accounted
    acc["ok"] = acc["unaccounted"] == 0
    return acc


def run_soak(model, source, frames, csv_path, png_path=None, threads=None, warmup=0.2,
             limit_pct=5.0, extra_args=(), realtime=False, timeout=None, samples=None):
    """Runs the app on a looping source; stops at `frames`, after `timeout` seconds or once
    `samples` stats records are in (whichever comes first; SIGTERM, so the app still
    writes its summary)."""
    cmd = [sys.executable, "-m", "bnn_camera", "--model", model, "--source", source, "--loop",
           "--max-frames", str(frames), "--format", "json", "--no-power"]
    if threads:
        cmd += ["--threads", str(threads)]
    if realtime:
        cmd.append("--realtime")
    cmd += list(extra_args)
    rows, summary, stopped = [], None, False
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        for line in p.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "stats":
                rows.append({"t_s": rec["uptime_s"], "frames": rec["frames_total"],
                             "rss_mb": rec["rss_mb"], "inference_fps": rec["inference_fps"],
                             "capture_fps": rec["capture_fps"],
                             "dropped_total": rec["dropped_total"],
                             "p95_ms": (rec.get("latency_ms") or {}).get("p95"),
                             "shutdown": 0})
            elif rec.get("type") == "summary":
                summary = rec
                if rows:  # the record just before the summary is written at shutdown
                    rows[-1]["shutdown"] = 1
            enough = samples is not None and len(rows) >= samples
            if not stopped and (enough or (timeout and time.monotonic() - t0 > timeout)):
                p.terminate()  # SIGTERM: the app stops cleanly and prints its summary
                stopped = True
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t_s", "frames", "rss_mb", "inference_fps",
                                          "capture_fps", "dropped_total", "p95_ms",
                                          "shutdown"])
        w.writeheader()
        w.writerows(rows)
    res = {"cmd": " ".join(cmd), "rc": rc, "samples": len(rows), "csv": csv_path}
    if summary:
        res.update(frames=summary["frames_total"], duration_s=summary["duration_s"],
                   inference_fps=summary["inference_fps"], dropped_total=summary["dropped_total"],
                   bad_frames_total=summary["bad_frames_total"])
        res["accounting"] = frame_accounting(summary)
    else:
        res["accounting"] = {"ok": False, "why": "no summary from the app"}
    # the drift is measured while the app runs: the last record, written at shutdown after
    # the threads stopped and the source was released, is in the CSV but not in the drift
    running = [r for r in rows if not r["shutdown"]]
    rss = [r["rss_mb"] for r in running if r["rss_mb"] is not None]
    if len(rss) >= 3:
        k = min(max(1, int(len(rss) * warmup)), len(rss) - 1)
        base = rss[k]
        after = rss[k:]
        res.update(rss_start_mb=rss[0], rss_after_warmup_mb=base, rss_end_mb=rss[-1],
                   rss_max_after_warmup_mb=max(after),
                   rss_drift_pct=round(100.0 * (rss[-1] - base) / base, 2),
                   rss_max_drift_pct=round(100.0 * (max(after) - base) / base, 2),
                   rss_min_drift_pct=round(100.0 * (min(after) - base) / base, 2))
        res["flat"] = (abs(res["rss_drift_pct"]) <= limit_pct
                       and res["rss_max_drift_pct"] <= limit_pct
                       and res["rss_min_drift_pct"] >= -limit_pct)
    else:
        res["flat"] = None
        res["why"] = "too few samples (%d); stderr: %s" % (len(rss), err[-500:])
    if rc != 0:
        res["stderr"] = err[-2000:]
    if png_path:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            res["png"] = None
            res["png_why"] = "matplotlib not installed"
        else:
            fig, ax = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
            t = [r["t_s"] for r in running]
            ax[0].plot(t, [r["rss_mb"] for r in running])
            if "rss_after_warmup_mb" in res:
                ax[0].axhline(res["rss_after_warmup_mb"], color="grey", lw=0.8, ls="--",
                              label="after warm-up")
                ax[0].legend()
            ax[0].set_ylabel("RSS (MB)")
            ax[1].plot(t, [r["inference_fps"] for r in running], label="inference")
            ax[1].plot(t, [r["capture_fps"] for r in running], label="capture", alpha=0.7)
            ax[1].set_ylabel("fps")
            ax[1].legend()
            ax[2].plot(t, [r["dropped_total"] for r in running])
            ax[2].set_ylabel("dropped (total)")
            ax[2].set_xlabel("time (s)")
            title = "app soak: %s" % os.path.basename(source)
            if "frames" in res:
                title += ", %d frames in %.0f s" % (res["frames"], res["duration_s"])
            if "rss_drift_pct" in res:
                title += ", RSS drift %+.2f%%" % res["rss_drift_pct"]
            fig.suptitle(title)
            fig.tight_layout()
            fig.savefig(png_path, dpi=80)
            plt.close(fig)
            res["png"] = png_path
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--source", help="clip (default: the bundled sample)")
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--csv", default="soak.csv")
    ap.add_argument("--png", default=None)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--limit-pct", type=float, default=5.0)
    ap.add_argument("--realtime", action="store_true", help="pace the clip like a camera")
    a = ap.parse_args(argv)
    from bnn_camera import DEFAULT_MODEL
    from bnn_camera.sources import bundled_sample
    model = a.model or DEFAULT_MODEL
    if not os.path.isfile(model):
        if a.model:
            raise SystemExit("model not found: %s" % model)
        from bnn_camera.testmodel import write_synthetic_detector
        model = write_synthetic_detector(os.path.join(tempfile.mkdtemp(prefix="bnn-soak-"),
                                                      "synthetic.bnn"))
        sys.stderr.write("soak: %s missing; using a synthetic detector\n" % DEFAULT_MODEL)
    res = run_soak(model, a.source or bundled_sample(), a.frames, a.csv, a.png, a.threads,
                   a.warmup, a.limit_pct, realtime=a.realtime)
    res["model"] = model
    acc = res["accounting"]
    if acc.get("ok"):
        sys.stderr.write("soak: frames captured %d = processed %d + dropped %d + bad %d + "
                         "discarded at stop %d\n" % (acc["captured"], acc["processed"],
                                                      acc["dropped"], acc["bad"],
                                                      acc["discarded_at_stop"]))
    else:
        sys.stderr.write("soak: FRAME ACCOUNTING FAILED: %s\n" % json.dumps(acc))
    print(json.dumps(res, indent=2))
    return 0 if res.get("flat") and res["rc"] == 0 and acc.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
