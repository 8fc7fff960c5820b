"""A small object tracker that turns per-frame detections into events: ``new`` when an
object has been seen for ``min_frames`` frames in a row, ``update`` while it stays,
``end`` when it has not been seen for ``timeout`` seconds -- one ``new`` and one ``end``
per object passing by, instead of one message per frame (Frigate's event model).

Matching (per class, each frame): every (track, detection) pair with IoU >= ``iou`` is a
candidate; pairs are taken greedily, highest IoU first, each track and detection at most
once.  An unmatched detection starts a tentative track; a tentative track that misses a
frame is forgotten (a flicker is not an object); a confirmed track that misses frames
keeps its last box until ``timeout`` s pass without a match.

    tr = Tracker(class_names, iou=0.3, min_frames=3, timeout=2.0)
    for t, result in frames:               # t: time.monotonic() of the frame
        for kind, track in tr.update(result, t):   # kind: "new" | "end"
            ...
    tr.expire(t)                           # ends tracks when no frame comes (source down)
    tr.finish()                            # ends every confirmed track (shutdown)
"""

import itertools
import os
import time

import numpy as np

from firmware_py.detect import box_iou

__all__ = ["Track", "Tracker", "iou_matrix"]


iou_matrix = box_iou  # firmware_py.detect.box_iou: (N, 4) x (M, 4) xyxy -> (N, M)


class Track:
    """One object: ``id`` (stable, unique: start time and a counter), ``label``, the last
    ``box`` (xyxy frame pixels) and ``score``, ``top_score``, ``frames`` (matched frames),
    ``start_time`` / ``end_time`` (epoch seconds; end_time None while it lasts)."""

    _ids = itertools.count(1)
    _salt = "%x" % (os.getpid() & 0xFFFF)

    def __init__(self, label, box, score, t, wall):
        self.id = "%.3f-%s%d" % (wall, self._salt, next(self._ids))
        self.label = label
        self.box = [float(v) for v in box]
        self.score = self.top_score = float(score)
        self.frames = 1
        self.first_t = self.last_t = t
        self.start_time = wall
        self.end_time = None
        self.confirmed = False

    def hit(self, box, score, t):
        self.box = [float(v) for v in box]
        self.score = float(score)
        self.top_score = max(self.top_score, self.score)
        self.frames += 1
        self.last_t = t

    def as_event(self, kind, frame_size=None):
        """The event message (a dict): type new | update | end, and the track's fields;
        ``box_norm`` (0..1) when the frame size (w, h) is known."""
        ev = {"type": kind, "id": self.id, "label": self.label, "score": round(self.score, 4),
              "top_score": round(self.top_score, 4), "box": [round(v, 1) for v in self.box],
              "frames": self.frames, "start_time": round(self.start_time, 3),
              "end_time": None if self.end_time is None else round(self.end_time, 3)}
        if frame_size:
            w, h = frame_size
            ev["box_norm"] = [round(v / (w if i % 2 == 0 else h), 4)
                              for i, v in enumerate(self.box)]
        return ev


class Tracker:
    def __init__(self, class_names, iou=0.3, min_frames=3, timeout=2.0, clock=time.time):
        if not 0.0 < iou <= 1.0:
            raise ValueError("tracker iou must be in (0, 1], got %r" % iou)
        if int(min_frames) < 1:
            raise ValueError("tracker min_frames must be >= 1, got %r" % min_frames)
        if not timeout > 0:
            raise ValueError("tracker timeout must be > 0 s, got %r" % timeout)
        self.class_names = list(class_names)
        self.iou, self.min_frames, self.timeout = float(iou), int(min_frames), float(timeout)
        self.clock = clock  # wall time of the events (epoch s)
        self.tracks = []    # live ones, tentative and confirmed
        self.last_frame_t = None  # monotonic time of the last update()

    def _label(self, c):
        c = int(c)
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)

    def active(self, label=None):
        """The confirmed tracks (of one label)."""
        return [t for t in self.tracks if t.confirmed and (label is None or t.label == label)]

    def update(self, result, t):
        """One frame's detections (a detect.Detections, already filtered) at monotonic time
        t; returns the events [("new" | "end", track)] in that order."""
        self.last_frame_t = t
        boxes = np.asarray(result.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(result.scores, np.float64).reshape(-1)
        labels = [self._label(c) for c in np.asarray(result.classes).reshape(-1)]
        events = []
        matched, used = set(), set()
        for label in sorted(set(labels) | {tr.label for tr in self.tracks}):
            di = [i for i, l in enumerate(labels) if l == label]
            ti = [k for k, tr in enumerate(self.tracks) if tr.label == label]
            if not di or not ti:
                continue
            m = iou_matrix([self.tracks[k].box for k in ti], boxes[di])
            for flat in np.argsort(-m, axis=None, kind="stable"):
                r, c = divmod(int(flat), len(di))
                if m[r, c] < self.iou:
                    break
                k, i = ti[r], di[c]
                if k in matched or i in used:
                    continue
                matched.add(k)
                used.add(i)
                tr = self.tracks[k]
                tr.hit(boxes[i], scores[i], t)
                if not tr.confirmed and tr.frames >= self.min_frames:
                    tr.confirmed = True
                    events.append(("new", tr))
        keep = []
        for k, tr in enumerate(self.tracks):
            if k in matched or (tr.confirmed and t - tr.last_t < self.timeout):
                keep.append(tr)
            elif tr.confirmed:
                tr.end_time = self.clock() - (t - tr.last_t)
                events.append(("end", tr))
            # else: a tentative track that missed a frame is forgotten
        for i in range(len(labels)):
            if i not in used:
                tr = Track(labels[i], boxes[i], scores[i], t, self.clock())
                if self.min_frames <= 1:
                    tr.confirmed = True
                    events.append(("new", tr))
                keep.append(tr)
        self.tracks = keep
        return events

    def expire(self, t):
        """When no frame has come for timeout s (a lost source; the next frame's update()
        ends tracks otherwise): ends the confirmed tracks unseen for timeout s at monotonic
        time t and forgets tentative ones; returns [("end", track)]."""
        if self.last_frame_t is not None and t - self.last_frame_t < self.timeout:
            return []
        events, keep = [], []
        for tr in self.tracks:
            if t - tr.last_t < self.timeout:
                keep.append(tr)
            elif tr.confirmed:
                tr.end_time = self.clock() - (t - tr.last_t)
                events.append(("end", tr))
        self.tracks = keep
        return events

    def finish(self):
        """Ends every confirmed track now (the app stops); returns [("end", track)]."""
        now = self.clock()
        events = []
        for tr in self.tracks:
            if tr.confirmed:
                tr.end_time = now
                events.append(("end", tr))
        self.tracks = []
        return events
