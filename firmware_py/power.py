"""Measured power, CPU temperature and throttling on the device (stdlib only).

Power is *measured* here; where no sensor can be read, :func:`open_power_meter`
returns a meter whose ``available`` is False and whose ``reason`` says why, and every
reading is ``None``.  Apart from that, :class:`PowerEstimator` (at the end) *estimates*
a board's power from CPU time and a published per-board model; its figures are always
reported separately, labelled as estimated with their model, never as measurements.

Sensors, tried in this order (the first that reads wins):

* ``pmic``  -- Raspberry Pi 5 PMIC, ``vcgencmd pmic_read_adc``: the sum over the rails of
  V x A (each ``<RAIL>_A current(n)=...A`` line paired by name with its
  ``<RAIL>_V volt(m)=...V`` line).  Covers the board's PMIC rails (SoC, RAM, 3V3/1V8 ...),
  not the 5 V input itself (USB peripherals, fan).
* ``hwmon`` -- an INA219 / INA226 / INA260 (or another INA2xx) power monitor bound to its
  Linux hwmon driver: ``power1_input`` in microwatts.  Measures whatever it is wired to.
* ``rapl``  -- x86 RAPL energy counters, ``/sys/class/powercap/intel-rapl:N/energy_uj``
  (package domains only, so sub-domains are not counted twice); wraps at
  ``max_energy_range_uj``.  Measures the CPU package(s), not the whole machine.

    meter = open_power_meter()
    meter.sample()          # -> Sample(watts, joules, seconds) or None (see .reason)

``sample()`` returns the mean power since the previous call (for RAPL: the energy
counter's delta over the elapsed time; for instantaneous sensors: the mean of the
readings taken at each call and the previous one, integrated over the interval), so
``joules`` / frames is the energy per frame of that interval.
"""

import collections
import glob
import os
import re
import shutil
import subprocess
import threading
import time

__all__ = [
    "Sample", "PowerMeter", "PmicMeter", "HwmonMeter", "RaplMeter", "NullMeter",
    "open_power_meter", "parse_pmic_read_adc", "pmic_power_w", "parse_throttled",
    "read_cpu_temp_c", "read_throttled", "vcgencmd_path",
    "BoardModel", "BOARD_MODELS", "board_model", "read_cpu_jiffies", "PowerEstimator",
]

Sample = collections.namedtuple("Sample", "watts joules seconds")

_PMIC_LINE = re.compile(
    r"^\s*(?P<rail>[A-Za-z0-9_]+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=\s*"
    r"(?P<value>[-+0-9.eE]+)\s*(?P<unit>[AV])\s*$")

HWMON_NAMES = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina238", "ina260", "ina209",
               "ina3221")

THROTTLE_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


def vcgencmd_path():
    """The vcgencmd binary, or None (it is in /usr/bin on Raspberry Pi OS)."""
    p = shutil.which("vcgencmd")
    if p:
        return p
    for cand in ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def _run(argv, timeout=2.0):
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                         check=False)
    if out.returncode != 0:
        raise OSError("%s exited %d: %s" % (" ".join(argv), out.returncode,
                                            out.stderr.decode(errors="replace").strip()))
    return out.stdout.decode(errors="replace")


# ---- Raspberry Pi 5 PMIC ------------------------------------------------------------------

def parse_pmic_read_adc(text):
    """``vcgencmd pmic_read_adc`` output -> {rail: {"A": amps, "V": volts}}.

    Lines that are not ``NAME_A current(n)=xA`` / ``NAME_V volt(n)=xV`` are ignored."""
    rails = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if not m or m.group("kind") != m.group("unit"):
            continue
        try:
            v = float(m.group("value"))
        except ValueError:
            continue
        rails.setdefault(m.group("rail"), {})[m.group("kind")] = v
    return rails


def pmic_power_w(text):
    """Sum of V x A over the rails that have both a current and a voltage line.

    Returns (watts, n_rails); raises ValueError when no rail pairs up."""
    rails = parse_pmic_read_adc(text)
    pairs = [(r["V"], r["A"]) for r in rails.values() if "V" in r and "A" in r]
    if not pairs:
        raise ValueError("no <rail>_A / <rail>_V pairs in pmic_read_adc output")
    return sum(v * a for v, a in pairs), len(pairs)


# ---- meters --------------------------------------------------------------------------------

class PowerMeter:
    """Base: ``available``, ``source``, ``reason``, ``scope`` and ``sample()``."""

    source = None
    scope = ""
    available = True
    reason = None

    def __init__(self):
        self._lock = threading.Lock()
        self._last_t = None
        self._last_w = None

    def read_watts(self):  # instantaneous sensors override this
        raise NotImplementedError

    def sample(self):
        """Mean power since the previous call, or None on the first call / a failed read."""
        with self._lock:
            t = time.monotonic()
            try:
                w = float(self.read_watts())
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                self.reason = "read failed: %s" % e
                return None
            prev_t, prev_w = self._last_t, self._last_w
            self._last_t, self._last_w = t, w
            if prev_t is None or t <= prev_t:
                return Sample(w, None, None)
            dt = t - prev_t
            mean = 0.5 * (w + prev_w)
            return Sample(mean, mean * dt, dt)

    def describe(self):
        return {"source": self.source, "scope": self.scope} if self.available else \
            {"source": None, "reason": self.reason}


class NullMeter(PowerMeter):
    available = False

    def __init__(self, reason):
        super().__init__()
        self.reason = reason

    def sample(self):
        return None


class PmicMeter(PowerMeter):
    source = "pmic"
    scope = "Raspberry Pi 5 PMIC rails (sum of V x A; excludes the 5 V input's USB/fan load)"

    def __init__(self, vcgencmd="vcgencmd", runner=None):
        super().__init__()
        self._argv = [vcgencmd, "pmic_read_adc"]
        self._runner = runner or _run
        self.n_rails = None

    def read_watts(self):
        w, n = pmic_power_w(self._runner(self._argv))
        self.n_rails = n
        return w


class HwmonMeter(PowerMeter):
    source = "hwmon"

    def __init__(self, power_file, chip=""):
        super().__init__()
        self.path = power_file
        self.chip = chip
        self.scope = "%s power monitor (%s)" % (chip or "hwmon", power_file)

    def read_watts(self):
        with open(self.path) as f:
            return int(f.read().strip()) / 1e6  # microwatts


class RaplMeter(PowerMeter):
    """Energy counters: the mean power over the interval is exact (delta energy / dt)."""

    source = "rapl"

    def __init__(self, domains):
        super().__init__()
        self.domains = list(domains)  # [(energy_uj path, max_energy_range_uj)]
        self.scope = "CPU package (RAPL: %s)" % ", ".join(
            os.path.basename(os.path.dirname(p)) for p, _ in self.domains)
        self._last_e = None

    def _read(self):
        vals = []
        for path, _ in self.domains:
            with open(path) as f:
                vals.append(int(f.read().strip()))
        return vals

    def sample(self):
        with self._lock:
            t = time.monotonic()
            try:
                e = self._read()
            except (OSError, ValueError) as ex:
                self.reason = "read failed: %s" % ex
                return None
            prev_t, prev_e = self._last_t, self._last_e
            self._last_t, self._last_e = t, e
            if prev_t is None or t <= prev_t:
                return None
            uj = 0
            for (path, rng), now, before in zip(self.domains, e, prev_e):
                d = now - before
                if d < 0:  # wrapped around
                    d += rng
                uj += d
            dt = t - prev_t
            joules = uj / 1e6
            return Sample(joules / dt, joules, dt)


# ---- discovery -----------------------------------------------------------------------------

def _find_hwmon(root):
    for d in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
        try:
            with open(os.path.join(d, "name")) as f:
                name = f.read().strip()
        except OSError:
            continue
        if not name.lower().startswith("ina"):
            continue
        p = os.path.join(d, "power1_input")
        if os.path.exists(p):
            return p, name
    return None, None


def _find_rapl(root):
    domains = []
    for d in sorted(glob.glob(os.path.join(root, "sys/class/powercap/*"))):
        base = os.path.basename(d)
        # package domains only: intel-rapl:0, amd-rapl:0 ... (not intel-rapl:0:1 sub-domains,
        # not the intel-rapl-mmio duplicate of the package counter)
        if not re.fullmatch(r"(intel|amd)-rapl:\d+", base):
            continue
        e = os.path.join(d, "energy_uj")
        if not os.path.exists(e):
            continue
        try:
            with open(os.path.join(d, "max_energy_range_uj")) as f:
                rng = int(f.read().strip())
        except (OSError, ValueError):
            rng = 2 ** 32
        domains.append((e, rng))
    return domains


def open_power_meter(root="/", vcgencmd=None, runner=None):
    """The first sensor that reads (pmic, hwmon, rapl), else a NullMeter with the reasons.

    ``root``: filesystem root for sysfs (tests point it at a fake tree); ``vcgencmd``: its
    path (None: look it up; "" to skip); ``runner``: replaces subprocess for tests."""
    reasons = []
    vc = vcgencmd_path() if vcgencmd is None else vcgencmd
    if vc:
        m = PmicMeter(vc, runner=runner)
        try:
            m.read_watts()
            return m
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            reasons.append("vcgencmd pmic_read_adc: %s" % (str(e).strip().splitlines() or ["?"])[0])
    else:
        reasons.append("no vcgencmd (not a Raspberry Pi OS)")
    p, name = _find_hwmon(root)
    if p:
        m = HwmonMeter(p, name)
        try:
            m.read_watts()
            return m
        except (OSError, ValueError) as e:
            reasons.append("hwmon %s: %s" % (name, e))
    else:
        reasons.append("no INA2xx hwmon power1_input")
    domains = _find_rapl(root)
    if domains:
        m = RaplMeter(domains)
        try:
            m._read()
            return m
        except PermissionError:
            reasons.append("RAPL energy_uj not readable (root only since Linux 5.10)")
        except (OSError, ValueError) as e:
            reasons.append("RAPL: %s" % e)
    else:
        reasons.append("no RAPL powercap domain")
    return NullMeter("no power sensor: " + "; ".join(reasons))


# ---- temperature and throttling -----------------------------------------------------------

def read_cpu_temp_c(root="/"):
    """CPU temperature in degrees C from thermal_zone0, or None."""
    try:
        with open(os.path.join(root, "sys/class/thermal/thermal_zone0/temp")) as f:
            return int(f.read().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def parse_throttled(text):
    """``throttled=0x50005`` -> {"raw": "0x50005", "now": [...], "occurred": [...],
    flag: bool for each flag}.  Raises ValueError on anything else."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise ValueError("not get_throttled output: %r" % text.strip()[:80])
    v = int(m.group(1), 0)
    d = {"raw": hex(v)}
    for bit, name in THROTTLE_BITS.items():
        d[name] = bool(v >> bit & 1)
    d["now"] = [n for b, n in THROTTLE_BITS.items() if b < 16 and v >> b & 1]
    d["occurred"] = [n[:-len("_occurred")] for b, n in THROTTLE_BITS.items()
                     if b >= 16 and v >> b & 1]
    return d


def read_throttled(vcgencmd=None, runner=None):
    """``vcgencmd get_throttled`` parsed, or None where vcgencmd is missing / fails."""
    vc = vcgencmd_path() if vcgencmd is None else vcgencmd
    if not vc:
        return None
    try:
        return parse_throttled((runner or _run)([vc, "get_throttled"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


# ---- estimated power (boards without a sensor) ---------------------------------------------
#
# Where nothing measures, the app can *estimate* the board's power from CPU time and a
# per-board linear model between two published measurements of the whole board at its
# 5 V input: idle, and all cores busy.  The estimate is always reported apart from the
# measured figures ("power_estimated", labelled with its model) and never replaces them.
# The figures and where each comes from: docs/power-estimate.md.

BoardModel = collections.namedtuple("BoardModel", "key name idle_w load_w source")

BOARD_MODELS = {m.key: m for m in (
    BoardModel("pi3b", "Raspberry Pi 3 Model B", 1.4, 3.7,
               "pidramble.com power benchmarks: idle 260 mA (1.4 W), max CPU 730 mA (3.7 W)"),
    BoardModel("pi3b+", "Raspberry Pi 3 Model B+", 1.9, 5.1,
               "pidramble.com power benchmarks: idle 350 mA (1.9 W), max CPU 980 mA (5.1 W)"),
    BoardModel("pi4b", "Raspberry Pi 4 Model B", 2.7, 6.4,
               "pidramble.com power benchmarks: idle 540 mA (2.7 W), stress --cpu 4 "
               "1280 mA (6.4 W)"),
    BoardModel("zero2w", "Raspberry Pi Zero 2 W", 0.6, 3.0,
               "idle 120 mA (0.6 W): cnx-software 2021-12-09; 4-core load 3.0 W: from "
               "memory of published reviews, not re-checked"),
    BoardModel("pi5", "Raspberry Pi 5", 2.7, 7.0,
               "from memory of published reviews (idle 2.7 W, 4-core load 7.0 W), not "
               "re-checked; a Pi 5 normally measures through its PMIC instead"),
)}

# /proc/device-tree/model prefix -> model key (the longer prefix first)
_DT_MODELS = (("Raspberry Pi 3 Model B Plus", "pi3b+"), ("Raspberry Pi 3 Model B", "pi3b"),
              ("Raspberry Pi 4 Model B", "pi4b"), ("Raspberry Pi Zero 2", "zero2w"),
              ("Raspberry Pi 5", "pi5"))


def board_model(root="/"):
    """The BOARD_MODELS key of this board from /proc/device-tree/model, or None."""
    try:
        with open(os.path.join(root, "proc/device-tree/model"), "rb") as f:
            model = f.read().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return None
    for prefix, key in _DT_MODELS:
        if model.startswith(prefix):
            return key
    return None


def read_cpu_jiffies(root="/"):
    """(busy, total, n_cpus) from /proc/stat's "cpu" line: busy excludes idle and
    iowait; guest time is already inside user."""
    with open(os.path.join(root, "proc/stat")) as f:
        lines = f.read().splitlines()
    vals = [int(v) for v in lines[0].split()[1:]]
    if not lines[0].startswith("cpu ") or len(vals) < 4:
        raise ValueError("not /proc/stat: %r" % lines[0][:60])
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    n = sum(1 for ln in lines if re.match(r"cpu\d+ ", ln))
    return total - idle, total, max(1, n)


def _process_cpu_s():
    t = os.times()
    return t.user + t.system


class PowerEstimator:
    """An ESTIMATE of the board's power from CPU time, for boards without a sensor:

        watts     = idle_w + (load_w - idle_w) * system CPU utilisation
        app_watts = (load_w - idle_w) * this process's CPU utilisation

    (utilisation: busy CPU time / (interval x CPUs), from /proc/stat and os.times()).
    ``sample()`` -> a dict over the interval since the previous call (None on the first
    call or when /proc/stat cannot be read), always with its ``model``."""

    def __init__(self, model, root="/", process_cpu_s=None, clock=time.monotonic):
        self.model = BOARD_MODELS[model] if isinstance(model, str) else model
        self.root = root
        self._proc = process_cpu_s or _process_cpu_s
        self._clock = clock
        self._last = None
        self._lock = threading.Lock()

    def describe(self):
        m = self.model
        return {"model": m.key, "board": m.name, "idle_w": m.idle_w, "load_w": m.load_w,
                "basis": "estimated from CPU time: idle_w + (load_w - idle_w) x CPU "
                         "utilisation; figures: %s" % m.source}

    def sample(self):
        with self._lock:
            try:
                busy, total, ncpu = read_cpu_jiffies(self.root)
            except (OSError, ValueError, IndexError):
                return None
            now, proc = self._clock(), self._proc()
            last, self._last = self._last, (now, busy, total, proc)
            if last is None or total <= last[2] or now <= last[0]:
                return None
            dt = now - last[0]
            util = min(1.0, max(0.0, (busy - last[1]) / float(total - last[2])))
            app_util = min(1.0, max(0.0, (proc - last[3]) / (dt * ncpu)))
            m = self.model
            watts = m.idle_w + (m.load_w - m.idle_w) * util
            return {"model": m.key, "watts": watts, "joules": watts * dt, "seconds": dt,
                    "app_watts": (m.load_w - m.idle_w) * app_util,
                    "cpu_util": util, "app_cpu_util": app_util}
