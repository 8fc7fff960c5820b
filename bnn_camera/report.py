"""Counters, the once-a-second report and the final summary.

Every report is a dict (one JSON line); its fields:

    type                 "stats" (each second) or "summary" (at exit)
    time                 wall-clock time, seconds since the epoch
    uptime_s             seconds since start
    capture_fps          frames read from the source per second (this interval)
    inference_fps        frames through the detector per second (this interval)
    latency_ms           {"p50", "p95"}: capture -> detections out, end to end (interval)
    dropped, dropped_total        frames dropped because inference lagged
    bad_frames_total     unusable frames skipped (corrupt, wrong shape, detector error)
    frames_total         frames through the detector
    captured_total       frames read from the source; every one ends up in exactly one of
                         frames_total, dropped_total, bad_frames_total or (summary only)
                         discarded_at_stop: frames still queued when the run stopped
    detections, detections_total  objects detected (interval, total)
    power                mean power in W over the interval, MEASURED; null when no sensor
    power_source         "pmic" | "hwmon" | "rapl" | null
    power_reason         why power is null (null otherwise)
    energy_mj_per_frame  power x interval / frames of the interval (null without power)
    power_estimated      null, or where nothing measures and --power-model names a board:
                         an ESTIMATE from CPU time {"model", "watts", "app_watts",
                         "mj_per_frame", "cpu_util", "app_cpu_util"} (never in "power")
    cpu_temp_c           /sys/class/thermal/thermal_zone0 (null if absent)
    throttled            vcgencmd get_throttled parsed (null off a Pi)
    rss_mb               resident memory of this process
    source_state         "starting" | "running" | "reconnecting" | "ended" | "failed"
    reconnects           times the source was reopened after a loss
    source, source_kind  the live source: its path / device / URL, and picamera2 | v4l2 |
                         stream | file | dir | memory (added by the pipeline)
"""

import bisect
import json
import random
import threading
import time

SOURCE_STATES = ("starting", "running", "reconnecting", "ended", "failed")

__all__ = ["Stats", "SOURCE_STATES", "rss_mb", "percentile", "format_line", "format_summary"]


def rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:
        return None


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Stats:
    """Thread-safe counters; ``interval()`` returns and resets the per-second part.
    Memory is bounded: whole-run latencies are a fixed-size reservoir sample."""

    RESERVOIR = 8192
    # upper bounds (s) of the whole-run latency histogram (Prometheus bnn_latency_seconds)
    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self):
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.captured = 0
        self.frames = 0
        self.dropped = 0
        self.bad_frames = 0
        self.discarded = 0
        self.detections = 0
        self.reconnects = 0
        self.joules = 0.0
        self.power_frames = 0
        self.power_seconds = 0.0
        self.est_joules = 0.0   # estimated (PowerEstimator), kept apart from the measured
        self.est_frames = 0
        self.est_seconds = 0.0
        self.est_model = None
        self.source_state = "starting"
        self.last_error = None
        self.last_frame_t = None
        self._i_captured = self._i_frames = self._i_dropped = self._i_det = 0
        self._i_lat = []
        self._all_lat = []
        self._n_lat = 0
        self.latency_counts = [0] * (len(self.LATENCY_BUCKETS) + 1)  # per bucket, +Inf last
        self.latency_sum = 0.0
        self._i_t = self.t0
        self._rng = random.Random(0)

    # ---- producers ----
    def on_capture(self):
        with self._lock:
            self.captured += 1
            self._i_captured += 1

    def on_drop(self, n=1):
        with self._lock:
            self.dropped += n
            self._i_dropped += n

    def on_discard(self, n=1):
        """Captured frames that were never processed because the run stopped."""
        with self._lock:
            self.discarded += n

    def on_bad(self, why=None):
        with self._lock:
            self.bad_frames += 1
            if why:
                self.last_error = str(why)

    def on_frame(self, latency_s, n_det):
        ms = latency_s * 1000.0
        with self._lock:
            self.frames += 1
            self._i_frames += 1
            self.detections += n_det
            self._i_det += n_det
            self.last_frame_t = time.monotonic()
            if len(self._i_lat) < 100000:
                self._i_lat.append(ms)
            self._n_lat += 1
            self.latency_sum += latency_s
            self.latency_counts[bisect.bisect_left(self.LATENCY_BUCKETS, latency_s)] += 1
            if len(self._all_lat) < self.RESERVOIR:
                self._all_lat.append(ms)
            else:
                j = self._rng.randrange(self._n_lat)
                if j < self.RESERVOIR:
                    self._all_lat[j] = ms

    def latency_histogram(self):
        """The whole run's latencies: ([(upper bound s, cumulative count)], sum s, count);
        the last bound is inf."""
        with self._lock:
            counts, total = list(self.latency_counts), self.latency_sum
        cum, out = 0, []
        for le, n in zip(self.LATENCY_BUCKETS + (float("inf"),), counts):
            cum += n
            out.append((le, cum))
        return out, total, cum

    def set_state(self, state, error=None):
        with self._lock:
            if state == "running" and self.source_state == "reconnecting":
                self.reconnects += 1
            self.source_state = state
            if error:
                self.last_error = str(error)

    # ---- the reporter ----
    def interval(self, power_sample=None, power_meter=None, temp_c=None, throttled=None,
                 estimate=None):
        """The stats record of the interval since the previous call (and resets it).
        estimate: a PowerEstimator.sample() (or None)."""
        now = time.monotonic()
        with self._lock:
            dt = max(now - self._i_t, 1e-9)
            rec = {
                "type": "stats",
                "time": round(time.time(), 3),
                "uptime_s": round(now - self.t0, 3),
                "interval_s": round(dt, 3),
                "capture_fps": round(self._i_captured / dt, 2),
                "inference_fps": round(self._i_frames / dt, 2),
                "latency_ms": {"p50": _r(percentile(self._i_lat, 50)),
                               "p95": _r(percentile(self._i_lat, 95))},
                "dropped": self._i_dropped,
                "dropped_total": self.dropped,
                "bad_frames_total": self.bad_frames,
                "frames_total": self.frames,
                "captured_total": self.captured,
                "detections": self._i_det,
                "detections_total": self.detections,
            }
            frames = self._i_frames
            self._i_captured = self._i_frames = self._i_dropped = self._i_det = 0
            self._i_lat = []
            self._i_t = now
            if power_sample is not None and power_sample.joules is not None:
                self.joules += power_sample.joules
                self.power_seconds += power_sample.seconds
                self.power_frames += frames
            if estimate is not None:
                self.est_joules += estimate["joules"]
                self.est_seconds += estimate["seconds"]
                self.est_frames += frames
                self.est_model = estimate["model"]
            state, reconnects, err = self.source_state, self.reconnects, self.last_error
        _power_fields(rec, power_sample, power_meter, frames)
        rec["power_estimated"] = None if estimate is None else {
            "model": estimate["model"], "watts": _r(estimate["watts"], 3),
            "app_watts": _r(estimate["app_watts"], 3),
            "mj_per_frame": _r(1000.0 * estimate["joules"] / frames) if frames else None,
            "cpu_util": _r(estimate["cpu_util"], 3),
            "app_cpu_util": _r(estimate["app_cpu_util"], 3)}
        rec["cpu_temp_c"] = temp_c
        rec["throttled"] = throttled
        rec["rss_mb"] = _r(rss_mb())
        rec["source_state"] = state
        rec["reconnects"] = reconnects
        if err:
            rec["last_error"] = err
        return rec

    def summary(self, power_meter=None, temp_c=None, throttled=None, extra=None):
        now = time.monotonic()
        with self._lock:
            dur = max(now - self.t0, 1e-9)
            rec = {
                "type": "summary",
                "time": round(time.time(), 3),
                "duration_s": round(dur, 3),
                "frames_total": self.frames,
                "captured_total": self.captured,
                "capture_fps": round(self.captured / dur, 2),
                "inference_fps": round(self.frames / dur, 2),
                "latency_ms": {"p50": _r(percentile(self._all_lat, 50)),
                               "p95": _r(percentile(self._all_lat, 95))},
                "dropped_total": self.dropped,
                "bad_frames_total": self.bad_frames,
                "discarded_at_stop": self.discarded,
                "detections_total": self.detections,
                "reconnects": self.reconnects,
                "source_state": self.source_state,
            }
            if self.power_seconds > 0:
                rec["power"] = _r(self.joules / self.power_seconds, 3)
                rec["energy_j"] = _r(self.joules, 3)
                rec["energy_mj_per_frame"] = (_r(1000.0 * self.joules / self.power_frames)
                                              if self.power_frames else None)
            else:
                rec["power"] = None
                rec["energy_mj_per_frame"] = None
            rec["power_estimated"] = None if not self.est_seconds else {
                "model": self.est_model, "watts": _r(self.est_joules / self.est_seconds, 3),
                "energy_j": _r(self.est_joules, 3),
                "mj_per_frame": (_r(1000.0 * self.est_joules / self.est_frames)
                                 if self.est_frames else None)}
            if self.last_error:
                rec["last_error"] = self.last_error
        desc = power_meter.describe() if power_meter is not None else {"source": None,
                                                                      "reason": "not measured"}
        rec["power_source"] = desc.get("source")
        rec["power_scope"] = desc.get("scope")
        rec["power_reason"] = None if rec["power"] is not None else desc.get("reason") or \
            "no power reading was completed"
        rec["cpu_temp_c"] = temp_c
        rec["throttled"] = throttled
        rec["rss_mb"] = _r(rss_mb())
        if extra:
            rec.update(extra)
        return rec


def _r(x, nd=2):
    return None if x is None else round(float(x), nd)


def _power_fields(rec, sample, meter, frames):
    if sample is not None and sample.watts is not None:
        rec["power"] = _r(sample.watts, 3)
        rec["power_source"] = meter.source if meter is not None else None
        rec["power_reason"] = None
        rec["energy_mj_per_frame"] = (_r(1000.0 * sample.joules / frames)
                                      if sample.joules is not None and frames else None)
    else:
        rec["power"] = None
        rec["power_source"] = None
        if meter is None:
            rec["power_reason"] = "not measured"
        elif not meter.available:
            rec["power_reason"] = meter.reason
        else:
            rec["power_reason"] = meter.reason or "first reading (power is a mean over an interval)"
        rec["energy_mj_per_frame"] = None


def _f(x, fmt="%.1f", none="-"):
    return none if x is None else fmt % x


def format_line(rec):
    """A stats record as one human-readable line (for a terminal)."""
    lat = rec.get("latency_ms") or {}
    parts = [
        "%6.1fs" % rec.get("uptime_s", 0),
        "cap %5.1f fps" % rec["capture_fps"],
        "inf %5.1f fps" % rec["inference_fps"],
        "lat p50 %s p95 %s ms" % (_f(lat.get("p50"), "%.0f"), _f(lat.get("p95"), "%.0f")),
        "drop %d" % rec.get("dropped_total", 0),
        "det %d" % rec.get("detections", 0),
    ]
    if rec.get("power") is not None:
        parts.append("%.2f W (%s) %s mJ/frame" % (rec["power"], rec.get("power_source"),
                                                  _f(rec.get("energy_mj_per_frame"), "%.0f")))
    elif rec.get("power_estimated"):
        e = rec["power_estimated"]
        parts.append("~%.2f W ESTIMATED (%s) %s mJ/frame" % (
            e["watts"], e["model"], _f(e.get("mj_per_frame"), "%.0f")))
    else:
        parts.append("power n/a")
    if rec.get("cpu_temp_c") is not None:
        parts.append("%.1f C" % rec["cpu_temp_c"])
    th = rec.get("throttled")
    if th and th.get("now"):
        parts.append("THROTTLED: " + ",".join(th["now"]))
    if rec.get("source_state") not in (None, "running"):
        parts.append("[%s]" % rec["source_state"])
    return " | ".join(parts)


def format_summary(rec):
    lat = rec.get("latency_ms") or {}
    lines = [
        "---- summary ----",
        "frames            %d in %.1f s (captured %d, dropped %d, bad %d)" % (
            rec["frames_total"], rec["duration_s"], rec["captured_total"],
            rec["dropped_total"], rec["bad_frames_total"]),
        "capture fps       %.2f" % rec["capture_fps"],
        "inference fps     %.2f" % rec["inference_fps"],
        "latency           p50 %s ms, p95 %s ms" % (_f(lat.get("p50")), _f(lat.get("p95"))),
        "detections        %d" % rec["detections_total"],
    ]
    if rec.get("power") is not None:
        lines.append("power             %.3f W mean, measured by %s (%s)" % (
            rec["power"], rec.get("power_source"), rec.get("power_scope") or ""))
        lines.append("energy            %s mJ/frame" % _f(rec.get("energy_mj_per_frame"), "%.1f"))
    else:
        lines.append("power             not measured: %s" % rec.get("power_reason"))
    e = rec.get("power_estimated")
    if e:
        lines.append("estimated power   ~%.3f W mean, %s mJ/frame: an ESTIMATE from CPU time "
                     "(model %s), not a measurement" % (e["watts"], _f(e.get("mj_per_frame"),
                                                                       "%.1f"), e["model"]))
    if rec.get("cpu_temp_c") is not None:
        lines.append("cpu temperature   %.1f C" % rec["cpu_temp_c"])
    th = rec.get("throttled")
    if th is not None:
        lines.append("throttling        %s (now: %s; since boot: %s)" % (
            th.get("raw"), ",".join(th.get("now") or []) or "none",
            ",".join(th.get("occurred") or []) or "none"))
    if rec.get("reconnects"):
        lines.append("reconnects        %d" % rec["reconnects"])
    if rec.get("last_error"):
        lines.append("last error        %s" % rec["last_error"])
    if rec.get("stopped_by"):
        lines.append("stopped by        %s%s" % (rec["stopped_by"], " during " +
                                                 rec["stopped_during"]
                                                 if rec.get("stopped_during") else ""))
    if rec.get("error"):
        lines.append("ERROR             %s" % rec["error"])
    if rec.get("rss_mb") is not None:
        lines.append("memory (RSS)      %.1f MB" % rec["rss_mb"])
    return "\n".join(lines)


def dumps(rec):
    return json.dumps(rec, separators=(",", ":"), allow_nan=False)
