"""Replays every fuzz seed and every regression input (tests/fuzz/seeds/<target>/,
tests/fuzz/regressions/<target>/) through the fuzz harnesses' bodies -- the same
``one_input`` functions the fuzzers call, without atheris -- so an input that once
crashed or escaped with an undocumented error stays fixed.  Under ``./build.sh test``
this also runs on the ASan+UBSan libbnn.so.  See docs/reliability.md.
"""
import glob
import os
import subprocess
import sys
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
ROOT = os.path.dirname(HERE)
if FUZZ not in sys.path:
    sys.path.insert(0, FUZZ)

from firmware_py import _native  # noqa: E402

try:
    _native.lib()
except Exception as e:  # pragma: no cover - depends on the build
    pytest.skip("native library not built (run ./build.sh): %s" % e, allow_module_level=True)

import fuzz_model_loader as loader  # noqa: E402


def _inputs(target, kind):
    return sorted(p for p in glob.glob(os.path.join(FUZZ, kind, target, "*")) if os.path.isfile(p))


def _id(path):
    return os.path.relpath(path, FUZZ)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("path", _inputs("loader", "seeds"), ids=_id)
def test_loader_seed_runs(path):
    assert loader.one_input(_read(path)) == "ran"


def test_loader_regressions():
    """every kept loader finding (none so far: the loader fuzz runs found no crash) replays"""
    for path in _inputs("loader", "regressions"):
        loader.one_input(_read(path))  # raises on a finding


def test_generated_models_are_valid_and_run():
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(60):
        blob = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        assert loader.one_input(bytes([0x07 | (i % 8) << 3]) + blob) in ("ran", "too large")


def test_loader_has_seeds():
    names = {os.path.basename(p).rsplit("-", 1)[0] for p in _inputs("loader", "seeds")}
    assert {"tiny_bnn", "tiny_ops", "zoo_xnor", "zoo_xnor_k"} <= names, names


@pytest.mark.parametrize("mode", [0x00, 0x01, 0x02])
def test_container_modes_keep_a_valid_file_valid(mode):
    blob = _read(os.path.join(FUZZ, "seeds", "loader", "tiny_bnn-02"))[1:]
    assert loader.container(bytes([mode]) + blob) == (mode, blob)


def test_rebuild_gets_json_mutations_past_the_crc_gate():
    blob = _read(os.path.join(FUZZ, "seeds", "loader", "tiny_ops-02"))[1:]
    # an insertion into the JSON: the raw file fails the CRC / size checks, the rebuilt one
    # reaches the JSON validation; a changed weight byte reaches the data checks
    i = blob.index(b'"sigmoid"')
    mutated = blob[:i] + b'"sigmoidX"' + blob[i + len(b'"sigmoid"'):]
    from firmware_py.model_format import ModelFormatError, read_model

    with pytest.raises(ModelFormatError, match="CRC|size|padding"):
        read_model(loader.container(b"\x00" + mutated)[1])
    with pytest.raises(ModelFormatError, match="unknown op 'sigmoidX'"):
        read_model(loader.container(b"\x02" + mutated)[1])
    flipped = bytearray(blob)
    flipped[-1] ^= 0x40
    assert loader.one_input(b"\x02" + bytes(flipped)) == "ran"
    with pytest.raises(ModelFormatError, match="data CRC"):
        read_model(bytes(flipped))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "models", "zoo", "**", "*.bnn"),
                                                  recursive=True)),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_zoo_models_through_the_loader_harness(path):
    blob = _read(path)
    assert loader.one_input(b"\x02" + blob, budget=False) == "ran"
    assert loader.one_input(b"\x00" + blob[:-1]) == "rejected"


def test_harnesses_import_without_atheris():
    code = ("import sys; sys.modules['atheris'] = None; sys.path[:0] = [%r, %r]; "
            "import fuzz_model_loader, fuzz_convert; print('ok')" % (FUZZ, ROOT))
    import onnx  # noqa: F401
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


# ---- convert --------------------------------------------------------------------------------------
def _convert():
    import onnx  # noqa: F401
    import fuzz_convert

    return fuzz_convert


@pytest.mark.parametrize("path", _inputs("convert", "seeds"), ids=_id)
def test_convert_seed_converts(path):
    fc = _convert()
    data = _read(path)
    assert fc.one_input(data).startswith("converted")
    # the other intake too (file <-> ModelProto, picked by the CRC's parity): append a
    # doc_string field (ModelProto field 6), which changes the bytes but not the model
    other = next(d for d in (data + b"\x32\x01" + bytes([c]) for c in b"abcdefgh")
                 if (zlib.crc32(d) ^ zlib.crc32(data)) & 1)
    assert fc.one_input(other).startswith("converted")


@pytest.mark.parametrize("path", _inputs("convert", "regressions"), ids=_id)
def test_convert_regression(path):
    fc = _convert()
    if "huge-allocation" not in os.path.basename(path):
        fc.one_input(_read(path))  # raises on a finding
        return
    # inputs that make onnx's shape inference allocate gigabytes: replayed, as the fuzzer ran
    # them, in a process whose allocations fail past 2 GiB (ASan: soft RSS limit; else RLIMIT_AS)
    env = dict(os.environ)
    asan = "libasan" in env.get("LD_PRELOAD", "")
    if asan:
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + \
            ":soft_rss_limit_mb=2048:allocator_may_return_null=1"

    def cap():
        if not asan:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    code = ("import sys; sys.path[:0] = [%r, %r]; import fuzz_convert; "
            "print(fuzz_convert.one_input(open(%r, 'rb').read()))" % (FUZZ, ROOT, path))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env=env, preexec_fn=cap)
    assert p.returncode == 0 and p.stdout.split()[-1:] == ["rejected"], p.stdout + p.stderr[-3000:]
