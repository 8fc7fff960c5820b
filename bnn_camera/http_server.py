"""--http HOST:PORT: stdlib http.server in its own threads.

    /              the status page: the annotated stream, live charts of /stats, health,
                   the newest detections (bnn_camera/static/index.html)
    /detections    the newest frame's detections (JSON)
    /stats         the latest stats record (JSON)
    /history       the last 300 stats records (JSON list; the page's charts)
    /stream.mjpg   MJPEG (multipart/x-mixed-replace) of the annotated frames
    /snapshot.jpg  the newest annotated frame
    /metrics       Prometheus text format (the latest stats record + totals)
    /healthz       200 "ok" while frames flow; 503 with the reason otherwise

Frames are annotated and JPEG-encoded here, by one encoder thread shared by all viewers
(at most ``max_fps`` a second), only while someone watches: the inference thread just
publishes the newest (frame, result) to a FrameHub.  Every peer is bounded: a request
timeout, a send timeout, a connection limit and an MJPEG viewer limit (HttpServer).
"""

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .report import SOURCE_STATES
from .sinks import annotate, detections_list, stderr_log

__all__ = ["parse_hostport", "HttpServer", "prometheus_text"]

BOUNDARY = "bnnframe"


def parse_hostport(s, default_host="127.0.0.1", default_port=8080):
    """"HOST:PORT", ":PORT", "PORT" or "HOST" -> (host, port).  IPv6: "[::1]:8080".
    ValueError for a port that is not a number in 0..65535 (0: any free port)."""
    s = (s or "").strip()
    if not s:
        return default_host, default_port
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        host, port = host, rest.lstrip(":") or str(default_port)
        if not host:
            raise ValueError("no host inside [ ]: %r" % s)
    elif s.isdigit():
        host, port = default_host, s
    else:
        host, sep, port = s.rpartition(":")
        if not sep:
            return s, default_port
        host = host or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number in 0..65535, got %r" % port)
    return host, int(port)


def _metric_lines(name, help_, typ, value, labels=None):
    lab = ""
    if labels:
        lab = "{" + ",".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"'))
                             for k, v in labels.items()) + "}"
    return ["# HELP %s %s" % (name, help_), "# TYPE %s %s" % (name, typ),
            "%s%s %s" % (name, lab, _num(value))]


def _num(v):
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    return repr(float(v)) if isinstance(v, float) else str(v)


def build_info():
    """The labels of bnn_build_info: the package version, Python, the machine."""
    import platform

    from firmware_py import __version__
    return {"version": __version__, "python": platform.python_version(),
            "machine": platform.machine()}


def prometheus_text(stats, last):
    """The exposition text from a report.Stats and the latest stats record (or None)."""
    last = last or {}
    out = []
    m = out.extend
    m(_metric_lines("bnn_frames_total", "Frames through the detector.", "counter", stats.frames))
    m(_metric_lines("bnn_captured_frames_total", "Frames read from the source.", "counter",
                    stats.captured))
    m(_metric_lines("bnn_dropped_frames_total", "Frames dropped because inference lagged.",
                    "counter", stats.dropped))
    m(_metric_lines("bnn_bad_frames_total", "Unusable frames skipped.", "counter",
                    stats.bad_frames))
    m(_metric_lines("bnn_detections_total", "Objects detected.", "counter", stats.detections))
    m(_metric_lines("bnn_source_reconnects_total", "Source reopened after a loss.", "counter",
                    stats.reconnects))
    m(_metric_lines("bnn_capture_fps", "Capture rate over the last report interval.", "gauge",
                    last.get("capture_fps")))
    m(_metric_lines("bnn_inference_fps", "Inference rate over the last report interval.",
                    "gauge", last.get("inference_fps")))
    buckets, lat_sum, lat_count = stats.latency_histogram()
    out += ["# HELP bnn_latency_seconds End-to-end latency: capture to detections out.",
            "# TYPE bnn_latency_seconds histogram"]
    out += ['bnn_latency_seconds_bucket{le="%s"} %d'
            % ("+Inf" if le == float("inf") else repr(le), n) for le, n in buckets]
    out += ["bnn_latency_seconds_sum %s" % repr(float(lat_sum)),
            "bnn_latency_seconds_count %d" % lat_count]
    if last.get("power") is not None:
        m(_metric_lines("bnn_power_watts", "Measured power (mean over the last interval).",
                        "gauge", last["power"], {"source": last.get("power_source")}))
    if last.get("energy_mj_per_frame") is not None:
        m(_metric_lines("bnn_energy_joules_per_frame", "Measured energy per frame.", "gauge",
                        last["energy_mj_per_frame"] / 1000.0))
    est = last.get("power_estimated")
    if isinstance(est, dict) and est.get("watts") is not None:
        model = {"model": est.get("model")}
        m(_metric_lines("bnn_estimated_power_watts", "ESTIMATED board power from CPU time and "
                        "a per-board model (not measured).", "gauge", est["watts"], model))
        if est.get("mj_per_frame") is not None:
            m(_metric_lines("bnn_estimated_energy_joules_per_frame", "ESTIMATED energy per "
                            "frame (not measured).", "gauge", est["mj_per_frame"] / 1000.0,
                            model))
    if last.get("cpu_temp_c") is not None:
        m(_metric_lines("bnn_cpu_temperature_celsius", "CPU temperature.", "gauge",
                        last["cpu_temp_c"]))
    th = last.get("throttled")
    if th is not None:
        m(_metric_lines("bnn_throttled", "vcgencmd get_throttled flags (raw value).", "gauge",
                        int(th.get("raw", "0x0"), 16)))
    if last.get("rss_mb") is not None:
        m(_metric_lines("bnn_resident_memory_bytes", "Resident memory of the app.", "gauge",
                        int(last["rss_mb"] * 1024 * 1024)))
    snaps, events, mq = last.get("snapshots"), last.get("events"), last.get("mqtt")
    http = last.get("http")
    if isinstance(snaps, dict) and "failed" in snaps:
        m(_metric_lines("bnn_snapshots_saved_total", "Snapshots written.", "counter",
                        snaps.get("saved", 0)))
        m(_metric_lines("bnn_snapshot_write_errors_total", "Snapshots that could not be "
                        "written (disk full, ...).", "counter", snaps["failed"]))
    if isinstance(events, dict) and "write_errors" in events:
        m(_metric_lines("bnn_event_log_write_errors_total", "Failed writes to the --out "
                        "event log.", "counter", events["write_errors"]))
    if isinstance(mq, dict) and "connected" in mq:
        m(_metric_lines("bnn_mqtt_connected", "1 while connected to the MQTT broker.", "gauge",
                        1 if mq["connected"] else 0))
        m(_metric_lines("bnn_mqtt_dropped_messages_total", "MQTT messages not accepted "
                        "(broker unreachable, or its queue full).", "counter",
                        mq.get("dropped", 0)))
        m(_metric_lines("bnn_mqtt_queued_messages", "MQTT messages accepted, not yet "
                        "written to the broker's socket.", "gauge", mq.get("queued", 0)))
    if isinstance(http, dict) and "accepted" in http:
        for key, typ, help_ in (
                ("open", "gauge", "Open HTTP connections."),
                ("accepted", "counter", "HTTP connections accepted."),
                ("rejected", "counter", "HTTP connections refused (503): over the limit."),
                ("idle_timeouts", "counter", "HTTP connections closed: no request in time."),
                ("write_timeouts", "counter", "HTTP clients dropped: they stopped reading."),
                ("mjpeg_clients", "gauge", "MJPEG viewers."),
                ("mjpeg_rejected", "counter", "MJPEG viewers refused: over the limit."),
                ("jpeg_encoded", "counter", "JPEG encodes for MJPEG and snapshots.")):
            m(_metric_lines("bnn_http_%s%s" % (key, "_total" if typ == "counter" else ""),
                            help_, typ, http.get(key, 0)))
    m(_metric_lines("bnn_source_up", "1 while the source delivers frames.", "gauge",
                    1 if stats.source_state == "running" else 0))
    out += ["# HELP bnn_source_state The source's state: 1 for the current one, else 0.",
            "# TYPE bnn_source_state gauge"]
    out += ['bnn_source_state{state="%s"} %d' % (st, st == stats.source_state)
            for st in SOURCE_STATES]
    m(_metric_lines("bnn_build_info", "The app's version and platform (always 1).", "gauge", 1,
                    build_info()))
    if last.get("source_kind") is not None:
        m(_metric_lines("bnn_source_info", "The live source (always 1): its kind and path.",
                        "gauge", 1, {"kind": last["source_kind"], "path": last.get("source")}))
    return "\n".join(out) + "\n"


class _Encoder:
    """The one JPEG encoder of the MJPEG stream and /snapshot.jpg: a thread that, while
    any client watches, annotates and encodes the newest frame at most ``max_fps`` times
    a second; every client sends the same bytes.  The cost of encoding does not grow
    with the number of viewers (per-viewer encoding cut inference from ~460 to ~100 fps
    with 200 viewers)."""

    def __init__(self, hub, class_names, quality, max_fps):
        self.hub = hub
        self.class_names = class_names
        self.quality = int(quality)
        self.min_dt = 1.0 / max_fps if max_fps else 0.0
        self._cond = threading.Condition()
        self._enc_lock = threading.Lock()
        self.seq = 0            # JPEGs published to the stream
        self.jpg = None
        self.clients = 0        # MJPEG clients waiting for frames
        self.encoded = 0        # JPEG encodes, stream and snapshots together
        self._cache = (None, -1, 0.0)  # (jpg, hub seq, monotonic time)
        self._closed = False
        self._t = threading.Thread(target=self._run, name="mjpeg-encoder", daemon=True)

    def start(self):
        self._t.start()

    def _encode(self, item):
        import cv2
        _, frame, result = item
        img = annotate(frame, result, self.class_names)
        ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
        self.encoded += 1
        return buf.tobytes() if ok else None

    def latest(self, wait_after=None, timeout=0.0):
        """The JPEG of the newest frame (None when there is none): encoded at most once per
        frame and at most max_fps times a second (else the cached one).  wait_after: a
        hub seq -- wait up to timeout s for a newer frame first."""
        item = self.hub.wait_next(-1 if wait_after is None else wait_after, timeout)
        if item is None:
            return None
        with self._enc_lock:
            jpg, hseq, t = self._cache
            now = time.monotonic()
            if jpg is not None and (hseq == item[0] or now - t < self.min_dt):
                return jpg, hseq
            jpg = self._encode(item)
            if jpg is not None:
                self._cache = (jpg, item[0], now)
            return jpg, item[0]

    def _run(self):
        hub_seq = pub_seq = -1
        while True:
            with self._cond:
                while self.clients == 0 and not self._closed:
                    self._cond.wait(1.0)
                if self._closed:
                    return
            t0 = time.monotonic()
            try:
                got = self.latest(wait_after=hub_seq, timeout=1.0)
            except Exception as e:  # noqa: BLE001 - the encoder must not die
                stderr_log("http: JPEG encoding failed: %s: %s" % (type(e).__name__, e))
                got = None
                time.sleep(1.0)
            if got is None or got[0] is None:
                if self.hub.closed:
                    self.close()
                continue
            jpg, hub_seq = got
            if hub_seq == pub_seq:
                continue
            pub_seq = hub_seq
            with self._cond:
                self.jpg = jpg
                self.seq += 1
                self._cond.notify_all()
            rest = self.min_dt - (time.monotonic() - t0)
            if rest > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, rest)

    def wait_next(self, last_seq, timeout=1.0):
        """(seq, jpg) newer than last_seq, or None after the timeout / at close."""
        with self._cond:
            if self.seq == last_seq and not self._closed:
                self._cond.wait(timeout)
            if self.seq == last_seq or self.jpg is None:
                return None
            return self.seq, self.jpg

    def join_client(self):
        with self._cond:
            self.clients += 1
            self._cond.notify_all()

    def leave_client(self):
        with self._cond:
            self.clients -= 1

    @property
    def closed(self):
        return self._closed

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class HttpServer:
    """The HTTP endpoint (stdlib http.server, one thread per connection), with a limit on
    everything a peer can hold (docs/reliability.md, "Limits"):

    * ``timeout`` s: a connection must deliver its whole request within it (else it is
      closed: idle and trickling clients), and every send must complete within it (a
      client that stops reading is dropped) -- --http-timeout, 10 s;
    * ``max_connections`` open at once; more are answered 503 and closed at once
      without a thread -- --http-max-connections, 64;
    * ``max_mjpeg`` MJPEG viewers; more get 503 -- --mjpeg-max-clients, 16; each one's
      kernel send buffer is capped (``mjpeg_sndbuf``), and all share one encoder;
    * accept() failing for lack of file descriptors (EMFILE) pauses the accepts instead
      of spinning.

    Counters (``status()``: every stats record's "http", /metrics, the summary): every
    accepted connection ends in exactly one of rejected, no_request (closed before a
    whole request: idle timeouts, clients that gave up) or requests, or is still open."""

    def __init__(self, pipeline, hub, host="127.0.0.1", port=8080, stale_s=10.0,
                 jpeg_quality=80, max_fps=15.0, timeout=10.0, max_connections=64,
                 max_mjpeg=16, mjpeg_sndbuf=256 * 1024):
        import errno
        import socket

        self.pipeline = pipeline
        self.hub = hub
        self.stale_s = stale_s
        self.jpeg_quality = jpeg_quality
        self.max_fps = max_fps
        self.timeout = float(timeout)
        self.max_connections = int(max_connections)
        self.max_mjpeg = int(max_mjpeg)
        self.mjpeg_sndbuf = mjpeg_sndbuf
        self.encoder = _Encoder(hub, pipeline.class_names, jpeg_quality, max_fps)
        self.index = _index_html()
        self._lock = threading.Lock()
        self._pending = {}  # socket -> deadline of its request
        self._closing = threading.Event()
        self.counts = collections.Counter()
        self.open = 0
        self.mjpeg_clients = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "bnn-camera"
            protocol_version = "HTTP/1.0"
            timeout = self.timeout  # the socket's timeout: every recv and every send

            def log_message(self, *a):  # quiet
                pass

            def log_error(self, fmt, *args):  # quiet ("Request timed out": counted in finish)
                pass

            def setup(self):
                self._got_request = False
                self._t0 = time.monotonic()
                with outer._lock:
                    outer._pending[self.request] = self._t0 + outer.timeout
                super().setup()

            def parse_request(self):
                with outer._lock:
                    outer._pending.pop(self.request, None)
                ok = super().parse_request()
                self._got_request = ok
                return ok

            def finish(self):
                with outer._lock:
                    outer._pending.pop(self.request, None)
                    outer.counts["requests" if self._got_request else "no_request"] += 1
                    if not self._got_request and \
                            time.monotonic() - self._t0 >= 0.99 * outer.timeout:
                        outer.counts["idle_timeouts"] += 1  # closed for want of a request
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/stream.mjpg":
                        outer._stream(self)
                    elif path == "/metrics":
                        body = prometheus_text(outer.pipeline.stats, outer.pipeline.last_stats)
                        self._send(200, body.encode(), "text/plain; version=0.0.4; charset=utf-8")
                    elif path == "/healthz":
                        ok, why = outer.health()
                        self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
                    elif path == "/stats":
                        self._send(200, json.dumps(outer.pipeline.last_stats).encode(),
                                   "application/json")
                    elif path == "/snapshot.jpg":
                        got = outer.encoder.latest()
                        if got is None or got[0] is None:
                            self._send(503, b"no frame yet\n", "text/plain")
                        else:
                            self._send(200, got[0], "image/jpeg")
                    elif path == "/history":
                        self._send(200, json.dumps(list(outer.hub.history)).encode(),
                                   "application/json")
                    elif path == "/detections":
                        self._send(200, json.dumps(outer.latest_detections()).encode(),
                                   "application/json")
                    elif path in ("/", "/index.html"):
                        self._send(200, outer.index, "text/html; charset=utf-8")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except socket.timeout:  # the client did not read within the timeout
                    outer._count("write_timeouts")
                    outer._abort(self.connection)
                except OSError:  # reset, broken pipe: the client went away
                    outer._count("client_errors")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64

            def get_request(self):
                try:
                    return super().get_request()
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # out of descriptors: select() keeps saying "readable" and accept
                        # keeps failing -- pause instead of spinning
                        outer._count("accept_errors")
                        outer._closing.wait(0.5)
                    raise

            def process_request(self, request, client_address):
                with outer._lock:
                    outer.counts["accepted"] += 1
                    full = outer.open >= outer.max_connections
                    if full:
                        outer.counts["rejected"] += 1
                    else:
                        outer.open += 1
                if full:  # answered here, without a thread, never blocking
                    outer._reject(request, b"too many connections (limit %d)\n"
                                  % outer.max_connections)
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    with outer._lock:
                        outer.open -= 1
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    with outer._lock:
                        outer.open -= 1

            def handle_error(self, request, client_address):
                outer._count("handler_errors")  # no traceback per bad client

            def service_actions(self):
                outer._reap()

        if ":" in host:
            Server.address_family = socket.AF_INET6
        self.httpd = Server((host, port), Handler)
        self.host, self.port = self.httpd.server_address[:2]
        self.hub.http = self
        self._t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                   name="http", daemon=True)

    # ---- limits -------------------------------------------------------------------------
    def _count(self, key, n=1):
        with self._lock:
            self.counts[key] += n

    @staticmethod
    def _abort(sock):
        """Close with a reset (SO_LINGER 0) when the socket is closed: the kernel drops
        what the client never read instead of keeping it for minutes."""
        import socket
        import struct
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    @staticmethod
    def _reject(sock, body):
        try:
            sock.setblocking(False)
            sock.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass

    def _reap(self):
        """Closes the connections whose request did not arrive within the timeout
        (called by the accept loop about every 0.5 s)."""
        import socket
        now = time.monotonic()
        with self._lock:
            late = [s for s, t in self._pending.items() if t <= now]
            for s in late:
                del self._pending[s]
        for s in late:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def status(self):
        """The counters (each stats record's "http")."""
        with self._lock:
            c = dict(self.counts)
            d = {"open": self.open, "accepted": c.get("accepted", 0),
                 "rejected": c.get("rejected", 0), "requests": c.get("requests", 0),
                 "no_request": c.get("no_request", 0),
                 "idle_timeouts": c.get("idle_timeouts", 0),
                 "write_timeouts": c.get("write_timeouts", 0),
                 "client_errors": c.get("client_errors", 0),
                 "accept_errors": c.get("accept_errors", 0),
                 "mjpeg_clients": self.mjpeg_clients,
                 "mjpeg_clients_max": c.get("mjpeg_clients_max", 0),
                 "mjpeg_rejected": c.get("mjpeg_rejected", 0),
                 "mjpeg_frames_sent": c.get("mjpeg_frames_sent", 0)}
        d["jpeg_encoded"] = self.encoder.encoded
        return d

    def latest_detections(self):
        """/detections: the newest frame's detections (JSON-able)."""
        item = self.hub.wait_next(-1, 0.0)
        out = {"source": self.pipeline.source.name, "frame": None, "detections": []}
        if item is not None:
            seq, _, result = item
            out["frame"] = seq
            out["detections"] = detections_list(result, self.pipeline.class_names)
        return out

    def start(self):
        self.encoder.start()
        self._t.start()
        return self

    def health(self):
        st = self.pipeline.stats
        if self.pipeline.fatal:
            return False, "failed: %s" % self.pipeline.fatal
        if st.source_state != "running":
            return False, "source %s%s" % (st.source_state,
                                           (": %s" % st.last_error) if st.last_error else "")
        last = st.last_frame_t
        if last is None:
            age = time.monotonic() - st.t0
            return (age < self.stale_s), "no frame yet (%.1f s)" % age
        age = time.monotonic() - last
        if age > self.stale_s:
            return False, "no frame for %.1f s" % age
        return True, "ok"

    def _stream(self, h):
        import socket
        with self._lock:
            full = self.mjpeg_clients >= self.max_mjpeg
            if full:
                self.counts["mjpeg_rejected"] += 1
            else:
                self.mjpeg_clients += 1
                self.counts["mjpeg_clients_max"] = max(self.counts["mjpeg_clients_max"],
                                                       self.mjpeg_clients)
        if full:
            h._send(503, b"too many MJPEG clients (limit %d)\n" % self.max_mjpeg, "text/plain")
            return
        self.encoder.join_client()
        try:
            if self.mjpeg_sndbuf:  # what a client that stops reading can make us hold
                try:
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                            self.mjpeg_sndbuf)
                except OSError:
                    pass
            h.send_response(200)
            h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=%s" % BOUNDARY)
            h.send_header("Cache-Control", "no-cache, private")
            h.send_header("Pragma", "no-cache")
            h.end_headers()
            seq = -1
            head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %%d\r\n\r\n" % (
                BOUNDARY.encode())
            while not self.encoder.closed and not self._closing.is_set():
                got = self.encoder.wait_next(seq, timeout=1.0)
                if got is None:
                    continue
                seq, jpg = got
                h.wfile.write(b"".join((head % len(jpg), jpg, b"\r\n")))  # one sendall
                self._count("mjpeg_frames_sent")
        finally:
            self.encoder.leave_client()
            with self._lock:
                self.mjpeg_clients -= 1

    def close(self):
        self._closing.set()
        self.encoder.close()
        self.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()


def _index_html():
    """The status page (bnn_camera/static/index.html: HTML + JS that polls /stats,
    /healthz and /detections; no build step, nothing from another host)."""
    import os
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "static",
                           "index.html"), "rb") as f:
        return f.read()
