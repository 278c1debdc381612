"""ExecuTorch: every segment a method of one multi-method ``segments.pte``, lowered to XNNPACK.

Each segment is captured with ``torch.export`` at batch 1 (the runtime loops over larger
batches, as for LiteRT) and all of them are lowered together with
``to_edge_transform_and_lower({method: program, ...})``, so the package is one program whose
shared weights are stored once. A profile's ``[executorch] backend`` picks the partitioner:
``xnnpack`` (default), ``portable`` (no delegate: ExecuTorch's portable CPU kernels), or
``coreml`` (ExecuTorch's Core ML delegate; its programs run on Apple devices only).

int8: PT2E with ExecuTorch's XNNPACK quantizer (per-channel symmetric int8 weights, int8
activations) on the convolutions, each segment calibrated on the activations that really
reach it (exit-aware); classifiers, gates and exit scores stay float, as on the other targets.

Which ops each method hands to the delegate and which stay on the portable kernels is read
from the lowered program and stored in the manifest (``delegation``).
"""

from __future__ import annotations

import platform
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from cephalon_edge.capture import captured_output

from cephalon_edge.toolchain.artifacts import ExportSpec, SegmentArtifact, identifier
from cephalon_edge.toolchain.segments import SegmentSet, StaticModel, calibration_inputs, segment_feeds
from cephalon_edge.errors import ExportError, UsageError
from cephalon_edge.targets import EXECUTORCH_BACKENDS

SEGMENTS_FILE = "segments.pte"
STATIC_FILE = "static.pte"
STATIC_METHOD = "forward"
CALIBRATION_SAMPLES = 64


def backend(spec: ExportSpec) -> str:
    """The profile's ``[executorch] backend`` (default xnnpack), checked where it can run."""
    name = spec.profile_section("executorch").get("backend", "xnnpack")
    if name not in EXECUTORCH_BACKENDS:
        raise UsageError(f"unknown ExecuTorch backend {name!r}", hint=f"one of {', '.join(EXECUTORCH_BACKENDS)}")
    if name == "coreml" and platform.system() != "Darwin":
        raise UsageError("ExecuTorch's Core ML delegate lowers and runs on macOS only (this is "
                         f"{platform.system()})", hint="use a profile with [executorch] backend = \"xnnpack\"")
    return name


def _first_line(exc: BaseException, log: list[str] | None = None) -> str:
    """What a failure says, in one line: the exception's first line, else the captured log's last."""
    said = str(exc).strip().splitlines() or "".join(log or []).strip().splitlines()[-1:]
    return (said or [type(exc).__name__])[0][:300]


def _partitioners(name: str) -> list[Any]:
    if name == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        return [XnnpackPartitioner()]
    if name == "coreml":
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner
        return [CoreMLPartitioner()]
    return []


def _capture(module, example: tuple):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(module, torch.nn.Module) and not isinstance(module, torch.fx.GraphModule):
            module = module.eval()  # a converted PT2E graph has no train/eval mode
        return torch.export.export(module, example, strict=False)


def _quantized(module, example: tuple, samples: list[tuple]):
    """The module with int8 convolutions (PT2E, XNNPACK's quantizer), calibrated on ``samples``."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer()
    for conv in (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default):  # with their BN and ReLU
        quantizer.set_operator_type(conv, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(_capture(module, example).module(), quantizer)
        with torch.no_grad():
            for sample in samples:
                prepared(*sample)
        return convert_pt2e(prepared)


def _calibration(segments: SegmentSet) -> dict[str, list[tuple]]:
    """Per segment, batch-1 inputs that really reach it (from the model inputs, or random ones)."""
    feeds = segment_feeds(segments, calibration_inputs(segments, CALIBRATION_SAMPLES))
    return {name: [(x[i:i + 1],) for i in range(len(x))] for name, x in feeds.items()}


def delegation(graph_module, backend_name: str) -> dict[str, Any]:
    """``{backend, delegated: {op: count}, portable: {op: count}}`` of one lowered method: the
    ops its delegate runs, and those left to ExecuTorch's portable CPU kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    count = {kind: Counter({op: getattr(b, kind) for op, b in info.delegation_by_operator.items() if getattr(b, kind)})
             for kind in ("delegated", "non_delegated")}
    for kind in count.values():
        for op in ("getitem", "alloc"):  # bookkeeping nodes, not kernels
            kind.pop(op, None)
    return {"backend": backend_name, "delegated": dict(sorted(count["delegated"].items())),
            "portable": dict(sorted(count["non_delegated"].items()))}


def delegate_coverage(manifest: Any) -> list[dict[str, Any]]:
    """Per segment, the ops of its method the delegate runs and those that stay on the portable
    CPU kernels, as lowered (the export report's ``delegate_coverage``)."""
    rows = []
    for name, seg in manifest.segments.items():
        info = seg.get("delegation") or {"backend": "portable", "delegated": {}, "portable": {}}
        rows.append({"segment": name, "parts": [p.name for p in manifest.segment_parts(name)],
                     "delegate": info["backend"], "source": "lowered program",
                     "ops": sum(info["delegated"].values()) + sum(info["portable"].values()),
                     "supported_ops": list(info["delegated"]), "unsupported_ops": list(info["portable"])})
    return rows


def _lower(programs: dict[str, Any], backend_name: str, what: str) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """Lower exported programs (method name -> program) into one .pte; its bytes and the
    delegation of each method."""
    from executorch.exir import to_edge_transform_and_lower

    log: list[str] = []
    try:
        with warnings.catch_warnings(), captured_output() as log:
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(programs, partitioner=_partitioners(backend_name))
            coverage = {m: delegation(edge.exported_program(m).graph_module, backend_name) for m in programs}
            buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise ExportError(f"ExecuTorch lowering of {what} failed: {_first_line(exc, log)}") from exc
    return buffer, coverage


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    backend_name = backend(spec)
    with captured_output():  # torchao, imported by ExecuTorch, logs its missing CUDA kernels
        import executorch.exir  # noqa: F401
    feeds = _calibration(segments) if spec.quantize == "int8" else {}
    programs: dict[str, Any] = {}
    for seg in segments:
        example = (segments.example_input(seg.name)[:1],)
        module = seg.module.eval()
        try:
            if spec.quantize == "int8":
                module = _quantized(module, example, feeds[seg.name])
            programs[identifier(seg.name)] = _capture(module, example)
        except Exception as exc:
            raise ExportError(f"torch.export of segment {seg.name} failed: {_first_line(exc)}") from exc
        if on_segment:
            on_segment(seg.name)
    buffer, coverage = _lower(programs, backend_name, "the segments")
    (out_dir / SEGMENTS_FILE).write_bytes(buffer)
    if on_segment:
        on_segment(f"{len(programs)} methods")
    artifacts = [SegmentArtifact(seg.name, SEGMENTS_FILE, ["x"], list(seg.outputs), signature=identifier(seg.name),
                                 extra={"delegation": coverage[identifier(seg.name)]}) for seg in segments]
    if spec.with_static:
        artifacts.append(_convert_static(segments, spec, out_dir, backend_name))
        if on_segment:
            on_segment("static")
    return artifacts


def _convert_static(segments: SegmentSet, spec: ExportSpec, out_dir: Path, backend_name: str) -> SegmentArtifact:
    """The plain network as ExecuTorch's own flow ships it: one ``forward`` method, lowered
    to the same backend (quantized the same way when the package is)."""
    static = StaticModel(segments.net).eval()
    example = static.example_inputs(1)
    module = static
    try:
        if spec.quantize == "int8":
            inputs = segments.calibration or dict(zip(static.input_names, static.example_inputs(8)))
            xs = [inputs[m][:CALIBRATION_SAMPLES] for m in static.input_names]
            module = _quantized(static, example, [tuple(x[i:i + 1] for x in xs) for i in range(len(xs[0]))])
        program = _capture(module, example)
    except Exception as exc:
        raise ExportError(f"torch.export of the static model failed: {_first_line(exc)}") from exc
    buffer, _ = _lower({STATIC_METHOD: program}, backend_name, "the static model")
    (out_dir / STATIC_FILE).write_bytes(buffer)
    return SegmentArtifact("static", STATIC_FILE, static.graph_input_names, static.output_names,
                           signature=STATIC_METHOD)
