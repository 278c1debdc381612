"""The package installs as one `cephalon_edge` tree: converters, runtimes and profiles inside it."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_normal_install_puts_everything_inside_the_package(tmp_path):
    import shutil
    source = tmp_path / "src"  # build from a copy: setuptools builds in-tree and leaves build/ behind
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                                ".pytest_cache", ".hypothesis"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=600)
    assert not (target / "converters").exists() and not (target / "runtimes").exists()
    code = ("import cephalon_edge, cephalon_edge.build.converters, cephalon_edge.device.runtimes, cephalon_edge.profiles;"
            "from importlib.resources import files;"
            "print(cephalon_edge.__file__); print(sorted(p.name for p in files('cephalon_edge.profiles').iterdir() if p.name.endswith('.toml')))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(target))
    assert "host-cpu.toml" in lines[1]


def test_editable_install_maps_top_level_folders():
    import cephalon_edge.build.converters
    import cephalon_edge.device.runtimes

    assert cephalon_edge.build.converters.__file__.startswith(str(REPO / "converters"))
    assert cephalon_edge.device.runtimes.__file__.startswith(str(REPO / "runtimes"))
