"""Output sinks: the sink protocol (``Sink``), the JSON-lines event log, annotated
snapshots, and the latest-frame hub that the HTTP stream reads (MQTT: bnn_camera.mqtt).
The inference thread only hands results over; anything slow (JPEG encoding, disk writes
of snapshots, network) happens in another thread."""

import collections
import json
import os
import threading
import time

import numpy as np

__all__ = ["Sink", "detections_list", "place_labels", "label_layout", "annotate", "EventLog",
           "SnapshotSink", "FrameHub", "stderr_log", "write_atomic", "create_exclusive"]


def stderr_log(msg):
    """The app's diagnostics: one line on stderr (the journal under systemd); through
    bnn_camera.output's writer when the app installed it (then it never blocks)."""
    from . import output
    output.err("app: %s\n" % msg)


def create_exclusive(path, mode=0o644):
    """A new file opened for writing (a raw fd): O_CREAT | O_EXCL | O_NOFOLLOW -- it
    fails (FileExistsError) when anything exists at ``path``, a symlink included, so a
    planted file or link is never written through."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                   | getattr(os, "O_CLOEXEC", 0), mode)


def write_atomic(path, data, mode=0o644):
    """Writes ``data`` to ``path`` whole or not at all: a temporary file with a random
    name in the same folder (create_exclusive), then os.replace (which replaces a link at
    ``path`` itself, never its target).  On any error the temporary file is removed."""
    d, base = os.path.split(path)
    for _ in range(16):
        tmp = os.path.join(d, ".%s.%s.part" % (base, os.urandom(6).hex()))
        try:
            fd = create_exclusive(tmp, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError("cannot create a temporary file next to %s" % path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


class _ErrorLog:
    """Counts a sink's write errors and logs them without flooding: a failure is logged
    at most once per ``every`` seconds (the first one at once), and the recovery after a
    logged failure -- so a sink that fails on and off writes at most two lines a minute."""

    def __init__(self, what, log, every=60.0):
        self.what, self.log, self.every = what, log or stderr_log, every
        self.errors = 0
        self.last_error = None
        self._failing = 0          # failures since the last success
        self._announced = False    # this run of failures was logged
        self._logged = None        # when a failure was last logged

    def failed(self, msg):
        self.errors += 1
        self._failing += 1
        self.last_error = msg
        now = time.monotonic()
        if self._logged is None or now - self._logged >= self.every:
            self._logged = now
            self._announced = True
            more = "" if self.errors == 1 else " (%d failures in all)" % self.errors
            self.log("%s: %s%s; the app goes on" % (self.what, msg, more))

    def ok(self):
        if self._failing and self._announced:
            self.log("%s: writing again after %d failure(s)" % (self.what, self._failing))
        self._failing = 0
        self._announced = False


class Sink:
    """The sink protocol: what the pipeline calls on each output.  Subclass it (every
    method does nothing by default) or write a class with the same attributes; the
    Pipeline checks them when it is built.

    The pipeline calls its sinks in one loop per event, in the order it was given them.
    A sink that raises is counted and logged (at most about a line a minute) and the
    others still get the event: one failing sink never stops the others, nor the app.
    A sink should still handle its expected failures itself (a full disk, a broker that
    is away): count them in status() and go on.

    name          the key of status() in each stats record ("events", "snapshots", "mqtt")
    label         how the app's log lines name it (None: the name)
    wants_record  True: on_detections gets the "detections" JSON record (built once per
                  frame, and only when some sink wants it; shared: do not change it);
                  False: record is None

    In the inference thread -- hand the work over, never block or do slow I/O here:
      on_detections(seq, frame, result, record)  a frame with detections (frame: the BGR
                  uint8 image, do not change it; result: the Detector's result)
      on_frame(seq, frame, result)  every frame, detections or not (after on_detections)
    In the reporter thread, and once more at shutdown:
      on_stats(rec)  each stats record, and last the summary (rec["type"] tells them apart)
      status()       a JSON-able dict for each stats record (also /metrics, /stats), or
                     None for no key
    At shutdown (Pipeline.shutdown), after the threads stopped and the last stats record:
      finish()       end pending work (SnapshotSink writes its last snapshot, FrameHub
                     ends the MJPEG streams); return a dict of the keys this sink adds to
                     the summary, which then goes to on_stats
    By whoever opened the sink (the CLI: after Pipeline.shutdown, or when the start-up
    fails or is stopped half-way), never by the pipeline:
      close()        release files, threads, connections; idempotent
    """

    name = "sink"
    label = None
    wants_record = False

    def on_detections(self, seq, frame, result, record):
        pass

    def on_frame(self, seq, frame, result):
        pass

    def on_stats(self, rec):
        pass

    def status(self):
        return None

    def finish(self):
        return {}

    def close(self):
        pass


COLOURS = [(0, 200, 255), (255, 128, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255),
           (255, 255, 0)]


def detections_list(result, class_names):
    """A Detector result as a list of JSON-able dicts."""
    boxes = np.asarray(result.boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(result.scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(result.classes).reshape(-1)
    out = []
    for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
        c = int(c)
        name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
        out.append({"class": name, "class_id": c, "score": round(s, 4),
                    "box": [round(v, 1) for v in b]})
    return out


def place_labels(boxes, sizes, width, height):
    """Where each box's label goes: a list of (x, y) top-left corners, one per box, in
    the order given (draw the most important box first).  Each label is tried above its
    box, inside its top edge, below it and inside its bottom edge, then at any height
    next to the box; the first place that overlaps no label placed before wins (labels
    never cover each other while the image has room for them), clamped into the image.
    Cost: O(labels^2 x height / label height) -- annotate labels at most MAX_LABELS."""
    placed, out = [], []

    def free(r):
        return all(r[2] <= q[0] or q[2] <= r[0] or r[3] <= q[1] or q[3] <= r[1]
                   for q in placed)

    for (x1, y1, x2, y2), (tw, th) in zip(boxes, sizes):
        x = max(0, min(int(x1), width - tw))
        cands = [y1 - th, y1, y2, y2 - th]
        cands += sorted(range(0, max(1, height - th + 1), max(1, th // 2)),
                        key=lambda y: abs(y - y1))
        best = None
        for y in cands:
            y = max(0, min(int(y), height - th))
            if best is None:
                best = (x, y)
            if free((x, y, x + tw, y + th)):
                best = (x, y)
                break
        placed.append((best[0], best[1], best[0] + tw, best[1] + th))
        out.append(best)
    return out


LABEL_FONT_SCALE = 0.45
MAX_LABELS = 32  # boxes drawn per frame, the highest scores (place_labels' cost)


def label_layout(shape, result, class_names):
    """The boxes and their labels as annotate draws them, highest score first (at most
    MAX_LABELS):
    [(box (x1, y1, x2, y2), label rect (x, y, x2, y2), text, colour, text height)],
    clipped to the frame; the label rects never overlap (place_labels)."""
    import cv2
    h, w = shape[:2]
    dets = sorted(detections_list(result, class_names), key=lambda d: -d["score"])
    dets = dets[:MAX_LABELS]
    boxes, sizes, rest = [], [], []
    for d in dets:
        x1, y1, x2, y2 = [int(round(v)) for v in d["box"]]
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        label = "%s %.2f" % (d["class"], d["score"])
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, 1)
        boxes.append((x1, y1, x2, y2))
        sizes.append((tw + 2, th + base + 2))
        rest.append((label, COLOURS[d["class_id"] % len(COLOURS)], th))
    return [(box, (x, y, x + tw, y + th), label, col, text_h)
            for box, (x, y), (tw, th), (label, col, text_h)
            in zip(boxes, place_labels(boxes, sizes, w, h), sizes, rest)]


def annotate(frame, result, class_names):
    """A copy of the frame with the boxes and labels drawn (OpenCV); the labels never
    cover each other (label_layout; the highest score gets the best place)."""
    import cv2
    img = frame.copy()
    layout = label_layout(img.shape, result, class_names)
    for (x1, y1, x2, y2), _, _, col, _ in layout:
        cv2.rectangle(img, (x1, y1), (x2, y2), col, 2)
    for _, (x, y, x2, y2), label, col, text_h in layout:
        cv2.rectangle(img, (x, y), (x2 - 1, y2 - 1), col, -1)
        cv2.putText(img, label, (x + 1, y + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    LABEL_FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return img


class EventLog(Sink):
    """--out: JSON lines -- every stats record, one "detections" record per frame with
    detections, and the summary.  Flushed with each stats record (and every 64 KiB).

    The file only ever holds whole lines: records are written in batches of whole lines
    with os.write, and when a batch fails part-way (disk full, file size limit, I/O
    error) the file is cut after the last whole line that got out (ftruncate).  A failed
    batch never stops the app: it is counted (``errors``, ``lost`` records,
    ``last_error``; in the stats records and the summary), logged on stderr, and later
    batches are tried again.

    Rotation (--out-max-size, --out-max-age): before a batch that would take the file
    past ``max_bytes``, or once the file has been written for ``max_age_s`` seconds
    (counted from when this app opened it), it becomes ``PATH.1`` (``PATH.1`` becomes
    ``PATH.2`` ..., the oldest beyond ``keep`` is deleted) and a new ``PATH`` is started;
    a record is never split between two files.  0: no limit."""

    FLUSH_BYTES = 1 << 16
    name = "events"
    label = "--out"
    wants_record = True

    def __init__(self, path, log=None, max_bytes=0, max_age_s=0.0, keep=5, clock=time.time):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path = path
        self.max_bytes, self.max_age_s, self.keep = int(max_bytes), float(max_age_s), int(keep)
        self._clock = clock
        self.rotations = 0
        self._lock = threading.Lock()
        self._buf = []
        self._nbuf = 0
        self.lost = 0
        self._err = _ErrorLog("--out %s" % path, log)
        self._fd = None
        self._closed = False
        self._open()

    def _open(self):
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                           | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._size = os.fstat(self._fd).st_size
        self._born = self._clock()

    def _rotate_locked(self, incoming):
        """Rotates before writing ``incoming`` bytes when a limit says so."""
        if not self._size or not (
                (self.max_bytes and self._size + incoming > self.max_bytes)
                or (self.max_age_s and self._clock() - self._born >= self.max_age_s)):
            return
        os.close(self._fd)
        self._fd = None
        try:
            for i in range(self.keep - 1, 0, -1):
                old = "%s.%d" % (self.path, i)
                if os.path.lexists(old):
                    os.replace(old, "%s.%d" % (self.path, i + 1))
            os.replace(self.path, self.path + ".1")
            self.rotations += 1
        finally:
            self._open()

    @property
    def errors(self):
        return self._err.errors

    def status(self):
        return {"write_errors": self._err.errors, "records_lost": self.lost,
                "last_error": self._err.last_error, "rotations": self.rotations}

    def on_detections(self, seq, frame, result, record):
        self.write(record)

    def on_stats(self, rec):
        self.write(rec, flush=True)

    def finish(self):
        return {"events_write_errors": self._err.errors} if self._err.errors else {}

    def write(self, rec, flush=False):
        line = (json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            if self._closed:
                return
            self._buf.append(line)
            self._nbuf += len(line)
            if flush or self._nbuf >= self.FLUSH_BYTES:
                self._flush_locked()

    def flush(self):
        with self._lock:
            if not self._closed:
                self._flush_locked()

    def _flush_locked(self):
        if not self._buf:
            return
        data, n = b"".join(self._buf), len(self._buf)
        self._buf, self._nbuf = [], 0
        start, written = None, 0
        try:
            if self._fd is None:  # a rotation could not reopen the file: try again
                self._open()
            self._rotate_locked(len(data))
            start = os.lseek(self._fd, 0, os.SEEK_END)
            view = memoryview(data)
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as e:
            keep = data.rfind(b"\n", 0, written) + 1  # the whole lines that got out
            if start is not None and keep < written:
                try:  # no torn last line: cut the file after the last whole line
                    os.ftruncate(self._fd, start + keep)
                except OSError:
                    pass
            if start is not None:
                self._size = start + keep
            lost = n - data.count(b"\n", 0, keep)
            self.lost += lost
            self._err.failed("cannot write (%d record(s) lost): %s" % (lost, e.strerror or e))
        else:
            self._size = start + written
            self._err.ok()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._flush_locked()
            self._closed = True
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError as e:
                    self._err.failed("close: %s" % (e.strerror or e))
                self._fd = None


class SnapshotSink(Sink):
    """--snapshots DIR: an annotated JPEG of a frame with detections, at most one per
    ``min_interval`` seconds, written by a worker thread; keeps the newest ``keep`` files.

    Each JPEG is encoded in memory and written to a new temporary file next to it, then
    renamed (write_atomic: created with O_EXCL | O_NOFOLLOW under an unpredictable name,
    so a file or symlink planted in a shared folder is never written through), so a
    snapshot on disk is always whole.  A write that fails (disk full, file size limit,
    read-only or vanished folder) is counted (``failed``, ``last_error``; in the stats
    records and the summary), logged on stderr, and the next snapshot is tried again:
    the app goes on, and the snapshots resume once there is room."""

    name = "snapshots"

    def __init__(self, directory, class_names, min_interval=1.0, keep=500, quality=95,
                 log=None):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.class_names = class_names
        self.min_interval = min_interval
        self.keep = keep
        self.quality = int(quality)
        self.saved = 0
        self.skipped = 0
        self._err = _ErrorLog("snapshots %s" % directory, log)
        self._last = -1e9
        self._files = collections.deque()
        self._cond = threading.Condition()
        self._pending = None
        self._stop = False
        self._t = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._t.start()

    def on_detections(self, seq, frame, result, record):
        self.offer(seq, frame, result)

    def offer(self, seq, frame, result):
        now = time.monotonic()
        if len(result.scores) == 0 or now - self._last < self.min_interval:
            return
        self._last = now
        with self._cond:
            if self._pending is not None:
                self.skipped += 1
            self._pending = (seq, frame, result)
            self._cond.notify()

    def _run(self):
        import cv2
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._pending is None:
                    return
                seq, frame, result = self._pending
                self._pending = None
            name = os.path.join(self.dir, "%s-%06d.jpg" % (
                time.strftime("%Y%m%d-%H%M%S"), seq))
            try:
                ok, buf = cv2.imencode(".jpg", annotate(frame, result, self.class_names),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise ValueError("OpenCV could not encode the JPEG")
                self._write(name, buf)
            except OSError as e:
                self._err.failed("cannot write %s: %s" % (os.path.basename(name),
                                                          e.strerror or e))
                continue
            except Exception as e:  # noqa: BLE001 - never let the worker die
                self._err.failed("snapshot of frame %d: %s: %s" % (seq, type(e).__name__, e))
                continue
            self._err.ok()
            self.saved += 1
            self._files.append(name)
            while len(self._files) > self.keep:
                try:
                    os.remove(self._files.popleft())
                except OSError:
                    pass

    @staticmethod
    def _write(name, buf):
        write_atomic(name, buf.tobytes())

    @property
    def failed(self):
        return self._err.errors

    @property
    def last_error(self):
        return self._err.last_error

    def status(self):
        return {"saved": self.saved, "failed": self._err.errors, "skipped": self.skipped,
                "last_error": self._err.last_error}

    def finish(self):
        """Writes the pending snapshot (the worker stops), then the summary's counts."""
        self.close()
        out = {"snapshots_saved": self.saved}
        if self._err.errors:
            out["snapshots_failed"] = self._err.errors
            out["snapshots_last_error"] = self._err.last_error
        return out

    def close(self, timeout=5.0):
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._t.join(timeout)


class FrameHub(Sink):
    """The newest (frame, result) for the MJPEG stream; readers wait on a condition; and
    the last ``history`` stats records (the status page's charts, /history).  Its
    status() / finish() are the HTTP server's counters (``http``, set by HttpServer)."""

    name = "http"

    def __init__(self, history=300):
        self.history = collections.deque(maxlen=history)
        self._cond = threading.Condition()
        self._item = None
        self._seq = 0
        self.closed = False
        self.http = None

    def publish(self, frame, result):
        with self._cond:
            self._item = (frame, result)
            self._seq += 1
            self._cond.notify_all()

    def on_frame(self, seq, frame, result):
        self.publish(frame, result)

    def on_stats(self, rec):
        if rec.get("type") == "stats":
            self.history.append(rec)

    def status(self):
        return self.http.status() if self.http is not None else None

    def finish(self):
        self.close()  # no more frames: the MJPEG streams end
        if self.http is None:
            return {}
        return {"http_" + k: v for k, v in self.http.status().items()}

    def wait_next(self, last_seq, timeout=1.0):
        """(seq, frame, result) newer than last_seq, or None after the timeout / close."""
        with self._cond:
            if self._seq == last_seq and not self.closed:
                self._cond.wait(timeout)
            if self._seq == last_seq or self._item is None:
                return None
            return (self._seq,) + self._item

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()
