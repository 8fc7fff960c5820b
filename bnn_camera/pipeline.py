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
from .sinks import _ErrorLog, detections_list
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


class Pipeline:
    """Runs a Detector on a Source.  ``emit(rec)`` receives each stats record (and the
    summary); sinks: ``events`` (EventLog), ``snapshots`` (SnapshotSink), ``hub``
    (FrameHub for HTTP), ``mqtt`` (MqttSink)."""

    MAX_DETECTOR_ERRORS = 50  # in a row: the model is broken, stop (loudly)

    def __init__(self, detector, source, max_frames=None, queue_size=2, power_meter=None,
                 report_interval=1.0, emit=None, events=None, snapshots=None, hub=None,
                 mqtt=None, backoff=(0.5, 10.0), vcgencmd="", sys_root="/"):
        self.detector = detector
        self.class_names = list(getattr(detector, "class_names", []) or [])
        self.source = source
        self.max_frames = max_frames
        self.queue = FrameQueue(queue_size)
        self.power_meter = power_meter
        self.report_interval = report_interval
        self.emit = emit
        self.events = events
        self.snapshots = snapshots
        self.hub = hub
        self.mqtt = mqtt
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
        self._report_errors = _ErrorLog("reports", None)

    # ---- threads ------------------------------------------------------------------------
    def _capture(self):
        src, st, q = self.source, self.stats, self.queue
        delay = self.backoff[0]
        opened = False
        seq = 0
        try:
            while not self.stop_event.is_set():
                if not opened:
                    try:
                        src.open()
                        opened = True
                        st.set_state("running")
                    except SourceError as e:
                        if not src.reconnect:  # a file / directory: nothing to wait for
                            st.set_state("failed", e)
                            self.fatal = self.fatal or "source: %s" % e
                            return
                        st.set_state("reconnecting", e)
                        self.stop_event.wait(delay)
                        delay = min(delay * 2, self.backoff[1])
                        continue
                try:
                    frame = src.read()
                except EndOfStream:
                    st.set_state("ended")
                    return
                except (SourceLost, Exception) as e:
                    if src.reconnect:
                        st.set_state("reconnecting", e)
                        src.close()
                        opened = False
                        self.stop_event.wait(delay)
                        delay = min(delay * 2, self.backoff[1])
                        continue
                    st.on_capture()  # a file whose decoder raised: a frame, skipped
                    st.on_bad(e)
                    continue
                t_cap = time.monotonic()
                st.on_capture()
                frame = as_bgr(frame)
                if frame is None:
                    st.on_bad("unusable frame (not a BGR/gray uint8 image)")
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
        finally:
            try:
                src.close()
            except Exception:
                pass
            q.close()
            self._capture_done.set()

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
                    dets = None
                    if self.events is not None or self.mqtt is not None:
                        dets = detections_list(res, self.class_names)
                        rec = {"type": "detections", "time": round(time.time(), 3),
                               "frame": seq, "source": self.source.name,
                               "latency_ms": round((time.monotonic() - t_cap) * 1000.0, 2),
                               "detections": dets}
                        if self.events is not None:
                            self.events.write(rec)
                        if self.mqtt is not None:
                            self.mqtt.publish_detections(rec)
                    if self.snapshots is not None:
                        self.snapshots.offer(seq, frame, res)
                if self.hub is not None:
                    self.hub.publish(frame, res)
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
        temp, thr = self._sensors()
        rec = self.stats.interval(sample, self.power_meter, temp, thr)
        self._sink_status(rec)
        self.last_stats = rec
        return rec

    def _sink_status(self, rec):
        """The sinks' health (write failures, broker connection) in a stats record."""
        for key, sink in (("snapshots", self.snapshots), ("events", self.events),
                          ("mqtt", self.mqtt)):
            status = getattr(sink, "status", None) if sink is not None else None
            if status is not None:
                try:
                    rec[key] = status()
                except Exception as e:  # noqa: BLE001 - a report must not die of a sink
                    rec[key] = {"error": "%s: %s" % (type(e).__name__, e)}

    def _publish(self, rec):
        """Hands a record to every sink; a sink that raises is logged, the others go on."""
        for name, fn in (("stdout", self.emit),
                         ("--out", self.events and (lambda r: self.events.write(r, flush=True))),
                         ("mqtt", self.mqtt and self.mqtt.publish_stats)):
            if fn is None:
                continue
            try:
                fn(rec)
            except Exception as e:  # noqa: BLE001 - one sink must not stop the reports
                self._report_errors.failed("%s: %s: %s" % (name, type(e).__name__, e))

    def _reporter(self):
        try:
            if self.power_meter is not None:
                self.power_meter.sample()  # the start of the first interval
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
        extra = dict(extra or {}, source=self.source.name)
        if self.fatal:
            extra["error"] = self.fatal
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            extra["threads_not_stopped"] = alive
        if self.snapshots is not None:
            self.snapshots.close()
            extra["snapshots_saved"] = self.snapshots.saved
            failed = getattr(self.snapshots, "failed", 0)
            if failed:
                extra["snapshots_failed"] = failed
                extra["snapshots_last_error"] = self.snapshots.last_error
        if self.mqtt is not None:
            extra["mqtt_published"] = self.mqtt.published
            extra["mqtt_dropped"] = self.mqtt.dropped
            extra["mqtt_reconnects"] = getattr(self.mqtt, "reconnects", 0)
        if self.events is not None and getattr(self.events, "errors", 0):
            extra["events_write_errors"] = self.events.errors
        self.summary = self.stats.summary(self.power_meter, temp, thr, extra)
        self._publish(self.summary)
        if self.hub is not None:
            self.hub.close()
        return self.summary

    def run(self):
        self.start()
        self.wait()
        return self.shutdown()
