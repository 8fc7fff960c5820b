"""--mqtt HOST[:PORT][/TOPIC]: detections as JSON through paho-mqtt (1.x, as in Raspberry
Pi OS bookworm's python3-paho-mqtt, or 2.x).

Each frame with detections is published to TOPIC (QoS 0 by default); every stats record
and the summary to TOPIC/stats.  paho's own network thread (loop_start) sends and
reconnects with backoff, so a broker that is down or restarts never blocks inference;
messages are not queued while disconnected (the newest state matters, not history)."""

import json
import threading

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


class MqttSink:
    def __init__(self, host, port=1883, topic="bnn/detections", qos=0, client_id=None,
                 keepalive=30):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise RuntimeError("--mqtt needs paho-mqtt (Pi: sudo apt install python3-paho-mqtt;"
                               " PC: pip install paho-mqtt): %s" % e)
        self._mqtt = mqtt
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.published = 0
        self.dropped = 0
        self.connected = threading.Event()
        self.last_error = None
        kw = {"client_id": client_id or ""}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        else:  # 1.x
            self.client = mqtt.Client(**kw)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_async(host, port, keepalive)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        ok = (rc == 0) if isinstance(rc, int) else not getattr(rc, "is_failure", False)
        if ok:
            self.connected.set()
        else:
            self.last_error = "connect refused: %s" % rc

    def _on_disconnect(self, client, userdata, *args):
        self.connected.clear()

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

    def wait_connected(self, timeout):
        return self.connected.wait(timeout)

    def close(self):
        """DISCONNECT goes out after the queued messages; then the network thread stops."""
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()
