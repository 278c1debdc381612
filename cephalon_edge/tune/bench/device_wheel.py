"""The device half as a wheel, built from this checkout, for ``bench --ssh --setup``: the
board installs exactly the code the host runs. Wheels are cached by a hash of the sources."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cephalon_edge
from cephalon_edge.errors import DeviceError, UsageError
from cephalon_edge.tune.bench.device import cache_dir

SOURCES = ("cephalon_edge", "converters", "runtimes", "profiles")
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def checkout() -> Path:
    """The source checkout this cephalon-edge runs from (an editable install)."""
    root = Path(cephalon_edge.__file__).resolve().parent.parent
    if not all((root / name).is_file() for name in ("pyproject.toml", "setup.py")):
        raise UsageError("--setup builds the device half from a source checkout, and this install is not one",
                         hint="install cephalon-edge on the board yourself into ~/.cache/cephalon-edge/board/venv "
                              "(python3 -m venv ...; pip install 'cephalon-edge[onnx]'), or run from a checkout")
    return root


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for name in BUILD_FILES:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    for top in SOURCES:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def device_wheel() -> Path:
    """This checkout's wheel (``cephalon_edge-<version>-py3-none-any.whl``), built once per
    source state into the cache."""
    root = checkout()
    out = cache_dir() / "wheels" / source_hash(root)[:16]
    found = sorted(out.glob("cephalon_edge-*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(prefix="cephalon-wheel-") as tmp:
        source = Path(tmp) / "src"  # build from a copy: setuptools leaves build/ in the tree it builds
        source.mkdir()
        for name in BUILD_FILES:
            shutil.copy2(root / name, source / name)
        for top in SOURCES:
            shutil.copytree(root / top, source / top, ignore=SKIP)
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                                "-w", str(Path(tmp) / "dist"), str(source)], capture_output=True, text=True)
        wheels = sorted((Path(tmp) / "dist").glob("cephalon_edge-*.whl"))
        if built.returncode != 0 or not wheels:
            last = (built.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise DeviceError(f"could not build the device half's wheel: {last}")
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f".{wheels[0].name}.part"
        shutil.copyfile(wheels[0], partial)
        partial.rename(out / wheels[0].name)
    return out / wheels[0].name


def host_version() -> str:
    return cephalon_edge.__version__
