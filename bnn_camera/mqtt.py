"""--mqtt HOST[:PORT][/TOPIC]: detections as JSON through paho-mqtt (1.x, as in Raspberry
Pi OS bookworm's python3-paho-mqtt, or 2.x).

Each frame with detections is published to TOPIC (QoS 0 by default); every stats record
and the summary to TOPIC/stats.  paho's own network thread (loop_start) sends and
reconnects with backoff, so a broker that is down or restarts never blocks inference;
messages are not queued while disconnected (the newest state matters, not history):
they are counted as ``dropped``.  Losing and regaining the broker is logged on stderr and
shows in every stats record (``"mqtt": {"connected", "published", "sent", "queued",
"dropped", "queue_full", "lost", "reconnects", "last_error"}``).

A message counts as ``published`` only when paho accepted it into a bounded queue:
at most ``max_queued`` (--mqtt-queue, 100) messages wait to be written to the socket.
A broker that accepts the connection but stops reading fills the socket and then that
queue; further messages are ``dropped`` (``queue_full``), never piled up in memory, and
the keepalive (--mqtt-keepalive, 15 s: a PINGREQ unanswered for that long) ends the
connection.  ``sent``: written to the socket; ``lost``: accepted, still queued when the
connection dropped (paho discards them).  Always offered = published + dropped and
published = sent + lost + queued."""

import json
import threading

from .sinks import Sink

__all__ = ["parse_mqtt", "MqttSink"]


def parse_mqtt(s, default_port=1883, default_topic="bnn/detections"):
    """"HOST:PORT/TOPIC" -> (host, port, topic); port and topic optional.  ValueError for
    a missing host or a port that is not a number in 1..65535."""
    hostport, _, topic = s.partition("/")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host, port = hostport, str(default_port)
    if not host:
        raise ValueError("--mqtt needs a host: HOST:PORT/TOPIC")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number in 1..65535, got %r" % port)
    if any(c in topic for c in "+#\0"):
        raise ValueError("the topic %r must not hold the wildcards + # (or NUL)" % topic)
    return host, int(port), topic or default_topic


class MqttSink(Sink):
    """A Sink (bnn_camera.sinks): detection records to TOPIC, stats records and the
    summary to TOPIC/stats."""

    name = "mqtt"
    wants_record = True

    def __init__(self, host, port=1883, topic="bnn/detections", qos=0, client_id=None,
                 keepalive=15, log=None, max_queued=100):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise RuntimeError("--mqtt needs paho-mqtt (Pi: sudo apt install python3-paho-mqtt;"
                               " PC: pip install paho-mqtt): %s" % e)
        self._mqtt = mqtt
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.max_queued = max(1, int(max_queued))
        self._lock = threading.Lock()
        self._queued = 0          # accepted, not yet written to the socket
        self.offered = 0
        self.published = 0
        self.sent = 0
        self.dropped = 0
        self.queue_full = 0
        self.lost = 0
        self._full_logged = None  # when "the queue is full" was last logged
        self.connects = 0
        self.disconnects = 0
        self.connected = threading.Event()
        self.last_error = None
        if log is None:
            from .sinks import stderr_log as log
        self._log = log
        kw = {"client_id": client_id or ""}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        else:  # 1.x
            self.client = mqtt.Client(**kw)
        self._closing = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        if hasattr(self.client, "on_socket_open"):  # paho >= 1.5
            self.client.on_socket_open = self._on_socket_open
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_async(host, port, keepalive)
        self.client.loop_start()

    @property
    def reconnects(self):
        """Connections made after the first one (the broker came back)."""
        return max(0, self.connects - 1)

    SNDBUF = 64 * 1024  # the kernel's send buffer for the broker's socket (bounded)

    def _on_socket_open(self, client, userdata, sock):
        """A bounded kernel send buffer: a broker that stops reading holds at most this
        much of the app's memory in the kernel, and the bounded queue fills (and counts
        the drops) soon instead of after megabytes."""
        import socket
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SNDBUF)
        except (OSError, AttributeError):
            pass

    def _forget_queued(self):
        """paho discards the QoS-0 packets still queued when a connection ends."""
        with self._lock:
            self.lost += self._queued
            self._queued = 0

    def _on_publish(self, client, userdata, mid, *args):
        with self._lock:
            if self._queued > 0:
                self._queued -= 1
                self.sent += 1

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        ok = (rc == 0) if isinstance(rc, int) else not getattr(rc, "is_failure", False)
        self._forget_queued()
        if ok:
            self.connects += 1
            self.connected.set()
            if self.connects > 1:
                self._log("mqtt: connected to %s:%d again (%d dropped while away)"
                          % (self.host, self.port, self.dropped))
        else:
            self.last_error = "connect refused: %s" % rc

    def _on_disconnect(self, client, userdata, *args):
        was = self.connected.is_set()
        self.connected.clear()
        self._forget_queued()
        if was:
            self.disconnects += 1
            # paho 1.x: (rc); 2.x: (flags, reason_code, properties)
            rc = args[1] if len(args) >= 2 else (args[0] if args else None)
            self.last_error = "connection lost: %s" % rc
            if not self._closing:
                self._log("mqtt: lost the connection to %s:%d (%s); reconnecting in the "
                          "background, messages are dropped meanwhile" % (self.host, self.port,
                                                                           rc))

    def status(self):
        with self._lock:
            return {"connected": self.connected.is_set(), "published": self.published,
                    "sent": self.sent, "queued": self._queued, "dropped": self.dropped,
                    "queue_full": self.queue_full, "lost": self.lost,
                    "reconnects": self.reconnects, "last_error": self.last_error}

    def _publish(self, topic, rec):
        """True when paho accepted the message into the bounded queue (``published``);
        else it is ``dropped`` (not connected, or max_queued messages already waiting)."""
        with self._lock:
            self.offered += 1
            if not self.connected.is_set():
                self.dropped += 1
                return False
            if self._queued >= self.max_queued:
                self.dropped += 1
                self.queue_full += 1
                self._log_full()
                return False
            self._queued += 1
        try:
            info = self.client.publish(topic, json.dumps(rec, separators=(",", ":")),
                                       qos=self.qos)
            ok = info.rc == self._mqtt.MQTT_ERR_SUCCESS
        except Exception as e:  # noqa: BLE001 - paho's errors: counted, never raised
            ok = False
            self.last_error = "publish: %s: %s" % (type(e).__name__, e)
        with self._lock:
            if ok:
                self.published += 1
            else:
                self._queued = max(0, self._queued - 1)
                self.dropped += 1
        return ok

    def _log_full(self):  # under self._lock; at most a line a minute
        import time
        now = time.monotonic()
        if self._full_logged is None or now - self._full_logged >= 60.0:
            self._full_logged = now
            self.last_error = ("%d messages waiting: the broker is not reading"
                               % self._queued)
            self._log("mqtt: %s:%d is not taking messages (%d waiting, the limit); new "
                      "messages are dropped until it does (%d so far)"
                      % (self.host, self.port, self._queued, self.queue_full))

    def publish_detections(self, rec):
        return self._publish(self.topic, rec)

    def publish_stats(self, rec):
        return self._publish(self.topic + "/stats", rec)

    def on_detections(self, seq, frame, result, record):
        self._publish(self.topic, record)

    def on_stats(self, rec):
        self._publish(self.topic + "/stats", rec)

    def finish(self):
        with self._lock:
            return {"mqtt_offered": self.offered, "mqtt_published": self.published,
                    "mqtt_sent": self.sent, "mqtt_queued": self._queued,
                    "mqtt_lost": self.lost, "mqtt_dropped": self.dropped,
                    "mqtt_queue_full": self.queue_full, "mqtt_reconnects": self.reconnects}

    def wait_connected(self, timeout):
        return self.connected.wait(timeout)

    def close(self):
        """DISCONNECT goes out after the queued messages; then the network thread stops.
        Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()
