"""Every command-line use the README documents for firmware_py, run on a shipped model (the
installed copy's commands are tests/test_install.py)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "models", "zoo")


def _run(args, cwd):
    r = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, "%s\n%s\n%s" % (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


def test_convert_check_report_then_info_profile(tmp_path):
    out = _run(["-m", "firmware_py", "convert", os.path.join(ZOO, "fashion-mnist", "xnor.onnx"), "m.bnn",
                "--check", "--report"], cwd=str(tmp_path))
    assert "bconv2d" in out and "check" in out, out
    out = _run(["-m", "firmware_py", "info", "m.bnn", "--profile"], cwd=str(tmp_path))
    assert "(total run)" in out and "bconv2d" in out, out


def test_info_profile_on_every_shipped_model_kind(tmp_path):
    for path in (os.path.join(ZOO, "person", "binary.bnn"), os.path.join(ZOO, "cifar10", "xnor_k.bnn")):
        out = _run(["-m", "firmware_py", "info", path, "--profile", "--threads", "1"], cwd=str(tmp_path))
        lines = out.splitlines()
        total = [ln for ln in lines if ln.startswith("(total run)")]
        assert len(total) == 1 and float(total[0].split()[-1]) > 0, out


def test_classifier_demo(tmp_path):
    out = _run(["-m", "firmware_py.demo"], cwd=str(tmp_path))
    assert json.loads(out.splitlines()[-1])["images"] == 32


def test_app_help(tmp_path):
    assert "--source" in _run(["-m", "bnn_camera", "--help"], cwd=str(tmp_path))
