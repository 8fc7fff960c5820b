"""Output sinks: the JSON-lines event log, annotated snapshots, and the latest-frame hub
that the HTTP stream reads.  The inference thread only hands results over; anything slow
(JPEG encoding, disk writes of snapshots, network) happens in another thread."""

import collections
import json
import os
import threading
import time

import numpy as np

__all__ = ["detections_list", "annotate", "EventLog", "SnapshotSink", "FrameHub"]

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


def annotate(frame, result, class_names):
    """A copy of the frame with the boxes and labels drawn (OpenCV)."""
    import cv2
    img = frame.copy()
    h, w = img.shape[:2]
    for d in detections_list(result, class_names):
        x1, y1, x2, y2 = [int(round(v)) for v in d["box"]]
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        col = COLOURS[d["class_id"] % len(COLOURS)]
        cv2.rectangle(img, (x1, y1), (x2, y2), col, 2)
        label = "%s %.2f" % (d["class"], d["score"])
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(th + 2, y1)
        cv2.rectangle(img, (x1, ty - th - 3), (x1 + tw + 2, ty), col, -1)
        cv2.putText(img, label, (x1 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img


class EventLog:
    """--out: JSON lines -- every stats record, one "detections" record per frame with
    detections, and the summary.  Flushed with each stats record."""

    def __init__(self, path):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path = path
        self._f = open(path, "a", buffering=1 << 16)
        self._lock = threading.Lock()

    def write(self, rec, flush=False):
        line = json.dumps(rec, separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self._f is None:
                return
            self._f.write(line + "\n")
            if flush:
                self._f.flush()

    def close(self):
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


class SnapshotSink:
    """--snapshots DIR: an annotated JPEG of a frame with detections, at most one per
    ``min_interval`` seconds, written by a worker thread; keeps the newest ``keep`` files."""

    def __init__(self, directory, class_names, min_interval=1.0, keep=500):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.class_names = class_names
        self.min_interval = min_interval
        self.keep = keep
        self.saved = 0
        self.skipped = 0
        self._last = -1e9
        self._files = collections.deque()
        self._cond = threading.Condition()
        self._pending = None
        self._stop = False
        self._t = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._t.start()

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
                cv2.imwrite(name, annotate(frame, result, self.class_names))
            except Exception:
                self.skipped += 1
                continue
            self.saved += 1
            self._files.append(name)
            while len(self._files) > self.keep:
                try:
                    os.remove(self._files.popleft())
                except OSError:
                    pass

    def close(self, timeout=5.0):
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._t.join(timeout)


class FrameHub:
    """The newest (frame, result) for the MJPEG stream; readers wait on a condition."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._seq = 0
        self.closed = False

    def publish(self, frame, result):
        with self._cond:
            self._item = (frame, result)
            self._seq += 1
            self._cond.notify_all()

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
