"""python -m bnn_camera: the headless camera app (see bnn_camera/README.md)."""

import argparse
import math
import os
import signal
import sys
import time

from . import DEFAULT_MODEL, output, shown_path
from .report import dumps, format_line, format_summary
from .sources import DEFAULT_MAX_PIXELS

EPILOG = """\
sources (--source):
  auto            the Pi camera when picamera2 sees one, else /dev/video0, else an
                  error (never the sample clip)
  demo            the bundled sample clip (looped, paced at its frame rate)
  picamera2[:N]   a libcamera camera through picamera2 (camera N, default 0)
  /dev/videoN, N  a V4L2 camera through OpenCV
  rtsp://... http://...  a network stream (reconnects with backoff)
  FILE            a video file (every frame is processed; --realtime paces it like a camera)
  DIR             the images of a directory, in name order

reports: a JSON line per second on stdout (a human-readable line on a terminal; see
--format), and a summary at exit.  Power is measured (Pi 5 PMIC, INA2xx hwmon, x86 RAPL)
or reported as null with the reason (then --power-model may estimate it, reported
apart).  Exit status: 0 done / stopped by a signal, 1 the source or the detector
failed, 2 bad arguments or no model.
"""


def _int_in(lo, hi=None, what="an integer"):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s is not %s" % (text, what)) from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                "%d is out of range: %s" % (v, "%d..%d" % (lo, hi) if hi is not None
                                            else ">= %d" % lo))
        return v
    return conv


def _float_in(lo, hi, lo_open=False):
    def conv(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s is not a number" % text) from None
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            raise argparse.ArgumentTypeError("%s is out of range: %s" % (
                text, ("more than %g, at most %g" if lo_open else "%g..%g") % (lo, hi)))
        return v
    return conv



def _checked(module, name, keep_text=False):
    """An argparse type from a parser that raises ValueError, imported when first used: its
    message becomes argparse's error (exit 2); the parsed value (or the text) is the value."""
    def conv(text):
        import importlib
        parse = getattr(importlib.import_module(module, __package__), name)
        try:
            value = parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text if keep_text else value
    return conv


_hostport = _checked(".http_server", "parse_hostport", keep_text=True)
_mqtt_url = _checked(".mqtt", "parse_mqtt", keep_text=True)
_size = _checked("firmware_py.memory", "parse_size")
_polygon = _checked(".zones", "parse_polygon")
_min_conf = _checked(".zones", "parse_min_conf")


def build_parser():
    """The options; every value is checked here (argparse: "error: argument ...", exit 2)."""
    ap = argparse.ArgumentParser(
        prog="python -m bnn_camera", description="Headless camera app: binarized detector on a camera, "
        "with per-second reports, events, snapshots, MJPEG/metrics over HTTP and MQTT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="detector model, .bnn or .onnx (default: %s)"
                    % shown_path(DEFAULT_MODEL))
    ap.add_argument("--source", default="auto", help="auto | picamera2 | /dev/videoN | FILE | "
                    "rtsp://... | DIR | demo (default: auto)")
    ap.add_argument("--max-frames", type=_int_in(0), default=0,
                    help="stop after N inferred frames (0: no limit)")
    ap.add_argument("--threads", type=_int_in(1, 256), default=None, help="inference threads "
                    "(default: one per CPU)")
    ap.add_argument("--conf", type=_float_in(0.0, 1.0), default=0.25,
                    help="score threshold 0..1 (default 0.25)")
    ap.add_argument("--iou", type=_float_in(0.0, 1.0), default=0.45,
                    help="NMS IoU threshold 0..1 (default 0.45)")
    ap.add_argument("--memory-limit", metavar="SIZE", type=_size, default=None,
                    help="the most memory the model may need (bytes, or 512M / 2G; 0: no "
                    "limit; default: $BNN_MEMORY_LIMIT, else the memory available)")
    ap.add_argument("--out", help="append JSON lines here: stats, detections, summary")
    ap.add_argument("--snapshots", metavar="DIR", help="save annotated JPEGs of frames with "
                    "detections (at most one per --snapshot-interval s)")
    ap.add_argument("--snapshot-interval", type=_float_in(0.0, 86400.0), default=1.0)
    ap.add_argument("--snapshot-keep", type=_int_in(1), default=500,
                    help="keep the newest N files")
    ap.add_argument("--http", metavar="HOST:PORT", type=_hostport, help="serve /stream.mjpg, "
                    "/metrics, /healthz (a bare PORT binds 127.0.0.1)")
    ap.add_argument("--http-timeout", metavar="S", type=_float_in(0.0, 3600.0, lo_open=True),
                    default=10.0, help="an HTTP client must send its request, and take each "
                    "write, within S seconds, else it is dropped (default 10)")
    ap.add_argument("--http-max-connections", metavar="N", type=_int_in(1, 4096), default=64,
                    help="open HTTP connections at most; more get 503 (default 64)")
    ap.add_argument("--mjpeg-max-clients", metavar="N", type=_int_in(0, 1024), default=16,
                    help="MJPEG viewers at most; more get 503 (default 16)")
    ap.add_argument("--loop", action="store_true", help="restart a file / directory at its end")
    ap.add_argument("--realtime", action="store_true", help="pace a file at its frame rate and "
                    "drop frames like a camera")
    ap.add_argument("--width", type=_int_in(1, 16384), default=640, help="camera capture width")
    ap.add_argument("--height", type=_int_in(1, 16384), default=480,
                    help="camera capture height")
    ap.add_argument("--fps", type=_float_in(0.0, 1000.0, lo_open=True), default=None,
                    help="camera frame rate")
    ap.add_argument("--max-image-pixels", metavar="N", type=_int_in(64), default=DEFAULT_MAX_PIXELS,
                    help="the largest image / video frame read, width x height (checked in "
                    "the header, before decoding; default %d)" % DEFAULT_MAX_PIXELS)
    ap.add_argument("--queue", type=_int_in(1, 1000), default=2, help="frames buffered between "
                    "capture and inference (default 2)")
    ap.add_argument("--interval", type=_float_in(0.05, 3600.0), default=1.0,
                    help="seconds between reports, 0.05..3600 (default 1)")
    ap.add_argument("--format", choices=("auto", "json", "text"), default="auto",
                    help="stdout reports: json lines, text, or auto (text on a terminal)")
    ap.add_argument("--quiet", action="store_true", help="no per-second lines on stdout "
                    "(the summary is still printed)")
    ap.add_argument("--no-power", action="store_true", help="do not read power sensors")
    # -- running as a service: event-log rotation, the journal, power estimate (issue 19) --
    from firmware_py.power import BOARD_MODELS
    svc = ap.add_argument_group(
        "service", "rotation of the --out event log, stdout (the journal) and power "
        "estimates; under systemd (Type=notify) READY / WATCHDOG / STATUS are sent "
        "to $NOTIFY_SOCKET by themselves")
    svc.add_argument("--out-max-size", metavar="SIZE", type=_size, default=0,
                     help="rotate --out before it grows past SIZE (bytes, 50M, 1G; 0: never)")
    svc.add_argument("--out-max-age", metavar="S", type=_float_in(0.0, 1e9), default=0.0,
                     help="rotate --out after S seconds of writing (86400: daily; 0: never)")
    svc.add_argument("--out-keep", metavar="N", type=_int_in(1, 1000), default=5,
                     help="rotated files kept: PATH.1 .. PATH.N (default 5)")
    svc.add_argument("--stdout-interval", metavar="S", type=_float_in(0.0, 86400.0),
                     default=0.0, help="print a stats line at most every S seconds (the "
                     "journal under systemd; --out, MQTT and HTTP still get every report; "
                     "default 0: every report)")
    svc.add_argument("--power-model", choices=("auto", "none") + tuple(BOARD_MODELS),
                     default="auto", help="where no sensor measures power: ESTIMATE it from "
                     "CPU time with this board's published figures (auto: the board in "
                     "/proc/device-tree/model; none: never); reported apart, as "
                     "power_estimated (docs/power-estimate.md)")
    _mqtt_zone_options(ap)
    return ap


def _regular_file(text):
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError("%s is not a regular file" % text)
    return text


def _mqtt_zone_options(ap):
    """MQTT / Home Assistant, the event tracker, zones and masks (bnn_camera/mqtt.py,
    tracker.py, zones.py)."""
    g = ap.add_argument_group("MQTT, Home Assistant, events, zones (see bnn_camera/README.md)")
    g.add_argument("--mqtt", metavar="HOST:PORT/TOPIC", type=_mqtt_url,
                   help="publish availability, events (new/update/end), per-class state, "
                   "stats and Home Assistant discovery under TOPIC (default bnn/<client id>);"
                   " port default 1883, 8883 with TLS")
    g.add_argument("--mqtt-credentials", metavar="FILE", type=_regular_file,
                   help="the broker login: one line USERNAME:PASSWORD (default: $%s / $%s;"
                   " never on the command line)" % ("BNN_MQTT_USERNAME", "BNN_MQTT_PASSWORD"))
    g.add_argument("--mqtt-tls", action="store_true", help="TLS, verified against the "
                   "system's CA certificates (implied by --mqtt-ca / --mqtt-cert)")
    g.add_argument("--mqtt-ca", metavar="FILE", type=_regular_file,
                   help="TLS: the CA certificate(s) that signed the broker's certificate")
    g.add_argument("--mqtt-cert", metavar="FILE", type=_regular_file,
                   help="TLS: a client certificate (PEM)")
    g.add_argument("--mqtt-key", metavar="FILE", type=_regular_file,
                   help="TLS: the client certificate's private key (PEM)")
    g.add_argument("--mqtt-tls-insecure", action="store_true", help="TLS: do not check "
                   "the broker certificate's host name (the chain is still verified)")
    g.add_argument("--mqtt-client-id", metavar="ID", help="MQTT client id, also the Home "
                   "Assistant node id (default bnn-camera-<hostname>)")
    g.add_argument("--mqtt-qos", type=int, choices=(0, 1, 2), default=0,
                   help="QoS of every message (default 0)")
    g.add_argument("--mqtt-discovery-prefix", metavar="PREFIX", default="homeassistant",
                   type=_topic_prefix,
                   help="Home Assistant discovery prefix; '' turns discovery off "
                   "(default homeassistant)")
    g.add_argument("--mqtt-update-interval", metavar="S", type=_float_in(0.0, 86400.0),
                   default=5.0, help="an 'update' event per object at most every S s "
                   "(0: none; default 5)")
    g.add_argument("--mqtt-max-rate", metavar="N", type=_float_in(0.0, 1000.0, lo_open=True),
                   default=2.0, help="'update' events and --mqtt-detections messages per "
                   "second at most; the rest are counted as rate_limited (default 2)")
    g.add_argument("--mqtt-detections", action="store_true", help="also publish every "
                   "frame's detections to TOPIC/detections (rate limited)")
    g.add_argument("--mqtt-queue", metavar="N", type=_int_in(1, 100000), default=100,
                   help="MQTT messages waiting for the socket at most; more are dropped "
                   "and counted (default 100)")
    g.add_argument("--mqtt-keepalive", metavar="S", type=_int_in(5, 3600), default=15,
                   help="MQTT keepalive: a broker silent for about S s is dropped and "
                   "reconnected (default 15)")
    g.add_argument("--track-iou", metavar="X", type=_float_in(0.0, 1.0, lo_open=True),
                   default=0.3, help="events: a detection continues an object when their "
                   "boxes overlap by IoU >= X (default 0.3)")
    g.add_argument("--track-min-frames", metavar="N", type=_int_in(1, 1000), default=3,
                   help="events: an object is 'new' after N frames in a row (default 3)")
    g.add_argument("--track-timeout", metavar="S", type=_float_in(0.0, 3600.0, lo_open=True),
                   default=2.0, help="events: an object unseen for S s has 'end'ed "
                   "(default 2)")
    g.add_argument("--zone", metavar="X1,Y1,X2,Y2,X3,Y3...", action="append", default=[],
                   type=_polygon, help="only detections standing (box bottom centre) inside "
                   "this polygon count; coordinates 0..1 of the frame; repeatable (any zone)")
    g.add_argument("--mask", metavar="X1,Y1,X2,Y2,X3,Y3...", action="append", default=[],
                   type=_polygon, help="detections standing inside this polygon are "
                   "dropped (a window, a poster); repeatable")
    g.add_argument("--min-conf", metavar="CLASS=S", action="append", default=[],
                   type=_min_conf, help="the score CLASS needs (others: --conf); repeatable")


def _topic_prefix(text):
    if any(c in text for c in "+#\0") or text.startswith("/") or text.endswith("/"):
        raise argparse.ArgumentTypeError("%r: a topic prefix without wildcards (+ #) or a "
                                         "leading / trailing /" % text)
    return text


def _err(msg):
    output.err("app: %s\n" % msg)


class _StartupStop(BaseException):
    """A signal arrived while the app was starting (before the pipeline ran).  A
    BaseException, so that no ``except Exception`` on the way swallows it."""


def main(argv=None, restore_signals=True):
    """The app; returns the exit status.  restore_signals=False (python -m bnn_camera): at the
    end the signals are ignored instead (SIG_IGN, which the interpreter keeps through its
    finalisation, unlike a Python handler), so that a second SIGTERM between the summary
    and the process exit cannot turn exit status 0 into death by signal."""
    args = build_parser().parse_args(argv)
    fmt = args.format
    if fmt == "auto":
        fmt = "text" if sys.stdout.isatty() else "json"
    # stdout / stderr through bounded queues written by threads of their own: a reader
    # that stops (a pipe nobody reads) can never block the app, its signals or its
    # shutdown (bnn_camera/output.py)
    output.install()
    # SIGINT / SIGTERM / SIGHUP at any time: during start-up (model load, source open,
    # sinks) the start-up is abandoned; once the pipeline exists it is asked to stop.
    # Either way the summary is written (stdout, --out) and the exit status is 0.
    from .report import Stats
    state = {"pipe": None, "stage": "start-up", "source": None, "events": None,
             "closers": [], "stats": Stats(), "done": False}
    got = []

    def on_signal(signum, frame):
        got.append(signum)
        if state["done"]:  # main has returned: the status stands
            return
        pipe = state["pipe"]
        if pipe is not None:
            pipe.request_stop()
        elif len(got) == 1:  # a second signal while unwinding the start-up is only noted
            raise _StartupStop()

    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP")
                                              else [])
    old = {s: signal.signal(s, on_signal) for s in sigs}
    try:
        try:
            return _run(args, fmt, state, got)
        except _StartupStop:
            pass
        return _startup_stopped(args, fmt, state, got)
    finally:
        state["done"] = True
        for s, h in old.items():
            signal.signal(s, h if restore_signals else signal.SIG_IGN)
        # a bounded wait for the rest (the summary) to get out; a writer still blocked
        # after that is a daemon thread and does not keep the process alive
        output.uninstall(OUTPUT_TIMEOUT)


OUTPUT_TIMEOUT = 2.0  # s: how long the exit waits for a blocked stdout / stderr


def _print_summary(summary, fmt):
    text = format_summary(summary) if fmt == "text" else dumps(summary)
    output.out(text + "\n", force=True)
    if sys.stderr.isatty() and fmt == "json":
        output.err(format_summary(summary) + "\n")


def _startup_stopped(args, fmt, state, got):
    """A signal during start-up: the summary of a run that never began, exit 0."""
    extra = {"stopped_by": signal.Signals(got[0]).name,
             "stopped_during": "start-up (%s)" % state["stage"]}
    if state["source"] is not None:
        extra["source"], extra["source_kind"] = state["source"]
    summary = state["stats"].summary(None, None, None, extra)
    summary["source_state"] = "not started"
    events = state["events"]
    if events is None and args.out:
        try:
            from .sinks import EventLog
            events = EventLog(args.out)
            state["closers"].append(events.close)
        except OSError as e:
            _err("--out %s: %s" % (args.out, e))
            events = None
    if events is not None:
        events.write(summary, flush=True)
    for c in state["closers"]:
        try:
            c()
        except Exception:
            pass
    _print_summary(summary, fmt)
    _err("stopped by %s during start-up (%s)" % (extra["stopped_by"], state["stage"]))
    return 0


def build_sinks(args, detector, state, stage):
    """The sinks the options ask for (bnn_camera.sinks.Sink), as the pipeline's list:
    --snapshots, --out, --mqtt, --http's frame hub ("http").  The list's order is the
    order of their keys in the stats records.  They are opened in the start-up order
    (--out first), and each one's close goes into state["closers"] as soon as it exists,
    so that a start-up stopped half-way (a signal, a bad option) closes what was opened.
    Raises OSError / ValueError / RuntimeError with a message for the user.  A new sink:
    open it here, from its option, and put it in the list."""
    closers = state["closers"]
    events = snapshots = mqtt = hub = None
    if args.out:
        from .sinks import EventLog
        events = state["events"] = EventLog(args.out, max_bytes=args.out_max_size,
                                            max_age_s=args.out_max_age, keep=args.out_keep)
        closers.append(events.close)
    if args.snapshots:
        from .sinks import SnapshotSink
        snapshots = SnapshotSink(args.snapshots, detector.class_names, args.snapshot_interval,
                                 args.snapshot_keep)
        closers.append(snapshots.close)
    if args.mqtt:
        mqtt = _open_mqtt(args, detector)
        closers.insert(0, mqtt.close)
        stage("connecting to the MQTT broker")
        if not mqtt.wait_connected(3.0):  # it goes on connecting in the background
            _err("mqtt: %s:%d %s; retrying in the background" % (
                mqtt.host, mqtt.port, mqtt.last_error or mqtt.diagnose()
                or "not connected yet"))
    if args.http:
        from .sinks import FrameHub
        hub = FrameHub()
    from .systemd import SystemdNotifier
    notifier = SystemdNotifier.from_env()  # None unless systemd gave a $NOTIFY_SOCKET
    if notifier is not None:
        closers.append(notifier.close)
    return [s for s in (snapshots, events, mqtt, hub, notifier) if s is not None]


def _open_mqtt(args, detector):
    """The MqttSink of the --mqtt options, with its event tracker."""
    from firmware_py import __version__
    from .mqtt import MqttSink, parse_mqtt, read_credentials
    from .tracker import Tracker
    if args.mqtt_key and not args.mqtt_cert:
        raise ValueError("--mqtt-key needs --mqtt-cert (the client certificate)")
    tls = bool(args.mqtt_tls or args.mqtt_ca or args.mqtt_cert)
    host, port, topic = parse_mqtt(args.mqtt, default_port=8883 if tls else 1883)
    user, password = read_credentials(args.mqtt_credentials)
    if args.mqtt_credentials and os.stat(args.mqtt_credentials).st_mode & 0o077:
        _err("mqtt: %s can be read by other users (chmod 600 it)" % args.mqtt_credentials)
    names = list(detector.class_names)
    tracker = Tracker(names, iou=args.track_iou, min_frames=args.track_min_frames,
                      timeout=args.track_timeout)
    return MqttSink(host, port, topic, qos=args.mqtt_qos, client_id=args.mqtt_client_id,
                    keepalive=args.mqtt_keepalive, max_queued=args.mqtt_queue,
                    username=user, password=password, tls=tls, ca_file=args.mqtt_ca,
                    cert_file=args.mqtt_cert, key_file=args.mqtt_key,
                    tls_insecure=args.mqtt_tls_insecure, class_names=names, tracker=tracker,
                    discovery_prefix=args.mqtt_discovery_prefix,
                    update_interval=args.mqtt_update_interval, max_rate=args.mqtt_max_rate,
                    detections=args.mqtt_detections,
                    device={"model": "bnn-camera (%s)" % os.path.basename(
                        args.model or DEFAULT_MODEL), "sw_version": __version__,
                        "name": args.mqtt_client_id or None})


def _run(args, fmt, state, got):
    closers = state["closers"]

    def stage(what):
        state["stage"] = what

    model = args.model or DEFAULT_MODEL
    if not os.path.isfile(model):
        if args.model and os.path.exists(model):  # a FIFO / device would block the reader
            from firmware_py.model_format import file_kind
            _err("model %s is %s, not a regular file" % (model, file_kind(os.stat(model).st_mode)))
        elif args.model:
            _err("model not found: %s" % model)
        else:
            _err("the shipped detector %s does not exist (it has not been trained / "
                 "installed yet).  Pass --model PATH with a detector model (.bnn or .onnx)."
                 % shown_path(DEFAULT_MODEL))
        return 2

    stage("loading the detector")
    _err("loading the detector %s" % model)
    from .pipeline import Pipeline
    from .sources import SourceError, open_source

    try:
        from firmware_py.detect import Detector
    except ImportError as e:
        _err("cannot import firmware_py.detect: %s" % e)
        return 2
    try:
        detector = Detector(model, num_threads=args.threads, conf=args.conf, iou=args.iou,
                            memory_limit=args.memory_limit)
    except Exception as e:
        _err("cannot load the detector %s: %s: %s" % (model, type(e).__name__, e))
        return 2
    detection_filter = None
    if args.zone or args.mask or args.min_conf:
        from .zones import DetectionFilter
        try:
            detection_filter = DetectionFilter(detector.class_names, args.conf, args.zone,
                                               args.mask, args.min_conf)
        except ValueError as e:
            _err(str(e))
            return 2
        detector.conf = detection_filter.detector_conf  # the lowest any class needs

    stage("opening the source")
    try:
        source, notes = open_source(args.source, loop=args.loop, realtime=args.realtime,
                                    width=args.width, height=args.height, fps=args.fps,
                                    max_pixels=args.max_image_pixels)
    except (SourceError, ValueError) as e:
        _err(str(e))
        return 1
    state["source"] = (source.name, source.kind)
    for n in notes:
        _err("source: %s" % n)

    printed = [None]  # when the last stats line was printed (--stdout-interval)

    def emit(rec):
        if rec.get("type") == "summary":
            return  # printed by main after shutdown
        if args.quiet:
            return
        if args.stdout_interval:
            now = time.monotonic()
            if printed[0] is not None and now - printed[0] < args.stdout_interval - 1e-3:
                return
            printed[0] = now
        line = format_line(rec) if fmt == "text" else dumps(rec)
        output.out(line + "\n")  # never blocks: dropped and counted when stdout is stuck

    def emit_finish():  # the summary's account of stdout (lines a stuck reader cost)
        w = output._OUT
        waiting = w.pending() if w is not None else 0
        if w is None or not (w.dropped or w.errors or waiting):
            return {}
        return {"stdout_lines_dropped": w.dropped + w.errors,
                "stdout_lines_waiting": waiting,
                "stdout_last_error": w.last_error or "stdout is not being read"}

    emit.finish = emit_finish

    stage("opening the power meter")
    from firmware_py import power
    vcgencmd = power.vcgencmd_path() or ""
    meter = None if args.no_power else power.open_power_meter(vcgencmd=vcgencmd)
    if meter is not None and not meter.available:
        _err("power: %s" % meter.reason)
    estimator = None
    board = power.board_model() if args.power_model == "auto" else args.power_model
    if board not in (None, "none") and not args.no_power and not (meter and meter.available):
        estimator = power.PowerEstimator(board)
        _err("power: ESTIMATED from CPU time with the %s model (not measured; "
             "docs/power-estimate.md)" % board)

    stage("opening the sinks")
    try:
        sinks = build_sinks(args, detector, state, stage)
    except (OSError, ValueError, RuntimeError) as e:
        _err(str(e))
        for c in closers:
            c()
        return 2

    stage("starting the pipeline")
    pipe = Pipeline(detector, source, max_frames=args.max_frames or None,
                    queue_size=args.queue, power_meter=meter, report_interval=args.interval,
                    emit=emit, vcgencmd=vcgencmd, sinks=sinks, power_estimator=estimator,
                    detection_filter=detection_filter)
    # from here on a signal asks the pipeline to stop (it has not started yet: then it
    # stops at once and writes its summary)
    state["pipe"] = pipe
    if got:
        pipe.request_stop()
    http = None
    if args.http:
        from .http_server import HttpServer, parse_hostport
        try:
            host, port = parse_hostport(args.http)
            hub = next(s for s in sinks if s.name == "http")
            http = HttpServer(pipe, hub, host, port, timeout=args.http_timeout,
                              max_connections=args.http_max_connections,
                              max_mjpeg=args.mjpeg_max_clients)
        except (OSError, ValueError) as e:
            _err("--http %s: %s" % (args.http, e))
            for c in closers:
                c()
            return 2
        _err("http: serving on http://%s:%d/ (stream.mjpg, metrics, healthz)"
             % (http.host if ":" not in http.host else "[%s]" % http.host, http.port))

    _err("model %s (%s), source %s [%s]" % (model, ", ".join(detector.class_names[:5]),
                                          source.name, source.kind))
    try:
        if http is not None:
            http.start()
        pipe.start()
        for sink in sinks:
            if sink.name == "systemd":
                sink.ready()
        pipe.wait()
        summary = pipe.shutdown(extra={"stopped_by": signal.Signals(got[0]).name}
                                if got else None)
    finally:
        if http is not None:
            http.close()
        for c in closers:
            try:
                c()
            except Exception:
                pass
    # a second signal during the shutdown above does not cut the summary short: the
    # handlers stay installed (they only ask the stopped pipeline to stop) until main ends
    _print_summary(summary, fmt)
    if summary.get("error") and not got:
        _err(summary["error"])
        return 1
    return 0
