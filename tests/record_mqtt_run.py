"""The recorded MQTT run of docs/mqtt-home-assistant.md: the camera app on its bundled clip
(``--source demo``) against a real mosquitto on 127.0.0.1 with ``allow_anonymous false``, a
password file and TLS with client certificates; Home Assistant's side is a subscriber to
``#`` with a login of its own.  The app is SIGKILLed after the person's ``end`` event, so the
broker publishes the app's last will (availability ``offline``).

    python -m tests.record_mqtt_run docs/mqtt-run.json

writes every message the subscriber got (stats records: their count and the first one),
in order, with the seconds since the subscriber started, and then the retained
messages a subscriber that connects after the kill gets (``retained_later``).
tests/test_app_mqtt.py runs the same function and checks it."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from bnn_camera import ROOT, DEFAULT_MODEL

TOPIC = "bnn/porch"
MASK = "0,0,0.25,0,0.25,0.6,0,0.6"  # the window at the top left that the detector calls a person


def app_argv(model, port, certs, creds):
    return [sys.executable, "-m", "bnn_camera", "--model", model, "--source", "demo",
            "--threads", "1", "--no-power", "--quiet", "--interval", "1",
            "--mqtt", "127.0.0.1:%d/%s" % (port, TOPIC), "--mqtt-credentials", creds,
            "--mqtt-ca", certs["ca"], "--mqtt-cert", certs["client_cert"],
            "--mqtt-key", certs["client_key"], "--mqtt-client-id", "porch",
            "--mqtt-qos", "1", "--mask", MASK]


def record_run(model, tmp, timeout=90.0):
    """Runs it in folder tmp; returns the record (a dict, see the module docstring)."""
    from tests.test_app_mqtt import Broker, Subscriber, make_certs
    from pathlib import Path
    tmp = Path(tmp)
    certs = make_certs(tmp)
    broker = Broker(tmp, users={"camera": "cam-secret", "homeassistant": "ha-secret"},
                    certs=certs).start()
    creds = tmp / "mqtt-credentials"
    creds.write_text("camera:cam-secret\n")
    os.chmod(creds, 0o600)
    sub = Subscriber(broker.port, "#", auth=("homeassistant", "ha-secret"), certs=certs)
    argv = app_argv(model, broker.port, certs, str(creds))
    app = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_at = None
    try:
        ended = sub.wait_for(lambda ms: any(t == TOPIC + "/events" and m.get("type") == "end"
                                            for t, m in ms), timeout)
        assert ended, "no end event in %g s; app stderr: %s" % (
            timeout, app.stderr.read1(65536).decode() if app.poll() is not None else "")
        time.sleep(0.5)
        app.send_signal(signal.SIGKILL)
        killed_at = round(time.monotonic() - sub.t0, 3)
        app.wait(10)
        sub.wait_for(lambda ms: ms[-1] == (TOPIC + "/availability", "offline"), 15)
        # Home Assistant restarting now: what the broker hands a new subscriber (retained)
        late = Subscriber(broker.port, "#", auth=("homeassistant", "ha-secret"), certs=certs)
        late.wait_for(lambda ms: len(ms) >= 10, 5)
        time.sleep(0.3)
        late.close()
        retained_later = [[topic, _decode(text), retained]
                          for _, topic, text, retained in late.log]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        sub.close()
        broker.stop()
    messages, stats = [], []
    for t, topic, text, retained in sub.log:
        if topic == TOPIC + "/stats":
            stats.append(json.loads(text))
            continue
        messages.append({"t": t, "topic": topic, "retained": retained,
                         "payload": _decode(text)})
    if stats and str(stats[0].get("source", "")).startswith(ROOT):
        stats[0]["source"] = os.path.relpath(stats[0]["source"], ROOT)
    shown = [a if not a.startswith(str(tmp)) else "<tmp>/" + os.path.basename(a) for a in argv]
    shown[0:3] = ["python", "-m", "bnn_camera"]
    shown[shown.index("--model") + 1] = os.path.relpath(model, ROOT) if model.startswith(ROOT) \
        else model
    return {"what": "python -m tests.record_mqtt_run: the app on its bundled clip against "
                    "mosquitto (allow_anonymous false, password file, TLS with client "
                    "certificates), SIGKILLed after the person's end event",
            "app_command": " ".join(shown), "killed_at": killed_at,
            "stats_messages": len(stats), "first_stats": stats[0] if stats else None,
            "messages": messages, "retained_later": retained_later}


def _decode(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "docs/mqtt-run.json"
    with tempfile.TemporaryDirectory() as tmp:
        rec = record_run(DEFAULT_MODEL, tmp)
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    ev = [m["payload"]["type"] for m in rec["messages"] if m["topic"] == TOPIC + "/events"]
    print("%s: %d messages (+%d stats), events %s" % (out, len(rec["messages"]),
                                                      rec["stats_messages"], ev))


if __name__ == "__main__":
    main()
