"""The pipeline: a capture thread -> a bounded queue -> an inference thread -> sinks, and a
reporter thread that emits a stats record every second.  Nothing busy-waits: threads
block on conditions/events with timeouts.

Live sources (cameras, streams, files with --realtime) never wait: when the queue is full
the oldest frame is dropped and counted.  Files are read at inference speed (the capture
thread waits for room), so every frame is processed.
"""

import collections
import threading
import time

from . import report
from .sinks import Sink, _ErrorLog, detections_list, stderr_log
from .sources import EndOfStream, SourceError, SourceLost, as_bgr

__all__ = ["FrameQueue", "Closed", "Pipeline"]


class Closed(Exception):
    """The queue is closed and empty."""


class FrameQueue:
    def __init__(self, maxsize=2):
        self.maxsize = max(1, int(maxsize))
        self._q = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put_drop_oldest(self, item):
        """Never blocks; returns how many old items were dropped to make room."""
        with self._cond:
            dropped = 0
            while len(self._q) >= self.maxsize:
                self._q.popleft()
                dropped += 1
            self._q.append(item)
            self._cond.notify()
            return dropped

    def put_wait(self, item, stop_event, poll=0.5):
        """Blocks until there is room (or the stop event / close); True when queued."""
        with self._cond:
            while len(self._q) >= self.maxsize:
                if self._closed or stop_event.is_set():
                    return False
                self._cond.wait(poll)
            self._q.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout=0.5):
        """The oldest item; None after the timeout; raises Closed when closed and empty."""
        with self._cond:
            if not self._q:
                if self._closed:
                    raise Closed()
                self._cond.wait(timeout)
                if not self._q:
                    if self._closed:
                        raise Closed()
                    return None
            item = self._q.popleft()
            self._cond.notify_all()
            return item

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self):
        """Empties the queue; returns how many items it held."""
        with self._cond:
            n = len(self._q)
            self._q.clear()
            self._cond.notify_all()
            return n

    def __len__(self):
        with self._cond:
            return len(self._q)


class _Emit(Sink):
    """``emit``: a function that gets each stats record and the summary (the CLI: stdout)."""

    name = "stdout"

    def __init__(self, fn):
        self.on_stats = fn
        self._finish = getattr(fn, "finish", None)

    def finish(self):
        return self._finish() if self._finish is not None else {}


SINK_ATTRS = ("name", "on_detections", "on_frame", "on_stats", "status", "finish", "close")


class Pipeline:
    """Runs a Detector on a Source.  ``emit(rec)`` receives each stats record (and the
    summary); ``sinks``: a list of sinks (the protocol: bnn_camera.sinks.Sink -- EventLog,
    SnapshotSink, MqttSink, FrameHub), called in that order, each stats record holding
    their status() under their name.  shutdown() finishes them (finish()); closing them
    is for whoever opened them (the CLI)."""

    MAX_DETECTOR_ERRORS = 50  # in a row: the model is broken, stop (loudly)
    MAX_BAD_IN_ROW = 100  # unusable frames in a row: the source is broken (see _capture)

    def __init__(self, detector, source, max_frames=None, queue_size=2, power_meter=None,
                 report_interval=1.0, emit=None, sinks=(), backoff=(0.5, 10.0), vcgencmd="",
                 sys_root="/", log=None, power_estimator=None, detection_filter=None):
        self.detector = detector
        self.class_names = list(getattr(detector, "class_names", []) or [])
        self.source = source
        self.max_frames = max_frames
        self.queue = FrameQueue(queue_size)
        self.power_meter = power_meter
        self.power_estimator = power_estimator  # firmware_py.power.PowerEstimator or None
        self.report_interval = report_interval
        self.emit = emit
        self.detection_filter = detection_filter  # (result, frame) -> result: bnn_camera.zones
        for sink in sinks:
            missing = [a for a in SINK_ATTRS if not hasattr(sink, a)]
            if missing:
                raise TypeError("%r is not a sink (bnn_camera.sinks.Sink): no %s"
                                % (sink, ", ".join(missing)))
        self.sinks = ([_Emit(emit)] if emit is not None else []) + list(sinks)
        self._want_record = any(getattr(s, "wants_record", False) for s in self.sinks)
        self.backoff = backoff
        self.vcgencmd = vcgencmd
        self.sys_root = sys_root
        self.stats = report.Stats()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.fatal = None
        self.last_stats = None
        self.summary = None
        self._threads = []
        self._capture_done = threading.Event()
        self._infer_done = threading.Event()
        self._log = log if log is not None else stderr_log
        self._down_since = None  # the source is away since (monotonic), see _source_down
        self._down_tries = 0
        self._down_logged = 0.0
        self._report_errors = _ErrorLog("reports", None)  # reporter thread, shutdown
        self._sink_errors = _ErrorLog("sinks", None)  # inference thread

    # ---- threads ------------------------------------------------------------------------
    def _capture(self):
        """Reads the source into the queue.  It never spins: every way a source can stop
        making progress ends in a wait or an end, with a state and a log line --

        * a source that cannot be opened: a live one (camera, stream) and a looped file
          that was open before (moved or replaced: it may come back) are retried with
          exponential backoff (``reconnecting``); any other source ``failed``;
        * a source that is lost while reading (SourceLost: unplugged, the stream dropped,
          a looped file that cannot be reopened): the same;
        * ``MAX_BAD_IN_ROW`` unusable frames in a row (every read raises or returns
          garbage): a live or looped source is treated as lost (reopened with backoff),
          any other ``failed``;
        * a bad frame in between good ones is skipped and counted (``bad_frames_total``)."""
        src, st, q = self.source, self.stats, self.queue
        delay = self.backoff[0]
        opened = ever_opened = False
        bad_in_row = 0
        seq = 0
        try:
            while not self.stop_event.is_set():
                retry = src.reconnect or (src.loop and ever_opened)
                if not opened:
                    try:
                        src.open()
                    except SourceError as e:
                        if not retry:  # a file / directory: nothing to wait for
                            self._source_failed(e)
                            return
                        self._source_down(e, delay)
                        self.stop_event.wait(delay)
                        delay = min(delay * 2, self.backoff[1])
                        continue
                    opened = ever_opened = True
                    bad_in_row = 0
                    self._source_up()
                try:
                    frame = src.read()
                except EndOfStream:
                    st.set_state("ended")
                    return
                except (SourceLost, SourceError) as e:
                    if not retry:
                        self._source_failed(e)
                        return
                    self._source_down(e, delay)
                    self._close_source()
                    opened = False
                    self.stop_event.wait(delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
                except Exception as e:  # a decoder error on one frame: a bad frame
                    st.on_capture()
                    st.on_bad(e)
                    bad_in_row += 1
                else:
                    t_cap = time.monotonic()
                    st.on_capture()
                    frame = as_bgr(frame)
                    if frame is None:
                        st.on_bad("unusable frame (not a BGR/gray uint8 image)")
                        bad_in_row += 1
                    else:
                        bad_in_row = 0
                if bad_in_row:
                    if bad_in_row >= self.MAX_BAD_IN_ROW:
                        why = "%d unusable frames in a row (last: %s)" % (bad_in_row,
                                                                          st.last_error)
                        if not (src.reconnect or src.loop or src.live):
                            self._source_failed(why)
                            return
                        self._source_down(why, delay)  # no progress: back off, reopen
                        self._close_source()
                        opened = False
                        self.stop_event.wait(delay)
                        delay = min(delay * 2, self.backoff[1])
                    continue
                delay = self.backoff[0]
                seq += 1
                item = (seq, t_cap, frame)
                if src.live:
                    n = q.put_drop_oldest(item)
                    if n:
                        st.on_drop(n)
                elif not q.put_wait(item, self.stop_event):
                    st.on_discard(1)  # stopping: the frame in hand is not processed
                    return
        except BaseException as e:  # never die silently
            self.fatal = self.fatal or "capture thread: %s: %s" % (type(e).__name__, e)
            st.set_state("failed", e)
            self._log("source %s failed: capture thread: %s: %s" % (src.name,
                                                                   type(e).__name__, e))
            raise
        finally:
            self._close_source()
            q.close()
            self._capture_done.set()

    def _close_source(self):
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing a broken source
            pass

    def _source_failed(self, why):
        self.stats.set_state("failed", why)
        self.fatal = self.fatal or "source: %s" % why
        self._log("source %s failed: %s" % (self.source.name, why))

    def _source_down(self, why, delay):
        """The source is away (reconnecting): logged when it goes away, then at most once
        a minute while it stays away ("still ..."), and when it is back (_source_up)."""
        self.stats.set_state("reconnecting", why)
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self._down_tries = now, 0
            self._down_logged = now
            self._log("source %s: %s; reconnecting (backoff %g .. %g s)"
                      % (self.source.name, why, self.backoff[0], self.backoff[1]))
        elif now - self._down_logged >= 60.0:
            self._down_logged = now
            self._log("source %s: still reconnecting after %.0f s (%d tries): %s"
                      % (self.source.name, now - self._down_since, self._down_tries, why))
        self._down_tries += 1

    def _source_up(self):
        self.stats.set_state("running")
        if self._down_since is not None:
            self._log("source %s: running again after %.1f s (%d tries)"
                      % (self.source.name, time.monotonic() - self._down_since,
                         self._down_tries))
            self._down_since = None

    def _inference(self):
        st, det = self.stats, self.detector
        errors_in_row = 0
        try:
            while not self.stop_event.is_set():
                try:
                    item = self.queue.get(0.5)
                except Closed:
                    return
                if item is None:
                    continue
                seq, t_cap, frame = item
                try:
                    res = det.detect(frame)
                    if self.detection_filter is not None:
                        res = self.detection_filter(res, frame)
                except Exception as e:
                    st.on_bad("detector: %s: %s" % (type(e).__name__, e))
                    errors_in_row += 1
                    if errors_in_row >= self.MAX_DETECTOR_ERRORS:
                        self.fatal = "detector failed %d times in a row: %s" % (errors_in_row, e)
                        return
                    continue
                errors_in_row = 0
                n = len(res.scores)
                if n:
                    rec = None
                    if self._want_record:
                        rec = {"type": "detections", "time": round(time.time(), 3),
                               "frame": seq, "source": self.source.name,
                               "latency_ms": round((time.monotonic() - t_cap) * 1000.0, 2),
                               "detections": detections_list(res, self.class_names)}
                    self._each(self._sink_errors, "on_detections", seq, frame, res, rec)
                self._each(self._sink_errors, "on_frame", seq, frame, res)
                st.on_frame(time.monotonic() - t_cap, n)
                if self.max_frames and st.frames >= self.max_frames:
                    return
        except BaseException as e:  # never die silently
            self.fatal = "inference thread: %s: %s" % (type(e).__name__, e)
            raise
        finally:
            self._infer_done.set()
            self.done.set()

    def _sensors(self):
        from firmware_py import power
        temp = power.read_cpu_temp_c(self.sys_root)
        thr = power.read_throttled(self.vcgencmd) if self.vcgencmd else None
        return temp, thr

    def _stats_record(self):
        sample = self.power_meter.sample() if self.power_meter is not None else None
        est = self.power_estimator.sample() if self.power_estimator is not None else None
        temp, thr = self._sensors()
        rec = self.stats.interval(sample, self.power_meter, temp, thr, est)
        rec.update(self.source_info())
        self._sink_status(rec)
        self.last_stats = rec
        return rec

    def source_info(self):
        """The live source in every stats record and the summary: ``source`` (its path,
        device or URL) and ``source_kind`` (picamera2, v4l2, stream, file, dir, memory)."""
        return {"source": self.source.name, "source_kind": self.source.kind}

    def _each(self, errors, method, *args):
        """Calls ``sink.method(*args)`` on every sink, in order: one failing sink never
        stops the others (nor the thread).  A sink that raises is counted and logged,
        rate-limited, in ``errors`` (an _ErrorLog; one per thread).  Returns
        [(sink, ok, the result or "Error: message")]."""
        out = []
        for sink in self.sinks:
            try:
                out.append((sink, True, getattr(sink, method)(*args)))
            except Exception as e:  # noqa: BLE001 - one sink must not stop the others
                why = "%s: %s" % (type(e).__name__, e)
                who = getattr(sink, "label", None) or sink.name
                if not method.startswith("on_"):  # status, finish
                    who = "%s %s()" % (who, method)
                errors.failed("%s: %s" % (who, why))
                out.append((sink, False, why))
        return out

    def _sink_status(self, rec):
        """The sinks' health (write failures, broker connection) in a stats record."""
        for sink, ok, status in self._each(self._report_errors, "status"):
            if not ok:
                rec[sink.name] = {"error": status}
            elif status is not None:
                rec[sink.name] = status

    def _publish(self, rec):
        """Hands a stats record or the summary to every sink (stdout first)."""
        self._each(self._report_errors, "on_stats", rec)

    def _reporter(self):
        try:
            if self.power_meter is not None:
                self.power_meter.sample()  # the start of the first interval
            if self.power_estimator is not None:
                self.power_estimator.sample()
        except Exception as e:  # noqa: BLE001
            self._report_errors.failed("power meter: %s: %s" % (type(e).__name__, e))
        while not self.done.wait(self.report_interval):
            try:
                rec = self._stats_record()
            except Exception as e:  # noqa: BLE001 - the reports must go on
                self._report_errors.failed("stats record: %s: %s" % (type(e).__name__, e))
                continue
            self._publish(rec)

    # ---- control ------------------------------------------------------------------------
    def start(self):
        for name, fn in (("capture", self._capture), ("inference", self._inference),
                         ("reporter", self._reporter)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def request_stop(self):
        self.stop_event.set()
        self.done.set()

    def wait(self, timeout=None):
        """Blocks (in slices, so signal handlers run) until the run is done."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.done.wait(0.5):
            if end is not None and time.monotonic() >= end:
                return False
        return True

    def shutdown(self, join_timeout=5.0, extra=None):
        """Stops the threads, emits the last interval and the summary; returns it."""
        self.stop_event.set()
        self.done.set()
        self.queue.close()
        for t in self._threads:
            t.join(join_timeout)
        left = self.queue.drain()  # captured but never processed (the run stopped)
        if left:
            self.stats.on_discard(left)
        rec = self._stats_record()
        self._publish(rec)
        temp, thr = self._sensors()
        extra = dict(extra or {}, **self.source_info())
        if self.fatal:
            extra["error"] = self.fatal
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            extra["threads_not_stopped"] = alive
        for sink, ok, more in self._each(self._report_errors, "finish"):
            if ok and more:
                extra.update(more)
        self.summary = self.stats.summary(self.power_meter, temp, thr, extra)
        self._publish(self.summary)
        return self.summary  # closing the sinks is for whoever opened them (the CLI)

    def run(self):
        self.start()
        self.wait()
        return self.shutdown()
