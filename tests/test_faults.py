"""Faults: a process killed mid-export or mid-calibrate, a full disk, never a lost package."""

import errno
import os
import subprocess
import sys
import time

import pytest

from cephalon_edge import checkpoint
from cephalon_edge.artifacts import ExportSpec
from cephalon_edge.export import export_package
from cephalon_edge.manifest import Manifest
from conftest import labelled_npz, make_net, run_cli


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def strays(parent, name):
    return sorted(p.name for p in parent.glob(f".{name}.*"))


@pytest.fixture
def exported(tmp_path):
    # a small net (5 segments) keeps every export here quick
    net = make_net(seed=5, stages=[{"channels": 8, "blocks": 1, "exit": True}, {"channels": 8, "blocks": 1}],
                   tasks=[{"name": "class", "outputs": 5}])
    ckpt = tmp_path / "m.cephalon"
    checkpoint.save(net, ckpt)
    pkg = tmp_path / "pkg"
    export_package(ckpt, pkg, ExportSpec("onnx", verify=False))
    return ckpt, pkg, labelled_npz(net, tmp_path / "data.npz", samples=2000, seed=1)


def _spawn(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "cephalon-edge")
    return subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_sigkill_mid_export_keeps_the_previous_package(exported):
    ckpt, pkg, _ = exported
    before = snapshot(pkg)
    proc = _spawn("export", str(ckpt), "--target", "onnx", "-o", str(pkg), "--force")
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the new package is half written
        partial = [p for p in pkg.parent.glob(".pkg.*.partial") if len(list(p.glob("*.onnx"))) >= 2]
        if partial:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert partial, "the export never started writing"
    assert snapshot(pkg) == before  # byte-identical
    assert strays(pkg.parent, "pkg")  # the killed run's temporary is still there...
    res = run_cli("export", str(ckpt), "--target", "onnx", "-o", str(pkg), "--force", "--no-verify")
    assert res.returncode == 0, res.stderr
    assert strays(pkg.parent, "pkg") == []  # ...and the next run removes it


@pytest.mark.slow
def test_sigkill_mid_calibrate_keeps_the_manifest(exported):
    _, pkg, data = exported
    before = snapshot(pkg)
    original = (pkg / "manifest.json").read_bytes()
    untouched = 0
    for delay in (1.0, 1.5, 2.0, 2.5, 3.0):  # kill at several points of the run
        (pkg / "manifest.json").write_bytes(original)
        proc = _spawn("calibrate", str(pkg), "--data", str(data))
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if snapshot(pkg) == before:
            untouched += 1
        else:  # killed after the atomic update: then the manifest is the complete new one
            assert Manifest.open(pkg).data["exit_policy"]["calibrated"] is True
    assert untouched >= 1  # at least one kill landed before the update and changed nothing
    res = run_cli("calibrate", str(pkg), "--data", str(data))
    assert res.returncode == 0, res.stderr
    assert [p.name for p in pkg.iterdir() if p.name.startswith(".")] == []


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
