"""ONNX: one file per segment with torch.onnx (dynamo exporter), dynamic batch, checked.

int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, 8-bit activations:
uint8 for x86-64 devices, int8 for the others) of the convolutions but the narrowest, each
segment calibrated on the activations that really reach it (exit-aware); classifiers, gates
and exit scores stay float, so routing decisions are not made on 8-bit confidences. int8-dynamic:
ONNX Runtime dynamic quantization of MatMul/Gemm weights (its CPU kernels quantize those;
convolutions stay float).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import platform
import warnings
from pathlib import Path
from typing import Callable

from cephalon_edge.capture import captured_output

from cephalon_edge.toolchain.artifacts import ExportSpec, SegmentArtifact
from cephalon_edge.toolchain.compress.spec import FLOAT_BELOW_CHANNELS
from cephalon_edge.toolchain.segments import (
    SegmentSet,
    StaticModel,
    calibration_inputs,
    segment_feeds,
)
from cephalon_edge.errors import ExportError

CALIBRATION_SAMPLES = 64
MIN_OPSET = 18


@contextlib.contextmanager
def _torchlib_registry_built_once():
    """Build torch.onnx's table of aten-to-ONNX functions once for a whole package.

    torch.onnx.export rebuilds it from onnxscript sources on every call (about half of the
    time of exporting a small segment here); our exports never register custom ops, so one
    table per opset serves every segment. Without the private hook (another torch), exports
    just take longer.
    """
    try:
        from torch.onnx._internal.exporter import _registration
        original = _registration.ONNXRegistry.__dict__["from_torchlib"]
        build = _registration.ONNXRegistry.from_torchlib
    except (ImportError, AttributeError, KeyError):
        yield
        return
    tables: dict = {}

    def from_torchlib(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in tables:
            tables[key] = build(*args, **kwargs)
        return tables[key]

    _registration.ONNXRegistry.from_torchlib = staticmethod(from_torchlib)
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = original


def _export(module, examples: tuple, path: Path, outputs: list[str], opset: int,
            input_names: list[str] | None = None) -> None:
    import onnx
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in examples)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values()):
        shapes = (shapes,)  # forward(*xs): one argument holding every input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), examples, str(path), dynamo=True, input_names=input_names or ["x"],
                          output_names=outputs, dynamic_shapes=shapes,
                          opset_version=max(opset, MIN_OPSET), verbose=False, external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


class _Reader:
    """onnxruntime CalibrationDataReader over one input array, a few samples at a time."""

    def __init__(self, inputs: dict) -> None:  # input name -> array
        n = len(next(iter(inputs.values())))
        self.batches = iter([{k: v[i:i + 8] for k, v in inputs.items()} for i in range(0, n, 8)])

    def get_next(self):
        return next(self.batches, None)


def _narrow_convolutions(path: Path, below: int) -> list[str]:
    """The names of the Conv nodes in ``path`` with fewer than ``below`` input channels (their
    weights' second dimension times their groups): static int8 leaves them float32, as it
    does on LiteRT (digits-exits' first segment, one-channel stem: 1.19x of fp32's time with
    it int8, 0.83-0.94x with it float; BENCHMARKS.md "ONNX int8")."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and len(weights.get(node.input[1], [])) > 1:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            if weights[node.input[1]][1] * groups < below:
                names.append(node.name)
    return names


def _x86(spec: ExportSpec) -> bool:
    """Whether the package's device is an x86-64 CPU: its profile's ABI, or this machine's
    without a profile."""
    abi = str(spec.profile_settings.get("abi") or platform.machine()).lower()
    return abi in ("x86_64", "amd64", "x86", "i686")


def _quantize(path: Path, mode: str, calibration, what: str, x86: bool) -> None:
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = path.with_suffix(".pre.onnx")
    try:
        with warnings.catch_warnings(), captured_output():
            warnings.simplefilter("ignore")
            quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
            # reduce_range: 7-bit weights. ONNX Runtime's int8 kernels on x86 CPUs without VNNI
            # (AVX2/AVX-512 only) multiply with VPMADDUBSW, which saturates on full-range int8
            # weights: measured here, one conv segment off by 8.1 (of 15) without it, 0.23 with it.
            # Activations: uint8 on x86 (U8S8, what VPMADDUBSW multiplies; int8 activations ran
            # digits-exits' segments 1.3-2.4x *slower* than fp32 here, uint8 ones 0.3-0.8x),
            # int8 elsewhere (S8S8, ONNX Runtime's default, for ARM's signed dot products).
            if mode == "int8-dynamic":
                quantize_dynamic(str(pre), str(path), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True, op_types_to_quantize=["MatMul", "Gemm"])
            else:
                quantize_static(str(pre), str(path), _Reader(calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, reduce_range=True,
                                activation_type=QuantType.QUInt8 if x86 else QuantType.QInt8,
                                weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                                nodes_to_exclude=_narrow_convolutions(pre, FLOAT_BELOW_CHANNELS))
    except Exception as exc:
        raise ExportError(f"ONNX {mode} quantization of {what} failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        pre.unlink(missing_ok=True)


def _calibration(segments: SegmentSet):
    """Per segment, the inputs that really reach it, from the model inputs (or random ones)."""
    inputs = calibration_inputs(segments, CALIBRATION_SAMPLES)
    return inputs, {name: x.numpy() for name, x in segment_feeds(segments, inputs).items()}


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    with _torchlib_registry_built_once():
        return _convert(segments, spec, out_dir, on_segment)


def _convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
             on_segment: Callable[[str], None] | None) -> list[SegmentArtifact]:
    artifacts = []
    model_inputs, feeds = _calibration(segments) if spec.quantize == "int8" else (None, {})
    for seg in segments:
        path = out_dir / f"{seg.name}.onnx"
        try:
            _export(seg.module, (segments.example_input(seg.name),), path, seg.outputs, spec.opset)
        except Exception as exc:
            raise ExportError(f"ONNX export of segment {seg.name} failed: {str(exc).splitlines()[0][:300]}") from exc
        if spec.quantize != "none":
            feed = feeds.get(seg.name)
            _quantize(path, spec.quantize, None if feed is None else {"x": feed}, f"segment {seg.name}", _x86(spec))
        artifacts.append(SegmentArtifact(seg.name, path.name, ["x"], list(seg.outputs)))
        if on_segment:
            on_segment(seg.name)
    if spec.with_static:
        net = segments.net
        outputs = StaticModel(net).output_names
        static = StaticModel(net)
        names = static.graph_input_names
        try:
            _export(static, static.example_inputs(2), out_dir / "static.onnx", outputs, spec.opset, names)
        except Exception as exc:
            raise ExportError(f"ONNX export of the static model failed: {str(exc).splitlines()[0][:300]}") from exc
        if spec.quantize != "none":
            x = {n: model_inputs[m].numpy() for n, m in zip(names, static.input_names)} if model_inputs else None
            _quantize(out_dir / "static.onnx", spec.quantize, x, "the static model", _x86(spec))
        artifacts.append(SegmentArtifact("static", "static.onnx", names, outputs))
        if on_segment:
            on_segment("static")
    return artifacts
