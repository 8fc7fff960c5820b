"""The picamera2 adapter against picamera2's real package, with only ``libcamera`` (the
C++ binding that exists only on a Pi) faked through sys.modules.

(picamera2's DRM preview also imports ``pykms``, kms++'s binding from Raspberry Pi OS's
python3-kms++, which PyPI lacks: where it is missing an empty stand-in module is given;
the app never opens a preview.)

* camera discovery runs picamera2's real ``Picamera2.global_camera_info`` over the fake
  libcamera CameraManager;
* the capture path drives a ``unittest.mock.create_autospec`` of the real ``Picamera2``
  class: every call the adapter makes is checked against the real method signatures
  (a misspelled method or a wrong keyword fails), frames come from a real video.

Skipped with the reason when picamera2 is not installed (pip install picamera2 needs
libcap-dev from apt for python-prctl)."""
import os
import sys
import time
import types
from unittest import mock

import numpy as np
import pytest

import cv2

from bnn_camera import ROOT  # noqa: E402

SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")


class _AutoMeta(type):
    """Classes whose unknown class attributes are further auto-classes (enums, nested
    namespaces such as controls.draft.NoiseReductionModeEnum.Fast)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _AutoMeta(name, (_Auto,), {})
        setattr(cls, name, sub)
        return sub


class _Auto(metaclass=_AutoMeta):
    def __init__(self, *a, **k):
        self.args = a

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Auto()

    def __str__(self):
        return "<%s>" % type(self).__name__


class _ControlId(str):
    @property
    def name(self):
        return str(self)


class FakeCamera:
    def __init__(self, cid, model):
        self.id = cid
        self._props = {_ControlId("Model"): model, _ControlId("Location"): 2,
                       _ControlId("Rotation"): 180}

    @property
    def properties(self):
        return self._props


def _fake_libcamera(cameras):
    lc = types.ModuleType("libcamera")
    for name in ("Transform", "ColorSpace", "Size", "Rectangle", "StreamRole", "PixelFormat",
                 "ControlType", "Orientation", "FrameBuffer", "FrameBufferAllocator", "Camera",
                 "Request", "FrameMetadata", "CameraConfiguration", "SensorConfiguration",
                 "properties", "Point", "Fence", "ControlId", "ControlInfo", "Stream",
                 "StreamConfiguration", "StreamFormats", "SensorFormat"):
        setattr(lc, name, _AutoMeta(name, (_Auto,), {}))
    controls = types.ModuleType("libcamera.controls")
    controls.__getattr__ = lambda name: _AutoMeta(name, (_Auto,), {})
    lc.controls = controls
    lc._libcamera = types.SimpleNamespace(ColorSpace=lc.ColorSpace, Transform=lc.Transform)
    manager = types.SimpleNamespace(cameras=cameras, event_fd=-1,
                                    get_ready_requests=lambda: [])

    class CameraManager:
        @staticmethod
        def singleton():
            return manager

    lc.CameraManager = CameraManager
    return lc, controls


@pytest.fixture
def picam(monkeypatch):
    """Imports the real picamera2 over a fake libcamera; yields (module, set_cameras)."""
    cams = []
    lc, controls = _fake_libcamera(cams)
    saved = {k: v for k, v in sys.modules.items()
             if k == "picamera2" or k.startswith("picamera2.")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.setitem(sys.modules, "libcamera", lc)
    monkeypatch.setitem(sys.modules, "libcamera.controls", controls)
    try:
        import pykms  # noqa: F401
    except ImportError:
        # kms++ (Raspberry Pi OS's python3-kms++, not on PyPI) is only used by picamera2's
        # DRM preview window, which the app never opens: an empty stand-in for the import
        pykms = types.ModuleType("pykms")
        pykms.PixelFormat = _AutoMeta("PixelFormat", (_Auto,), {})
        monkeypatch.setitem(sys.modules, "pykms", pykms)
    try:
        import picamera2 as pc2
    except ImportError as e:
        pytest.skip("picamera2 not importable (pip install picamera2; needs libcap-dev): %s" % e)
    try:
        yield pc2, cams
    finally:
        for k in [k for k in sys.modules if k == "picamera2" or k.startswith("picamera2.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _frames(n):
    c = cv2.VideoCapture(SAMPLE)
    out = []
    for _ in range(n):
        ok, f = c.read()
        out.append(cv2.resize(f, (320, 240)))
    return out


def test_real_global_camera_info_over_fake_libcamera(picam, monkeypatch):
    pc2, cams = picam
    from bnn_camera import sources
    assert sources.picamera2_cameras() == ([], "picamera2 sees no camera")
    cams.append(FakeCamera("/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "imx708"))
    info, why = sources.picamera2_cameras()
    assert why is None and info[0]["Model"] == "imx708" and info[0]["Num"] == 0
    src, notes = sources.open_source("auto")
    assert isinstance(src, sources.Picamera2Source) and src.live and src.reconnect


def _autospec_factory(pc2, frames, fail_after=None):
    """A factory of autospec'd real Picamera2 instances serving frames (RGB888 = BGR)."""
    made = []

    def factory(camera_num=0, **kw):
        cam = mock.create_autospec(pc2.Picamera2, instance=True)
        mock.create_autospec(pc2.Picamera2)(camera_num, **kw)  # the real constructor's signature
        cam.create_video_configuration.return_value = {"main": {"format": "RGB888"}}
        state = {"i": 0}

        def capture_array(name="main", wait=None, signal_function=None):
            assert name == "main"
            state["i"] += 1
            if fail_after is not None and len(made) == 1 and state["i"] > fail_after:
                raise RuntimeError("Camera frontend has timed out!")
            time.sleep(0.005)
            return frames[state["i"] % len(frames)].copy()

        cam.capture_array.side_effect = capture_array
        made.append(cam)
        return cam

    return factory, made


def test_picamera2_source_drives_real_api(picam):
    pc2, _ = picam
    from bnn_camera.pipeline import Pipeline
    from bnn_camera.sources import Picamera2Source
    from firmware_py.detect import Detector
    from bnn_camera.testmodel import write_synthetic_detector
    import tempfile
    det = Detector(write_synthetic_detector(os.path.join(tempfile.mkdtemp(), "m.bnn")),
                   num_threads=1)
    factory, made = _autospec_factory(pc2, _frames(10))
    src = Picamera2Source(0, size=(320, 240), fps=15, factory=factory)
    s = Pipeline(det, src, max_frames=12, report_interval=0.2).run()
    assert s["frames_total"] == 12 and s["bad_frames_total"] == 0
    cam = made[0]
    cam.create_video_configuration.assert_called_once_with(
        main={"size": (320, 240), "format": "RGB888"}, controls={"FrameRate": 15.0},
        buffer_count=4)
    cam.configure.assert_called_once_with({"main": {"format": "RGB888"}})
    cam.start.assert_called_once_with()
    cam.stop.assert_called_once_with()
    cam.close.assert_called_once_with()


def test_picamera2_failure_reconnects(picam):
    pc2, _ = picam
    from bnn_camera.pipeline import Pipeline
    from bnn_camera.sources import Picamera2Source

    class Echo:
        class_names = ["x"]

        def detect(self, f):
            z = np.zeros((0,), np.float32)
            return types.SimpleNamespace(boxes=z.reshape(0, 4), scores=z, classes=z)

    factory, made = _autospec_factory(pc2, _frames(5), fail_after=4)
    src = Picamera2Source(0, size=(320, 240), factory=factory)
    recs = []
    s = Pipeline(Echo(), src, max_frames=12, report_interval=0.05, emit=recs.append,
                 backoff=(0.05, 0.1)).run()
    assert s["frames_total"] == 12 and s["reconnects"] == 1 and len(made) == 2
    made[0].stop.assert_called_once_with()  # the failed camera was released
    made[0].close.assert_called_once_with()
    assert "timed out" in s["last_error"]


def test_auto_without_a_camera_is_an_error_never_the_sample_clip(monkeypatch):
    """No camera anywhere: auto refuses (a misconfigured Pi must not watch the bundled clip
    of people and raise alarms); the message names the reasons and the way to the demo,
    which ``--source demo`` is: the bundled clip, paced and looped like a camera."""
    from bnn_camera import sources
    monkeypatch.setattr(sources, "picamera2_cameras", lambda: ([], "picamera2 sees no camera"))
    real_exists = os.path.exists
    monkeypatch.setattr(sources.os.path, "exists",
                        lambda p: False if p == "/dev/video0" else real_exists(p))
    with pytest.raises(sources.SourceError) as e:
        sources.open_source("auto")
    msg = str(e.value)
    assert "no camera found" in msg and "picamera2 sees no camera" in msg
    assert "no /dev/video0" in msg and "--source demo" in msg
    src, notes = sources.open_source("demo")
    assert isinstance(src, sources.CvSource) and src.kind == "file"
    assert src.loop and src.live and src.name.endswith("people-384x216.mp4")
