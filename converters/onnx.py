"""ONNX: one file per segment with torch.onnx (dynamo exporter), dynamic batch, checked.

int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, int8 activations) of
the convolutions, each segment calibrated on the activations that really reach it
(exit-aware); classifiers, gates and exit scores stay float, so routing decisions are not
made on 8-bit confidences. int8-dynamic:
ONNX Runtime dynamic quantization of MatMul/Gemm weights (its CPU kernels quantize those;
convolutions stay float).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

from ..artifacts import ExportSpec, SegmentArtifact
from ..errors import ExportError
from ..segments import SegmentSet, StaticModel, segment_feeds
from ._capture import captured_output

DEFAULT_QUANTIZATION = "none"
QUANTIZATION = ("none", "int8", "int8-dynamic")
CALIBRATION_SAMPLES = 64
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


class _Reader:
    """onnxruntime CalibrationDataReader over one input array, a few samples at a time."""

    def __init__(self, x) -> None:
        self.batches = iter([{"x": x[i:i + 8]} for i in range(0, len(x), 8)])

    def get_next(self):
        return next(self.batches, None)


def _quantize(path: Path, mode: str, calibration, what: str) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = path.with_suffix(".pre.onnx")
    try:
        with warnings.catch_warnings(), captured_output():
            warnings.simplefilter("ignore")
            quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
            if mode == "int8-dynamic":
                quantize_dynamic(str(pre), str(path), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul", "Gemm"])
            else:
                quantize_static(str(pre), str(path), _Reader(calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv"])
    except Exception as exc:
        raise ExportError(f"ONNX {mode} quantization of {what} failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        pre.unlink(missing_ok=True)


def _calibration(segments: SegmentSet):
    """Per segment, the inputs that really reach it, from the model inputs (or random ones)."""
    import torch

    inputs = segments.calibration
    if inputs is None:
        gen = torch.Generator().manual_seed(0)
        inputs = {m.name: torch.randn(CALIBRATION_SAMPLES, *m.shape, generator=gen) for m in segments.net.spec.modalities}
    inputs = {k: v[:CALIBRATION_SAMPLES] for k, v in inputs.items()}
    return inputs, {name: x.numpy() for name, x in segment_feeds(segments, inputs).items()}


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    artifacts = []
    model_inputs, feeds = _calibration(segments) if spec.quantize == "int8" else (None, {})
    for seg in segments:
        path = out_dir / f"{seg.name}.onnx"
        try:
            _export(seg.module, segments.example_input(seg.name), path, seg.outputs, spec.opset)
        except Exception as exc:
            raise ExportError(f"ONNX export of segment {seg.name} failed: {str(exc).splitlines()[0][:300]}") from exc
        if spec.quantize != "none":
            _quantize(path, spec.quantize, feeds.get(seg.name), f"segment {seg.name}")
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
        if spec.quantize != "none":
            x = next(iter(model_inputs.values())).numpy() if model_inputs else None
            _quantize(out_dir / "static.onnx", spec.quantize, x, "the static model")
        artifacts.append(SegmentArtifact("static", "static.onnx", ["x"], outputs))
        if on_segment:
            on_segment("static")
    return artifacts
