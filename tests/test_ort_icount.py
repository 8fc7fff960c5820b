"""models/ort_icount.py's wheel cache, offline: a wheel whose sha256 is not the pinned one is
refused before anything is unpacked, a good one is unpacked once, and a failed download names
the pip command to run."""
import hashlib
import subprocess
import zipfile

import pytest

from models import ort_icount as O


def test_corrupt_wheel_is_refused(tmp_path):
    (tmp_path / O.ORT_WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(RuntimeError) as e:
        O.ort_site(tmp_path)
    assert "sha256 " + hashlib.sha256(b"not the wheel").hexdigest() in str(e.value)
    assert "expected " + O.ORT_SHA256 in str(e.value) and "delete it" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [O.ORT_WHEEL]  # nothing unpacked


def test_good_wheel_is_unpacked_once(tmp_path, monkeypatch):
    wheel = tmp_path / O.ORT_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("onnxruntime/__init__.py", "__version__ = 'x'\n")
        z.writestr("onnxruntime/capi/libonnxruntime.so.1", b"\x7fELF")
    monkeypatch.setattr(O, "ORT_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    site = O.ort_site(tmp_path)
    assert site == tmp_path / O.ORT_VERSION and (site / ".complete").exists()
    assert (site / "onnxruntime" / "__init__.py").read_text() == "__version__ = 'x'\n"
    assert (site / "onnxruntime" / "capi" / "libonnxruntime.so.1").stat().st_mode & 0o111
    wheel.unlink()
    assert O.ort_site(tmp_path) == site  # unpacked: neither the wheel nor pip is needed again


def test_failed_download_names_the_command(tmp_path, monkeypatch):
    def no_network(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies ...\n")
    monkeypatch.setattr(O.subprocess, "run", no_network)
    with pytest.raises(RuntimeError) as e:
        O.ort_site(tmp_path)
    msg = str(e.value)
    assert "Could not find a version" in msg
    assert f"-m pip download onnxruntime=={O.ORT_VERSION} --no-deps" in msg and f"-d {tmp_path}" in msg
    assert not (tmp_path / O.ORT_VERSION).exists()
