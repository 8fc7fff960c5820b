"""Object detection on camera frames with a YOLO-style grid detector.

    from firmware_py.detect import Detector
    det = Detector("models/zoo/person/binary.bnn", num_threads=4, conf=0.25, iou=0.45)
    r = det.detect(frame_bgr)          # any H x W x 3 uint8 BGR frame (OpenCV's layout)
    r.boxes    # (N, 4) float32 xyxy in frame pixels
    r.scores   # (N,) float32
    r.classes  # (N,) int64; det.class_names[c] names them

The model is a ``.bnn`` file (run by firmware_py) or an ``.onnx`` file (run by
onnxruntime, imported only then); both carry the metadata ``class_names`` (a list) and
``detector`` (an object: ``decode`` "yolov5", ``input_size`` [h, w], ``strides``,
``anchors`` per stride in input pixels, ``num_classes``, ``outputs``; see
models/detector.py), so both go through the same pre- and post-processing here:

  * letterbox: resize keeping the aspect ratio (cv2 INTER_LINEAR when OpenCV is
    importable, else a numpy nearest-neighbour resize), centre on a (114, 114, 114) pad,
    BGR -> RGB, / 255, NCHW float32;
  * decode (vectorised numpy): per scale with stride s and anchor (aw, ah), everything
    through a sigmoid:  x, y = (2 sig(tx, ty) - 0.5 + (col, row)) * s,
    w, h = (2 sig(tw, th))**2 * (aw, ah), score = sig(obj) * max_k sig(cls_k);
  * class-aware greedy NMS (IoU > iou suppresses), at most max_det boxes;
  * boxes mapped back to frame pixels (the exact per-axis resize factors) and clipped.

numpy only (no torch); Python 3.8+ / numpy 1.24 compatible.
"""
from __future__ import annotations

import errno
import functools
import json
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detector", "Detections", "letterbox", "resize_nearest", "decode", "nms", "box_iou", "postprocess",
           "scale_boxes", "head_from_metadata"]

PAD_VALUE = 114

try:  # OpenCV is optional (it is on the Pi: python3-opencv)
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the machine
    _cv2 = None


@dataclass
class Detections:
    boxes: np.ndarray                       # (N, 4) float32 xyxy, frame pixels
    scores: np.ndarray                      # (N,) float32
    classes: np.ndarray                     # (N,) int64
    class_names: list = field(default_factory=list)

    def __len__(self):
        return int(self.boxes.shape[0])

    def labels(self):
        return [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in self.classes]


@dataclass
class Letterbox:
    """geometry of one letterbox: input pixel = frame pixel * (sx, sy) + (left, top)"""
    sx: float
    sy: float
    left: int
    top: int
    frame_hw: tuple


def resize_nearest(img, nw, nh):
    """nearest-neighbour resize of an H x W [x C] image to nh x nw (pixel centres; no OpenCV)"""
    h, w = img.shape[:2]
    ys = np.minimum(((np.arange(nh) + 0.5) * (h / nh)).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(nw) + 0.5) * (w / nw)).astype(np.int64), w - 1)
    return img[ys[:, None], xs[None, :]]


def letterbox(frame, size, use_cv2=None):
    """frame H x W x 3 uint8 (BGR) -> (NCHW float32 RGB in [0, 1] of shape (1, 3, h, w), Letterbox).
    size: (h, w) of the network input."""
    if not isinstance(frame, np.ndarray):
        raise ValueError("frame must be a numpy.ndarray H x W x 3 uint8 (BGR), got %s"
                         % type(frame).__name__)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frame must be H x W x 3 (BGR), got shape %s" % (frame.shape,))
    if frame.dtype != np.uint8:
        raise ValueError("frame must be uint8 (BGR, 0..255), got %s: other dtypes are not "
                         "converted (a float image in 0..1: (frame * 255).astype(np.uint8))"
                         % frame.dtype)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError("frame is empty (shape %s)" % (frame.shape,))
    th, tw = int(size[0]), int(size[1])
    fh, fw = frame.shape[:2]
    r = min(th / fh, tw / fw)
    nw, nh = max(1, min(tw, int(round(fw * r)))), max(1, min(th, int(round(fh * r))))
    use_cv2 = (_cv2 is not None) if use_cv2 is None else use_cv2
    if (nw, nh) == (fw, fh):
        img = frame
    elif use_cv2:
        img = _cv2.resize(frame, (nw, nh), interpolation=_cv2.INTER_LINEAR)
    else:
        img = resize_nearest(frame, nw, nh)
    left, top = (tw - nw) // 2, (th - nh) // 2
    out = np.full((1, 3, th, tw), PAD_VALUE / 255.0, np.float32)
    inner = out[0, :, top:top + nh, left:left + nw]
    scale = np.float32(1.0 / 255.0)
    for c in range(3):  # BGR -> RGB planes; one pass each (uint8 -> float32, times 1/255)
        np.multiply(img[:, :, 2 - c], scale, out=inner[c], dtype=np.float32)
    return out, Letterbox(nw / fw, nh / fh, left, top, (fh, fw))


def scale_boxes(boxes, lb: Letterbox, clip=True):
    """xyxy in network-input pixels -> frame pixels"""
    b = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    b[:, [0, 2]] = (b[:, [0, 2]] - lb.left) / lb.sx
    b[:, [1, 3]] = (b[:, [1, 3]] - lb.top) / lb.sy
    if clip:
        fh, fw = lb.frame_hw
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, fw)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, fh)
    return b


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def head_from_metadata(meta: dict) -> dict:
    det = meta.get("detector")
    if isinstance(det, str):
        try:
            det = json.loads(det)
        except ValueError as e:
            raise ValueError("the model's 'detector' metadata is not valid JSON: %s" % e) from None
    if not isinstance(det, dict):
        raise ValueError("the model has no 'detector' metadata (not a detector model?)")
    dec = det.get("decode", "yolov5")
    if dec != "yolov5":
        raise ValueError("unsupported decode formula %r (supported: yolov5)" % dec)
    missing = [k for k in ("input_size", "strides", "anchors", "num_classes") if k not in det]
    if missing:
        raise ValueError("the model's 'detector' metadata lacks %s (it has %s)"
                         % (", ".join(repr(k) for k in missing), sorted(det)))
    try:
        strides = [int(s) for s in det["strides"]]
        anchors = [np.asarray(a, np.float32).reshape(-1, 2) for a in det["anchors"]]
        nc = int(det["num_classes"])
        input_size = tuple(int(v) for v in det["input_size"])
    except (TypeError, ValueError) as e:
        raise ValueError("the model's 'detector' metadata is malformed (strides, anchors: "
                         "lists of numbers, num_classes: an int, input_size: [h, w]): %s"
                         % e) from None
    if len(anchors) != len(strides):
        raise ValueError("detector metadata: %d anchor sets for %d strides" % (len(anchors), len(strides)))
    if len(input_size) != 2 or min(input_size) <= 0 or nc <= 0 or min(strides, default=0) <= 0:
        raise ValueError("the model's 'detector' metadata is out of range: input_size %s, "
                         "num_classes %d, strides %s" % (list(input_size), nc, strides))
    return {"strides": strides, "anchors": anchors, "nc": nc,
            "input_size": input_size, "outputs": det.get("outputs")}


@functools.lru_cache(maxsize=32)
def _grid(ny, nx):
    """(1, ny, nx, 2) float32 cell offsets (x, y) of a head map, made once per size (read-only)"""
    gy, gx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    g = np.stack((gx, gy), -1)[None]
    g.flags.writeable = False
    return g


def decode(outputs, head):
    """raw head maps [(1, na*(5+nc), ny, nx) per stride] -> (N, 5 + nc) float32:
    xywh (input pixels), obj, cls probabilities"""
    res = []
    nc = head["nc"]
    no = 5 + nc
    for o, s, anc in zip(outputs, head["strides"], head["anchors"]):
        o = np.asarray(o, np.float32)
        na = anc.shape[0]
        _, c, ny, nx = o.shape
        if c != na * no:
            raise ValueError("output has %d channels, expected %d anchors x %d" % (c, na, no))
        p = _sigmoid(o[0].reshape(na, no, ny, nx).transpose(0, 2, 3, 1))  # (na, ny, nx, no)
        xy = (p[..., :2] * 2 - 0.5 + _grid(ny, nx)) * np.float32(s)
        wh = (p[..., 2:4] * 2) ** 2 * anc[:, None, None, :]
        res.append(np.concatenate((xy, wh, p[..., 4:]), -1).reshape(-1, no))
    return np.concatenate(res, 0)


def box_iou(a, b):
    """IoU of every box of a (N, 4 xyxy) with every box of b (M, 4): (N, M) float64; an
    empty or inverted box has area 0 and IoU 0 (the tracker, the mAP evaluation)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _iou_one(box, boxes):
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    a = (box[2:] - box[:2]).prod()
    b = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return inter / (a + b - inter + 1e-9)


def nms(boxes, scores, iou_thres, classes=None, max_det=300):
    """greedy NMS (class-aware when classes is given): kept indices, by descending score"""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if classes is not None:
        boxes = boxes + np.asarray(classes, np.float32)[:, None] * np.float32(7680.0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        iou = _iou_one(boxes[i], boxes[order[1:]])
        order = order[1:][iou <= iou_thres]
    return np.asarray(keep, np.int64)


def postprocess(pred, conf=0.25, iou=0.45, max_det=300, max_nms=30000):
    """decoded (N, 5 + nc) -> (boxes xyxy input pixels, scores, classes)"""
    cls_scores = pred[:, 5:] * pred[:, 4:5]
    cls = cls_scores.argmax(1)
    score = cls_scores[np.arange(len(cls)), cls]
    m = score > conf
    p, score, cls = pred[m], score[m], cls[m]
    if p.shape[0] > max_nms:
        top = np.argsort(-score, kind="stable")[:max_nms]
        p, score, cls = p[top], score[top], cls[top]
    boxes = np.concatenate((p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2), 1).astype(np.float32)
    keep = nms(boxes, score, iou, cls, max_det)
    return boxes[keep], score[keep].astype(np.float32), cls[keep].astype(np.int64)


class _OnnxRunner:
    def __init__(self, path, num_threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if num_threads:
            so.intra_op_num_threads = int(num_threads)
            so.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            raise ValueError("onnxruntime cannot load %s: %s" % (os.fspath(path), e)) from None
        self.metadata = dict(self.sess.get_modelmeta().custom_metadata_map)
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def run(self, x):
        return self.sess.run(self.output_names, {self.input_name: x})


class _BnnRunner:
    def __init__(self, path, num_threads, memory_limit=None):
        from .executor import load

        self.model = load(path, num_threads=num_threads, memory_limit=memory_limit)
        self.metadata = self.model.metadata
        self.input_shape = self.model.inputs[0].shape
        self.output_names = [o.name for o in self.model.outputs]

    def run(self, x):
        out = self.model.run(x)
        return out if isinstance(out, list) else [out]


class Detector:
    """A detector model (.bnn or .onnx) with letterbox pre-processing, decode and NMS."""

    def __init__(self, model_path, num_threads=None, conf=0.25, iou=0.45, max_det=300, use_cv2=None,
                 memory_limit=None):
        path = os.fspath(model_path)
        if not os.path.exists(path):  # the same error for .bnn and .onnx
            raise FileNotFoundError(errno.ENOENT, "detector model not found", path)
        # a regular file only: onnxruntime (or a reader) opening a FIFO would wait forever
        from .model_format import open_regular
        open_regular(path).close()
        if path.lower().endswith(".onnx"):
            self.runner = _OnnxRunner(path, num_threads)
        else:
            self.runner = _BnnRunner(path, num_threads, memory_limit)
        meta = self.runner.metadata
        self.head = head_from_metadata(meta)
        names = meta.get("class_names", None)
        if isinstance(names, str):
            names = json.loads(names)
        self.class_names = list(names) if names else [str(i) for i in range(self.head["nc"])]
        self.input_size = self.head["input_size"]
        shp = self.runner.input_shape
        if len(shp) == 4 and all(isinstance(v, int) for v in shp[2:]) and tuple(shp[2:]) != self.input_size:
            raise ValueError("model input %s disagrees with the metadata input_size %s" % (shp, self.input_size))
        # outputs in the order of the strides
        order = self.head.get("outputs")
        names_out = self.runner.output_names
        self._out_index = [names_out.index(n) for n in order] if order and set(order) <= set(names_out) \
            else list(range(len(names_out)))
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.use_cv2 = use_cv2

    def preprocess(self, frame_bgr):
        return letterbox(frame_bgr, self.input_size, self.use_cv2)

    def raw(self, x):
        """the network's raw head maps for a preprocessed input, in stride order"""
        out = self.runner.run(x)
        return [out[i] for i in self._out_index]

    def detect(self, frame_bgr, conf=None, iou=None) -> Detections:
        x, lb = self.preprocess(frame_bgr)
        pred = decode(self.raw(x), self.head)
        boxes, scores, classes = postprocess(pred, self.conf if conf is None else conf,
                                             self.iou if iou is None else iou, self.max_det)
        return Detections(scale_boxes(boxes, lb), scores, classes, self.class_names)

    __call__ = detect
