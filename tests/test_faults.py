"""Faults: a process killed mid-export or mid-calibrate, a full disk, never a lost package."""

import errno
import os
import shutil
import subprocess

import pytest
from conftest import run_cli, small_package, spawn_parked

from cephalon_edge.device.manifest import Manifest


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def strays(parent, name):
    return sorted(p.name for p in parent.glob(f".{name}.*"))


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory):
    return small_package(tmp_path_factory.mktemp("exported"), samples=2000)


@pytest.fixture
def exported(exported_once, tmp_path):
    """A fresh copy of the exported package (each test may break its own)."""
    for name in ("m.cephalon", "data.npz"):
        shutil.copy(exported_once / name, tmp_path / name)
    shutil.copytree(exported_once / "pkg", tmp_path / "pkg")
    return tmp_path / "m.cephalon", tmp_path / "pkg", tmp_path / "data.npz"


def _kill(proc):
    proc.kill()
    proc.wait()
    proc.stderr.close()


@pytest.mark.slow
def test_sigkill_mid_export_keeps_the_previous_package(exported, tmp_path):
    ckpt, pkg, _ = exported
    before = snapshot(pkg)
    # parked on the second (fused) segment's conversion: the first segment's file is written
    proc = spawn_parked(tmp_path, "call:torch.onnx:export:2",
                         "export", str(ckpt), "--target", "onnx", "-o", str(pkg), "--force")
    partial = [p for p in pkg.parent.glob(".pkg.*.partial") if len(list(p.glob("*.onnx"))) >= 1]
    _kill(proc)
    assert partial, "the new package was not half written when the run was killed"
    assert snapshot(pkg) == before  # byte-identical
    assert strays(pkg.parent, "pkg")  # the killed run's temporary is still there...
    res = run_cli("export", str(ckpt), "--target", "onnx", "-o", str(pkg), "--force", "--no-verify")
    assert res.returncode == 0, res.stderr
    assert strays(pkg.parent, "pkg") == []  # ...and the next run removes it


# points of calibrate's own progress: mid-work, the new manifest written but not yet in
# place, and just after the atomic replace
CALIBRATE_KILL_POINTS = [("call:cephalon_edge.tune.calibrate:collect", False),
                         ("replace:manifest.json", False),
                         ("replaced:manifest.json", True)]


@pytest.mark.slow
@pytest.mark.parametrize("point, updated", CALIBRATE_KILL_POINTS)
def test_sigkill_mid_calibrate_keeps_the_manifest(exported, tmp_path, point, updated):
    _, pkg, data = exported
    before = snapshot(pkg)
    proc = spawn_parked(tmp_path, point, "calibrate", str(pkg), "--data", str(data))
    _kill(proc)
    if updated:  # killed after the atomic update: the manifest is the complete new one
        assert Manifest.open(pkg).data["exit_policy"]["calibrated"] is True
        assert {k for k in snapshot(pkg) if k != "manifest.json"} == {k for k in before if k != "manifest.json"}
    else:  # killed before it: nothing changed, byte for byte (but the killed run's temporary)
        after = snapshot(pkg)
        left = [k for k in after if k.startswith(".")]
        assert all(k.startswith(".manifest.json.") and k.endswith(".tmp") for k in left), left
        assert {k: v for k, v in after.items() if k not in left} == before
    res = run_cli("calibrate", str(pkg), "--data", str(data))
    assert res.returncode == 0, res.stderr
    assert [p.name for p in pkg.iterdir() if p.name.startswith(".")] == []
    assert Manifest.open(pkg).data["exit_policy"]["calibrated"] is True


def test_disk_full_is_one_clear_line(exported, monkeypatch, capsys):
    _, pkg, data = exported
    before = snapshot(pkg)
    real = os.replace

    def full(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    from cephalon_edge.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", str(pkg), "--data", str(data)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "error: no space left on device" in err and "manifest.json" in err and "Traceback" not in err
    assert snapshot(pkg) == before


def test_real_tiny_filesystem(exported, tmp_path):
    """A 16 KiB tmpfs cannot hold the package: the export fails cleanly (needs root and mount)."""
    ckpt, _, _ = exported
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        res = run_cli("export", str(ckpt), "--target", "onnx", "-o", str(mnt / "pkg"), "--no-verify")
        assert res.returncode == 1, res.stderr
        assert "no space left on device" in res.stderr.lower() and "Traceback" not in res.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
