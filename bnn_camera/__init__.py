"""bnn-pi's headless camera app: ``python -m bnn_camera --help`` (see bnn_camera/README.md).

A capture thread feeds a bounded queue (live sources drop the oldest frame when inference
lags), an inference thread runs a firmware_py.detect.Detector, and sinks write JSON lines,
snapshots, an MJPEG/Prometheus HTTP endpoint and MQTT messages; a reporter thread emits a
stats record every second (fps, latency, drops, detections, measured power, temperature).
"""
import os

from firmware_py import zoo_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the source tree (when run from one)
DEFAULT_MODEL = zoo_path("person", "binary.bnn")
SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def shown_path(path):
    """a path as the user reads it: relative to the source tree when inside it"""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith(os.pardir) else rel
