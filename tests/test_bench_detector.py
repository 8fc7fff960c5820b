"""``python -m models.bench_detector --icount``: the message that says what to run when the
ARM userland is missing, and one count (marked arm_userland: ./build.sh pi-test runs it, after it
has built the ARM userland; ./build.sh test leaves it out)."""
import pytest

from models import bench_detector as B


def test_icount_without_rootfs_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "ROOTFS", tmp_path)  # an empty folder: no userland in it
    monkeypatch.setattr(B.shutil, "which", lambda name: "/usr/bin/" + name)  # qemu "installed"
    with pytest.raises(SystemExit) as e:  # before any model is built or timed
        B.main(["--icount", "aarch64"])
    assert "run ../shared/tools/arm-rootfs/build.sh arm64" in str(e.value.code)


def test_icount_rejects_unknown_arch(capsys):
    with pytest.raises(SystemExit) as e:
        B.main(["--icount", "riscv64"])
    assert e.value.code == 2 and "'riscv64' is not one of aarch64, armhf" in capsys.readouterr().err


@pytest.mark.arm_userland
def test_icount_aarch64(model):
    """the synthetic detector (conftest ``model``) on aarch64: ~40 s under qemu.  Needs the arm64
    userland of ../shared/tools/arm-rootfs: run by ./build.sh pi-test, which builds it."""
    r = B.icount("aarch64", model, frames=1)
    assert (r["machine"], r["path"], r["library"]) == ("aarch64", "neon-aarch64", "firmware_py/_lib/aarch64/libbnn.so")
    assert 0 < r["net"]["instructions_per_frame"] < r["detect"]["instructions_per_frame"]
