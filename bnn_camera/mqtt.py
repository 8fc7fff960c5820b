"""--mqtt HOST[:PORT][/TOPIC]: events, per-object state, stats and Home Assistant MQTT
discovery through paho-mqtt (1.x, as in Raspberry Pi OS bookworm's python3-paho-mqtt, or
2.x).

Topics, under TOPIC (default ``bnn/<node id>``):

    TOPIC/availability        "online" / "offline", retained; "offline" is also the last
                              will, so the broker says it when the app dies or the link drops
    TOPIC/events              {"type": "new" | "update" | "end", "id", "label", "score",
                              "top_score", "box", "box_norm", "frames", "start_time",
                              "end_time"}: one new and one end per object passing by
                              (bnn_camera.tracker), updates at most every
                              --mqtt-update-interval s per object
    TOPIC/<label>/state       "ON" / "OFF" (an object of that class is present), retained
    TOPIC/<label>/count       objects of that class present now, retained
    TOPIC/stats               every stats record and the summary (JSON)
    TOPIC/detections          with --mqtt-detections: each frame's detections (JSON), the
                              old firehose, at most --mqtt-max-rate messages a second
    <prefix>/<component>/<node id>/<object id>/config   Home Assistant discovery, retained
                              (--mqtt-discovery-prefix, default "homeassistant"): a
                              binary_sensor per class, sensors for fps, latency, power,
                              energy per frame, temperature and each class's count

``update`` events and ``detections`` messages share a token bucket of --mqtt-max-rate
messages a second (the rest are counted as ``rate_limited``); ``new``, ``end`` and the
retained state are never rate limited (a track lasts at least --track-min-frames frames
and ends after --track-timeout s, so they are bounded by the tracker).

Credentials never come from the command line (``ps`` shows it to every user): they come
from --mqtt-credentials FILE (one line ``USERNAME:PASSWORD``) or the environment
(BNN_MQTT_USERNAME, BNN_MQTT_PASSWORD); ``user:pw@host`` in --mqtt is refused.  TLS:
--mqtt-tls (the system's CAs), --mqtt-ca FILE, --mqtt-cert FILE / --mqtt-key FILE (a client
certificate), --mqtt-tls-insecure (the broker's host name is not checked; the chain is).

paho's own network thread (loop_start) sends and reconnects with backoff, so a broker that
is down or restarts never blocks inference; on every (re)connection the availability,
the discovery configs and the current state are published again (retained), and again
when Home Assistant announces itself on ``<prefix>/status``.  Messages are not queued while
disconnected (the newest state matters, not history): they are counted as ``dropped``.
Losing and regaining the broker is logged on stderr and shows in every stats record
(``"mqtt": {"connected", "published", "sent", "queued", "dropped", "queue_full", "lost",
"reconnects", "rate_limited", "events", "last_error"}``).

A message counts as ``published`` only when paho accepted it into a bounded queue:
at most ``max_queued`` (--mqtt-queue, 100) messages wait to be written to the socket
(with --mqtt-qos 1 or 2: to be acknowledged).  A broker that accepts the connection but
stops reading fills the socket and then that queue; further messages are ``dropped``
(``queue_full``), never piled up in memory, and the keepalive (--mqtt-keepalive, 15 s: a
PINGREQ unanswered for that long) ends the connection.  ``sent``: written to the socket
(QoS 0) or acknowledged (QoS 1, 2); ``lost``: QoS 0, accepted, still queued when the
connection dropped (QoS 1 and 2 messages stay queued and paho sends them again after
reconnecting).  Always offered = published + dropped and published = sent + lost +
queued."""

import json
import os
import re
import socket
import threading
import time

from .sinks import Sink

__all__ = ["parse_mqtt", "read_credentials", "slug", "MqttSink", "DEFAULT_DISCOVERY_PREFIX"]

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
ENV_USERNAME, ENV_PASSWORD = "BNN_MQTT_USERNAME", "BNN_MQTT_PASSWORD"


def parse_mqtt(s, default_port=1883, default_topic=""):
    """"HOST:PORT/TOPIC" -> (host, port, topic); port and topic optional.  ValueError for
    a missing host, a port that is not a number in 1..65535, a wildcard in the topic, or
    credentials written into it (user:password@host)."""
    hostport, _, topic = s.partition("/")
    if "@" in hostport:
        raise ValueError("credentials do not go on the command line (every user sees it in "
                         "ps): give HOST:PORT/TOPIC here and the user name and password in "
                         "--mqtt-credentials FILE (one line USERNAME:PASSWORD) or $%s / $%s"
                         % (ENV_USERNAME, ENV_PASSWORD))
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
    return host, int(port), topic.strip("/") or default_topic


def read_credentials(path=None, environ=None):
    """(username, password) from FILE (its first line: USERNAME:PASSWORD, or USERNAME
    alone) or else $BNN_MQTT_USERNAME / $BNN_MQTT_PASSWORD; (None, None) when neither.
    ValueError with the reason (a missing / unreadable / empty file, a password without
    a user name)."""
    environ = os.environ if environ is None else environ
    if path:
        from firmware_py.model_format import open_regular
        try:
            with open_regular(path, not_regular=ValueError) as f:
                data = f.read(4097)
        except OSError as e:
            raise ValueError("--mqtt-credentials %s: %s" % (path, e.strerror or e)) from None
        if len(data) > 4096:
            raise ValueError("--mqtt-credentials %s: larger than 4 KiB; it holds one line "
                             "USERNAME:PASSWORD" % path)
        line = data.decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
        user, sep, pw = line.partition(":")
        if not user:
            raise ValueError("--mqtt-credentials %s: the first line must be USERNAME:PASSWORD"
                             % path)
        return user, (pw if sep else None)
    user, pw = environ.get(ENV_USERNAME) or None, environ.get(ENV_PASSWORD)
    if pw is not None and user is None:
        raise ValueError("$%s is set but $%s is not" % (ENV_PASSWORD, ENV_USERNAME))
    return user, pw


def slug(text):
    """A topic level / Home Assistant id from a name: [a-zA-Z0-9_-] only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", str(text)) or "_"


def default_client_id():
    return "bnn-camera-%s" % slug(socket.gethostname())


class _Bucket:
    """A token bucket: ``rate`` messages a second, bursts of up to max(1, rate)."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.cap = max(1.0, self.rate)
        self.tokens = self.cap
        self.t = time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class MqttSink(Sink):
    """A Sink (bnn_camera.sinks): the topics of the module docstring."""

    name = "mqtt"

    def __init__(self, host, port=1883, topic="", qos=0, client_id=None, keepalive=15,
                 log=None, max_queued=100, username=None, password=None, tls=False,
                 ca_file=None, cert_file=None, key_file=None, tls_insecure=False,
                 class_names=(), tracker=None, discovery_prefix=DEFAULT_DISCOVERY_PREFIX,
                 update_interval=5.0, max_rate=2.0, detections=False, device=None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise RuntimeError("--mqtt needs paho-mqtt (Pi: sudo apt install python3-paho-mqtt;"
                               " PC: pip install paho-mqtt): %s" % e)
        self._mqtt = mqtt
        self.client_id = client_id or default_client_id()
        self.node_id = slug(self.client_id)
        self.host, self.port, self.qos = host, port, int(qos)
        self.topic = topic or "bnn/%s" % self.node_id
        self.avail_topic = self.topic + "/availability"
        self.class_names = list(class_names)
        self.tracker = tracker
        self.discovery_prefix = discovery_prefix
        self.update_interval = float(update_interval)
        self.detections = bool(detections)
        self._bucket = _Bucket(max_rate)
        self.device = dict(device or {})
        self.wants_record = self.detections
        self.max_queued = max(1, int(max_queued))
        self._lock = threading.Lock()
        self._queued = 0          # accepted, not yet written to the socket (acknowledged)
        self.offered = 0
        self.published = 0
        self.sent = 0
        self.dropped = 0
        self.queue_full = 0
        self.lost = 0
        self.rate_limited = 0
        self.events = {"new": 0, "update": 0, "end": 0}
        self._full_logged = None  # when "the queue is full" was last logged
        self.connects = 0
        self.disconnects = 0
        self.connected = threading.Event()
        self.last_error = None
        self._refused_logged = None
        self._frame_size = None
        self._last_update = {}    # track id -> monotonic time of its last message
        self._state = {}          # label -> count as last published
        self._track_lock = threading.Lock()
        self._state_lock = threading.Lock()
        if log is None:
            from .sinks import stderr_log as log
        self._log = log
        kw = {"client_id": self.client_id}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        else:  # 1.x
            self.client = mqtt.Client(**kw)
        if username:
            self.client.username_pw_set(username, password)
        self.tls = bool(tls or ca_file or cert_file)
        self._tls_files = (ca_file, cert_file, key_file, bool(tls_insecure))
        if self.tls:
            import ssl
            try:
                self.client.tls_set(ca_certs=ca_file or None, certfile=cert_file or None,
                                    keyfile=key_file or None, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError, ssl.SSLError) as e:
                raise RuntimeError("--mqtt TLS: cannot load %s: %s" % (
                    " / ".join(f for f in (ca_file, cert_file, key_file) if f)
                    or "the system's CA certificates", e)) from None
            if tls_insecure:
                self.client.tls_insecure_set(True)
        self.client.will_set(self.avail_topic, "offline", qos=self.qos, retain=True)
        self._closing = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
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
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SNDBUF)
        except (OSError, AttributeError):
            pass

    def _forget_queued(self):
        """paho discards the QoS-0 packets still queued when a connection ends (QoS 1 and
        2 ones it keeps, and sends again after reconnecting)."""
        if self.qos:
            return
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
        if not ok:
            why = rc if not isinstance(rc, int) else self._mqtt.connack_string(rc)
            self.last_error = "connect refused: %s" % why
            if self._refused_logged != self.last_error:  # once per distinct reason
                self._refused_logged = self.last_error
                self._log("mqtt: %s:%d refused the connection: %s%s" % (
                    self.host, self.port, why, " (check --mqtt-credentials or $%s / $%s)"
                    % (ENV_USERNAME, ENV_PASSWORD) if "auth" in str(why).lower()
                    or "password" in str(why).lower() else ""))
            return
        self.connects += 1
        self.connected.set()
        self._refused_logged = None
        if self.connects > 1:
            self._log("mqtt: connected to %s:%d again (%d dropped while away)"
                      % (self.host, self.port, self.dropped))
        if self.discovery_prefix:
            client.subscribe(self.discovery_prefix + "/status", qos=self.qos)
        self._announce()

    def _on_message(self, client, userdata, msg):
        """Home Assistant announced itself (<prefix>/status "online", after a restart):
        the discovery configs and the state again."""
        if msg.payload == b"online":
            self._announce()

    def _announce(self):
        """Availability, discovery configs and the current state, all retained."""
        self._publish(self.avail_topic, "online", retain=True)
        if self.discovery_prefix:
            for topic, config in self.discovery_configs():
                self._publish(topic, config, retain=True)
        self._publish_state(force=True)

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
                    "reconnects": self.reconnects, "rate_limited": self.rate_limited,
                    "events": dict(self.events), "last_error": self.last_error}

    def _publish(self, topic, payload, retain=False):
        """True when paho accepted the message into the bounded queue (``published``);
        else it is ``dropped`` (not connected, or max_queued messages already waiting).
        payload: a str, or a dict sent as JSON."""
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
        if not isinstance(payload, str):
            payload = json.dumps(payload, separators=(",", ":"))
        try:
            info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
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
        now = time.monotonic()
        if self._full_logged is None or now - self._full_logged >= 60.0:
            self._full_logged = now
            self.last_error = ("%d messages waiting: the broker is not reading"
                               % self._queued)
            self._log("mqtt: %s:%d is not taking messages (%d waiting, the limit); new "
                      "messages are dropped until it does (%d so far)"
                      % (self.host, self.port, self._queued, self.queue_full))

    # ---- Home Assistant discovery -------------------------------------------------------
    def discovery_configs(self):
        """[(topic, config dict)]: Home Assistant MQTT discovery, as its documentation
        describes it (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):
        <prefix>/<component>/<node_id>/<object_id>/config."""
        dev = {"identifiers": [self.node_id], "name": self.device.get("name") or self.node_id,
               "manufacturer": "bnn-pi", "model": self.device.get("model") or "bnn-camera"}
        if self.device.get("sw_version"):
            dev["sw_version"] = self.device["sw_version"]
        common = {"availability_topic": self.avail_topic, "payload_available": "online",
                  "payload_not_available": "offline", "device": dev,
                  "origin": {"name": "bnn-pi"}, "qos": self.qos}
        out = []

        def add(component, object_id, **config):
            uid = "%s_%s" % (self.node_id, object_id)
            out.append(("%s/%s/%s/%s/config" % (self.discovery_prefix, component,
                                                self.node_id, object_id),
                        dict(config, unique_id=uid, **common)))

        for label in self.class_names:
            s = slug(label)
            add("binary_sensor", s, name="%s detected" % label.capitalize(),
                state_topic="%s/%s/state" % (self.topic, s), payload_on="ON",
                payload_off="OFF", device_class="occupancy" if label == "person" else None)
            add("sensor", s + "_count", name="%s count" % label.capitalize(),
                state_topic="%s/%s/count" % (self.topic, s), state_class="measurement",
                icon="mdi:counter")
        stats = self.topic + "/stats"
        for object_id, name, tmpl, extra in (
                ("fps", "Inference rate", "{{ value_json.inference_fps }}",
                 {"unit_of_measurement": "fps", "icon": "mdi:speedometer"}),
                ("latency", "Latency p50", "{{ value_json.latency_ms.p50 }}",
                 {"unit_of_measurement": "ms", "device_class": "duration"}),
                ("power", "Power", "{{ value_json.power }}",
                 {"unit_of_measurement": "W", "device_class": "power"}),
                ("energy_per_frame", "Energy per frame", "{{ value_json.energy_mj_per_frame }}",
                 {"unit_of_measurement": "mJ", "icon": "mdi:lightning-bolt"}),
                ("temperature", "CPU temperature", "{{ value_json.cpu_temp_c }}",
                 {"unit_of_measurement": "\u00b0C", "device_class": "temperature"})):
            add("sensor", object_id, name=name, state_topic=stats, value_template=tmpl,
                state_class="measurement", entity_category="diagnostic", **extra)
        for _, config in out:
            for k in [k for k, v in config.items() if v is None]:
                del config[k]
        return out

    # ---- state and events ---------------------------------------------------------------
    # The tracker is driven from three threads (inference: on_frame; reporter: on_stats's
    # expiry; shutdown: finish) and read from paho's (_announce): every use holds
    # self._track_lock, and nothing is published while holding it.  Publishing the state
    # holds self._state_lock (see _publish_state).

    def _counts(self):
        """{label: objects present} of every class (under self._track_lock)."""
        labels = self.class_names or sorted({t.label for t in self.tracker.tracks}
                                            if self.tracker is not None else ())
        return {label: len(self.tracker.active(label)) if self.tracker is not None else 0
                for label in labels}

    def _publish_state(self, force=False):
        """TOPIC/<label>/count and /state, retained, of the classes whose count changed
        (force: all).  Counted and published under self._state_lock, so that the state the
        broker keeps last is the newest: a reconnection's announcement (paho's thread)
        cannot overtake an object's arrival (the inference thread) with an older count."""
        with self._state_lock:
            with self._track_lock:
                counts = self._counts()
            for label, n in counts.items():
                if not force and self._state.get(label) == n:
                    continue
                self._state[label] = n
                s = slug(label)
                self._publish("%s/%s/count" % (self.topic, s), str(n), retain=True)
                self._publish("%s/%s/state" % (self.topic, s), "ON" if n else "OFF",
                              retain=True)

    def _send_events(self, events, updates=()):
        """Publishes [(kind, event dict)] (new / end: always; update: through the rate
        limit), then the state when an object came or went."""
        for kind, ev in list(events) + [("update", ev) for ev in updates]:
            if kind == "update" and not self._bucket.take():
                self.rate_limited += 1
                continue
            self.events[kind] += 1
            self._publish(self.topic + "/events", ev)
        if events:
            self._publish_state()

    def _track(self, events, t=None):
        """Under self._track_lock: the event dicts of the tracker's events and the updates
        that are due at monotonic time t."""
        out = []
        for kind, track in events:
            out.append((kind, track.as_event(kind, self._frame_size)))
            if kind == "end":
                self._last_update.pop(track.id, None)
            else:
                self._last_update[track.id] = t if t is not None else time.monotonic()
        updates = []
        if t is not None and self.update_interval > 0:
            for track in self.tracker.active():
                last = self._last_update.get(track.id)
                if last is None or t - last < self.update_interval or track.last_t <= last:
                    continue
                self._last_update[track.id] = t
                updates.append(track.as_event("update", self._frame_size))
        return out, updates

    def on_frame(self, seq, frame, result):
        if self.tracker is None:
            return
        t = time.monotonic()
        with self._track_lock:
            self._frame_size = (frame.shape[1], frame.shape[0])
            batch = self._track(self.tracker.update(result, t), t)
        self._send_events(*batch)

    def on_detections(self, seq, frame, result, record):
        if not self.detections:
            return
        if self._bucket.take():
            self._publish(self.topic + "/detections", record)
        else:
            self.rate_limited += 1

    def on_stats(self, rec):
        if self.tracker is not None and rec.get("type") == "stats":
            with self._track_lock:  # no frames for a while: a lost source
                batch = self._track(self.tracker.expire(time.monotonic()))
            self._send_events(*batch)
        self._publish(self.topic + "/stats", rec)

    def finish(self):
        if self.tracker is not None:
            with self._track_lock:
                batch = self._track(self.tracker.finish())
            self._send_events(*batch)
        with self._lock:
            return {"mqtt_offered": self.offered, "mqtt_published": self.published,
                    "mqtt_sent": self.sent, "mqtt_queued": self._queued,
                    "mqtt_lost": self.lost, "mqtt_dropped": self.dropped,
                    "mqtt_queue_full": self.queue_full, "mqtt_reconnects": self.reconnects,
                    "mqtt_rate_limited": self.rate_limited,
                    **{"mqtt_events_" + k: n for k, n in self.events.items()}}

    def wait_connected(self, timeout):
        return self.connected.wait(timeout)

    def diagnose(self, timeout=3.0):
        """Why no connection was made, as far as a TCP connect and (with TLS) a handshake
        tell -- paho's network thread retries without saying why.  None when both work
        (then the broker's answer is in last_error)."""
        import ssl
        try:
            sock = socket.create_connection((self.host, self.port), timeout)
        except OSError as e:
            return "cannot connect: %s" % (e.strerror or e)
        try:
            if self.tls:
                ca, cert, key, insecure = self._tls_files
                ctx = ssl.create_default_context(cafile=ca or None)
                if cert:
                    ctx.load_cert_chain(cert, key or None)
                ctx.check_hostname = not insecure
                try:
                    ctx.wrap_socket(sock, server_hostname=self.host).close()
                except (ssl.SSLError, OSError) as e:
                    return "TLS handshake failed: %s" % e
        finally:
            sock.close()
        return None

    def close(self):
        """"offline" (retained: a clean stop sends no last will), then DISCONNECT after the
        queued messages; then the network thread stops.  Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            if self.connected.is_set():
                info = self.client.publish(self.avail_topic, "offline", qos=self.qos,
                                           retain=True)
                end = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < end:
                    time.sleep(0.01)
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()
