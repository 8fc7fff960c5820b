"""Measured power, CPU temperature and throttling on the device (stdlib only).

Power is only ever *measured*; where no sensor can be read, :func:`open_power_meter`
returns a meter whose ``available`` is False and whose ``reason`` says why, and every
reading is ``None`` -- no figure is ever estimated or invented.

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
