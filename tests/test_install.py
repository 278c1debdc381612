"""The package installs like a user installs it: a wheel holding every subpackage, with
converters, runtimes and profiles inside ``cephalon_edge``; the device half alone (no torch)
runs, benches and calibrates a package; the build half says which extra it needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, labelled_npz, make_net

# installed name -> folder in the repository (setup.py maps them the same way)
INSIDE = {"cephalon_edge.toolchain.converters": "converters", "cephalon_edge.device.runtimes": "runtimes",
          "cephalon_edge.profiles": "profiles"}


def installer(venv: Path) -> list[str]:
    """What installs into ``venv``: uv where `./dev` put it beside this Python (the same wheel,
    extras and resolution from PyPI as pip, in a quarter of the time), else the venv's pip."""
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():
        return [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    return [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]


def source_packages() -> set[str]:
    """Every package the source tree holds, under its installed name."""
    names = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cephalon_edge").rglob("__init__.py")}
    for name, folder in INSIDE.items():
        names |= {".".join((name, *p.parent.relative_to(REPO / folder).parts)) for p in (REPO / folder).rglob("__init__.py")}
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"  # build from a copy: setuptools builds in-tree and leaves build/ behind
    junk = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")
    shutil.copytree(REPO, source, ignore=lambda d, names: junk(d, names) | ({"build"} if Path(d) == REPO else set()))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root),
                    str(source)], check=True, capture_output=True, timeout=600)
    return next(root.glob("cephalon_edge-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_inside_cephalon_edge(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packaged == source_packages()
    assert not any(n.startswith(("converters/", "runtimes/", "profiles/")) for n in names)
    assert "cephalon_edge/profiles/host-cpu.toml" in names and "cephalon_edge/toolchain/delegate_ops.json" in names
    # every module of the wheel imports in the full environment
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in names
                     if n.startswith("cephalon_edge/") and n.endswith(".py"))
    code = (f"import importlib, sys; sys.path.insert(0, {str(site)!r})\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "import cephalon_edge; print(cephalon_edge.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith(str(site))


@pytest.mark.slow
def test_device_half_alone_runs_benches_and_calibrates(wheel, tmp_path):
    from cephalon_edge.toolchain import checkpoint
    from cephalon_edge.toolchain.artifacts import ExportSpec
    from cephalon_edge.toolchain.export import export_package

    net = make_net(seed=3, stages=[{"channels": 8, "blocks": 1, "exit": True}, {"channels": 8, "blocks": 1}],
                   tasks=[{"name": "class", "outputs": 5}])
    checkpoint.save(net, tmp_path / "m.cephalon")
    pkg = tmp_path / "pkg"
    export_package(tmp_path / "m.cephalon", pkg, ExportSpec("onnx", with_static=True, verify=False))
    manifest = json.loads((pkg / "manifest.json").read_text())  # as a zoo package: it names a built-in dataset
    manifest["source"]["dataset"] = "digits"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    data = labelled_npz(net, tmp_path / "data.npz", samples=400, seed=2)
    np.save(tmp_path / "x.npy", np.load(data)["image"][0])

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    pip = subprocess.run([*installer(venv), f"{wheel}[onnx]"], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    python, exe = venv / "bin" / "python", venv / "bin" / "cephalon-edge"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0  # no torch there

    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    res = cli("run", str(pkg), str(tmp_path / "x.npy"), "--json", str(tmp_path / "run.json"))
    assert res.returncode == 0, res.stderr
    prediction = json.loads((tmp_path / "run.json").read_text())["predictions"][0]
    assert prediction["prediction"] == int(np.load(data)["labels"][0])  # labels are the net's own predictions
    # the package names a built-in dataset that only the build half generates: bench without
    # --data still times every segment and says why end to end was skipped; a built-in split
    # is refused in one line naming the extra (scikit-learn is never imported here)
    res = cli("bench", str(pkg), "--runs", "2", "--warmup", "1", "--json", str(tmp_path / "bare.json"))
    assert res.returncode == 0, res.stderr
    bare = json.loads((tmp_path / "bare.json").read_text())
    assert bare["end_to_end"] is None and "build half" in bare["note"] and len(bare["segments"]) >= 2
    res = cli("bench", str(pkg), "--data", "digits:test", "--runs", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "No module named" not in res.stderr
    assert "pip install 'cephalon-edge[export]'" in res.stderr
    res = cli("bench", str(pkg), "--data", str(data), "--runs", "3", "--warmup", "1", "--samples", "20",
              "--json", str(tmp_path / "bench.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["static"]["mean_ms"] > 0
    shutil.copytree(pkg, tmp_path / "pkg-v1")
    res = cli("calibrate", str(pkg), "--data", str(data))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["exit_policy"]["calibrated"] is True
    # a manifest-only field update needs no extra; signatures name theirs
    assert cli("diff", str(tmp_path / "pkg-v1"), str(pkg), "-o", str(tmp_path / "u")).returncode == 0
    res = cli("apply", str(tmp_path / "pkg-v1"), str(tmp_path / "u"), "--trust", str(tmp_path / "u"))
    assert res.returncode == 2 and "pip install 'cephalon-edge[update]'" in res.stderr
    res = cli("apply", str(tmp_path / "pkg-v1"), str(tmp_path / "u"), "--allow-unsigned")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pkg-v1" / "manifest.json").read_bytes() == (pkg / "manifest.json").read_bytes()
    # the build half says which extra it needs, in one line
    res = cli("export", str(tmp_path / "m.cephalon"), "--target", "onnx", "-o", str(tmp_path / "again"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pip install 'cephalon-edge[export]'" in res.stderr
    assert not (tmp_path / "again").exists()


def test_editable_install_maps_top_level_folders():
    import cephalon_edge.toolchain.converters
    import cephalon_edge.device.runtimes

    assert cephalon_edge.toolchain.converters.__file__.startswith(str(REPO / "converters"))
    assert cephalon_edge.device.runtimes.__file__.startswith(str(REPO / "runtimes"))
