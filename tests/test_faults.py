"""Fault tests of the camera app (python -m bnn_camera), with real components and fakes only at
the hardware boundaries:

* a full disk under --snapshots: without root through RLIMIT_FSIZE (the kernel's file
  size limit, set in the child before exec: writes past it fail with EFBIG -- CPython
  ignores SIGXFSZ); as root also a real 64 KiB tmpfs mounted as the snapshot folder
  (ENOSPC), freed again to see the snapshots resume;  the --out event log at its limit;
* a real mosquitto broker SIGKILLed in the middle of a run and restarted on the same port;
* SIGTERM at several moments: while the model loads, while the MQTT connection is
  awaited at start-up, right after the first frame, mid-run under heavy output, and twice
  in a row (during the shutdown).

Already covered elsewhere (not repeated here): EOF, corrupt frames and images, unplugged
and reconnected sources, a source that never opens, SIGTERM/SIGINT mid-run of a paced
clip (tests/test_app.py); a broker that is down at start (tests/test_app_mqtt.py)."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import cv2

from bnn_camera import ROOT  # noqa: E402

SAMPLE = os.path.join(ROOT, "bnn_camera", "samples", "people-384x216.mp4")


# (skipped by conftest.py when libbnn.so is not built)




class App:
    """``python -m bnn_camera`` in a child process; stdout (JSON lines) and stderr are read by
    threads, so the test can wait for records without the pipes filling up."""

    def __init__(self, args, fsize_limit=None, preexec=None):
        if fsize_limit is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
        self.records, self.err_lines, self.bad_stdout = [], [], []
        self._cond = threading.Condition()
        self.p = subprocess.Popen([sys.executable, "-m", "bnn_camera", "--format", "json"] + args,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, preexec_fn=preexec)
        self._threads = [threading.Thread(target=self._read, args=(self.p.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, False),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, f, is_stdout):
        for line in f:
            with self._cond:
                if is_stdout:
                    try:
                        self.records.append(json.loads(line))
                    except ValueError:
                        self.bad_stdout.append(line)
                else:
                    self.err_lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred, timeout=30.0, what="condition"):
        """Waits until pred(self) is true; fails with the app's stderr on a timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while not pred(self):
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not pred(self)
                                 and not any(t.is_alive() for t in self._threads)):
                    pytest.fail("timed out waiting for %s (rc %s); stderr:\n%s"
                                % (what, self.p.poll(), "\n".join(self.err_lines[-30:])))
                self._cond.wait(min(left, 0.1))

    def stats(self):
        with self._cond:
            return [r for r in self.records if r.get("type") == "stats"]

    def stderr(self):
        with self._cond:
            return "\n".join(self.err_lines)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends sig, waits for the exit; returns (rc, seconds to exit)."""
        t = time.monotonic()
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("the app did not exit within %d s of %s" % (timeout, sig.name))
        for th in self._threads:
            th.join(5)
        return rc, time.monotonic() - t

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def summary(self):
        assert not self.bad_stdout, "stdout lines that are not JSON: %r" % self.bad_stdout[:3]
        assert self.records and self.records[-1]["type"] == "summary", self.stderr()
        assert sum(r["type"] == "summary" for r in self.records) == 1
        return self.records[-1]


def _events_file(path):
    """The --out file as records; fails on a torn or non-JSON line."""
    data = open(path, "rb").read()
    assert data, "%s is empty" % path
    assert data.endswith(b"\n"), "torn last line: %r" % data[-200:]
    recs = []
    for i, line in enumerate(data.split(b"\n")[:-1]):
        try:
            recs.append(json.loads(line))
        except ValueError:
            pytest.fail("line %d of %s is not JSON: %r" % (i + 1, path, line[:200]))
    return recs


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def _http_port(app):
    app.wait_for(lambda a: re.search(r"serving on http://127\.0\.0\.1:(\d+)/", a.stderr()),
                 what="the http line")
    return int(re.search(r"serving on http://127\.0\.0\.1:(\d+)/", app.stderr()).group(1))


def _wait_healthy(base, timeout=20):
    end = time.monotonic() + timeout
    while True:
        try:
            code, body = _get(base + "/healthz")
            if body == "ok\n":
                return
        except urllib.error.HTTPError:
            pass
        assert time.monotonic() < end, "/healthz never said ok"
        time.sleep(0.2)


def _frames(app):
    s = app.stats()
    return s[-1]["frames_total"] if s else 0


# ---- (a) a full disk ---------------------------------------------------------------------
def test_snapshots_past_the_file_size_limit_are_counted_and_the_app_goes_on(model, tmp_path):
    """RLIMIT_FSIZE = 4 KiB in the app's process: every snapshot JPEG (about 28 KiB) fails
    with EFBIG.  The app goes on: stats keep coming (with snapshots.failed), HTTP serves,
    a logged error (not one per frame), no partial file left, summary, exit 0."""
    snaps = tmp_path / "snaps"
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--realtime", "--threads", "1",
               "--snapshots", str(snaps), "--snapshot-interval", "0.1",
               "--http", "127.0.0.1:0", "--interval", "0.2"], fsize_limit=4096)
    try:
        base = "http://127.0.0.1:%d" % _http_port(app)
        app.wait_for(lambda a: a.stats() and a.stats()[-1].get("snapshots", {})
                     .get("failed", 0) >= 5, what="5 failed snapshots")
        failing = app.stats()[-1]
        n = len(app.stats())
        app.wait_for(lambda a: len(a.stats()) >= n + 5, what="5 more stats records")
        after = app.stats()[-1]
        assert after["frames_total"] > failing["frames_total"]  # inference goes on
        assert after["snapshots"]["failed"] > failing["snapshots"]["failed"]  # retried
        assert after["snapshots"]["saved"] == 0
        assert "File too large" in after["snapshots"]["last_error"]
        _wait_healthy(base)  # the other sinks go on
        code, text = _get(base + "/metrics")
        assert code == 200 and int(re.search(r"^bnn_frames_total (\d+)$", text, re.M)
                                    .group(1)) > 0
        assert int(re.search(r"^bnn_snapshot_write_errors_total (\d+)$", text, re.M)
                   .group(1)) >= 5
        rc, dt = app.stop()
    finally:
        app.kill()
    assert rc == 0, app.stderr()
    summ = app.summary()
    assert summ["stopped_by"] == "SIGTERM" and summ["snapshots_saved"] == 0
    assert summ["snapshots_failed"] >= after["snapshots"]["failed"]
    assert "File too large" in summ["snapshots_last_error"]
    logged = [ln for ln in app.err_lines if "snapshots" in ln and "cannot write" in ln]
    assert 1 <= len(logged) <= 2, logged  # logged, but not once per failure
    assert "the app goes on" in logged[0]
    assert os.listdir(snaps) == []  # no partial JPEG, no .part file
    print("\nsnapshots at RLIMIT_FSIZE 4 KiB: %d frames, %d snapshots failed, 0 saved, %d "
          "stderr line(s), exit %d in %.2f s" % (summ["frames_total"], summ["snapshots_failed"],
                                                 len(logged), rc, dt))


def test_event_log_past_the_file_size_limit_keeps_whole_lines(model, tmp_path):
    """--out on a file that cannot grow past 12 KiB: a batch that does not fit is cut after
    its last whole line, so the file holds whole JSON lines only (filled up to the limit);
    the app goes on and reports it."""
    limit = 12 * 1024
    out = tmp_path / "e.jsonl"
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--threads", "1",
               "--out", str(out), "--interval", "0.2"], fsize_limit=limit)
    try:
        app.wait_for(lambda a: a.stats() and a.stats()[-1].get("events", {})
                     .get("write_errors", 0) >= 3, what="3 failed --out writes")
        f1 = _frames(app)
        n = len(app.stats())
        app.wait_for(lambda a: len(a.stats()) >= n + 3, what="3 more stats records")
        assert _frames(app) > f1
        rc, _ = app.stop()
    finally:
        app.kill()
    assert rc == 0, app.stderr()
    summ = app.summary()
    assert summ["events_write_errors"] >= 3
    st = app.stats()[-1]["events"]
    assert st["records_lost"] > 0 and "File too large" in st["last_error"]
    recs = _events_file(out)  # whole lines only, no torn record at the limit
    # filled up to the last whole line that fits (a record is well under 2 KiB here)
    assert limit - 2048 < os.path.getsize(out) <= limit and len(recs) > 3
    assert sum("--out" in ln and "cannot write" in ln for ln in app.err_lines) <= 2
    print("\n--out at RLIMIT_FSIZE 12 KiB: %d frames, %d failed writes, %d records lost, "
          "file %d bytes of %d whole lines" % (summ["frames_total"], summ["events_write_errors"],
                                               st["records_lost"], os.path.getsize(out),
                                               len(recs)))


def _mount_tmpfs(path, size):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (the RLIMIT_FSIZE tests cover the same "
                    "failures without root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("needs root with CAP_SYS_ADMIN to mount a tmpfs (a container?): %s"
                    % r.stderr.strip())


def _umount(path):
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_snapshots_on_a_full_tmpfs_then_space_freed(model, tmp_path):
    """Root: a real 64 KiB tmpfs as the snapshot folder (room for two ~28 KiB JPEGs).  It
    fills up (ENOSPC): failures
    are counted and logged, the --out log (elsewhere) and the stats go on; when files are
    deleted the snapshots resume."""
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    _mount_tmpfs(snaps, "64k")
    out = tmp_path / "e.jsonl"
    app = None
    try:
        app = App(["--model", model, "--source", SAMPLE, "--loop", "--realtime", "--threads",
                   "1", "--snapshots", str(snaps), "--snapshot-interval",
                   "0.1", "--snapshot-keep", "1000", "--out", str(out), "--interval", "0.2"])
        app.wait_for(lambda a: a.stats() and a.stats()[-1].get("snapshots", {})
                     .get("failed", 0) >= 3, what="3 failed snapshots", timeout=60)
        full = app.stats()[-1]["snapshots"]
        assert full["saved"] >= 1  # some fitted before the disk was full
        assert "No space left on device" in full["last_error"]
        assert not [f for f in os.listdir(snaps) if f.endswith(".part")]
        for f in os.listdir(snaps):  # the operator frees the space
            os.remove(snaps / f)
        app.wait_for(lambda a: a.stats()[-1]["snapshots"]["saved"] > full["saved"],
                     what="snapshots to resume", timeout=30)
        rc, _ = app.stop()
    finally:
        if app is not None:
            app.kill()
        _umount(snaps)
    assert rc == 0, app.stderr()
    summ = app.summary()
    assert summ["snapshots_failed"] >= 3 and summ["snapshots_saved"] > full["saved"]
    assert "writing again" in app.stderr()
    recs = _events_file(out)
    assert recs[-1]["type"] == "summary" and recs[-1]["frames_total"] == summ["frames_total"]
    assert any(r["type"] == "stats" and r.get("snapshots", {}).get("failed") for r in recs)
    print("\n64 KiB tmpfs: %d saved before ENOSPC, %d failed, %d saved in all after freeing"
          % (full["saved"], summ["snapshots_failed"], summ["snapshots_saved"]))


# ---- (b) the MQTT broker killed mid-run ---------------------------------------------------
def test_mqtt_broker_killed_and_restarted(model, tmp_path):
    import paho.mqtt.client  # noqa: F401
    from tests.test_app_mqtt import Broker, Subscriber
    broker = Broker(tmp_path).start()
    port = broker.port
    out = tmp_path / "e.jsonl"
    sub = None
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--realtime", "--threads", "1",
               "--conf", "0.01", "--mqtt", "127.0.0.1:%d/cam/det" % port, "--mqtt-detections",
               "--mqtt-max-rate", "1000", "--out", str(out),
               "--interval", "0.2"])
    try:
        sub = Subscriber(port, "cam/#")
        end = time.monotonic() + 30
        while sum(t == "cam/det/stats" for t, _ in sub.msgs) < 3:
            assert time.monotonic() < end, "no stats on MQTT before the kill"
            time.sleep(0.05)
        sub.close()
        broker.proc.kill()  # SIGKILL: no clean disconnect
        broker.proc.wait()
        t_kill = time.monotonic()
        app.wait_for(lambda a: a.stats() and a.stats()[-1]["mqtt"]["connected"] is False,
                     what="the app to notice the broker is gone")
        down = app.stats()[-1]
        n = len(app.stats())
        app.wait_for(lambda a: len(a.stats()) >= n + 10, what="stats while the broker is down")
        assert app.p.poll() is None
        assert app.stats()[-1]["mqtt"]["dropped"] > down["mqtt"]["dropped"]
        assert app.stats()[-1]["frames_total"] > down["frames_total"]
        t_down = time.monotonic() - t_kill
        broker = Broker(tmp_path, port=port).start()  # back, on the same port
        t_up = time.monotonic()
        sub = Subscriber(port, "cam/#")
        app.wait_for(lambda a: a.stats()[-1]["mqtt"]["connected"]
                     and a.stats()[-1]["mqtt"]["reconnects"] >= 1,
                     what="the app to reconnect (paho backoff 1..30 s)", timeout=60)
        t_reconnect = time.monotonic() - t_up
        end = time.monotonic() + 15
        while not (any(t == "cam/det/stats" for t, _ in sub.msgs)
                   and any(t == "cam/det/detections" for t, _ in sub.msgs)):
            assert time.monotonic() < end, "nothing published after the broker came back"
            time.sleep(0.05)
        rc, _ = app.stop()
        end = time.monotonic() + 5
        while not any(t == "cam/det/stats" and m.get("type") == "summary"
                      for t, m in sub.msgs) and \
                time.monotonic() < end:
            time.sleep(0.05)
    finally:
        app.kill()
        if sub is not None:
            sub.close()
        broker.stop()
    assert rc == 0, app.stderr()
    summ = app.summary()
    assert summ["mqtt_reconnects"] >= 1 and summ["mqtt_dropped"] > 0
    assert any(t == "cam/det/stats" and m.get("type") == "summary"
               for t, m in sub.msgs)  # the summary went out too
    err = app.stderr()
    assert "mqtt: lost the connection" in err and "connected to 127.0.0.1:%d again" % port in err
    # the JSON stats never stopped: on stdout and in --out, no gap across the outage
    for recs in (app.stats(), [r for r in _events_file(out) if r["type"] == "stats"]):
        t = [r["uptime_s"] for r in recs]
        assert len(t) >= 15 and max(b - a for a, b in zip(t, t[1:])) < 1.0
    assert _events_file(out)[-1]["type"] == "summary"
    print("\nbroker down %.1f s, app reconnected %.1f s after the restart; %d stats records, "
          "%d MQTT messages dropped meanwhile, exit %d" % (t_down, t_reconnect, len(app.stats()),
                                                          summ["mqtt_dropped"], rc))


# ---- (c) SIGTERM at any moment ------------------------------------------------------------
def _assert_clean_sigterm_exit(app, rc, dt, out):
    assert rc == 0, "rc %s; stderr:\n%s" % (rc, app.stderr())
    assert dt < 10, "took %.1f s to stop" % dt
    summ = app.summary()
    assert summ["stopped_by"] == "SIGTERM"
    assert "threads_not_stopped" not in summ
    recs = _events_file(out)  # whole JSON lines, the summary last: complete and closed
    assert recs[-1]["type"] == "summary"
    assert recs[-1]["frames_total"] == summ["frames_total"]
    assert recs[-1]["time"] == summ["time"]
    return summ, recs


def test_sigterm_while_the_model_loads(model, tmp_path):
    """SIGTERM as soon as the app says it loads the detector (it then still imports
    OpenCV/numpy and reads the model: a window of a few hundred ms).  Tried up to 3 times
    in case the signal lands after the start-up; every try must exit cleanly."""
    hit = []
    for attempt in range(3):
        out = tmp_path / ("e%d.jsonl" % attempt)
        app = App(["--model", model, "--source", SAMPLE, "--loop", "--out", str(out),
                   "--threads", "1"])
        try:
            app.wait_for(lambda a: "loading the detector" in a.stderr(),
                         what="'loading the detector'")
            rc, dt = app.stop()
        finally:
            app.kill()
        summ, recs = _assert_clean_sigterm_exit(app, rc, dt, out)
        if summ.get("stopped_during", "").startswith("start-up"):
            assert summ["frames_total"] == 0 and summ["source_state"] == "not started"
            assert recs == [summ]
            assert "stopped by SIGTERM during start-up" in app.stderr()
            hit.append(summ["stopped_during"])
            break
    assert hit, "the signal never landed during the start-up"
    print("\nstopped during %s, exit 0 in %.2f s (try %d)" % (hit[0], dt, attempt + 1))


def test_sigterm_while_waiting_for_the_mqtt_broker(model, tmp_path):
    """Start-up waits up to 3 s for an MQTT broker that is not there: SIGTERM then ends
    the start-up at once."""
    import paho.mqtt.client  # noqa: F401
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    out = tmp_path / "e.jsonl"
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--out", str(out),
               "--mqtt", "127.0.0.1:%d/t" % port])
    try:
        app.wait_for(lambda a: "loading the detector" in a.stderr(), what="start-up")
        time.sleep(1.5)  # model loaded, source open: now inside the 3 s connect wait
        rc, dt = app.stop()
    finally:
        app.kill()
    summ, recs = _assert_clean_sigterm_exit(app, rc, dt, out)
    assert summ["stopped_during"] == "start-up (connecting to the MQTT broker)"
    assert summ["source"] == SAMPLE and summ["source_kind"] == "file"
    assert dt < 5 and summ["frames_total"] == 0 and recs == [summ]  # not the 3 s wait + run
    print("\nstopped during %s, exit 0 in %.2f s" % (summ["stopped_during"], dt))


def test_sigterm_right_after_the_first_frame(model, tmp_path):
    out = tmp_path / "e.jsonl"
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--realtime", "--out",
               str(out), "--threads", "1", "--interval", "0.05", "--conf", "0.01"])
    try:
        app.wait_for(lambda a: _frames(a) >= 1, what="the first frame")
        rc, dt = app.stop()
    finally:
        app.kill()
    summ, recs = _assert_clean_sigterm_exit(app, rc, dt, out)
    assert 1 <= summ["frames_total"] <= 10, summ  # 10 fps, stopped within ~0.1 s
    assert "stopped_during" not in summ
    print("\nafter the first frame: %d frame(s), exit 0 in %.2f s" % (summ["frames_total"], dt))
    assert summ["captured_total"] == (summ["frames_total"] + summ["dropped_total"]
                                      + summ["bad_frames_total"] + summ["discarded_at_stop"])


@pytest.mark.parametrize("signals", [1, 2], ids=["once", "twice"])
def test_sigterm_mid_run_under_heavy_output(model, tmp_path, signals):
    """Full speed (not paced), a detections record for nearly every frame, snapshots: the
    event file is being written all the time when SIGTERM arrives (twice: the second one
    during the shutdown).  The file holds whole lines, the summary last, and every
    detection counted in the summary is in the file."""
    out = tmp_path / "e.jsonl"
    app = App(["--model", model, "--source", SAMPLE, "--loop", "--out", str(out),
               "--threads", "1", "--conf", "0.01", "--snapshots", str(tmp_path / "s"),
               "--snapshot-interval", "0.1", "--interval", "0.2"])
    try:
        app.wait_for(lambda a: _frames(a) >= 100, what="100 frames", timeout=60)
        app.p.send_signal(signal.SIGTERM)
        if signals == 2:
            time.sleep(0.01)
        rc, dt = app.stop() if signals == 2 else (app.p.wait(20), 0.0)
        for th in app._threads:
            th.join(5)
    finally:
        app.kill()
    summ, recs = _assert_clean_sigterm_exit(app, rc, dt, out)
    dets = [r for r in recs if r["type"] == "detections"]
    assert summ["frames_total"] >= 100 and dets
    assert sum(len(d["detections"]) for d in dets) == summ["detections_total"]
    assert summ["captured_total"] == (summ["frames_total"] + summ["dropped_total"]
                                      + summ["bad_frames_total"] + summ["discarded_at_stop"])
    assert not [f for f in os.listdir(tmp_path / "s") if not f.endswith(".jpg")]
    print("\nmid-run (%d signal(s)): %d frames, %d detection records, %d lines, exit 0"
          % (signals, summ["frames_total"], len(dets), len(recs)))
