"""Frame sources: Pi camera (picamera2), V4L2 devices, video files, RTSP/HTTP streams,
directories of images, and in-memory frames (benchmarks).

A source is opened, read and closed by the capture thread (bnn_camera.pipeline):

    src.open()          # raises SourceError when it cannot be opened
    frame = src.read()  # a BGR uint8 HxWx3 array; None or BadFrame for a bad frame
                        # (skipped, counted); raises EndOfStream (a file ended) or
                        # SourceLost (unplugged, stream dropped, a looped file that cannot
                        # be reopened: the capture thread reconnects with backoff)
    src.close()

Only regular files are opened as files and images (a FIFO or a device could block the
capture thread forever), and an image's size is read from its header before it is
decoded: one over ``max_pixels`` (``--max-image-pixels``) is a bad frame, never
decoded (a 1 MB PNG can decode to gigabytes).

``live`` sources (cameras, streams) never wait for the consumer: when inference lags the
oldest queued frame is dropped.  Files and directories are read as fast as inference
takes them (nothing dropped) unless ``realtime`` paces them at their frame rate, when they
behave like a camera.
"""

import glob
import os
import time

import numpy as np

from . import SAMPLES

__all__ = ["SourceError", "SourceLost", "EndOfStream", "BadFrame", "Source", "CvSource",
           "DirSource", "MemorySource", "Picamera2Source", "open_source", "picamera2_cameras",
           "bundled_sample", "as_bgr", "image_size", "read_image", "DEFAULT_MAX_PIXELS"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(RuntimeError):
    """The source cannot be opened."""


class SourceLost(RuntimeError):
    """A live source stopped delivering (unplugged camera, dropped stream)."""


class EndOfStream(Exception):
    """A file or directory has no more frames."""


class BadFrame(Exception):
    """This frame is unusable (skipped and counted, with this message); the source goes on."""


DEFAULT_MAX_PIXELS = 40_000_000  # --max-image-pixels: 40 MP, about 120 MB decoded as BGR


# ---- image headers -------------------------------------------------------------------------
def _u16be(b, i):
    return (b[i] << 8) | b[i + 1]


def _jpeg_size(b):
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:  # no length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                return None
            return _u16be(b, i + 7), _u16be(b, i + 5)
        i += 2 + _u16be(b, i + 2)
    return None


def _pnm_size(b):
    tokens, i, n = [], 2, min(len(b), 4096)
    while len(tokens) < 2 and i < n:
        c = b[i:i + 1]
        if c == b"#":
            while i < n and b[i:i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and b[j:j + 1].isdigit():
                j += 1
            if j == i:
                return None
            tokens.append(int(b[i:j]))
            i = j
    return tuple(tokens) if len(tokens) == 2 else None


def _tiff_size(b):
    import struct
    end = "<" if b[:2] == b"II" else ">"
    if len(b) < 8 or struct.unpack(end + "H", b[2:4])[0] != 42:
        return None  # BigTIFF (43) and anything else: not read
    off = struct.unpack(end + "I", b[4:8])[0]
    if off + 2 > len(b):
        return None
    count = struct.unpack(end + "H", b[off:off + 2])[0]
    w = h = None
    for k in range(count):
        e = off + 2 + 12 * k
        if e + 12 > len(b):
            return None
        tag, typ = struct.unpack(end + "HH", b[e:e + 4])
        if tag in (256, 257):
            v = (struct.unpack(end + "H", b[e + 8:e + 10])[0] if typ == 3
                 else struct.unpack(end + "I", b[e + 8:e + 12])[0] if typ == 4 else None)
            if tag == 256:
                w = v
            else:
                h = v
    return (w, h) if w is not None and h is not None else None


def _webp_size(b):
    if len(b) < 30:
        return None
    kind = b[12:16]
    if kind == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
        return (b[26] | b[27] << 8) & 0x3FFF, (b[28] | b[29] << 8) & 0x3FFF
    if kind == b"VP8L" and b[20] == 0x2F:
        bits = b[21] | b[22] << 8 | b[23] << 16 | b[24] << 24
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return (b[24] | b[25] << 8 | b[26] << 16) + 1, (b[27] | b[28] << 8 | b[29] << 16) + 1
    return None


def image_size(data):
    """(width, height) read from an image file's header (PNG, JPEG, BMP, PNM, TIFF,
    WebP -- the formats of IMAGE_EXTS), without decoding it; None when the format is
    not one of those or the header is malformed."""
    b = bytes(data[:1 << 16]) if not isinstance(data, bytes) else data
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
            return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(b)
        if b[:2] == b"BM" and len(b) >= 26:
            hdr = int.from_bytes(b[14:18], "little")
            if hdr == 12:
                return int.from_bytes(b[18:20], "little"), int.from_bytes(b[20:22], "little")
            return (abs(int.from_bytes(b[18:22], "little", signed=True)),
                    abs(int.from_bytes(b[22:26], "little", signed=True)))
        if b[:1] == b"P" and b[1:2] in b"123456" and len(b) > 2:
            return _pnm_size(b)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp_size(b)
    except (IndexError, ValueError):
        return None
    return None


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """An image file decoded as BGR uint8, checked first: only a regular file (opened
    without blocking), at most 4 bytes per allowed pixel, and its header's width x height
    at most max_pixels -- before anything is decoded.  Raises BadFrame with the reason."""
    from firmware_py.model_format import open_regular
    cv2 = _cv2()
    name = os.path.basename(path)
    max_bytes = 4 * max_pixels + (1 << 16)
    try:
        with open_regular(path, not_regular=BadFrame) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise BadFrame("%s: %s" % (name, e.strerror or e)) from None
    if len(data) > max_bytes:
        raise BadFrame("%s: larger than %d bytes (--max-image-pixels %d)" % (name, max_bytes,
                                                                           max_pixels))
    size = image_size(data)
    if size is None:
        raise BadFrame("%s: not a PNG / JPEG / BMP / PNM / TIFF / WebP image with a readable "
                       "size in its header" % name)
    w, h = size
    if w * h > max_pixels:
        raise BadFrame("%s: %dx%d pixels, more than --max-image-pixels %d (not decoded)"
                       % (name, w, h, max_pixels))
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BadFrame("%s: OpenCV cannot decode it (corrupt?)" % name)
    return img


def bundled_sample():
    clips = sorted(glob.glob(os.path.join(SAMPLES, "*.mp4")) + glob.glob(os.path.join(SAMPLES, "*.avi")))
    return clips[0] if clips else None


def as_bgr(frame):
    """A frame as contiguous BGR uint8 HxWx3, or None when it is not a usable image
    (gray is expanded, a 4th channel -- XBGR8888 from a camera -- is dropped)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        return None
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[0] < 8 or frame.shape[1] < 8:
        return None
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]
    elif frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] != 3:
        return None
    return np.ascontiguousarray(frame)


class Source:
    name = "source"
    kind = "?"
    live = False          # drop-oldest when inference lags
    reconnect = False     # SourceLost -> reopen with backoff
    loop = False
    fps = None

    def open(self):
        pass

    def read(self):
        raise NotImplementedError

    def close(self):
        pass

    def describe(self):
        return {"source": self.name, "kind": self.kind, "live": self.live}


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - checked by demo.sh / the CLI
        raise SourceError("OpenCV (cv2) is needed for this source: %s "
                          "(Pi: sudo apt install python3-opencv; PC: pip install "
                          "opencv-python-headless)" % e)
    return cv2


class CvSource(Source):
    """cv2.VideoCapture: a file, a V4L2 device (/dev/videoN or an index) or a stream URL.

    Files: a failed read before the last frame is a bad frame (counted, skipped; after
    ``max_bad`` in a row the file is taken as ended); at the end EndOfStream, or with
    ``loop`` a rewind.  Devices and streams: a failed read is SourceLost (reconnect)."""

    def __init__(self, target, kind, loop=False, realtime=False, width=None, height=None,
                 max_bad=25, max_pixels=DEFAULT_MAX_PIXELS):
        self.target = target
        self.kind = kind  # "file" | "v4l2" | "stream"
        self.name = str(target)
        self.loop = loop
        self.realtime = realtime
        self.live = kind != "file" or realtime
        self.reconnect = kind != "file"
        self.width, self.height = width, height
        self.max_bad = max_bad
        self.max_pixels = max_pixels
        self.cap = None
        self.fps = None
        self._count = 0
        self._pos = 0
        self._bad_run = 0
        self._next_t = None

    def open(self):
        cv2 = _cv2()
        if self.kind == "file":  # a regular file only: a FIFO or a device could block
            from firmware_py.model_format import open_regular
            try:
                open_regular(self.target, not_regular=SourceError).close()
            except FileNotFoundError:
                raise SourceError("no such file: %s" % self.target) from None
            except OSError as e:
                raise SourceError("cannot open %s: %s" % (self.target, e.strerror or e)) from None
        if self.kind == "v4l2":
            dev = self.target
            if isinstance(dev, str) and not os.path.exists(dev):
                raise SourceError("%s does not exist (camera unplugged?)" % dev)
            cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif self.kind == "stream":
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError("OpenCV cannot open %s" % self.target)
        w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if self.max_pixels and w and h and w * h > self.max_pixels:
            cap.release()
            raise SourceError("%s has frames of %dx%d pixels, more than --max-image-pixels %d"
                              % (self.target, w, h, self.max_pixels))
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.kind == "file" else 0
        self._pos = 0
        self._bad_run = 0
        self._next_t = None

    def _pace(self):
        if not (self.realtime and self.fps):
            return
        now = time.monotonic()
        if self._next_t is None:
            self._next_t = now
        delay = self._next_t - now
        if delay > 0:
            time.sleep(delay)
        self._next_t = max(self._next_t + 1.0 / self.fps, now - 1.0)

    def read(self):
        if self.cap is None:
            raise SourceLost("not open")
        self._pace()
        ok, frame = self.cap.read()
        if self.kind != "file":
            if not ok or frame is None:
                raise SourceLost("%s stopped delivering frames" % self.name)
            return frame
        if ok and frame is not None:
            self._pos += 1
            self._bad_run = 0
            return frame
        # a file: a failure inside the file is a bad frame, at its end the end
        self._pos += 1
        self._bad_run += 1
        if self._count and self._pos < self._count and self._bad_run < self.max_bad:
            return None
        if self.loop:
            self.close()
            try:
                self.open()
            except SourceError as e:  # moved or replaced: the capture thread backs off
                raise SourceLost("cannot reopen %s to loop it: %s" % (self.name, e)) from None
            ok, frame = self.cap.read()
            if ok and frame is not None:
                self._pos = 1
                return frame
        raise EndOfStream(self.name)

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class DirSource(Source):
    """The images of a directory in name order (a corrupt, oversized or non-regular file
    is a bad frame).  With ``loop`` the directory is listed again at each pass, so
    images added, replaced or removed meanwhile are seen; a pass that finds no image left
    is SourceLost (the capture thread waits with backoff for images to come back)."""

    kind = "dir"

    def __init__(self, path, loop=False, realtime=False, fps=10.0,
                 max_pixels=DEFAULT_MAX_PIXELS):
        self.path = path
        self.name = path
        self.loop = loop
        self.realtime = realtime
        self.live = realtime
        self.fps = fps
        self.max_pixels = max_pixels
        self.files = []
        self._i = 0
        self._next_t = None

    def _list(self):
        if not os.path.isdir(self.path):
            raise SourceError("no such directory: %s" % self.path)
        files = sorted(f for f in glob.glob(os.path.join(glob.escape(self.path), "*"))
                       if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise SourceError("no images (%s) in %s" % (" ".join(IMAGE_EXTS), self.path))
        return files

    def open(self):
        _cv2()
        self.files = self._list()
        self._i = 0

    def read(self):
        if self._i >= len(self.files):
            if not self.loop:
                raise EndOfStream(self.name)
            try:
                self.files = self._list()
            except SourceError as e:
                raise SourceLost(str(e)) from None
            self._i = 0
        if self.realtime:
            now = time.monotonic()
            self._next_t = now if self._next_t is None else self._next_t
            if self._next_t > now:
                time.sleep(self._next_t - now)
            self._next_t = max(self._next_t + 1.0 / self.fps, now - 1.0)
        f = self.files[self._i]
        self._i += 1
        return read_image(f, self.max_pixels)


class MemorySource(Source):
    """Frames from a list (benchmarks, tests); ``live`` makes it drop like a camera."""

    kind = "memory"

    def __init__(self, frames, loop=False, live=False, name="memory"):
        self.frames = frames
        self.loop = loop
        self.live = live
        self.name = name
        self._i = 0

    def open(self):
        self._i = 0

    def read(self):
        if self._i >= len(self.frames):
            if not self.loop or not self.frames:
                raise EndOfStream(self.name)
            self._i = 0
        f = self.frames[self._i]
        self._i += 1
        return f


# ---- Raspberry Pi camera -------------------------------------------------------------------

def _import_picamera2():
    try:
        from picamera2 import Picamera2
    except Exception as e:  # ImportError, or libcamera's own import errors
        return None, "picamera2 not importable: %s" % e
    return Picamera2, None


def picamera2_cameras():
    """(list of camera info dicts, reason) -- [] with a reason when there is none."""
    Picamera2, why = _import_picamera2()
    if Picamera2 is None:
        return [], why
    try:
        cams = Picamera2.global_camera_info()
    except Exception as e:
        return [], "picamera2: %s" % e
    return cams, (None if cams else "picamera2 sees no camera")


class Picamera2Source(Source):
    """A libcamera camera through picamera2: BGR frames from the "main" stream.

    picamera2's "RGB888" format is laid out B, G, R in memory -- OpenCV's BGR."""

    kind = "picamera2"
    live = True
    reconnect = True

    def __init__(self, camera_num=0, size=(640, 480), fps=None, factory=None):
        self.camera_num = camera_num
        self.size = tuple(size)
        self.fps = fps
        self.name = "picamera2:%d" % camera_num
        self._factory = factory
        self.cam = None

    def open(self):
        factory = self._factory
        if factory is None:
            factory, why = _import_picamera2()
            if factory is None:
                raise SourceError(why)
        try:
            cam = factory(self.camera_num)
            controls = {"FrameRate": float(self.fps)} if self.fps else {}
            config = cam.create_video_configuration(
                main={"size": self.size, "format": "RGB888"}, controls=controls,
                buffer_count=4)
            cam.configure(config)
            cam.start()
        except Exception as e:
            raise SourceError("cannot start camera %d: %s" % (self.camera_num, e))
        self.cam = cam

    def read(self):
        if self.cam is None:
            raise SourceLost("not open")
        try:
            return self.cam.capture_array("main")
        except Exception as e:
            raise SourceLost("camera %d: %s" % (self.camera_num, e))

    def close(self):
        cam, self.cam = self.cam, None
        if cam is None:
            return
        for fn in (cam.stop, cam.close):
            try:
                fn()
            except Exception:
                pass


# ---- choosing ------------------------------------------------------------------------------

def open_source(spec, loop=False, realtime=False, width=640, height=480, fps=None,
                max_pixels=DEFAULT_MAX_PIXELS):
    """A Source for a --source value (see the CLI help); auto picks picamera2, then
    /dev/video0, and raises SourceError when there is neither -- it never falls back to
    the bundled sample clip: ``demo`` names that clip (looped, paced like a camera).
    max_pixels: the largest image / video frame (width x height) read."""
    notes = []
    if spec in (None, "", "auto"):
        cams, why = picamera2_cameras()
        if cams:
            return Picamera2Source(0, (width, height), fps), notes
        notes.append(why)
        if os.path.exists("/dev/video0"):
            return CvSource("/dev/video0", "v4l2", width=width, height=height), notes
        notes.append("no /dev/video0")
        raise SourceError("--source auto: no camera found (%s).  Connect a camera, or name "
                          "the source (--source picamera2 | /dev/videoN | rtsp://... | FILE | "
                          "DIR); --source demo watches the bundled sample clip"
                          % "; ".join(notes))
    if spec == "demo":
        clip = bundled_sample()
        if clip is None:
            raise SourceError("--source demo: no bundled sample clip in %s" % SAMPLES)
        return CvSource(clip, "file", loop=True, realtime=True, max_pixels=max_pixels), notes
    if spec == "picamera2" or spec.startswith("picamera2:"):
        num = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return Picamera2Source(num, (width, height), fps), notes
    if spec.startswith(STREAM_PREFIXES):
        return CvSource(spec, "stream", max_pixels=max_pixels), notes
    if spec.startswith("/dev/video") or spec.isdigit():
        return CvSource(int(spec) if spec.isdigit() else spec, "v4l2", width=width,
                        height=height), notes
    if os.path.isdir(spec):
        return DirSource(spec, loop=loop, realtime=realtime, fps=fps or 10.0,
                         max_pixels=max_pixels), notes
    return CvSource(spec, "file", loop=loop, realtime=realtime, max_pixels=max_pixels), notes
