"""firmware_py.power: vcgencmd parsing from recorded-format samples, hwmon and RAPL readers
on fake sysfs trees (wraparound included), and the "no sensor -> null with a reason" rule."""
import os
import time

import pytest

from firmware_py import power

# `vcgencmd pmic_read_adc` on a Raspberry Pi 5 (bookworm firmware), idle, format as printed:
# every current rail `<NAME>_A current(n)=...A`, every voltage `<NAME>_V volt(n)=...V`;
# EXT5V_V and BATT_V have no current line.
PMIC_SAMPLE = """\
   3V7_WL_SW_A current(0)=0.00390372A
     3V3_SYS_A current(1)=0.05466900A
     1V8_SYS_A current(2)=0.16104570A
    DDR_VDD2_A current(3)=0.02049732A
    DDR_VDDQ_A current(4)=0.00000000A
     1V1_SYS_A current(5)=0.18543900A
     0V8_SW_A current(6)=0.36309500A
    VDD_CORE_A current(7)=0.68220000A
     3V3_DAC_A current(17)=0.00012210A
     3V3_ADC_A current(18)=0.00018315A
     0V8_AON_A current(16)=0.00000000A
        HDMI_A current(22)=0.02032506A
   3V7_WL_SW_V volt(8)=3.71937200V
     3V3_SYS_V volt(9)=3.30768400V
     1V8_SYS_V volt(10)=1.79853500V
    DDR_VDD2_V volt(11)=1.11306400V
    DDR_VDDQ_V volt(12)=0.60598290V
     1V1_SYS_V volt(13)=1.10573000V
     0V8_SW_V volt(14)=0.80112450V
    VDD_CORE_V volt(15)=0.76977000V
     3V3_DAC_V volt(20)=3.30402100V
     3V3_ADC_V volt(21)=3.30731700V
     0V8_AON_V volt(19)=0.79903950V
        HDMI_V volt(23)=5.15424000V
       EXT5V_V volt(24)=5.13912000V
        BATT_V volt(25)=0.00000000V
"""

# the same board under load (4 cores busy): VDD_CORE current and voltage up
PMIC_LOAD = PMIC_SAMPLE.replace("VDD_CORE_A current(7)=0.68220000A",
                                "VDD_CORE_A current(7)=3.51670000A").replace(
    "VDD_CORE_V volt(15)=0.76977000V", "VDD_CORE_V volt(15)=0.87962000V")


def _expected(text):
    rails = {}
    for line in text.splitlines():
        name, val = line.strip().split(" ", 1)
        v = float(val.split("=")[1][:-1])
        rails.setdefault(name[:-2], {})[name[-1]] = v
    return sum(r["A"] * r["V"] for r in rails.values() if "A" in r and "V" in r)


def test_pmic_parse_pairs_rails_by_name():
    rails = power.parse_pmic_read_adc(PMIC_SAMPLE)
    assert rails["VDD_CORE"] == {"A": 0.6822, "V": 0.76977}
    assert rails["3V7_WL_SW"] == {"A": 0.00390372, "V": 3.719372}
    assert rails["EXT5V"] == {"V": 5.13912}  # no current: not counted
    w, n = power.pmic_power_w(PMIC_SAMPLE)
    assert n == 12
    assert w == pytest.approx(_expected(PMIC_SAMPLE), rel=1e-12)
    assert 1.0 < w < 2.5  # an idle Pi 5: the PMIC rails add up to about 1.6 W
    w_load, _ = power.pmic_power_w(PMIC_LOAD)
    assert w_load - w == pytest.approx(3.5167 * 0.87962 - 0.6822 * 0.76977, rel=1e-9)


def test_pmic_parse_ignores_noise_and_refuses_garbage():
    noisy = "error=0\n" + PMIC_SAMPLE + "   FOO_A volt(3)=1.0V\n\n"  # unit/kind mismatch
    assert power.pmic_power_w(noisy) == power.pmic_power_w(PMIC_SAMPLE)
    with pytest.raises(ValueError):
        power.pmic_power_w("error=1 error_msg=\"Command not registered\"\n")


def test_pmic_meter_samples_mean_power_and_energy():
    outs = iter([PMIC_SAMPLE, PMIC_SAMPLE, PMIC_LOAD])
    calls = []

    def runner(argv):
        calls.append(argv)
        return next(outs)

    m = power.open_power_meter(root="/nonexistent", vcgencmd="/usr/bin/vcgencmd", runner=runner)
    assert isinstance(m, power.PmicMeter) and m.available and m.source == "pmic"
    assert calls[0] == ["/usr/bin/vcgencmd", "pmic_read_adc"]
    s0 = m.sample()
    assert s0.joules is None  # first reading: no interval yet
    time.sleep(0.05)
    s1 = m.sample()
    w0, w1 = power.pmic_power_w(PMIC_SAMPLE)[0], power.pmic_power_w(PMIC_LOAD)[0]
    assert s1.watts == pytest.approx((w0 + w1) / 2)
    assert s1.joules == pytest.approx(s1.watts * s1.seconds)
    assert s1.seconds >= 0.04


def _hwmon(tmp_path, name, uw, idx=0):
    d = tmp_path / "sys/class/hwmon" / ("hwmon%d" % idx)
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    if uw is not None:
        (d / "power1_input").write_text("%d\n" % uw)
    return d


def test_hwmon_ina_power1_input_microwatts(tmp_path):
    _hwmon(tmp_path, "cpu_thermal", None, 0)
    d = _hwmon(tmp_path, "ina219", 2_345_000, 1)
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="")
    assert isinstance(m, power.HwmonMeter) and m.chip == "ina219"
    assert m.read_watts() == pytest.approx(2.345)
    m.sample()
    (d / "power1_input").write_text("3345000\n")
    time.sleep(0.02)
    s = m.sample()
    assert s.watts == pytest.approx(2.845)
    assert s.joules == pytest.approx(2.845 * s.seconds)


@pytest.mark.parametrize("chip", ["ina226", "ina260"])
def test_hwmon_other_ina_chips(tmp_path, chip):
    _hwmon(tmp_path, chip, 1_500_000)
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="")
    assert m.source == "hwmon" and m.read_watts() == pytest.approx(1.5)


def _rapl(tmp_path, name, uj, rng):
    d = tmp_path / "sys/class/powercap" / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text("%d\n" % uj)
    (d / "max_energy_range_uj").write_text("%d\n" % rng)
    return d


def test_rapl_energy_delta_and_wraparound(tmp_path):
    rng = 262143328850
    pkg = _rapl(tmp_path, "intel-rapl:0", rng - 1_000_000, rng)
    _rapl(tmp_path, "intel-rapl:0:0", 5, rng)  # core sub-domain: must not be added
    _rapl(tmp_path, "intel-rapl-mmio:0", 7, rng)  # mmio duplicate of the package
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="")
    assert isinstance(m, power.RaplMeter) and len(m.domains) == 1
    assert m.sample() is None  # needs two readings
    (pkg / "energy_uj").write_text("%d\n" % 2_000_000)  # wrapped: +3 J in total
    time.sleep(0.02)
    s = m.sample()
    assert s.joules == pytest.approx(3.0)
    assert s.watts == pytest.approx(3.0 / s.seconds)


def test_rapl_unreadable_gives_reason(tmp_path, monkeypatch):
    _rapl(tmp_path, "intel-rapl:0", 10, 2 ** 32)
    real_open = open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="")
    assert not m.available
    assert "RAPL" in m.reason and "root" in m.reason


def test_no_sensor_is_null_with_reason(tmp_path):
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="")
    assert isinstance(m, power.NullMeter) and not m.available
    assert m.sample() is None
    assert "no vcgencmd" in m.reason and "hwmon" in m.reason and "RAPL" in m.reason
    assert m.describe() == {"source": None, "reason": m.reason}


def test_failing_vcgencmd_falls_through(tmp_path):
    def runner(argv):
        raise OSError("vcgencmd exited 255: Command not registered")

    _hwmon(tmp_path, "ina260", 1_000_000)
    m = power.open_power_meter(root=str(tmp_path), vcgencmd="/usr/bin/vcgencmd", runner=runner)
    assert m.source == "hwmon"  # a Pi 4 has vcgencmd but no PMIC ADC


def test_throttled_flags():
    d = power.parse_throttled("throttled=0x50005\n")
    assert d["raw"] == "0x50005"
    assert d["under_voltage"] and d["throttled"] and not d["freq_capped"]
    assert d["under_voltage_occurred"] and d["throttled_occurred"]
    assert d["now"] == ["under_voltage", "throttled"]
    assert d["occurred"] == ["under_voltage", "throttled"]
    ok = power.parse_throttled("throttled=0x0")
    assert ok["now"] == [] and ok["occurred"] == [] and ok["raw"] == "0x0"
    assert power.parse_throttled("throttled=0x80008")["now"] == ["soft_temp_limit"]
    with pytest.raises(ValueError):
        power.parse_throttled("error=2 error_msg=\"Invalid arguments\"")
    assert power.read_throttled("/usr/bin/vcgencmd", runner=lambda a: "throttled=0x20000\n") \
        ["occurred"] == ["freq_capped"]
    assert power.read_throttled("") is None


def test_cpu_temperature(tmp_path):
    assert power.read_cpu_temp_c(str(tmp_path)) is None
    d = tmp_path / "sys/class/thermal/thermal_zone0"
    d.mkdir(parents=True)
    (d / "temp").write_text("51850\n")
    assert power.read_cpu_temp_c(str(tmp_path)) == pytest.approx(51.85)


def test_this_machine_never_invents_power():
    m = power.open_power_meter()
    if m.available:
        m.sample()
        time.sleep(0.1)
        s = m.sample()
        assert s is None or s.watts >= 0
    else:
        assert m.reason and m.sample() is None
    if not os.path.exists("/usr/bin/vcgencmd"):
        assert power.read_throttled() is None
