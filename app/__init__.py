"""bnn-pi's headless camera app: ``python -m app --help`` (see app/README.md).

A capture thread feeds a bounded queue (live sources drop the oldest frame when inference
lags), an inference thread runs a firmware_py.detect.Detector, and sinks write JSON lines,
snapshots, an MJPEG/Prometheus HTTP endpoint and MQTT messages; a reporter thread emits a
stats record every second (fps, latency, drops, detections, measured power, temperature).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "zoo", "person", "binary.bnn")
SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
