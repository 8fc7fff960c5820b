"""--mqtt HOST[:PORT][/TOPIC]: detections as JSON through paho-mqtt (1.x, as in Raspberry
Pi OS bookworm's python3-paho-mqtt, or 2.x).

Each frame with detections is published to TOPIC (QoS 0 by default); every stats record
and the summary to TOPIC/stats.  paho's own network thread (loop_start) sends and
reconnects with backoff, so a broker that is down or restarts never blocks inference;
messages are not queued while disconnected (the newest state matters, not history):
they are counted as ``dropped``.  Losing and regaining the broker is logged on stderr and
shows in every stats record (``"mqtt": {"connected", "published", "dropped",
"reconnects", "last_error"}``)."""

import json
import threading

from .sinks import Sink

__all__ = ["parse_mqtt", "MqttSink"]


def parse_mqtt(s, default_port=1883, default_topic="bnn/detections"):
    """"HOST:PORT/TOPIC" -> (host, port, topic); port and topic optional."""
    hostport, _, topic = s.partition("/")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = int(rest.lstrip(":") or default_port)
    elif hostport.count(":") == 1:
        host, p = hostport.split(":")
        port = int(p)
    else:
        host, port = hostport, default_port
    if not host:
        raise ValueError("--mqtt needs a host: HOST:PORT/TOPIC")
    return host, port, topic or default_topic


class MqttSink(Sink):
    """A Sink (bnn_camera.sinks): detection records to TOPIC, stats records and the
    summary to TOPIC/stats."""

    name = "mqtt"
    wants_record = True

    def __init__(self, host, port=1883, topic="bnn/detections", qos=0, client_id=None,
                 keepalive=30, log=None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise RuntimeError("--mqtt needs paho-mqtt (Pi: sudo apt install python3-paho-mqtt;"
                               " PC: pip install paho-mqtt): %s" % e)
        self._mqtt = mqtt
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.published = 0
        self.dropped = 0
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
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_async(host, port, keepalive)
        self.client.loop_start()

    @property
    def reconnects(self):
        """Connections made after the first one (the broker came back)."""
        return max(0, self.connects - 1)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        ok = (rc == 0) if isinstance(rc, int) else not getattr(rc, "is_failure", False)
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
        return {"connected": self.connected.is_set(), "published": self.published,
                "dropped": self.dropped, "reconnects": self.reconnects,
                "last_error": self.last_error}

    def _publish(self, topic, rec):
        if not self.connected.is_set():
            self.dropped += 1
            return False
        info = self.client.publish(topic, json.dumps(rec, separators=(",", ":")), qos=self.qos)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            self.published += 1
            return True
        self.dropped += 1
        return False

    def publish_detections(self, rec):
        return self._publish(self.topic, rec)

    def publish_stats(self, rec):
        return self._publish(self.topic + "/stats", rec)

    def on_detections(self, seq, frame, result, record):
        self._publish(self.topic, record)

    def on_stats(self, rec):
        self._publish(self.topic + "/stats", rec)

    def finish(self):
        return {"mqtt_published": self.published, "mqtt_dropped": self.dropped,
                "mqtt_reconnects": self.reconnects}

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
