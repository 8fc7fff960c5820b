"""Zones, masks and per-class minimum confidence (--zone, --mask, --min-conf): which
detections count.

A polygon is given in normalised frame coordinates, ``x1,y1,x2,y2,x3,y3[,...]`` (0..1;
(0,0) the top-left corner, (1,1) the bottom-right), as Frigate writes its zones and
masks.  A detection is placed at its box's bottom centre (where the object stands):

* ``--mask P`` (repeatable): a detection placed inside any mask is dropped (a window,
  a poster, a TV that the detector mistakes for a person);
* ``--zone P`` (repeatable): when zones are given, only detections placed inside one of
  them are kept (the drive, not the street);
* ``--min-conf CLASS=S`` (repeatable): that class needs a score of at least S (other
  classes: --conf).

The filter runs in the inference thread right after the detector, so every output --
the stats' detection counts, the event log, snapshots, the MJPEG view, MQTT -- sees the
same kept detections."""

import math

import numpy as np

__all__ = ["parse_polygon", "parse_min_conf", "inside", "DetectionFilter"]


def parse_polygon(text):
    """"x1,y1,x2,y2,x3,y3,..." -> float64 array (N, 2), N >= 3, every value in 0..1.
    ValueError naming the problem."""
    parts = [p for p in str(text).replace(" ", ",").split(",") if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError("a polygon is x1,y1,x2,y2,x3,y3,... (numbers), got %r" % text) from None
    if len(vals) < 6 or len(vals) % 2:
        raise ValueError("a polygon needs at least 3 points as x,y pairs (an even count of "
                         "at least 6 numbers), got %d numbers in %r" % (len(vals), text))
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        raise ValueError("polygon coordinates are normalised to the frame: each in 0..1, "
                         "got %r" % text)
    return np.array(vals, np.float64).reshape(-1, 2)


def parse_min_conf(text):
    """"CLASS=SCORE" -> (class, score in 0..1)."""
    name, sep, val = str(text).rpartition("=")
    if not sep or not name:
        raise ValueError("--min-conf is CLASS=SCORE (e.g. person=0.5), got %r" % text)
    try:
        v = float(val)
    except ValueError:
        raise ValueError("--min-conf %s: %r is not a number" % (name, val)) from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError("--min-conf %s: the score must be in 0..1, got %s" % (name, val))
    return name, v


def inside(poly, x, y):
    """Points (x, y arrays, normalised) inside the polygon (even-odd rule), as a bool array."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    res = np.zeros(x.shape, bool)
    px, py = poly[:, 0], poly[:, 1]
    qx, qy = np.roll(px, 1), np.roll(py, 1)
    for ax, ay, bx, by in zip(px, py, qx, qy):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = ax + (y - ay) * (bx - ax) / (by - ay)
        res ^= crosses & (x < xcross)
    return res


class DetectionFilter:
    """result, frame -> the result with only the detections that count (see the module)."""

    def __init__(self, class_names, conf, zones=(), masks=(), min_conf=()):
        self.class_names = list(class_names)
        self.zones = [parse_polygon(z) if isinstance(z, str) else z for z in zones]
        self.masks = [parse_polygon(m) if isinstance(m, str) else m for m in masks]
        self.min_conf = dict(parse_min_conf(m) if isinstance(m, str) else m for m in min_conf)
        unknown = sorted(set(self.min_conf) - set(self.class_names))
        if unknown:
            raise ValueError("--min-conf: the model has no class %s (its classes: %s)"
                             % (", ".join(map(repr, unknown)), ", ".join(self.class_names)))
        self.thresholds = np.array([self.min_conf.get(n, conf) for n in self.class_names]
                                   or [conf], np.float32)

    @property
    def detector_conf(self):
        """The detector's own threshold: the lowest any class needs."""
        return float(self.thresholds.min())

    def __call__(self, result, frame):
        n = len(result.scores)
        if n == 0:
            return result
        cls = np.asarray(result.classes).reshape(-1)
        known = (cls >= 0) & (cls < len(self.thresholds))
        thr = np.where(known, self.thresholds[np.clip(cls, 0, len(self.thresholds) - 1)],
                       self.thresholds.max())
        keep = np.asarray(result.scores, np.float32).reshape(-1) >= thr
        if self.zones or self.masks:
            h, w = frame.shape[:2]
            b = np.asarray(result.boxes, np.float64).reshape(-1, 4)
            # a box touching the frame's bottom edge stands at y = 1 - epsilon: inside a
            # polygon drawn up to the edge
            x = np.clip((b[:, 0] + b[:, 2]) / (2.0 * w), 0.0, 1.0 - 1e-9)
            y = np.clip(b[:, 3] / float(h), 0.0, 1.0 - 1e-9)
            for m in self.masks:
                keep &= ~inside(m, x, y)
            if self.zones:
                keep &= np.any([inside(z, x, y) for z in self.zones], axis=0)
        if keep.all():
            return result
        return type(result)(np.asarray(result.boxes)[keep], np.asarray(result.scores)[keep],
                            cls[keep], getattr(result, "class_names", []))
