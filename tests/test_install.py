"""The dist artefacts as a user installs them: the tarball pip-installed with the [convert] extra
into a clean virtual environment, then, from a folder outside the source tree, `bnn-pi convert`
of a shipped ONNX model, `bnn-pi info`, the classifier demo, the camera app on its bundled clip
with its default (installed) detector, and the systemd unit's own ExecStart command.

The artefacts are those `./build.sh test` packed just before (BNN_DIST); run alone, this test
packs them with `./build.sh dist`.  pip reads the same package index as the rest of the project,
with requirements/constraints.txt."""
import glob
import json
import os
import shlex
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS = os.path.join(ROOT, "requirements", "constraints.txt")


def _run(cmd, cwd, timeout=600, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BNN_LIBRARY", "VIRTUAL_ENV")}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, "%s\nexit %d\n%s\n%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:],
                                                       r.stderr[-3000:])
    return r.stdout


@pytest.fixture(scope="module")
def dist():
    d = os.environ.get("BNN_DIST")
    if not d:
        _run(["./build.sh", "dist"], cwd=ROOT, timeout=1200)
        d = os.path.join(ROOT, "dist")
    tars, wheels = glob.glob(os.path.join(d, "bnn-pi-*.tar.gz")), glob.glob(os.path.join(d, "bnn_pi-*.whl"))
    assert len(tars) == 1 and len(wheels) == 1, os.listdir(d)
    return tars[0], wheels[0]


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """a clean venv (no system site-packages) with the tarball and its [convert,camera] extras"""
    where = tmp_path_factory.mktemp("install")
    v = where / "venv"
    _run([sys.executable, "-m", "venv", str(v)], cwd=str(where))
    py = str(v / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", CONSTRAINTS,
          dist[0] + "[convert,camera]"], cwd=str(where), timeout=1200)
    outside = where / "elsewhere"
    outside.mkdir()
    return v, str(outside)


def test_wheel_holds_every_package_library_and_model(dist):
    names = set(zipfile.ZipFile(dist[1]).namelist())
    for arch in ("x86_64", "aarch64", "armhf", "armv6"):
        assert "firmware_py/_lib/%s/libbnn.so" % arch in names
    assert "firmware_py/_lib/bnn.h" in names  # firmware_py.header reads the C contract from it
    for mod in ("firmware_py/__init__.py", "firmware_py/convert/__init__.py", "firmware_py/convert/lower.py",
                "bnn_camera/__main__.py", "bnn_camera/cli.py", "bnn_camera/samples/people-384x216.mp4",
                "bnn_camera/static/index.html"):  # the status page
        assert mod in names
    data = [n for n in names if ".data/data/share/bnn-pi/zoo/" in n]
    assert any(n.endswith("/person/binary.bnn") for n in data), data
    assert any(n.endswith("/fashion-mnist/samples.npz") for n in data), data
    assert not any(n.startswith(("app/", "models/", "tests/")) or n.endswith(".onnx") for n in names)


def test_installed_copy_is_used_not_the_source_tree(venv):
    v, outside = venv
    out = _run([str(v / "bin" / "python"), "-c",
                "import firmware_py, firmware_py.convert, bnn_camera, json; from firmware_py import _native;"
                "print(json.dumps([firmware_py.__file__, firmware_py.convert.__file__, bnn_camera.__file__,"
                " _native.library_path(), firmware_py.zoo_path('person', 'binary.bnn')]))"], cwd=outside)
    paths = json.loads(out)
    for p in paths:
        assert p.startswith(str(v) + os.sep), p
        assert not p.startswith(ROOT + os.sep), p
    assert os.path.isfile(paths[-1])


def test_convert_and_info_outside_the_tree(venv):
    v, outside = venv
    src = os.path.join(ROOT, "models", "zoo", "fashion-mnist", "xnor.onnx")
    out = _run([str(v / "bin" / "bnn-pi"), "convert", src, "xnor.bnn", "--check"], cwd=outside)
    assert "wrote xnor.bnn" in out and "check:" in out, out
    info = _run([str(v / "bin" / "python"), "-m", "firmware_py", "info", "xnor.bnn"], cwd=outside)
    assert "bconv2d" in info, info


def test_classifier_demo_from_the_installed_zoo(venv):
    v, outside = venv
    out = _run([str(v / "bin" / "python"), "-m", "firmware_py.demo"], cwd=outside)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["images"] == 32 and summary["accuracy_percent"] >= 80, summary


def test_camera_app_and_systemd_unit_from_the_installed_copy(venv, tmp_path):
    """the unit's ExecStart with the venv in place of /home/pi/bnn, the bundled clip as the
    source and the state folder in tmp_path: the installed app with its installed detector"""
    v, outside = venv
    unit = open(os.path.join(ROOT, "bnn_camera", "bnn-camera.service")).read()
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line[len("ExecStart="):].replace("/home/pi/bnn", str(v))
                       .replace("/var/lib/bnn-camera", str(tmp_path)))
    assert argv[0] == str(v / "bin" / "bnn-camera") and os.access(argv[0], os.X_OK), argv
    sample = _run([str(v / "bin" / "python"), "-c", "from bnn_camera.sources import bundled_sample;"
                   "print(bundled_sample())"], cwd=outside).strip()
    assert sample.startswith(str(v)), sample
    i = argv.index("--source")
    argv[i + 1] = sample
    http = argv.index("--http")
    argv[http + 1] = "127.0.0.1:0"
    out = _run(argv + ["--max-frames", "20", "--threads", "1"], cwd="/", timeout=300)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames_total"] == 20, summary
    assert summary["inference_fps"] > 0
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["frames_total"] == 20
