"""--mqtt against a REAL mosquitto broker started here on 127.0.0.1 (a free port)."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import cv2  # noqa: F401
import paho.mqtt.client as mqtt

from bnn_camera import ROOT  # noqa: E402

from bnn_camera.stress import Broker  # noqa: E402  (one mosquitto harness)

SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")


def make_certs(d):
    """A test CA, a server certificate for 127.0.0.1 / localhost and a client certificate,
    made with the openssl command line (PEM files in folder d); {name: path}."""
    d = str(d)
    p = {k: os.path.join(d, k + ".pem") for k in ("ca", "ca_key", "server_cert", "server_key",
                                                   "client_cert", "client_key")}

    def ssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bnn test CA",
        "-keyout", p["ca_key"], "-out", p["ca"])
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who, cn in (("server", "localhost"), ("client", "bnn-camera")):
        csr = os.path.join(d, who + ".csr")
        ssl("req", *ec, "-subj", "/CN=" + cn,
            "-keyout", p[who + "_key"], "-out", csr)
        ssl("x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"],
            "-CAcreateserial", "-days", "2", "-out", p[who + "_cert"],
            *(["-extfile", ext] if who == "server" else []))
    return p


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
    """Subscribes to topic; msgs: [(topic, payload)] (JSON decoded when it is JSON),
    log: [(seconds since start, topic, payload text, retained)].  auth (user, password),
    certs (make_certs): TLS with the client certificate."""

    def __init__(self, port, topic, auth=None, certs=None):
        self.msgs = []
        self.log = []
        self.t0 = time.monotonic()
        self.ready = threading.Event()
        self.c = _new_client()
        if auth:
            self.c.username_pw_set(*auth)
        if certs:
            self.c.tls_set(ca_certs=certs["ca"], certfile=certs["client_cert"],
                           keyfile=certs["client_key"])

        def on_connect(c, userdata, flags, rc, properties=None):
            c.subscribe(topic, qos=1)

        def on_subscribe(c, userdata, mid, *a):
            self.ready.set()

        def on_message(c, userdata, msg):
            text = msg.payload.decode()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            self.log.append((round(time.monotonic() - self.t0, 3), msg.topic, text,
                             bool(msg.retain)))
            self.msgs.append((msg.topic, payload))

        self.c.on_connect, self.c.on_subscribe, self.c.on_message = on_connect, on_subscribe, \
            on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10), "subscriber did not subscribe"

    def wait_for(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.msgs):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_parse_mqtt():
    from bnn_camera.mqtt import parse_mqtt
    assert parse_mqtt("broker.lan:1884/home/cam1") == ("broker.lan", 1884, "home/cam1")
    assert parse_mqtt("127.0.0.1") == ("127.0.0.1", 1883, "")
    assert parse_mqtt("127.0.0.1", default_port=8883) == ("127.0.0.1", 8883, "")
    assert parse_mqtt("[::1]:1885/t/") == ("::1", 1885, "t")
    with pytest.raises(ValueError):
        parse_mqtt(":1883/x")
    with pytest.raises(ValueError, match="--mqtt-credentials"):
        parse_mqtt("cam:secret@broker.lan:1883/t")


def test_credentials_are_refused_on_the_command_line():
    r = subprocess.run([sys.executable, "-m", "bnn_camera", "--mqtt", "cam:secret@broker/t"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "credentials do not go on the command line" in r.stderr, r.stderr
    assert "--mqtt-credentials" in r.stderr and "BNN_MQTT_PASSWORD" in r.stderr


def test_read_credentials(tmp_path):
    from bnn_camera.mqtt import read_credentials
    f = tmp_path / "c"
    f.write_text("cam:pa:ss word\nignored\n")
    assert read_credentials(str(f), {}) == ("cam", "pa:ss word")
    f.write_text("justuser\n")
    assert read_credentials(str(f), {"BNN_MQTT_USERNAME": "x"}) == ("justuser", None)
    assert read_credentials(None, {"BNN_MQTT_USERNAME": "u", "BNN_MQTT_PASSWORD": "p"}) == \
        ("u", "p")
    assert read_credentials(None, {}) == (None, None)
    for text, why in (("", "USERNAME:PASSWORD"), (":pw\n", "USERNAME:PASSWORD"),
                      ("x" * 5000, "4 KiB")):
        f.write_text(text)
        with pytest.raises(ValueError, match=why):
            read_credentials(str(f), {})
    with pytest.raises(ValueError, match="no such|No such"):
        read_credentials(str(tmp_path / "missing"), {})
    with pytest.raises(ValueError, match="BNN_MQTT_USERNAME"):
        read_credentials(None, {"BNN_MQTT_PASSWORD": "p"})


def test_a_broker_that_refuses_the_login_says_so(tmp_path):
    """allow_anonymous false: no login or a wrong password is refused, and the sink says
    why (not "not reachable"), naming where the credentials go."""
    from bnn_camera.mqtt import MqttSink
    b = Broker(tmp_path, users={"cam": "right"}).start()
    logs = []
    try:
        for user, pw in ((None, None), ("cam", "wrong")):
            sink = MqttSink("127.0.0.1", b.port, "t", username=user, password=pw,
                            log=logs.append)
            try:
                deadline = time.monotonic() + 10
                while sink.last_error is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not sink.connected.is_set()
                assert "refused" in sink.last_error and "authori" in sink.last_error.lower()
            finally:
                sink.close()
        assert any("refused the connection" in m and "--mqtt-credentials" in m for m in logs)
        sink = MqttSink("127.0.0.1", b.port, "t", username="cam", password="right")
        try:
            assert sink.wait_connected(10), sink.last_error
        finally:
            sink.close()
    finally:
        b.stop()


def test_recorded_run_auth_tls_home_assistant(tmp_path):
    """The must-show run (tests/record_mqtt_run.py, committed as docs/mqtt-run.json): the
    app on its bundled clip against mosquitto with a password file and TLS with client
    certificates: Home Assistant discovery configs that pass HA's schema, availability
    online -> offline when the app is SIGKILLed (the broker's last will), exactly one
    new and one end event for the one person who walks through (the window the detector
    takes for a person is masked), a few rate-limited updates -- not a message per frame
    -- and the retained state a late subscriber gets."""
    from bnn_camera import DEFAULT_MODEL
    from tests.ha_discovery import check_discovery
    from tests.record_mqtt_run import TOPIC, record_run
    assert os.path.isfile(DEFAULT_MODEL)  # the shipped detector: its boxes mean something
    rec = record_run(DEFAULT_MODEL, tmp_path)
    msgs = [(m["topic"], m["payload"]) for m in rec["messages"]]
    configs = [(t, p) for t, p in msgs if t.startswith("homeassistant/")]
    assert {t for t, _ in configs} == {
        "homeassistant/binary_sensor/porch/person/config",
        "homeassistant/sensor/porch/person_count/config"} | {
        "homeassistant/sensor/porch/%s/config" % k
        for k in ("fps", "latency", "power", "energy_per_frame", "temperature")}
    for t, p in configs:
        assert check_discovery(t, p) == [], (t, p)
        assert p["availability_topic"] == TOPIC + "/availability" and p["qos"] == 1
    avail = [p for t, p in msgs if t == TOPIC + "/availability"]
    assert avail == ["online", "offline"] and msgs[0] == (TOPIC + "/availability", "online")
    assert msgs[-1] == (TOPIC + "/availability", "offline")  # the last will, after the kill
    t_off = rec["messages"][-1]["t"]
    assert rec["killed_at"] <= t_off < rec["killed_at"] + 5
    events = [p for t, p in msgs if t == TOPIC + "/events"]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == 1 \
        and kinds.count("end") == 1, json.dumps(rec["messages"] + [rec["first_stats"]])
    assert len({e["id"] for e in events}) == 1 and events[0]["label"] == "person"
    assert 1 <= kinds.count("update") <= 6  # every 5 s while the person stays (~22 s)
    end = events[-1]
    assert end["frames"] >= 150 and 15 < end["end_time"] - end["start_time"] < 30
    states = [p for t, p in msgs if t == TOPIC + "/person/state"]
    counts = [p for t, p in msgs if t == TOPIC + "/person/count"]
    assert states == ["OFF", "ON", "OFF"] and counts == [0, 1, 0]
    assert rec["stats_messages"] >= 20
    assert rec["first_stats"]["source_kind"] == "file"
    assert rec["first_stats"]["source"].endswith("people-384x216.mp4")
    # retained: what Home Assistant gets when it (re)subscribes later
    retained = {t: p for t, p, r in rec["retained_later"]}
    assert all(r for _, _, r in rec["retained_later"])
    assert retained[TOPIC + "/availability"] == "offline"
    assert retained[TOPIC + "/person/state"] == "OFF" and retained[TOPIC + "/person/count"] == 0
    assert {t for t in retained if t.startswith("homeassistant/")} == {t for t, _ in configs}


def test_app_publishes_detections_to_real_broker(broker, model):
    """--mqtt-detections: each frame's detections (rate limited by --mqtt-max-rate), stats
    and the summary."""
    sub = Subscriber(broker.port, "cam/#")
    try:
        r = subprocess.run([sys.executable, "-m", "bnn_camera", "--model", model, "--source", SAMPLE,
                            "--max-frames", "60", "--realtime", "--threads", "1",
                            "--mqtt", "127.0.0.1:%d/cam" % broker.port, "--mqtt-detections",
                            "--mqtt-max-rate", "1000", "--interval", "0.5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        summ = json.loads(r.stdout.splitlines()[-1])
        assert sub.wait_for(lambda ms: any(t == "cam/stats" and m.get("type") == "summary"
                                           for t, m in ms), 5)
        assert sub.wait_for(lambda ms: ms[-1] == ("cam/availability", "offline"), 5)
    finally:
        sub.close()
    dets = [m for t, m in sub.msgs if t == "cam/detections"]
    stats = [m for t, m in sub.msgs if t == "cam/stats"]
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
    assert summ["source_kind"] == "file" and summ["source"] == SAMPLE
    assert all(isinstance(summ["mqtt_events_" + k], int) for k in ("new", "update", "end"))
    assert summ["mqtt_events_new"] >= summ["mqtt_events_end"]  # ended at the stop: equal
    assert summ["mqtt_events_new"] == summ["mqtt_events_end"]


def test_sink_reconnects_when_broker_comes_up(tmp_path):
    """The broker is down at start: publishing never blocks, and the sink connects once the
    broker is up (paho's own backoff)."""
    from bnn_camera.mqtt import MqttSink
    b = Broker(tmp_path)
    sink = MqttSink("127.0.0.1", b.port, "t/x")
    try:
        t = time.monotonic()
        sink.on_stats({"type": "stats", "n": 0})
        assert time.monotonic() - t < 0.5 and sink.dropped == 1
        b.start()
        sub = Subscriber(b.port, "t/#")
        try:
            assert sink.wait_connected(15), "the sink did not connect to the broker"
            sink.on_stats({"type": "stats", "n": 1})
            assert sub.wait_for(lambda ms: ("t/x/stats", {"type": "stats", "n": 1}) in ms, 5)
            assert [m for t, m in sub.msgs if t == "t/x/stats"] == [{"type": "stats", "n": 1}]
            assert ("t/x/availability", "online") in sub.msgs
        finally:
            sub.close()
    finally:
        sink.close()
        b.stop()


def test_tls_that_does_not_verify_says_why(tmp_path, model):
    """The broker's certificate signed by a CA the app does not trust: no connection, and
    the start-up line says why (the TLS handshake), not "not reachable"."""
    certs = make_certs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    other_ca = make_certs(other)["ca"]
    b = Broker(tmp_path, certs=certs).start()
    try:
        r = subprocess.run([sys.executable, "-m", "bnn_camera", "--model", model,
                            "--source", SAMPLE, "--max-frames", "1", "--threads", "1", "--no-power",
                            "--mqtt", "127.0.0.1:%d/t" % b.port, "--mqtt-ca", other_ca,
                            "--mqtt-cert", certs["client_cert"], "--mqtt-key",
                            certs["client_key"]],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        b.stop()
    assert r.returncode == 0, r.stderr
    assert "TLS handshake failed" in r.stderr and "certificate verify failed" in r.stderr, \
        r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["mqtt_published"] == 0


def test_rate_limit_and_retained_state(broker):
    """--mqtt-max-rate bounds the per-frame detections (the rest counted); the per-class
    state is published retained only when it changes."""
    import numpy as np
    from bnn_camera.mqtt import MqttSink
    from bnn_camera.tracker import Tracker
    from firmware_py.detect import Detections
    sink = MqttSink("127.0.0.1", broker.port, "r", class_names=["person"], max_rate=2.0,
                    detections=True, tracker=Tracker(["person"], min_frames=1),
                    discovery_prefix="")
    sub = Subscriber(broker.port, "r/#")
    try:
        assert sink.wait_connected(10)
        assert sub.wait_for(lambda ms: ("r/person/state", "OFF") in ms, 5)  # announced
        for i in range(50):
            sink.on_detections(i, None, None, {"type": "detections", "frame": i})
        one = Detections(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32),
                         np.array([0]), ["person"])
        frame = np.zeros((20, 20, 3), np.uint8)
        for i in range(10):
            sink.on_frame(i, frame, one)
        assert sub.wait_for(lambda ms: ("r/person/state", "ON") in ms, 5)
        time.sleep(0.3)
    finally:
        sub.close()
        sink.close()
    dets = [m for t, m in sub.msgs if t == "r/detections"]
    assert 1 <= len(dets) <= 3 and sink.rate_limited >= 47
    assert [m for t, m in sub.msgs if t == "r/person/state"] == ["OFF", "ON"], sub.msgs
    assert [m["type"] for t, m in sub.msgs if t == "r/events"] == ["new"]
    assert not any(t.startswith("homeassistant/") for t, _ in sub.msgs)  # discovery off


def test_an_announcement_never_leaves_an_older_state_behind(broker):
    """A (re)connection announces the state from paho's thread while the inference thread
    reports an arrival: the retained state must be the newest.  The announcement is made
    slow (0.5 s between counting 0 and publishing it) so that the arrival lands inside."""
    import numpy as np
    from bnn_camera.mqtt import MqttSink
    from bnn_camera.tracker import Tracker
    from firmware_py.detect import Detections

    class SlowAnnouncement(MqttSink):
        def _publish(self, topic, payload, retain=False):
            if topic.endswith("/count") and payload == "0" and \
                    threading.current_thread() is not threading.main_thread():
                time.sleep(0.5)
            return super()._publish(topic, payload, retain)

    one = Detections(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32),
                     np.array([0]), ["person"])
    sink = SlowAnnouncement("127.0.0.1", broker.port, "race", class_names=["person"],
                            tracker=Tracker(["person"], min_frames=1), discovery_prefix="")
    try:
        assert sink.wait_connected(10)
        time.sleep(0.2)  # the announcement is inside its slow publish now
        sink.on_frame(1, np.zeros((20, 20, 3), np.uint8), one)
        time.sleep(1.0)
    finally:
        sink.client.disconnect()  # no finish(): the person is still there
        sink.client.loop_stop()
    late = Subscriber(broker.port, "race/person/#")
    try:
        assert late.wait_for(lambda ms: len(ms) >= 2, 5)
    finally:
        late.close()
    assert dict(late.msgs) == {"race/person/state": "ON", "race/person/count": 1}
