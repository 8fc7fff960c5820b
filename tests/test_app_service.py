"""The camera app as a service and in the home-camera ecosystem (issue 19): Prometheus
metrics checked by promtool, the status page rendered by headless Chromium, systemd's notify
protocol over a real datagram socket (READY, a watchdog fed by the inference thread), the
hardened unit (systemd-analyze), event-log rotation, the power estimate, and the JSON-lines
schema of docs/events.md checked against a real run, plotted by bnn_camera.plot.

promtool (apt: prometheus), chromium and systemd-analyze are required: a missing one fails."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from bnn_camera import ROOT

SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")
UNIT = os.path.join(ROOT, "bnn_camera", "bnn-camera.service")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1280,720"]


@pytest.fixture(scope="module")
def detector(model):
    from firmware_py.detect import Detector
    return Detector(model, num_threads=1)


def _tool(name):
    path = shutil.which(name)
    assert path, "%s is not installed (./build.sh test installs it with apt)" % name
    return path


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def _start_app(args, env=None):
    p = subprocess.Popen([sys.executable, "-m", "bnn_camera"] + args, cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p


def _http_port(p):
    for line in p.stderr:
        m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if m:
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return int(m.group(1))
    raise AssertionError("the app printed no http line")


def _wait_healthy(base, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _get(base + "/healthz")[1] == b"ok\n":
                return
        except urllib.error.HTTPError:
            pass
        assert time.monotonic() < deadline, "never healthy"
        time.sleep(0.2)


# ---- docs/events.md: the schema, read from the document ------------------------------------

TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool,
         "object": dict, "array": list, "null": type(None)}


def events_schema():
    """{record type: {key: (types, always)}} from the tables of docs/events.md."""
    schema, section = {}, None
    with open(os.path.join(ROOT, "docs", "events.md"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"## `(\w+)`", line)
            if m:
                section = schema.setdefault(m.group(1), {})
                continue
            m = re.match(r"\| `([^`]+)` \| ([a-z, ]+) \| ([^|]+) \|", line)
            if m and section is not None:
                types = tuple(TYPES[t.strip()] for t in m.group(2).split(","))
                section[m.group(1)] = (types, m.group(3).strip() == "always")
    return schema


def _is(value, types):
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is no number
    return isinstance(value, types)


def check_record(rec, schema):
    """The problems of one record against the schema (an empty list: it conforms)."""
    rules = schema.get(rec.get("type"))
    if rules is None:
        return ["unknown record type %r" % rec.get("type")]
    bad = []

    def check(obj, prefix):
        children = {k[len(prefix):]: v for k, v in rules.items() if k.startswith(prefix)
                    and "." not in k[len(prefix):] and "[]" not in k[len(prefix):]}
        patterns = {k[:-1]: v for k, v in children.items() if k.endswith("*")}
        for key, value in obj.items():
            rule = children.get(key) or next((v for p, v in patterns.items()
                                              if key.startswith(p)), None)
            if rule is None:
                bad.append("%s%s: not in docs/events.md" % (prefix, key))
                continue
            if not _is(value, rule[0]):
                bad.append("%s%s: %r is not %s" % (prefix, key, value, rule[0]))
            sub = prefix + key
            if isinstance(value, dict) and any(k.startswith(sub + ".") for k in rules):
                check(value, sub + ".")
            if isinstance(value, list) and any(k.startswith(sub + "[].") for k in rules):
                for item in value:
                    check(item, sub + "[].")
        for key, (_, always) in children.items():
            if always and not key.endswith("*") and key not in obj:
                bad.append("%s%s: missing" % (prefix, key))
    check(rec, "")
    return bad


def test_events_schema_is_read_from_the_doc_and_catches_mistakes():
    schema = events_schema()
    assert {"stats", "detections", "summary"} <= set(schema)
    assert schema["stats"]["power_estimated"][0] == (dict, type(None))
    det = {"type": "detections", "time": 1.0, "frame": 3, "source": "x", "latency_ms": 4.0,
           "detections": [{"class": "person", "class_id": 0, "score": 0.5,
                           "box": [1, 2, 3, 4]}]}
    assert check_record(det, schema) == []
    assert check_record(dict(det, extra=1), schema) == ["extra: not in docs/events.md"]
    assert check_record(dict(det, frame="3"), schema)
    wrong = dict(det, detections=[{"class": "person", "class_id": True, "score": 0.5,
                                   "box": [1, 2, 3, 4]}])
    assert check_record(wrong, schema)  # a boolean is no integer
    missing = {k: v for k, v in det.items() if k != "source"}
    assert check_record(missing, schema) == ["source: missing"]


# ---- one real run: /metrics under promtool, the page in Chromium, the event log ------------

def test_service_run_promtool_chromium_events_schema_plot(model, tmp_path):
    promtool, chromium = _tool("promtool"), _tool("chromium")
    out = tmp_path / "events.jsonl"
    p = _start_app(["--model", model, "--source", SAMPLE, "--loop", "--realtime",
                    "--http", "127.0.0.1:0", "--threads", "1", "--out", str(out),
                    "--snapshots", str(tmp_path / "snaps"), "--power-model", "pi4b",
                    "--format", "json", "--stdout-interval", "2"])
    try:
        base = "http://127.0.0.1:%d" % _http_port(p)
        _wait_healthy(base)
        time.sleep(3.5)  # a few stats records for the charts (/history)
        code, body = _get(base + "/metrics")
        text = body.decode()
        r = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=60)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
        assert "# TYPE bnn_latency_seconds histogram" in text
        n = int(re.search(r"^bnn_latency_seconds_count (\d+)$", text, re.M).group(1))
        inf = int(re.search(r'^bnn_latency_seconds_bucket\{le="\+Inf"\} (\d+)$', text,
                            re.M).group(1))
        assert n == inf > 0
        assert re.search(r'^bnn_source_state\{state="running"\} 1$', text, re.M)
        assert re.search(r'^bnn_source_state\{state="reconnecting"\} 0$', text, re.M)
        assert re.search(r"^bnn_source_up 1$", text, re.M)
        assert re.search(r'^bnn_build_info\{version="[^"]+",python="[^"]+",machine="[^"]+"\} 1$',
                         text, re.M)
        assert re.search(r'^bnn_estimated_power_watts\{model="pi4b"\} [0-9.]+$', text, re.M)
        assert "bnn_power_watts" not in text  # nothing measures here: no measured series

        # the status page, rendered by Chromium: the numbers of /stats are on it
        stats = json.loads(_get(base + "/stats")[1])
        dets = json.loads(_get(base + "/detections")[1])
        assert dets["source"].endswith("people-384x216.mp4") and dets["frame"] >= 1
        history = json.loads(_get(base + "/history")[1])
        assert len(history) >= 3 and all(h["type"] == "stats" for h in history)
        r = subprocess.run([chromium] + CHROMIUM_FLAGS + [
            "--user-data-dir=%s" % (tmp_path / "chromium"), "--virtual-time-budget=4000",
            "--dump-dom", base + "/"], capture_output=True, text=True, timeout=120)
        dom = r.stdout
        assert r.returncode == 0 and "<aside>" in dom, r.stderr[-2000:]

        def shown(tile):
            m = re.search(r'id="v-%s">([^<]*)<' % tile, dom)
            assert m, tile
            return m.group(1)
        assert float(shown("fps")) > 0  # a number, not the "–" placeholder
        assert float(shown("p50")) > 0
        assert 2.7 <= float(shown("power")) <= 6.4  # the pi4b model's range
        assert 'id="n-power">estimated, model pi4b<' in dom  # labelled an estimate
        assert re.search(r'id="health" class="value ok">ok<', dom)
        assert re.search(r'id="state">running<', dom)
        assert "people-384x216.mp4" in re.search(r'id="source">([^<]*)<', dom).group(1)
        assert re.search(r'id="ndet">\d+', dom)
        assert stats["power_estimated"]["model"] == "pi4b"
        # the charts drew lines from /history: their canvases are not empty (pixels read
        # back by the page itself would need a flag; the screenshot below shows them)
        shot = tmp_path / "status.png"
        r = subprocess.run([chromium] + CHROMIUM_FLAGS + [
            "--user-data-dir=%s" % (tmp_path / "chromium2"), "--virtual-time-budget=4000",
            "--screenshot=%s" % shot, base + "/"], capture_output=True, text=True, timeout=120)
        import cv2
        img = cv2.imread(str(shot))
        assert r.returncode == 0 and img is not None and img.shape == (720, 1280, 3), r.stderr
        assert img[:, :900].std() > 20  # the camera view is there (not a blank page)
        p.send_signal(signal.SIGTERM)
        stdout, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0

    # --stdout-interval 2: about half of the stats records reached stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    in_log = sum(r["type"] == "stats" for r in recs)
    printed = sum(json.loads(line)["type"] == "stats" for line in stdout.splitlines())
    assert in_log >= 4 and 1 <= printed <= in_log // 2 + 1, (printed, in_log)

    # every record of the run conforms to docs/events.md
    schema = events_schema()
    assert {r["type"] for r in recs} == {"stats", "detections", "summary"}
    problems = {}
    for r in recs:
        for bad in check_record(r, schema):
            problems.setdefault(bad, r["type"])
    assert not problems, problems
    est = recs[-1]["power_estimated"]
    assert est["model"] == "pi4b" and 2.7 <= est["watts"] <= 6.4

    # and plots
    png = tmp_path / "run.png"
    r = subprocess.run([sys.executable, "-m", "bnn_camera.plot", str(out), "-o", str(png)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import cv2
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 400 and img.std() > 10


def test_plot_refuses_a_log_without_stats(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"type":"detections"}\nnot json\n')
    r = subprocess.run([sys.executable, "-m", "bnn_camera.plot", str(f), "-o",
                        str(tmp_path / "x.png")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "no stats records" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_prometheus_text_with_every_optional_series_passes_promtool():
    from bnn_camera.http_server import prometheus_text
    from bnn_camera.report import Stats
    st = Stats()
    for lat in (0.004, 0.03, 0.3, 30.0):
        st.on_frame(lat, 1)
    st.set_state("reconnecting", "unplugged")
    last = st.interval()
    last.update(power=2.5, power_source="hwmon", energy_mj_per_frame=120.0, cpu_temp_c=51.2,
                throttled={"raw": "0x50005"}, power_estimated={"model": "pi4b", "watts": 3.1,
                                                               "mj_per_frame": 90.0},
                snapshots={"saved": 1, "failed": 0}, events={"write_errors": 0},
                mqtt={"connected": True, "dropped": 0, "queued": 0},
                http={"accepted": 3, "open": 1})
    text = prometheus_text(st, last)
    r = subprocess.run([_tool("promtool"), "check", "metrics"], input=text, text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    assert re.search(r'^bnn_latency_seconds_bucket\{le="0.005"\} 1$', text, re.M)
    assert re.search(r'^bnn_latency_seconds_bucket\{le="10.0"\} 3$', text, re.M)
    assert re.search(r'^bnn_latency_seconds_bucket\{le="\+Inf"\} 4$', text, re.M)
    assert re.search(r"^bnn_latency_seconds_sum 30.334", text, re.M)
    assert re.search(r"^bnn_source_up 0$", text, re.M)
    assert re.search(r'^bnn_source_state\{state="reconnecting"\} 1$', text, re.M)
    assert sum(1 for ln in text.splitlines() if ln.startswith("bnn_source_state{")) == 5
    assert re.search(r'^bnn_power_watts\{source="hwmon"\} 2.5$', text, re.M)
    assert re.search(r'^bnn_estimated_power_watts\{model="pi4b"\} 3.1$', text, re.M)
    # the old mistakes stay gone: no gauge with a quantile label, no changing label on up
    assert "quantile=" not in text and not re.search(r"^bnn_source_up\{", text, re.M)


# ---- annotated frames: labels never cover each other ----------------------------------------

def test_labels_never_overlap():
    from bnn_camera.sinks import place_labels
    rng = np.random.default_rng(0)
    for trial in range(200):
        w, h = int(rng.integers(200, 640)), int(rng.integers(150, 480))
        n = int(rng.integers(1, 9))
        x1 = rng.integers(0, w // 2, n)
        y1 = rng.integers(0, h // 3, n)
        if trial % 2:  # the hard case: boxes on top of each other
            x1[:], y1[:] = x1[0], y1[0]
        boxes = [(int(a), int(b), int(a) + 60, int(b) + 80) for a, b in zip(x1, y1)]
        sizes = [(int(rng.integers(40, 90)), 16)] * n
        rects = [(x, y, x + tw, y + th) for (x, y), (tw, th) in
                 zip(place_labels(boxes, sizes, w, h), sizes)]
        for i, a in enumerate(rects):
            assert 0 <= a[0] and a[2] <= w and 0 <= a[1] and a[3] <= h
            for b in rects[:i]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_annotate_draws_each_label_apart():
    """Four boxes on top of each other: four label rects apart, each still showing its own
    fill and text in the drawn frame (none painted over by another)."""
    import collections

    from bnn_camera.sinks import annotate, label_layout
    R = collections.namedtuple("R", "boxes scores classes")
    res = R(np.array([[40, 30, 140, 200]] * 4, np.float32),
            np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.zeros(4, int))
    frame = np.full((216, 384, 3), 255, np.uint8)
    layout = label_layout(frame.shape, res, ["person"])
    img = annotate(frame, res, ["person"])
    assert [t for _, _, t, _, _ in layout] == ["person 0.90", "person 0.80", "person 0.70",
                                               "person 0.60"]
    for i, (_, (x, y, x2, y2), _, col, _) in enumerate(layout):
        for _, other, _, _, _ in layout[:i]:
            assert x2 <= other[0] or other[2] <= x or y2 <= other[1] or other[3] <= y
        patch = img[y:y2, x:x2].reshape(-1, 3)
        fill = np.mean(np.all(patch == np.array(col, np.uint8), axis=1))
        text = np.mean(patch.max(axis=1) < 100)  # the black text
        assert fill > 0.4 and text > 0.03, (i, fill, text)


# ---- systemd: notify protocol, watchdog, the unit -------------------------------------------

def _listen(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(0.2)
    return s


def _drain(sock, until, msgs):
    while time.monotonic() < until:
        try:
            msgs.append((time.monotonic(), sock.recv(4096).decode()))
        except socket.timeout:
            pass
    return msgs


def test_app_speaks_sd_notify_over_a_datagram_socket(model, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = _listen(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="900000")
    p = _start_app(["--model", model, "--source", SAMPLE, "--loop", "--realtime",
                    "--threads", "1", "--quiet"], env=env)
    threading.Thread(target=p.stderr.read, daemon=True).start()
    msgs = []
    try:
        deadline = time.monotonic() + 30
        while not any("READY=1" in m.split("\n") for _, m in msgs):
            assert time.monotonic() < deadline, ("no READY=1", msgs)
            _drain(sock, time.monotonic() + 0.2, msgs)
        _drain(sock, time.monotonic() + 3, msgs)  # 3 s of running
    finally:
        p.send_signal(signal.SIGTERM)
        _drain(sock, time.monotonic() + 3, msgs)
        p.communicate(timeout=30)
        sock.close()
    assert p.returncode == 0
    lines = [m for _, m in msgs]
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert len(pings) >= 5, lines
    # about every third of the 0.9 s period, not with every frame (10 fps)
    assert len(pings) <= (pings[-1] - pings[0]) / 0.3 + 2, lines
    assert any(m.startswith("STATUS=running: ") and "fps" in m for m in lines), lines
    assert lines.index(next(m for m in lines if "READY=1" in m)) < lines.index("WATCHDOG=1")
    assert "STOPPING=1" in lines[-1].split("\n")


def test_watchdog_stops_when_the_inference_thread_hangs(detector):
    """An abstract socket name ("@name"), and a detector that hangs after a few frames: the
    pings stop (systemd would restart the service), while the reporter still sends STATUS."""
    from bnn_camera.pipeline import Pipeline
    from bnn_camera.sources import open_source
    from bnn_camera.systemd import SystemdNotifier

    name = "bnn-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    sock = _listen("\0" + name)
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "300000"})
    assert notifier.address == "\0" + name and notifier.watchdog_s == 0.3
    hang, frames, hung_at = threading.Event(), [0], []

    class Hanging:
        class_names = detector.class_names

        def detect(self, frame):
            frames[0] += 1
            if frames[0] > 15:
                hung_at.append(time.monotonic())
                hang.wait(30)
            return detector.detect(frame)

    source, _ = open_source(SAMPLE, loop=True, realtime=True)
    pipe = Pipeline(Hanging(), source, report_interval=0.2, sinks=[notifier], log=lambda m: None)
    msgs = []
    try:
        pipe.start()
        notifier.ready()
        deadline = time.monotonic() + 30
        while not hung_at:
            assert time.monotonic() < deadline, "the detector never reached frame 16"
            _drain(sock, time.monotonic() + 0.2, msgs)
        _drain(sock, hung_at[0] + 2.5, msgs)  # 2.5 s of a hung inference thread
    finally:
        hang.set()
        pipe.request_stop()
        pipe.shutdown()
        notifier.close()
        sock.close()
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    status = [t for t, m in msgs if m.startswith("STATUS=")]
    hung = hung_at[0]
    assert len([t for t in pings if t < hung]) >= 3  # fed while frames flowed
    # hung: no ping in the 2.5 s after (the period is 0.3 s), while the reporter went on
    # sending STATUS -- systemd would have restarted the service
    assert not [t for t in pings if t > hung + 0.1], (hung, pings)
    assert sum(1 for t in status if t > hung + 0.5) >= 3


def test_no_watchdog_ping_before_ready():
    """The threads start before READY=1 is sent: a first frame must not ping ahead of it
    (seen under load in test_app_speaks_sd_notify_over_a_datagram_socket)."""
    from bnn_camera.systemd import SystemdNotifier
    name = "bnn-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    sock = _listen("\0" + name)
    now = [0.0]
    notifier = SystemdNotifier("\0" + name, watchdog_s=0.3, clock=lambda: now[0])
    try:
        assert not notifier.ping() and not notifier.ping(force=True)
        notifier.on_stats({"type": "stats", "source_state": "starting"})  # sends STATUS, no ping
        assert notifier.ready() and notifier.ping()
        now[0] += 0.05
        assert not notifier.ping()  # at most every third of the period
        now[0] += 0.1
        assert notifier.ping()
        msgs = [m for _, m in _drain(sock, time.monotonic() + 0.5, [])]
    finally:
        notifier.close()
        sock.close()
    assert msgs[0].startswith("STATUS=starting") and msgs[1:] == ["READY=1\nSTATUS=running", "WATCHDOG=1",
                                                                  "WATCHDOG=1"], msgs
    assert notifier.pings == 2


def test_notify_address_and_watchdog_pid():
    from bnn_camera.systemd import notify_address, watchdog_period
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@x/y"}) == "\0x/y"
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "30000000",
                            "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "x"}) is None


def test_unit_verifies_and_is_hardened(tmp_path):
    analyze = _tool("systemd-analyze")
    text = open(UNIT).read()
    for key in ("Type=notify", "WatchdogSec=", "DevicePolicy=closed",
                "DeviceAllow=char-video4linux rw", "DeviceAllow=char-media rw",
                "DeviceAllow=char-dma_heap rw", "SupplementaryGroups=video",
                "--out-max-size", "--stdout-interval"):
        assert key in text, key
    # verify needs the ExecStart binary to exist: the same unit, run by /bin/true
    unit = tmp_path / "bnn-camera.service"
    unit.write_text(text.replace("/home/pi/bnn/bin/bnn-camera", "/bin/true"))
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "bnn-camera" not in r.stderr, r.stderr
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", UNIT],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for bnn-camera.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 4.0, r.stdout


# ---- event log rotation -------------------------------------------------------------------

def test_event_log_rotates_by_size_and_keeps_whole_records(tmp_path):
    from bnn_camera.sinks import EventLog
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path), max_bytes=2000, keep=3)
    for i in range(300):
        log.write({"type": "stats", "n": i, "pad": "x" * 40}, flush=True)
    log.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    seen = []
    for name in ("events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"):
        data = (tmp_path / name).read_bytes()
        assert len(data) <= 2000 and data.endswith(b"\n")
        seen += [json.loads(line)["n"] for line in data.splitlines()]
    assert seen == list(range(seen[0], 300))  # the newest records, in order, none split
    assert log.status()["rotations"] >= 10


def test_event_log_rotates_by_age(tmp_path):
    from bnn_camera.sinks import EventLog
    now = [1000.0]
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), max_age_s=86400, keep=2, clock=lambda: now[0])
    log.write({"day": 1}, flush=True)
    now[0] += 3600
    log.write({"day": 1}, flush=True)
    assert not (tmp_path / "e.jsonl.1").exists()
    now[0] += 86400
    log.write({"day": 2}, flush=True)
    log.close()
    assert (tmp_path / "e.jsonl.1").read_text().count("\n") == 2
    assert json.loads(path.read_text()) == {"day": 2}


# ---- estimated power ----------------------------------------------------------------------

def _proc_stat(root, busy, idle):
    os.makedirs(os.path.join(root, "proc"), exist_ok=True)
    with open(os.path.join(root, "proc", "stat"), "w") as f:
        f.write("cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n"
                "cpu1 1 0 0 1 0 0 0 0 0 0\nintr 1\n" % (busy, idle))


def test_power_estimate_follows_the_board_model(tmp_path):
    from firmware_py.power import BOARD_MODELS, PowerEstimator, board_model
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "proc", "device-tree"))
    for text, key in (("Raspberry Pi 4 Model B Rev 1.4", "pi4b"),
                      ("Raspberry Pi 3 Model B Plus Rev 1.3", "pi3b+"),
                      ("Raspberry Pi 3 Model B Rev 1.2", "pi3b"),
                      ("Raspberry Pi Zero 2 W Rev 1.0", "zero2w"),
                      ("Raspberry Pi 5 Model B Rev 1.0", "pi5"), ("Some PC", None)):
        with open(os.path.join(root, "proc", "device-tree", "model"), "wb") as f:
            f.write(text.encode() + b"\0")
        assert board_model(root) == key
    clock, cpu = [0.0], [0.0]
    est = PowerEstimator("pi4b", root=root, process_cpu_s=lambda: cpu[0],
                         clock=lambda: clock[0])
    _proc_stat(root, 1000, 1000)
    assert est.sample() is None  # the first call starts the interval
    _proc_stat(root, 1000 + 75, 1000 + 25)  # 75% busy
    clock[0], cpu[0] = 2.0, 1.0  # this process: 1 CPU-second of 2 s x 2 CPUs = 25%
    s = est.sample()
    m = BOARD_MODELS["pi4b"]
    assert s["model"] == "pi4b" and s["cpu_util"] == pytest.approx(0.75)
    assert s["watts"] == pytest.approx(m.idle_w + 0.75 * (m.load_w - m.idle_w))
    assert s["joules"] == pytest.approx(2.0 * s["watts"])
    assert s["app_watts"] == pytest.approx(0.25 * (m.load_w - m.idle_w))
    # on this machine's real /proc: a figure between the model's idle and load
    real = PowerEstimator("zero2w")
    real.sample()
    time.sleep(0.3)
    s = real.sample()
    assert 0.6 <= s["watts"] <= 3.0 and 0.0 <= s["app_cpu_util"] <= 1.0


def test_estimate_is_reported_apart_from_measured_power():
    from bnn_camera.report import Stats, format_line, format_summary
    st = Stats()
    st.on_frame(0.01, 0)
    st.on_frame(0.01, 0)
    est = {"model": "pi3b", "watts": 2.0, "joules": 2.0, "seconds": 1.0, "app_watts": 0.5,
           "cpu_util": 0.3, "app_cpu_util": 0.1}
    rec = st.interval(estimate=est)
    assert rec["power"] is None and rec["energy_mj_per_frame"] is None
    assert rec["power_estimated"]["mj_per_frame"] == 1000.0  # 2 J over 2 frames
    assert "ESTIMATED (pi3b)" in format_line(rec)
    summ = st.summary()
    assert summ["power"] is None and summ["power_estimated"]["watts"] == 2.0
    assert "an ESTIMATE" in format_summary(summ)
