"""--mqtt against a REAL mosquitto broker started here on 127.0.0.1 (a free port)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

import cv2  # noqa: F401
import paho.mqtt.client as mqtt

from bnn_camera import ROOT  # noqa: E402

SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
    None)

pytestmark = pytest.mark.skipif(MOSQUITTO is None,
                                reason="mosquitto binary not installed (apt install mosquitto)")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, tmp_path, port=None):
        self.port = port or _free_port()
        self.conf = tmp_path / ("mosquitto-%d.conf" % self.port)
        self.conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_dest stderr\n" % self.port)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited: %s" % self.proc.stdout.read())
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def _new_client():
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    return mqtt.Client()


class Subscriber:
    def __init__(self, port, topic):
        self.msgs = []
        self.ready = threading.Event()
        self.c = _new_client()

        def on_connect(c, userdata, flags, rc, properties=None):
            c.subscribe(topic, qos=0)

        def on_subscribe(c, userdata, mid, *a):
            self.ready.set()

        def on_message(c, userdata, msg):
            self.msgs.append((msg.topic, json.loads(msg.payload)))

        self.c.on_connect, self.c.on_subscribe, self.c.on_message = on_connect, on_subscribe, \
            on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10), "subscriber did not subscribe"

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()




def test_parse_mqtt():
    from bnn_camera.mqtt import parse_mqtt
    assert parse_mqtt("broker.lan:1884/home/cam1") == ("broker.lan", 1884, "home/cam1")
    assert parse_mqtt("127.0.0.1") == ("127.0.0.1", 1883, "bnn/detections")
    assert parse_mqtt("[::1]:1885/t") == ("::1", 1885, "t")
    with pytest.raises(ValueError):
        parse_mqtt(":1883/x")


def test_app_publishes_detections_to_real_broker(broker, model):
    sub = Subscriber(broker.port, "cam/#")
    try:
        r = subprocess.run([sys.executable, "-m", "bnn_camera", "--model", model, "--source", SAMPLE,
                            "--max-frames", "60", "--realtime", "--threads", "1",
                            "--mqtt", "127.0.0.1:%d/cam/det" % broker.port, "--interval", "0.5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        summ = json.loads(r.stdout.splitlines()[-1])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                m.get("type") == "summary" for _, m in sub.msgs):
            time.sleep(0.05)
    finally:
        sub.close()
    dets = [m for t, m in sub.msgs if t == "cam/det"]
    stats = [m for t, m in sub.msgs if t == "cam/det/stats"]
    assert any(m["type"] == "summary" for m in stats)
    assert any(m["type"] == "stats" and "inference_fps" in m for m in stats)
    # every frame with detections was published (QoS 0 on loopback: none lost); the app's
    # first frames may go out before the client's CONNACK -- those are counted as dropped
    n_pub = sum(len(m["detections"]) for m in dets)
    assert summ["mqtt_published"] >= len(dets) > 0 or summ["detections_total"] == 0
    for m in dets:
        assert m["type"] == "detections" and m["detections"]
        for o in m["detections"]:
            assert set(o) == {"class", "class_id", "score", "box"} and len(o["box"]) == 4
    assert n_pub <= summ["detections_total"]


def test_sink_reconnects_when_broker_comes_up(tmp_path):
    """The broker is down at start: publishing never blocks, and the sink connects once the
    broker is up (paho's own backoff)."""
    from bnn_camera.mqtt import MqttSink
    b = Broker(tmp_path)
    sink = MqttSink("127.0.0.1", b.port, "t/x")
    try:
        t = time.monotonic()
        assert sink.publish_detections({"type": "detections", "detections": []}) is False
        assert time.monotonic() - t < 0.5 and sink.dropped == 1
        b.start()
        sub = Subscriber(b.port, "t/#")
        try:
            assert sink.wait_connected(15), "the sink did not connect to the broker"
            assert sink.publish_stats({"type": "stats", "n": 1})
            deadline = time.monotonic() + 5
            while not sub.msgs and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sub.msgs == [("t/x/stats", {"type": "stats", "n": 1})]
        finally:
            sub.close()
    finally:
        sink.close()
        b.stop()
