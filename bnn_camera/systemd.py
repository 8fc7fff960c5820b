"""systemd's notify protocol (sd_notify) without a dependency: one AF_UNIX datagram per
message to $NOTIFY_SOCKET (a path, or an abstract name written "@name").

Under a unit with ``Type=notify`` and ``WatchdogSec=`` (bnn_camera/bnn-camera.service)
the app sends

    READY=1       once the detector is loaded, the source opened and the threads run
    WATCHDOG=1    after READY=1 (systemd's watchdog starts there; the threads run
                  before it is sent, and a first frame must not ping ahead of it):
                  from the inference thread, after each frame (at most every third of
                  the watchdog period) -- and from the reporter while the source is
                  starting or reconnecting, when no frame can come; a hung inference
                  thread, or a running source that delivers nothing, stops it, and
                  systemd restarts the service after WatchdogSec
    STATUS=...    a one-line summary with each stats record (``systemctl status``)
    STOPPING=1    when the shutdown begins

Nothing is sent (and nothing costs) when $NOTIFY_SOCKET is unset.
"""

import os
import socket
import threading
import time

from .sinks import Sink

__all__ = ["notify_address", "SystemdNotifier"]


def notify_address(env=None):
    """$NOTIFY_SOCKET as a socket address ("@name": the abstract name), or None."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET") or ""
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None  # unset, or a kind of address systemd does not use (vsock: not here)


def watchdog_period(env=None):
    """$WATCHDOG_USEC in seconds when it is meant for this process, else None."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class SystemdNotifier(Sink):
    """The sink that speaks sd_notify (see the module).  ``from_env()``: None unless the
    app runs under systemd with a notify socket."""

    name = "systemd"

    def __init__(self, address, watchdog_s=None, clock=time.monotonic):
        self.address = address
        self.watchdog_s = watchdog_s
        self._every = watchdog_s / 3.0 if watchdog_s else None
        self._clock = clock
        self._last_ping = None
        self._ready = False
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # never wait on systemd (a full queue loses a ping)
        self.sent = 0
        self.pings = 0
        self.errors = 0

    @classmethod
    def from_env(cls, env=None):
        addr = notify_address(env)
        return None if addr is None else cls(addr, watchdog_period(env))

    def send(self, *lines):
        """One datagram of "KEY=value" lines; False when it could not be sent."""
        data = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendto(data, self.address)
            except OSError:
                self.errors += 1
                return False
            self.sent += 1
            return True

    def ready(self):
        sent = self.send("READY=1", "STATUS=running")
        self._ready = True
        return sent

    def ping(self, force=False):
        """WATCHDOG=1, at most every third of the period (unless forced)."""
        if self._every is None or not self._ready:
            return False
        now = self._clock()
        if not force and self._last_ping is not None and now - self._last_ping < self._every:
            return False
        self._last_ping = now
        if self.send("WATCHDOG=1"):
            self.pings += 1
            return True
        return False

    # ---- the sink protocol --------------------------------------------------------------
    def on_frame(self, seq, frame, result):
        self.ping()  # the inference thread made progress

    def on_stats(self, rec):
        if rec.get("type") != "stats":
            return
        if rec.get("source_state") in ("starting", "reconnecting"):
            self.ping()  # alive, and no frame can come: the watchdog must not fire
        lat = rec.get("latency_ms") or {}
        self.send("STATUS=%s: %.1f fps, latency p50 %s ms, %d detections, %d dropped" % (
            rec.get("source_state"), rec.get("inference_fps") or 0.0,
            "-" if lat.get("p50") is None else "%.0f" % lat["p50"], rec.get("detections", 0),
            rec.get("dropped_total", 0)))

    def status(self):
        return {"watchdog_s": self.watchdog_s, "watchdog_pings": self.pings,
                "notify_errors": self.errors}

    def finish(self):
        self.send("STOPPING=1", "STATUS=stopping")
        return {}

    def close(self):
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
