"""python -m bnn_camera.plot events.jsonl -o run.png: a run of the app over time, from its
--out event log (docs/events.md): fps, latency p50/p95, power (measured, or estimated and
labelled so) and detections.  Runs on the PC (matplotlib, imported only here); the
rotated files of one run can be given together (events.jsonl.2 events.jsonl.1 events.jsonl).
"""

import argparse
import json
import sys

__all__ = ["read_events", "plot_run", "main"]


def read_events(paths):
    """The stats records and the summary of JSON-lines event logs, in time order.
    A line that is not JSON (a file cut by a crash) is skipped and counted."""
    stats, summary, bad = [], None, 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if not isinstance(rec, dict):
                    bad += 1
                elif rec.get("type") == "stats":
                    stats.append(rec)
                elif rec.get("type") == "summary":
                    summary = rec
    stats.sort(key=lambda r: r.get("time", 0))
    return stats, summary, bad


def _power_series(stats):
    """(label, watts, mJ/frame) lists: measured where any record measured, else the
    estimate with its model -- never the two mixed in one series."""
    if any(r.get("power") is not None for r in stats):
        src = next(r.get("power_source") for r in stats if r.get("power") is not None)
        return ("measured (%s)" % src, [r.get("power") for r in stats],
                [r.get("energy_mj_per_frame") for r in stats])
    est = [r.get("power_estimated") or {} for r in stats]
    models = sorted({e["model"] for e in est if e.get("model")})
    if models:
        return ("ESTIMATED from CPU time (model %s)" % ", ".join(models),
                [e.get("watts") for e in est], [e.get("mj_per_frame") for e in est])
    return None, [], []


def _nan(xs):
    return [float("nan") if x is None else x for x in xs]


def plot_run(stats, out, title=None):
    """Writes the figure (PNG/SVG/PDF by the name) of the stats records to ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not stats:
        raise ValueError("no stats records to plot")
    t0 = stats[0]["time"]
    t = [r["time"] - t0 for r in stats]
    lat = [r.get("latency_ms") or {} for r in stats]
    plabel, watts, mj = _power_series(stats)
    fig, ax = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    ax[0].plot(t, [r.get("inference_fps") for r in stats], label="inference")
    ax[0].plot(t, [r.get("capture_fps") for r in stats], label="capture", alpha=0.7)
    ax[0].set_ylabel("frames / s")
    ax[1].plot(t, _nan([x.get("p50") for x in lat]), label="p50")
    ax[1].plot(t, _nan([x.get("p95") for x in lat]), label="p95")
    ax[1].set_ylabel("latency (ms)")
    if plabel:
        ax[2].plot(t, _nan(watts), label=plabel, ls="-" if plabel.startswith("measured")
                   else "--")
        ax2 = ax[2].twinx()
        ax2.plot(t, _nan(mj), color="tab:red", alpha=0.6, label="mJ / frame")
        ax2.set_ylabel("mJ / frame")
        ax2.set_ylim(bottom=0)
        ax[2].set_ylim(bottom=0)
        ax2.legend(loc="lower right", fontsize=8)
    else:
        reason = next((r.get("power_reason") for r in stats if r.get("power_reason")), "")
        import textwrap
        ax[2].text(0.5, 0.5, textwrap.fill("no power figures: %s" % (reason or "none in the "
                                                                      "log"), 100),
                   ha="center", va="center", transform=ax[2].transAxes, fontsize=8)
    ax[2].set_ylabel("power (W)")
    steps = sorted(r.get("interval_s") or 1.0 for r in stats)
    ax[3].bar(t, [r.get("detections", 0) for r in stats], width=0.8 * steps[len(steps) // 2],
              label="detections per report")
    ax[3].set_ylabel("detections")
    ax[3].set_xlabel("time since the first report (s)")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(loc="upper right", fontsize=8)
        a.grid(alpha=0.3)
    fig.suptitle(title or "bnn_camera run: %d reports over %.0f s" % (len(stats), t[-1]))
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bnn_camera.plot",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("events", nargs="+", help="--out event log(s) of one run, oldest first")
    ap.add_argument("-o", "--out", default="run.png", help="the figure (default run.png)")
    ap.add_argument("--title", help="the figure's title")
    a = ap.parse_args(argv)
    try:
        stats, summary, bad = read_events(a.events)
        plot_run(stats, a.out, a.title)
    except (OSError, ValueError) as e:
        sys.stderr.write("plot: %s\n" % e)
        return 1
    sys.stderr.write("plot: %d stats records%s -> %s\n" % (
        len(stats), " (%d unreadable lines skipped)" % bad if bad else "", a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
