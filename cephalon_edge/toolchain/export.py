"""`export`: checkpoint -> segments -> converter -> edge package, verified by parity.

Paths, target, quantization and profile are resolved once, before torch is imported.

The package is built in a temporary directory next to the destination and renamed into place
only when complete and verified, so a failed export never touches an existing package.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cephalon_edge import __version__
from cephalon_edge.toolchain.artifacts import ExportSpec, SegmentArtifact
from cephalon_edge.device.data import Dataset, builtin_name, load_dataset, split_index
from cephalon_edge.device.variants import FORMAT as VARIANTS_FORMAT
from cephalon_edge.device.variants import VARIANTS_FILE
from cephalon_edge.device.manifest import (
    FORMAT,
    MANIFEST,
    Manifest,
    sha256_file,
    size_bytes,
    package_version,
)
from cephalon_edge.device.profiles import load_profile
from cephalon_edge.errors import ParityError, UsageError
from cephalon_edge.fsutil import atomic_directory, write_json_atomic
from cephalon_edge.toolchain.gc_policy import collected_less_often
from cephalon_edge.targets import QUANTIZATION_MODES, Target, get_target

if TYPE_CHECKING:
    from cephalon_edge.toolchain.segments import SegmentSet

ProgressCallback = Callable[[str], None]


def resolve(checkpoint: Path, out_dir: Path, spec: ExportSpec) -> ExportSpec:
    """Check everything that can be checked before loading torch or converting anything, once,
    and return the spec with its quantization and profile filled in. Quantization:
    ``--quantize``, else the checkpoint's recipe (from ``compress``), else the target's default."""
    target = get_target(spec.target)
    if not Path(checkpoint).is_file():
        raise UsageError(f"checkpoint not found: {checkpoint}" if not Path(checkpoint).exists()
                         else f"{checkpoint} is not a checkpoint file")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a directory")
        if not spec.force:
            raise UsageError(f"{out_dir} already exists", hint="pass --force to replace it (only once the new package is complete)")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
            raise UsageError(f"{out_dir} is a non-empty directory that is not an edge package; refusing to replace it")
    mode = spec.quantize
    if mode is None:
        from cephalon_edge.toolchain.checkpoint import read_metadata

        mode = (read_metadata(checkpoint).get("quantization") or {}).get("mode")
        if mode in (None, "none"):
            mode = target.default_quantization
        elif mode not in target.quantization:
            raise UsageError(f"the checkpoint's {mode} recipe has no {target.name} realisation",
                             hint=f"pass --quantize with one of: {', '.join(target.quantization)}")
    if mode not in QUANTIZATION_MODES:
        raise UsageError(f"unknown quantization {mode!r}", hint=f"modes: {', '.join(QUANTIZATION_MODES)}")
    if mode not in target.quantization:
        raise UsageError(f"the {target.name} target does not support --quantize {mode} yet",
                         hint=f"{target.name} supports: {', '.join(target.quantization)}")
    profile = load_profile(spec.profile) if spec.profile else {}
    return dataclasses.replace(spec, quantize=mode, profile_settings=profile)


def segment_entry(seg_set: SegmentSet, art: SegmentArtifact, root: Path) -> dict[str, Any]:
    seg = seg_set[art.name]
    path = root / art.file
    return {
        "name": art.name, "kind": seg.kind, "file": art.file, "signature": art.signature,
        "inputs": art.inputs, "outputs": art.outputs,
        "shapes": {"inputs": [list(seg.input_shape)], "outputs": [list(s) for s in seg.output_shapes]},
        "dtypes": {"inputs": ["float32"], "outputs": ["float32"] * len(art.outputs)},
        "sha256": sha256_file(path), "size_bytes": size_bytes(path),
        "flops": seg.flops, "params": seg.params, "parts": seg.parts_entry(), **art.extra,
    }


def build_manifest(seg_set: SegmentSet, artifacts: list[SegmentArtifact], root: Path, spec: ExportSpec,
                   checkpoint: Path, meta: dict[str, Any]) -> dict[str, Any]:
    net_spec = seg_set.net.spec
    static = next((a for a in artifacts if a.name == "static"), None)
    provenance = meta.get("provenance", {})
    return {
        "format": FORMAT,
        "version": package_version(),  # updates may only move a package forward
        "created_by": f"cephalon-edge {__version__}",
        "name": net_spec.name,
        "target": spec.target,
        "quantization": spec.quantize,
        "profile": spec.profile,
        "fused": seg_set.fused,
        "source": {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint),
                   "dataset": provenance.get("dataset")},
        "inputs": net_spec.input_entries(),
        "labels": net_spec.label_names,
        "tasks": [dataclasses.asdict(t) for t in net_spec.tasks],
        "segments": [segment_entry(seg_set, a, root) for a in artifacts if a.name != "static"],
        "program": seg_set.program.to_json(),
        "exit_policy": {"score": "max_softmax", "calibrated": False,
                        "thresholds": {name: spec.threshold for name in net_spec.exit_names[:-1]}},
        "exits": [{k: p[k] for k in ("name", "cumulative_flops", "params")} for p in seg_set.exit_paths()],
        "static": None if static is None else {
            "file": static.file, "sha256": sha256_file(root / static.file), "inputs": static.inputs,
            "outputs": static.outputs,
            "size_bytes": size_bytes(root / static.file), "signature": static.signature},
        "calibration": None,
    }


@collected_less_often()
def export_package(checkpoint: Path, out_dir: Path, spec: ExportSpec,
                   on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Export ``checkpoint`` to an edge package at ``out_dir``; returns the export report. A
    checkpoint with width variants (``compress --widths``) gives a variants package: one
    package per variant beside ``variants.json`` (the static model only in the full one)."""
    spec = resolve(checkpoint, out_dir, spec)  # before torch is imported
    calibration_data, parity_data = real_samples(checkpoint, spec)  # checked before any work too
    from cephalon_edge.toolchain.checkpoint import load_with_metadata

    net, meta = load_with_metadata(checkpoint)
    variants = meta.get("variant_models")
    data = (calibration_data, parity_data)
    with atomic_directory(Path(out_dir), replace=spec.force) as tmp:
        if not variants:
            return _export_into(tmp, net, meta, checkpoint, spec, data, on_progress, Path(out_dir))
        reports = {}
        for name, (width, model) in variants.items():
            (tmp / name).mkdir()
            say = (lambda what, n=name: on_progress(f"{n}: {what}")) if on_progress else None
            reports[name] = _export_into(tmp / name, model, meta, checkpoint,
                                         dataclasses.replace(spec, with_static=spec.with_static and width == 1.0),
                                         data, say, Path(out_dir) / name)
        write_json_atomic(tmp / VARIANTS_FILE, variants_table(variants, reports))
    return {"schema": "cephalon-edge/export/1", "package": str(out_dir), "target": spec.target,
            "quantization": spec.quantize, "checkpoint": str(checkpoint), "variants": reports,
            "size_bytes": sum(r["size_bytes"] for r in reports.values())}


def variants_table(variants: dict[str, Any], reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``variants.json`` of a fresh export: the variants, no operating points until calibrated."""
    return {"format": VARIANTS_FORMAT,
            "variants": [{"name": name, "width": width, "package": name,
                          "flops": reports[name]["exits"][-1]["cumulative_flops"],
                          "params": sum(p.numel() for p in model.parameters()),
                          "size_bytes": reports[name]["size_bytes"]}
                         for name, (width, model) in variants.items()],
            "operating_points": [], "reference": None}


def _export_into(root: Path, net: Any, meta: dict[str, Any], checkpoint: Path, spec: ExportSpec,
                 data: tuple[Dataset | None, Dataset | None], on_progress: ProgressCallback | None,
                 shown_as: Path) -> dict[str, Any]:
    """Convert ``net`` into the package directory ``root``, write its manifest and check
    parity; returns the export report (naming the package ``shown_as``)."""
    from cephalon_edge.toolchain.decompositions import passes_without_repeated_work
    from cephalon_edge.toolchain.parity import check_package, parity_inputs
    from cephalon_edge.toolchain.segments import build_segments
    from cephalon_edge.device.router import Router
    from cephalon_edge.device.runtimes import open_runtime

    calibration_data, parity_data = data
    target = get_target(spec.target)
    converter = target.converter_module()
    seg_set = build_segments(net, fuse=spec.fuse)
    if spec.quantize == "int8":  # the recipe's stored samples, else real training samples, else random
        seg_set.calibration = meta.get("calibration_samples") or \
            parity_inputs(net, calibration_data, n_real=64, n_random=0 if calibration_data else 64)[0]
    started = time.perf_counter()
    with passes_without_repeated_work():
        artifacts = converter.convert(seg_set, spec, root, on_segment=on_progress)
    manifest = build_manifest(seg_set, artifacts, root, spec, checkpoint, meta)
    write_json_atomic(root / MANIFEST, manifest)
    convert_s = time.perf_counter() - started
    coverage, notes = _delegate_coverage(root, spec, target)
    if spec.quantize == "int8" and target.int8_keeps_narrow_float:
        notes += _narrow_convolutions_note(net)
    parity = verification = None
    not_here = target.why_not_here()
    if spec.verify and not_here:
        verification = {"kind": "spec", "reason": f"{not_here}; spec-level checks only",
                        **converter.verify(Manifest.open(root))}
        if on_progress:
            on_progress("spec checks")
    elif spec.verify:
        opened = Manifest.open(root)
        router = Router(opened, open_runtime("auto", opened))
        static = router.runtime.static_runner()
        big = seg_set.exit_paths()[-1]["cumulative_macs"] > 1e9
        inputs, labels = parity_inputs(net, parity_data, n_real=0 if big else 64, n_random=4 if big else 16)
        parity = check_package(net, seg_set, router, inputs, manifest["exit_policy"]["thresholds"], static,
                               quantization=spec.quantize, real_labels=labels)
        router.close()
        if on_progress:
            on_progress("parity")
        if not parity.passed:
            raise ParityError(parity.describe_failure(), hint="--no-verify writes the package anyway")
    return {
        "schema": "cephalon-edge/export/1",
        "package": str(shown_as), "target": spec.target, "quantization": spec.quantize,
        "checkpoint": str(checkpoint), "convert_seconds": round(convert_s, 3),
        "parity": None if parity is None else parity.to_dict(),
        "data": None if parity_data is None else {"calibration": calibration_data.name, "parity": parity_data.name},
        "verification": verification or ({"kind": "parity"} if parity else None),
        "delegate_coverage": coverage, "notes": notes,
        "segments": [{"name": s["name"], "file": s["file"], "kind": s["kind"],
                      "max_abs_err": None if parity is None else parity.segments.get(s["name"]),
                      "flops": s["flops"], "params": s["params"], "size_bytes": s["size_bytes"]}
                     for s in manifest["segments"]],
        "static": manifest["static"],
        "exits": manifest["exits"],
        "size_bytes": sum({s["file"]: s["size_bytes"] for s in manifest["segments"]}.values()),
    }


def real_samples(checkpoint: Path, spec: ExportSpec) -> tuple[Dataset | None, Dataset | None]:
    """(int8 calibration samples, parity samples): the train and val splits of ``--data``, else
    of the checkpoint's own built-in dataset; (None, None) when there is neither. Checked
    against the model before anything is converted."""
    from cephalon_edge.toolchain.checkpoint import read_metadata
    from cephalon_edge.toolchain.spec import ModelSpec

    meta = read_metadata(checkpoint)
    ref = spec.data or (meta.get("provenance") or {}).get("dataset")
    if not ref:
        return None, None
    contract = ModelSpec.from_dict(meta.get("spec")).contract()
    name = builtin_name(ref)
    if name:
        return load_dataset(f"{name}:train", contract), load_dataset(f"{name}:val", contract)
    whole = load_dataset(ref, contract, label_map=spec.label_map)
    return tuple(whole.subset(split_index(len(whole), s)) for s in ("train", "val"))  # type: ignore[return-value]


def _narrow_convolutions_note(net: Any) -> list[str]:
    """The note an int8 export leaves when its converter kept convolutions float32."""
    from cephalon_edge.toolchain.compress.quantize import narrow_convolution
    from cephalon_edge.toolchain.compress.spec import FLOAT_BELOW_CHANNELS

    narrow = [name for name, m in net.named_modules() if narrow_convolution(m)]
    if not narrow:
        return []
    return [f"int8 kept {len(narrow)} convolution(s) with fewer than {FLOAT_BELOW_CHANNELS} input channels in "
            f"float32, where the runtime's int8 kernels are slower: {', '.join(narrow)}"]


def _delegate_coverage(root: Path, spec: ExportSpec, target: Target) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """Which ops each segment's delegate runs: as lowered, where the converter knows
    (``delegate_coverage(manifest)``: ExecuTorch); else, with a profile, on a target with
    documented delegate op lists (TFLite), which ops the profile's delegate supports."""
    from cephalon_edge.toolchain.delegates import coverage, deprecation_note, documented_ops

    notes = []
    preferred = spec.profile_settings.get("target")
    if spec.profile and preferred and preferred != target.name:
        notes.append(f"profile {spec.profile} prefers the {preferred} target")
    if target.delegate_coverage == "lowered":
        return target.lowering_converter().delegate_coverage(Manifest.open(root, verify=False)), notes
    if not spec.profile or target.delegate_coverage != "documented":
        return None, notes
    delegate = spec.profile_section("runtime").get("delegate", "cpu")
    if delegate not in documented_ops():  # a vendor NPU: its op list is the vendor's, measured on the device
        notes.append(f"no documented op list for the {delegate} delegate: see where each op runs with "
                     f"`bench --hub` or `bench --device --ops`")
        return None, notes
    note = deprecation_note(delegate)
    if note:
        notes.append(note)
    return coverage(Manifest.open(root, verify=False), delegate), notes
