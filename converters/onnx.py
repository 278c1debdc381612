"""ONNX: one file per segment with torch.onnx (dynamo exporter), dynamic batch, checked."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

from ..artifacts import ExportSpec, SegmentArtifact
from ..errors import ExportError
from ..segments import SegmentSet, StaticModel

DEFAULT_QUANTIZATION = "none"
QUANTIZATION = ("none",)
MIN_OPSET = 18


def _export(module, example, path: Path, outputs: list[str], opset: int) -> None:
    import onnx
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=True, input_names=["x"],
                          output_names=outputs, dynamic_shapes=({0: torch.export.Dim("batch")},),
                          opset_version=max(opset, MIN_OPSET), verbose=False, external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    artifacts = []
    for seg in segments:
        path = out_dir / f"{seg.name}.onnx"
        try:
            _export(seg.module, segments.example_input(seg.name), path, seg.outputs, spec.opset)
        except Exception as exc:
            raise ExportError(f"ONNX export of segment {seg.name} failed: {str(exc).splitlines()[0][:300]}") from exc
        artifacts.append(SegmentArtifact(seg.name, path.name, ["x"], list(seg.outputs)))
        if on_segment:
            on_segment(seg.name)
    if spec.with_static:
        net = segments.net
        outputs = net.spec.exit_names + [t.name for t in net.spec.tasks[1:]]
        shape = net.spec.modalities[0].shape
        import torch

        example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        try:
            _export(StaticModel(net), example, out_dir / "static.onnx", outputs, spec.opset)
        except Exception as exc:
            raise ExportError(f"ONNX export of the static model failed: {str(exc).splitlines()[0][:300]}") from exc
        artifacts.append(SegmentArtifact("static", "static.onnx", ["x"], outputs))
        if on_segment:
            on_segment("static")
    return artifacts
