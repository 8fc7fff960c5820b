"""Stress run: the app under hostile load for N minutes, against an unloaded run.

    python -m bnn_camera.stress --minutes 10 [--model M] [--threads N] [--json out.json]

Runs ``python -m bnn_camera`` on a looped copy of the bundled clip, read at inference
speed, with --http, --mqtt (a real mosquitto on 127.0.0.1) and --out, three times:

1. unloaded, ``--baseline-minutes`` (default: a fifth of --minutes, at least 1): no HTTP
   client, nothing goes wrong;
2. loaded, ``--minutes``: 50 idle HTTP connections (each one the server closes is
   opened again), 20 MJPEG viewers of which 5 never read (each one the server drops is
   opened again), /metrics polled every 5 s, the clip replaced twice (moved away, then a
   new copy put in its place 3 s later or, when the app has not rewound the clip by then,
   once its stats say "reconnecting") and the broker restarted twice (SIGKILL, back 2 s
   later on the same port);
3. unloaded again (the machine's speed drifts; the baseline is the mean of 1 and 3).

and prints one JSON object: the fps of each run, their ratio, RSS over the loaded run
(flat: within 5% after the first fifth), and the accounting -- every event of the loaded
run in the app's summary: frames (captured = processed + dropped + bad + discarded),
source reconnects = file replacements, MQTT reconnects = broker restarts and offered =
published + dropped, published = sent + lost + queued, HTTP connections accepted = the
connections this script made = rejected + with a request + without one + open.  Exit
status 0 when every check holds (``checks``).  Needs mosquitto (/usr/sbin/mosquitto).
"""

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _mosquitto():
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None)


MOSQUITTO = _mosquitto()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """mosquitto on 127.0.0.1 (here, and in tests/test_app_mqtt.py).  users {name: password}:
    allow_anonymous false and a password file (mosquitto_passwd); certs ({"ca",
    "server_cert", "server_key"}: paths): a TLS listener that also requires a client
    certificate signed by that CA.  Its log goes to a file in tmp (a pipe nobody reads
    would stall a long run)."""

    def __init__(self, tmp, port=None, users=None, certs=None):
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is needed (apt install mosquitto)")
        tmp = str(tmp)
        self.port = port or _free_port()
        self.conf = os.path.join(tmp, "mosquitto-%d.conf" % self.port)
        self.log = os.path.join(tmp, "mosquitto-%d.log" % self.port)
        lines = ["listener %d 127.0.0.1" % self.port, "persistence false",
                 "log_dest file %s" % self.log]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # not the "mosquitto" user: it
            import pwd                                    # could not read our 0600 files
            lines.append("user %s" % pwd.getpwuid(0).pw_name)
        if users:
            pw = os.path.join(tmp, "passwd-%d" % self.port)
            open(pw, "w").close()
            passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for user, password in users.items():
                subprocess.run([passwd, "-b", pw, user, password], check=True,
                               capture_output=True)
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", "password_file %s" % pw]
        else:
            lines.append("allow_anonymous true")
        if certs:
            lines += ["cafile %s" % certs["ca"], "certfile %s" % certs["server_cert"],
                      "keyfile %s" % certs["server_key"], "require_certificate true"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    try:
                        with open(self.log) as f:
                            why = f.read()[-2000:]
                    except OSError:
                        why = ""
                    raise RuntimeError("mosquitto exited (%s): %s"
                                       % (self.proc.returncode, why))
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def kill(self):
        """SIGKILL: no clean disconnect, no will cancelled."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class App:
    """The app as a child; its JSON lines and stderr collected by threads."""

    def __init__(self, args):
        self.records, self.err = [], []
        self.p = subprocess.Popen([sys.executable, "-m", "bnn_camera", "--format", "json"]
                                  + args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self._t = [threading.Thread(target=self._read, args=(self.p.stdout, self.records, True),
                                    daemon=True),
                   threading.Thread(target=self._read, args=(self.p.stderr, self.err, False),
                                    daemon=True)]
        for t in self._t:
            t.start()

    @staticmethod
    def _read(f, out, js):
        for line in f:
            if js:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
            else:
                out.append(line.rstrip("\n"))

    def port(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ln in list(self.err):
                m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", ln)
                if m:
                    return int(m.group(1))
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("the app did not serve HTTP: %s" % "\n".join(self.err[-20:]))

    def stats(self):
        return [r for r in list(self.records) if r.get("type") == "stats"]

    def stop(self, timeout=60):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        for t in self._t:
            t.join(10)
        summ = [r for r in self.records if r.get("type") == "summary"]
        return rc, (summ[-1] if summ else None)


class Load:
    """The HTTP clients of the loaded run; every TCP connection they make is counted."""

    def __init__(self, port, n_idle=50, n_readers=15, n_stalled=5):
        self.port = port
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.c = {"connections": 0, "idle_connections": 0, "idle_closed_by_server": 0,
                  "mjpeg_connections": 0, "mjpeg_refused": 0, "reader_drops": 0,
                  "stalled_dropped": 0, "mjpeg_frames_read": 0, "metrics_requests": 0,
                  "metrics_refused": 0, "connect_errors": 0}
        self.n_idle = n_idle
        self.threads = [threading.Thread(target=self._idle, daemon=True),
                        threading.Thread(target=self._metrics, daemon=True)]
        self.threads += [threading.Thread(target=self._reader, daemon=True)
                         for _ in range(n_readers)]
        self.threads += [threading.Thread(target=self._stalled, daemon=True)
                         for _ in range(n_stalled)]

    def count(self, key, n=1):
        with self.lock:
            self.c[key] += n

    def _connect(self, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.count("connect_errors")
            return None
        self.count("connections")
        return s

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)

    def _idle(self):
        sel = selectors.DefaultSelector()
        socks = set()
        try:
            while not self.stop_ev.is_set():
                while len(socks) < self.n_idle and not self.stop_ev.is_set():
                    s = self._connect()
                    if s is None:
                        self.stop_ev.wait(0.5)
                        break
                    self.count("idle_connections")
                    socks.add(s)
                    sel.register(s, selectors.EVENT_READ)
                for key, _ in sel.select(0.5):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # closed by the server (timeout) or refused (503)
                        self.count("idle_closed_by_server")
                        sel.unregister(s)
                        socks.discard(s)
                        s.close()
        finally:
            for s in socks:
                s.close()

    def _request(self, s, path):
        s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())

    def _viewers(self, rcvbuf=None):
        """Until stopped: a new connected socket for an MJPEG viewer each time the caller is
        done with the previous one (counted); a failed connect is retried after 0.5 s."""
        while not self.stop_ev.is_set():
            s = self._connect(rcvbuf=rcvbuf)
            if s is None:
                self.stop_ev.wait(0.5)
                continue
            self.count("mjpeg_connections")
            yield s

    def _reader(self):
        for s in self._viewers():
            try:
                self._request(s, "/stream.mjpg")
                first = s.recv(65536)
                if not first.startswith(b"HTTP/1.0 200"):
                    self.count("mjpeg_refused")
                    self.stop_ev.wait(1.0)
                    continue
                mark = b"\r\n--bnnframe\r\n"
                tail, n = b"\r\n" + first, 0
                buf = bytearray(1 << 18)
                while not self.stop_ev.is_set():  # counts the part boundaries, cheaply
                    n = tail.count(mark)
                    if n:
                        self.count("mjpeg_frames_read", n)
                    k = s.recv_into(buf)
                    if not k:
                        raise OSError("EOF")
                    tail = tail[-(len(mark) - 1):] + bytes(buf[:k])
            except OSError:
                if not self.stop_ev.is_set():
                    self.count("reader_drops")
            finally:
                s.close()

    def _stalled(self):
        """A viewer that never reads: its request sent, then only its TCP state is
        looked at (TCP_INFO) to see when the server has dropped it (a reset)."""
        for s in self._viewers(rcvbuf=2048):
            try:
                self._request(s, "/stream.mjpg")
                while not self.stop_ev.wait(0.5):
                    state = s.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11),
                                         1)[0]
                    if state not in (1,):  # no longer ESTABLISHED: reset or closed
                        self.count("stalled_dropped")
                        break
            except OSError:
                self.count("stalled_dropped")
            finally:
                s.close()

    def _metrics(self):
        while not self.stop_ev.wait(5.0):
            s = self._connect()
            if s is None:
                continue
            try:
                self._request(s, "/metrics")
                data = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
                if data.startswith(b"HTTP/1.0 200"):
                    self.count("metrics_requests")
                else:
                    self.count("metrics_refused")
            except OSError:
                self.count("metrics_refused")
            finally:
                s.close()


def _app_args(model, clip, port_mqtt, out, threads, http_timeout):
    # room for the 50 idle connections + 20 viewers + /metrics (the defaults are 64
    # connections and 16 viewers): every connection must be accepted, none refused
    args = ["--model", model, "--source", clip, "--loop", "--http", "127.0.0.1:0",
            "--http-max-connections", "100", "--mjpeg-max-clients", "24",
            "--mqtt", "127.0.0.1:%d/stress" % port_mqtt, "--mqtt-detections",
            "--mqtt-max-rate", "1000", "--out", out, "--no-power",
            "--interval", "1"]
    if threads:
        args += ["--threads", str(threads)]
    if http_timeout:
        args += ["--http-timeout", str(http_timeout)]
    return args


def _wait_state(app, state, timeout):
    """True once one of the app's stats records since now has ``source_state`` == state."""
    n = len(app.records)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(r.get("source_state") == state for r in list(app.records)[n:]):
            return True
        if app.p.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _fps(records, warm_s=5.0):
    fps = sorted(r["inference_fps"] for r in records if r["uptime_s"] > warm_s)
    return fps[len(fps) // 2] if fps else None


def _unloaded(model, clip, broker, tmp, seconds, threads, http_timeout, name):
    out = os.path.join(tmp, name + ".jsonl")
    app = App(_app_args(model, clip, broker.port, out, threads, http_timeout))
    try:
        app.port()
        time.sleep(seconds)
    finally:
        rc, summ = app.stop()
    return {"rc": rc, "seconds": summ and summ["duration_s"],
            "frames": summ and summ["frames_total"],
            "inference_fps": summ and summ["inference_fps"],
            "median_fps": _fps(app.stats()), "summary_error": summ and summ.get("error")}


def run_stress(minutes=10.0, model=None, threads=None, baseline_minutes=None,
               http_timeout=None, gap_s=3.0, broker_down_s=2.0, log=None):
    """Runs the three phases (see the module docstring); returns the result dict."""
    from bnn_camera import DEFAULT_MODEL
    from bnn_camera.sources import bundled_sample
    log = log or (lambda m: sys.stderr.write("stress: %s\n" % m))
    model = model or DEFAULT_MODEL
    if not os.path.isfile(model):
        from bnn_camera.testmodel import write_synthetic_detector
        model = write_synthetic_detector(os.path.join(tempfile.mkdtemp(prefix="bnn-stress-"),
                                                      "synthetic.bnn"))
    base_s = 60.0 * (baseline_minutes if baseline_minutes is not None
                     else max(1.0, minutes / 5.0))
    total_s = 60.0 * minutes
    sample = bundled_sample()
    tmp = tempfile.mkdtemp(prefix="bnn-stress-")
    clip = os.path.join(tmp, "clip.mp4")
    shutil.copy(sample, clip)
    broker = Broker(tmp).start()
    res = {"minutes": minutes, "model": model, "threads": threads,
           "load": {"idle_http_connections": 50, "mjpeg_viewers": 20, "mjpeg_never_reading": 5,
                    "file_replacements": 2, "broker_restarts": 2}}
    try:
        log("unloaded run 1 (%.0f s)" % base_s)
        res["unloaded_before"] = _unloaded(model, clip, broker, tmp, base_s, threads,
                                           http_timeout, "before")
        log("loaded run (%.0f s)" % total_s)
        out = os.path.join(tmp, "loaded.jsonl")
        app = App(_app_args(model, clip, broker.port, out, threads, http_timeout))
        events = []
        try:
            port = app.port()
            t0 = time.monotonic()
            cpu0 = os.times()
            load = Load(port).start()
            plan = sorted([(0.25, "replace"), (0.6, "replace"), (0.4, "broker"),
                           (0.8, "broker")])
            for frac, what in plan:
                wait = t0 + frac * total_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                t = round(time.monotonic() - t0, 1)
                if what == "replace":  # moved away, a new copy put in its place later
                    os.rename(clip, clip + ".old")
                    time.sleep(gap_s)
                    # the app notices only when it rewinds: the clip stays away until
                    # its stats say "reconnecting" (a loop of the clip at most)
                    noticed = _wait_state(app, "reconnecting", timeout=120)
                    shutil.copy(sample, clip + ".new")
                    os.replace(clip + ".new", clip)
                    os.remove(clip + ".old")
                else:
                    broker.kill()
                    time.sleep(broker_down_s)
                    broker.start()
                events.append({"t_s": t, "event": what})
                if what == "replace":
                    events[-1]["app_noticed"] = noticed
                log("%s at %.0f s" % (what, t))
            rest = t0 + total_s - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            cpu1 = os.times()
            load.stop()
            time.sleep(2.0)  # the server notices the closed connections
            stats_before_stop = app.stats()
        finally:
            rc, summ = app.stop()
        res["events"] = events
        res["loaded"] = {"rc": rc, "seconds": summ and summ["duration_s"],
                         "frames": summ and summ["frames_total"],
                         "inference_fps": summ and summ["inference_fps"],
                         "median_fps": _fps(app.stats())}
        res["clients"] = dict(load.c)
        wall = max(cpu1.elapsed - cpu0.elapsed, 1e-9)
        res["harness_cpu"] = {  # this script's own threads (the clients), same machine
            "cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
            "cores_busy": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 3),
            "machine_cores": os.cpu_count()}
        log("unloaded run 2 (%.0f s)" % base_s)
        res["unloaded_after"] = _unloaded(model, clip, broker, tmp, base_s, threads,
                                          http_timeout, "after")
    finally:
        broker.stop()
    res.update(_verdict(res, summ, stats_before_stop, app.err))
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def _verdict(res, summ, stats, err):
    out = {"summary": summ}
    checks = {}
    b1, b2, ld = res["unloaded_before"], res["unloaded_after"], res["loaded"]
    base = [x["inference_fps"] for x in (b1, b2) if x.get("inference_fps")]
    base_med = [x["median_fps"] for x in (b1, b2) if x.get("median_fps")]
    if base and ld.get("inference_fps"):
        out["fps_ratio"] = round(ld["inference_fps"] / (sum(base) / len(base)), 3)
        checks["fps_within_20pct"] = out["fps_ratio"] >= 0.8
    if base_med and ld.get("median_fps"):
        out["median_fps_ratio"] = round(ld["median_fps"] / (sum(base_med) / len(base_med)), 3)
    rss = [r["rss_mb"] for r in stats if r.get("rss_mb") is not None]
    if len(rss) >= 5:
        k = max(1, len(rss) // 5)
        warm = rss[k]
        out["rss"] = {"start_mb": rss[0], "after_warmup_mb": warm, "end_mb": rss[-1],
                      "max_mb": max(rss[k:]), "min_mb": min(rss[k:]),
                      "drift_pct": round(100.0 * (rss[-1] - warm) / warm, 2),
                      "max_drift_pct": round(100.0 * (max(rss[k:]) - warm) / warm, 2)}
        checks["rss_flat_5pct"] = (abs(out["rss"]["drift_pct"]) <= 5.0
                                   and out["rss"]["max_drift_pct"] <= 5.0
                                   and min(rss[k:]) >= 0.95 * warm)
    c = res["clients"]
    if summ:
        acc = {"captured": summ["captured_total"], "processed": summ["frames_total"],
               "dropped": summ["dropped_total"], "bad": summ["bad_frames_total"],
               "discarded_at_stop": summ["discarded_at_stop"]}
        checks["frames_accounted"] = acc["captured"] == (acc["processed"] + acc["dropped"]
                                                         + acc["bad"] + acc["discarded_at_stop"])
        checks["source_reconnects_eq_replacements"] = summ["reconnects"] == 2
        checks["mqtt_reconnects_eq_restarts"] = summ.get("mqtt_reconnects") == 2
        checks["mqtt_offered_eq_published_plus_dropped"] = (
            summ.get("mqtt_offered") == summ.get("mqtt_published", 0) + summ.get("mqtt_dropped", 0))
        checks["mqtt_published_eq_sent_lost_queued"] = (
            summ.get("mqtt_published") == summ.get("mqtt_sent", 0) + summ.get("mqtt_lost", 0)
            + summ.get("mqtt_queued", 0))
        checks["http_accepted_eq_client_connections"] = summ.get("http_accepted") == c["connections"]
        checks["http_accepted_accounted"] = summ.get("http_accepted") == (
            summ.get("http_rejected", 0) + summ.get("http_requests", 0)
            + summ.get("http_no_request", 0) + summ.get("http_open", 0))
        checks["idle_connections_eq_no_request"] = (
            summ.get("http_no_request") == c["idle_connections"])
        checks["no_connection_refused"] = (summ.get("http_rejected") == 0
                                           and c["mjpeg_refused"] == 0
                                           and c["metrics_refused"] == 0)
        checks["stalled_viewers_dropped"] = (c["stalled_dropped"] >= 5
                                             and summ.get("http_write_timeouts", 0)
                                             >= c["stalled_dropped"])
        checks["exit_0"] = res["loaded"]["rc"] == 0 and not summ.get("error")
        out["accounting"] = {
            "frames": acc,
            "source": {"file_replacements": 2, "reconnects": summ["reconnects"],
                       "state_at_stop": summ["source_state"]},
            "mqtt": {k[5:]: v for k, v in summ.items() if k.startswith("mqtt_")},
            "http": {k[5:]: v for k, v in summ.items() if k.startswith("http_")},
            "clients": c,
            "log_lines": len(err),
        }
    out["checks"] = checks
    out["ok"] = bool(checks) and all(checks.values())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--baseline-minutes", type=float, default=None,
                    help="each unloaded run (default: minutes / 5, at least 1)")
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--http-timeout", type=float, default=None,
                    help="passed to the app (default: the app's, 10 s)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)
    res = run_stress(a.minutes, a.model, a.threads, a.baseline_minutes, a.http_timeout)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
