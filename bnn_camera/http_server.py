"""--http HOST:PORT: stdlib http.server in its own threads.

    /              a small page showing the stream
    /stream.mjpg   MJPEG (multipart/x-mixed-replace) of the annotated frames
    /snapshot.jpg  the newest annotated frame
    /metrics       Prometheus text format (the latest stats record + totals)
    /healthz       200 "ok" while frames flow; 503 with the reason otherwise

Frames are annotated and JPEG-encoded here, per client, only while someone watches: the
inference thread just publishes the newest (frame, result) to a FrameHub.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .sinks import annotate

__all__ = ["parse_hostport", "HttpServer", "prometheus_text"]

BOUNDARY = "bnnframe"


def parse_hostport(s, default_host="127.0.0.1", default_port=8080):
    """"HOST:PORT", ":PORT", "PORT" or "HOST" -> (host, port).  IPv6: "[::1]:8080"."""
    s = (s or "").strip()
    if not s:
        return default_host, default_port
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if s.isdigit():
        return default_host, int(s)
    host, sep, port = s.rpartition(":")
    if not sep:
        return s, default_port
    return host or default_host, int(port)


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


def prometheus_text(stats, last):
    """The exposition text from a report.Stats and the latest stats record (or None)."""
    last = last or {}
    lat = last.get("latency_ms") or {}
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
    out += ["# HELP bnn_latency_seconds End-to-end latency over the last interval.",
            "# TYPE bnn_latency_seconds gauge"]
    for q, key in (("0.5", "p50"), ("0.95", "p95")):
        v = lat.get(key)
        out.append('bnn_latency_seconds{quantile="%s"} %s' % (q, _num(None if v is None
                                                                       else v / 1000.0)))
    if last.get("power") is not None:
        m(_metric_lines("bnn_power_watts", "Measured power (mean over the last interval).",
                        "gauge", last["power"], {"source": last.get("power_source")}))
    if last.get("energy_mj_per_frame") is not None:
        m(_metric_lines("bnn_energy_joules_per_frame", "Measured energy per frame.", "gauge",
                        last["energy_mj_per_frame"] / 1000.0))
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
        m(_metric_lines("bnn_mqtt_dropped_messages_total", "MQTT messages not sent "
                        "(broker unreachable).", "counter", mq.get("dropped", 0)))
    m(_metric_lines("bnn_source_up", "1 while the source delivers frames.", "gauge",
                    1 if stats.source_state == "running" else 0,
                    {"state": stats.source_state}))
    return "\n".join(out) + "\n"


class HttpServer:
    def __init__(self, pipeline, hub, host="127.0.0.1", port=8080, stale_s=10.0,
                 jpeg_quality=80, max_fps=15.0):
        self.pipeline = pipeline
        self.hub = hub
        self.stale_s = stale_s
        self.jpeg_quality = jpeg_quality
        self.max_fps = max_fps
        self.clients = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "bnn-camera"
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):  # quiet
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
                        jpg = outer._jpeg(outer.hub.wait_next(-1, 0.0))
                        if jpg is None:
                            self._send(503, b"no frame yet\n", "text/plain")
                        else:
                            self._send(200, jpg, "image/jpeg")
                    elif path in ("/", "/index.html"):
                        self._send(200, INDEX.encode(), "text/html; charset=utf-8")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except (BrokenPipeError, ConnectionResetError):
                    pass

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

        if ":" in host:
            import socket
            Server.address_family = socket.AF_INET6
        self.httpd = Server((host, port), Handler)
        self.host, self.port = self.httpd.server_address[:2]
        self._t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                   name="http", daemon=True)

    def start(self):
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

    def _jpeg(self, item):
        if item is None:
            return None
        import cv2
        _, frame, result = item
        img = annotate(frame, result, self.pipeline.class_names)
        ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
        return buf.tobytes() if ok else None

    def _stream(self, h):
        h.send_response(200)
        h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=%s" % BOUNDARY)
        h.send_header("Cache-Control", "no-cache, private")
        h.send_header("Pragma", "no-cache")
        h.end_headers()
        self.clients += 1
        seq = -1
        min_dt = 1.0 / self.max_fps if self.max_fps else 0.0
        last_t = 0.0
        try:
            while not self.hub.closed:
                item = self.hub.wait_next(seq, timeout=1.0)
                if item is None:
                    continue
                seq = item[0]
                now = time.monotonic()
                if now - last_t < min_dt:
                    continue
                last_t = now
                jpg = self._jpeg(item)
                if jpg is None:
                    continue
                h.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                              % (BOUNDARY.encode(), len(jpg)))
                h.wfile.write(jpg)
                h.wfile.write(b"\r\n")
                h.wfile.flush()
        finally:
            self.clients -= 1

    def close(self):
        self.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()


INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>bnn camera</title>
<style>body{font-family:sans-serif;background:#111;color:#ddd;margin:1em}
img{max-width:100%;border:1px solid #444}</style></head><body>
<h1>bnn camera</h1><img src="/stream.mjpg" alt="stream">
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/stats">/stats</a></p></body></html>
"""
