"""Edge packages: a directory of segment files plus ``manifest.json`` (torch-free).

Opening a package validates the manifest, refuses file names that leave the package
directory and checks every file against its sha256, so a tampered or half-copied package
never runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PackageError

FORMAT = "cephalon-edge/1"
MANIFEST = "manifest.json"
DEFAULT_THRESHOLD = 0.9
SEGMENT_KEYS = ("name", "file", "inputs", "outputs", "shapes", "dtypes", "sha256")
TOP_KEYS = ("format", "target", "quantization", "inputs", "labels", "tasks", "segments", "program", "exit_policy")


def sha256_file(path: Path) -> str:
    """sha256 of a file, or of a directory tree (Core ML .mlpackage): its relative paths and
    file contents in sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(member.relative_to(path).as_posix().encode() + b"\0" + sha256_file(member).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_bytes(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def safe_member(root: Path, name: Any) -> Path:
    """The path of package member ``name``; refuses anything that would leave ``root``."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name or name.startswith("~"):
        raise PackageError(f"package file name {name!r} is not a plain file name inside the package",
                           hint="a manifest may only name files in its own directory")
    path = root / name
    if path.resolve().parent != root.resolve():
        raise PackageError(f"package file {name!r} resolves outside the package directory")
    return path


@dataclass
class Manifest:
    """A validated manifest and the directory it describes."""

    root: Path
    data: dict[str, Any]

    @property
    def target(self) -> str:
        return self.data["target"]

    @property
    def segments(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.data["segments"]}

    @property
    def program(self) -> list[dict[str, Any]]:
        return self.data["program"]

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.data["inputs"]}

    @property
    def labels(self) -> list[str]:
        return self.data["labels"]

    @property
    def exit_names(self) -> list[str]:
        return [s["exit"] for s in self.program if s["op"] in ("exit", "final")]

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.data["exit_policy"]["thresholds"])

    def file_of(self, segment: str) -> Path:
        return safe_member(self.root, self.segments[segment]["file"])

    def static_file(self) -> Path | None:
        static = self.data.get("static")
        return safe_member(self.root, static["file"]) if static else None

    # ---- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, verify: bool = True) -> "Manifest":
        """Read and validate ``root/manifest.json``; with ``verify``, check every file's sha256."""
        root = Path(root)
        if not root.is_dir():
            raise PackageError(f"edge package not found: {root}" if not root.exists()
                               else f"{root} is a file, not an edge package directory",
                               hint="create one with `cephalon-edge export CKPT --target onnx -o DIR`")
        try:
            data = json.loads((root / MANIFEST).read_text())
        except FileNotFoundError:
            raise PackageError(f"{root}: no {MANIFEST}; not an edge package") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PackageError(f"{root}/{MANIFEST}: not valid JSON ({exc})") from None
        manifest = cls(root, data)
        manifest.validate()
        if verify:
            manifest.verify_files()
        return manifest

    def validate(self) -> None:
        d = self.data
        where = f"{self.root}/{MANIFEST}"
        if not isinstance(d, dict):
            raise PackageError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT:
            raise PackageError(f"{where}: unsupported format {d.get('format')!r}", hint=f"this cephalon-edge reads {FORMAT}")
        for key in TOP_KEYS:
            if key not in d:
                raise PackageError(f"{where}: missing key {key!r}")
        for key in ("inputs", "segments", "program", "labels"):
            if not isinstance(d[key], list):
                raise PackageError(f"{where}: {key!r} must be a list")
        names = set()
        for i, seg in enumerate(d["segments"]):
            if not isinstance(seg, dict):
                raise PackageError(f"{where}: segments[{i}] must be an object")
            for key in SEGMENT_KEYS:
                if key not in seg:
                    raise PackageError(f"{where}: segments[{i}] is missing {key!r}")
            safe_member(self.root, seg["file"])
            names.add(seg["name"])
        for i, step in enumerate(d["program"]):
            if not isinstance(step, dict) or "op" not in step:
                raise PackageError(f"{where}: program[{i}] must be an object with an 'op'")
            for ref in _step_segments(step):
                if ref not in names:
                    raise PackageError(f"{where}: program[{i}] names unknown segment {ref!r}")
        policy = d["exit_policy"]
        if not isinstance(policy, dict) or not isinstance(policy.get("thresholds"), dict):
            raise PackageError(f"{where}: exit_policy.thresholds must be an object")
        for m in d["inputs"]:
            if not isinstance(m, dict) or not {"name", "shape", "dtype"} <= set(m):
                raise PackageError(f"{where}: each input needs name, shape and dtype")
        if d.get("static"):
            safe_member(self.root, d["static"].get("file"))

    def verify_files(self) -> None:
        expected: dict[str, str] = {}
        for seg in self.data["segments"]:
            expected.setdefault(seg["file"], seg["sha256"])
        if self.data.get("static"):
            expected[self.data["static"]["file"]] = self.data["static"]["sha256"]
        for name, digest in expected.items():
            path = safe_member(self.root, name)
            if not path.exists():
                raise PackageError(f"{self.root}: segment file {name} is missing", hint="re-export the package")
            if sha256_file(path) != digest:
                raise PackageError(f"{self.root}: {name} does not match its sha256 in the manifest (modified or corrupt)",
                                   hint="re-export the package; never edit segment files in place")


def _step_segments(step: dict[str, Any]) -> list[str]:
    op = step.get("op")
    if op == "encode":
        return list(step.get("adapters", {}).values())
    if op in ("gate",):
        return [step.get("gate"), step.get("block")]
    if op == "moe":
        return [step.get("gate"), *step.get("experts", [])]
    if op in ("run", "exit", "final"):
        return [step.get("segment"), *step.get("tasks", {}).values()]
    raise PackageError(f"unknown program step {op!r}", hint="this package needs a newer cephalon-edge")
