"""Edge packages: a directory of segment files plus ``manifest.json`` (torch-free).

Opening a package validates the manifest, refuses file names that leave the package
directory and checks every file against its sha256, so a tampered or half-copied package
never runs.
"""

from __future__ import annotations

import hashlib
import time
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cephalon_edge.device.program import Program
from cephalon_edge.device.scores import SCORES
from cephalon_edge.errors import ConcurrentChange, PackageError
from cephalon_edge.fsutil import (
    loads_json,
    regular_file,
    write_json_atomic,
    writer_lock,
)
from cephalon_edge.targets import TARGETS

FORMAT = "cephalon-edge/2"  # 2: program steps name their part with "part" (1: "segment")
READABLE_FORMATS = {"cephalon-edge/1": "segment", FORMAT: "part"}  # format -> the steps' part key
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 8 << 20  # a large model's manifest is tens of kB
MAX_ELEMENTS = 1 << 26  # per sample, of any input or segment tensor (the spec's MAX_INPUT)
TRUST_FILE = "trust.json"  # the keys a package pins (device/updates/trust.py); never a segment
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


def package_version() -> int:
    """A new package version: microseconds since the epoch, so every export or manifest write
    makes the package newer than what it replaces (updates may only move forward)."""
    return time.time_ns() // 1000


def package_version_of(manifest: dict[str, Any]) -> int:
    """A manifest's version (0 for packages written before versions)."""
    version = manifest.get("version", 0)
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


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


@dataclass(frozen=True)
class PartEntry:
    """Where one part of the program lives: its segment, and which of the segment's outputs
    are the part's (a fused segment returns the representation and its decision's outputs;
    its inner parts return nothing of their own)."""

    name: str
    segment: str
    position: int  # in its segment; the segment runs when its first part is called
    outputs: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    kind: str
    flops: float
    params: int


@dataclass
class Manifest:
    """A validated manifest and the directory it describes. Read it through these
    properties; ``data`` is the raw JSON, for writers."""

    root: Path
    data: dict[str, Any]
    read_sha256: str = ""  # of manifest.json as it was read, so a writer can tell it changed since
    program: Program = field(init=False, repr=False)
    parts: dict[str, PartEntry] = field(init=False, repr=False)  # every part of the program

    @property
    def target(self) -> str:
        return self.data["target"]

    @property
    def quantization(self) -> str:
        return self.data["quantization"]

    @property
    def segments(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.data["segments"]}

    def segment_parts(self, segment: str) -> list[PartEntry]:
        return sorted((p for p in self.parts.values() if p.segment == segment), key=lambda p: p.position)

    def part_costs(self, segment_cost: dict[str, float]) -> dict[str, float]:
        """Per part, the cost of running it given each segment's: a fused segment's whole cost
        falls on its first part (every sample that calls it runs all of it), none on the rest."""
        return {name: segment_cost[p.segment] if p.position == 0 else 0.0 for name, p in self.parts.items()}

    @property
    def part_flops(self) -> dict[str, float]:
        return {name: p.flops for name, p in self.parts.items()}

    @property
    def segment_files(self) -> list[str]:
        """Every segment file once, in order (several segments may share one file)."""
        return list(dict.fromkeys(s["file"] for s in self.data["segments"]))

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.data["inputs"]}

    @property
    def labels(self) -> list[str]:
        return self.data["labels"]

    @property
    def main_task(self) -> str:
        return self.data["tasks"][0]["name"]

    @property
    def exit_names(self) -> list[str]:
        return self.program.exit_names

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.data["exit_policy"]["thresholds"])

    @property
    def score(self) -> str:
        """The exit score the thresholds are for (``max_softmax``, ``entropy``, ``patience``)."""
        return self.data["exit_policy"].get("score", "max_softmax")

    @property
    def calibrated(self) -> bool:
        return bool(self.data["exit_policy"].get("calibrated", False))

    @property
    def source_dataset(self) -> str | None:
        """The built-in dataset the source checkpoint was trained on, if any."""
        return (self.data.get("source") or {}).get("dataset")

    @property
    def static(self) -> dict[str, Any] | None:
        """The plain full-depth model's entry (file, inputs, outputs, signature), if any."""
        return self.data.get("static")

    @property
    def segment_latency(self) -> dict[str, Any]:
        """Per-segment latency cached by calibrate: ``{key, segment_ms}``, or {}."""
        return self.data.get("segment_latency") or {}

    def file_of(self, segment: str) -> Path:
        return safe_member(self.root, self.segments[segment]["file"])

    def member(self, name: str) -> Path:
        """The path of package file ``name`` (refused if it would leave the package)."""
        return safe_member(self.root, name)

    def static_file(self) -> Path | None:
        """The static model's path, its sha256 checked now (it is opened later than the segments)."""
        if not self.static:
            return None
        path = safe_member(self.root, self.static["file"])
        regular_file(path, "package file", PackageError, allow_symlink=False, allow_dir=True)
        if sha256_file(path) != self.static["sha256"]:
            raise PackageError(f"{self.root}: {self.static['file']} does not match its sha256 in the manifest "
                               "(modified or replaced since the package was opened)", hint="re-export the package")
        return path

    # ---- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, verify: bool = True) -> "Manifest":
        """Read and validate ``root/manifest.json``; with ``verify``, check every file's sha256."""
        root = Path(root)
        if not root.is_dir():
            raise PackageError(f"edge package not found: {root}" if not root.exists()
                               else f"{root} is a file, not an edge package directory",
                               hint="create one with `cephalon-edge export CKPT --target onnx -o DIR`")
        path = root / MANIFEST
        if not path.exists() and not path.is_symlink():
            raise PackageError(f"{root}: no {MANIFEST}; not an edge package")
        regular_file(path, "package manifest", PackageError, MAX_MANIFEST_BYTES, allow_symlink=False)
        raw = path.read_bytes()
        data = loads_json(raw, str(path), PackageError)
        manifest = cls(root, data, hashlib.sha256(raw).hexdigest())
        manifest.validate()
        if verify:
            manifest.verify_files()
        return manifest

    def validate(self) -> None:
        """Check every key the router relies on, with its type, before anything runs."""
        d = self.data
        where = f"{self.root}/{MANIFEST}"

        def bad(field: str, why: str) -> PackageError:
            return PackageError(f"{where}: {field}: {why}", hint="re-export the package")

        if not isinstance(d, dict):
            raise PackageError(f"{where}: expected a JSON object")
        if not isinstance(d.get("format"), str) or d["format"] not in READABLE_FORMATS:
            raise PackageError(f"{where}: unsupported format {str(d.get('format'))[:40]!r}",
                               hint=f"this cephalon-edge reads {', '.join(READABLE_FORMATS)}")
        for key in TOP_KEYS:
            if key not in d:
                raise bad(key, "missing")
        if not isinstance(d["target"], str) or d["target"] not in TARGETS:
            raise bad("target", f"unknown target {str(d['target'])[:40]!r}")
        _typed(d["quantization"], str, "quantization", bad)
        _list_of(d["labels"], str, "labels", bad)
        inputs = _list_of(d["inputs"], dict, "inputs", bad)
        if not inputs:
            raise bad("inputs", "no input modality")
        for i, m in enumerate(inputs):
            _typed(m.get("name"), str, f"inputs[{i}].name", bad)
            _dims(m.get("shape"), f"inputs[{i}].shape", bad, positive=True)
            if m.get("dtype") != "float32":
                raise bad(f"inputs[{i}].dtype", "only float32 inputs are supported")
            if "vocab" in m and (not isinstance(m["vocab"], int) or isinstance(m["vocab"], bool) or m["vocab"] < 1):
                raise bad(f"inputs[{i}].vocab", "must be a positive integer")
        tasks = _list_of(d["tasks"], dict, "tasks", bad)
        if not tasks or not isinstance(tasks[0].get("name"), str):
            raise bad("tasks", "needs at least the classification task, with a name")
        names: dict[str, dict[str, Any]] = {}
        for i, seg in enumerate(_list_of(d["segments"], dict, "segments", bad)):
            for key in SEGMENT_KEYS:
                if key not in seg:
                    raise bad(f"segments[{i}]", f"missing {key!r}")
            _typed(seg["name"], str, f"segments[{i}].name", bad)
            if seg["name"] in names:
                raise bad(f"segments[{i}].name", f"duplicate segment {seg['name']!r}")
            safe_member(self.root, seg["file"])
            _typed(seg["sha256"], str, f"segments[{i}].sha256", bad)
            if seg.get("signature") is not None:
                _typed(seg["signature"], str, f"segments[{i}].signature", bad)
            _list_of(seg["inputs"], str, f"segments[{i}].inputs", bad)
            if not _list_of(seg["outputs"], str, f"segments[{i}].outputs", bad):
                raise bad(f"segments[{i}].outputs", "no outputs")
            shapes = _typed(seg["shapes"], dict, f"segments[{i}].shapes", bad)
            for part in ("inputs", "outputs"):
                for j, dims in enumerate(_list_of(shapes.get(part), list, f"segments[{i}].shapes.{part}", bad)):
                    _dims(dims, f"segments[{i}].shapes.{part}[{j}]", bad)
            if len(shapes["inputs"]) != 1 or len(shapes["outputs"]) != len(seg["outputs"]):
                raise bad(f"segments[{i}].shapes", "do not match the segment's inputs and outputs")
            names[seg["name"]] = seg
        parts = _parts(names, bad)
        self.program = Program.parse(d["program"], {n: len(p.outputs) for n, p in parts.items()},
                                     [m["name"] for m in inputs], where=f"{where}: program",
                                     part_key=READABLE_FORMATS[d["format"]])
        for name in names:
            chain = sorted((p for p in parts.values() if p.segment == name), key=lambda p: p.position)
            why = self.program.chain_error([p.name for p in chain]) if len(chain) > 1 else None
            if why:
                raise bad(f"segments[{name}].parts", why)
        self.parts = parts
        if "version" in d and (not isinstance(d["version"], int) or isinstance(d["version"], bool) or d["version"] < 0):
            raise bad("version", "must be a non-negative integer")
        if any(isinstance(seg, dict) and seg.get("file") == TRUST_FILE for seg in d["segments"]):
            raise bad("segments", f"no segment may be called {TRUST_FILE} (the package's pinned keys)")
        policy = _typed(d["exit_policy"], dict, "exit_policy", bad)
        thresholds = _typed(policy.get("thresholds"), dict, "exit_policy.thresholds", bad)
        early = self.program.early_exits
        if sorted(thresholds) != sorted(early):
            raise bad("exit_policy.thresholds", f"must name exactly the early exits {early}")
        for name, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(f"exit_policy.thresholds.{name}", "must be a finite number")
        if policy.get("score", "max_softmax") not in SCORES:
            raise bad("exit_policy.score", f"must be one of {', '.join(SCORES)}")
        if d.get("static") is not None:
            static = _typed(d["static"], dict, "static", bad)
            safe_member(self.root, static.get("file"))
            _typed(static.get("sha256"), str, "static.sha256", bad)
            _list_of(static.get("outputs"), str, "static.outputs", bad)
            if "inputs" in static:  # one per package input, in order
                if len(_list_of(static["inputs"], str, "static.inputs", bad)) != len(inputs):
                    raise bad("static.inputs", f"must name {len(inputs)} inputs, one per package input")

    def write_sections(self, **sections: Any) -> None:
        """Replace top-level sections of ``manifest.json`` atomically. Refused (exit 1) when the
        file on disk is no longer the one this manifest was read from: another writer (an
        export replacing the package, another calibrate) got there first."""
        path = self.root / MANIFEST
        with writer_lock(self.root):
            try:
                now = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                now = None
            if now != self.read_sha256:
                raise ConcurrentChange(f"{path} changed while this command ran (another export or calibrate wrote "
                                       f"the package); nothing was written",
                                       hint="run the command again once the other one has finished")
            data = {**self.data, **sections,
                    "version": max(package_version_of(self.data) + 1, package_version())}  # newer, always
            write_json_atomic(path, data)
        self.data = data
        self.read_sha256 = sha256_file(path)

    def member_files(self) -> dict[str, str]:
        """Every file the manifest names (segments, the static model) and its sha256."""
        expected: dict[str, str] = {}
        for seg in self.data["segments"]:
            expected.setdefault(seg["file"], seg["sha256"])
        if self.data.get("static"):
            expected[self.data["static"]["file"]] = self.data["static"]["sha256"]
        return expected

    def verify_files(self) -> None:
        for name, digest in self.member_files().items():
            path = safe_member(self.root, name)
            if not path.exists() and not path.is_symlink():
                raise PackageError(f"{self.root}: segment file {name} is missing", hint="re-export the package")
            regular_file(path, "package file", PackageError, allow_symlink=False, allow_dir=True)
            if sha256_file(path) != digest:
                raise PackageError(f"{self.root}: {name} does not match its sha256 in the manifest (modified or corrupt)",
                                   hint="re-export the package; never edit segment files in place")


def _parts(segments: dict[str, dict[str, Any]], bad: Any) -> dict[str, PartEntry]:
    """Every part, from the segments' ``parts`` lists (a segment without one is one part of
    the same name, all its outputs its own: packages exported before fusion)."""
    parts: dict[str, PartEntry] = {}
    for name, seg in segments.items():
        shapes = [tuple(s) for s in seg["shapes"]["outputs"]]
        listed = seg.get("parts")
        if listed is None:
            listed = [{"name": name, "kind": seg.get("kind", "segment"), "outputs": list(range(len(shapes))),
                       "flops": seg.get("flops", 0), "params": seg.get("params", 0)}]
        where = f"segments[{name}].parts"
        claimed: set[int] = set()
        for j, part in enumerate(_list_of(listed, dict, where, bad)):
            pname = _typed(part.get("name"), str, f"{where}[{j}].name", bad)
            if pname in parts:
                raise bad(f"{where}[{j}].name", f"part {pname!r} is in two segments")
            outs = _list_of(part.get("outputs"), int, f"{where}[{j}].outputs", bad)
            if any(isinstance(o, bool) or not 0 <= o < len(shapes) or o in claimed for o in outs):
                raise bad(f"{where}[{j}].outputs", "must pick distinct outputs of the segment")
            if not outs and (len(listed) == 1 or j >= len(listed) - 2):
                # only the inner parts of a chain hand nothing out (the chain carries their result)
                raise bad(f"{where}[{j}].outputs", "must pick at least one output of the segment")
            claimed.update(outs)
            for key in ("flops", "params"):
                value = part.get(key, 0)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise bad(f"{where}[{j}].{key}", "must be a non-negative number")
            parts[pname] = PartEntry(pname, name, j, tuple(outs), tuple(shapes[o] for o in outs),
                                     str(part.get("kind", "segment")), float(part.get("flops", 0)),
                                     int(part.get("params", 0)))
        if not listed:
            raise bad(where, "a segment holds at least one part")
    return parts


def _typed(value: Any, kind: type, field: str, bad: Any) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(field, f"must be a {kind.__name__}")
    return value


def _list_of(value: Any, kind: type, field: str, bad: Any) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise bad(field, f"must be a list of {kind.__name__}")
    return value


def _dims(value: Any, field: str, bad: Any, positive: bool = False) -> None:
    lowest = 1 if positive else 0
    if not isinstance(value, list) or len(value) > 8 or not all(
            isinstance(v, int) and not isinstance(v, bool) and lowest <= v <= 1 << 20 for v in value):
        raise bad(field, "must be a short list of sizes")
    if math.prod(value) > MAX_ELEMENTS:  # per sample; bounded like a checkpoint's input
        raise bad(field, f"{math.prod(value)} elements per sample; at most {MAX_ELEMENTS}")
