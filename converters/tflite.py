"""TFLite (LiteRT): every segment a named signature of one .tflite file, via litert-torch.

Quantization runs on the converted fp32 file with ai-edge-quantizer: its recipes work on a
multi-signature model, and static int8 calibrates each signature on the activations that
really reach that segment (exit-aware), which PT2E per module would need a separate
conversion per segment for. Segments are converted at batch 1 (litert-torch's lowering of a
dynamic batch fails on residual adds); the LiteRT runtime loops over larger batches.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

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

SEGMENTS_FILE = "segments.tflite"
CALIBRATION_SAMPLES = 64


def _fail(what: str, exc: BaseException, log: list[str]) -> ExportError:
    detail = str(exc).strip().splitlines()
    lowering = [line for line in (log[0] if log else "").splitlines() + detail if "Lowering not found" in line]
    reason = lowering[-1].strip() if lowering else (detail[0] if detail else type(exc).__name__)
    return ExportError(f"TFLite conversion of {what} failed: {reason[:300]}")


def _diagnose(segments: SegmentSet) -> ExportError | None:
    """After a failed multi-signature conversion: convert segment by segment to name the one
    that fails and the op that has no lowering."""
    import litert_torch

    for seg in segments:
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_output() as log:
                warnings.simplefilter("ignore")
                litert_torch.convert(seg.module.eval(), (segments.example_input(seg.name)[:1],))
        except Exception as exc:
            return _fail(f"segment {seg.name}", exc, log)
    return None


def _narrow_convolutions(path: Path, below: int) -> list[str]:
    """The scopes (ai-edge-quantizer's op names: their output tensors' names) of the
    convolutions in ``path`` with fewer than ``below`` input channels, and of the layout ops
    (reshape, pad, transpose) that feed them, walking back towards the input.

    XNNPACK's int8 convolutions lose to float32 when the input has few channels (consistent with
    kernels that take input channels in groups of 8): on digits-exits' one-channel stem, the
    quantize, pad and convolution took 24 us in int8 against 6.5 us in float32, and the first
    segment ran at 0.93-0.95x of fp32's time; with the stem float, at 0.58-0.59x. A float stem
    won below 8 input channels in ``benchmarks/int8_channels.py`` (BENCHMARKS.md "int8 when
    routed"). The layout ops go with the convolution so their int8 versions do not stand
    alone: XNNPACK folds a float pad into the float convolution, not an int8 pad into a float
    one. The recipe matches scopes by name in every signature: a same-named op elsewhere
    stays float too (correct, if slower)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    ops = schema.BuiltinOperator
    model = fb.read_model(str(path))

    def kind(op) -> int:
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    scopes = []
    for graph in model.subgraphs:
        producer = {t: op for op in graph.operators for t in op.outputs}
        for op in graph.operators:
            if kind(op) not in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D) or graph.tensors[op.inputs[0]].shape[-1] >= below:
                continue
            scopes.append(fb.get_op_scope(op, graph.tensors))
            feed = producer.get(op.inputs[0])
            while feed is not None and kind(feed) in (ops.RESHAPE, ops.PAD, ops.TRANSPOSE):
                scopes.append(fb.get_op_scope(feed, graph.tensors))
                feed = producer.get(feed.inputs[0])
    return list(dict.fromkeys(scopes))  # a layout op feeding two of them is named once


def _recipe(mode: str, float_scopes: Sequence[str] = ()):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if mode == "int8-dynamic":
        return recipe.dynamic_wi8_afp32()
    if mode == "int8":
        # int8 inside, float32 at the signature's boundary: the model quantizes its inputs and
        # dequantizes its outputs itself (QUANTIZE/DEQUANTIZE ops in the runtime's C++), not
        # the router in numpy on every call
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                  activation_num_bits=8, weight_num_bits=8)
        for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=boundary,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        for scope in float_scopes:  # the narrow convolutions (_narrow_convolutions)
            manager.add_quantization_config(regex=f"^{re.escape(scope)}$", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        return manager.get_quantization_recipe()
    manager = recipe_manager.RecipeManager()  # fp16: weights cast to float16
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                   num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def _quantize(path: Path, mode: str, calibration: dict[str, list[dict]] | None, what: str,
              float_below: int = FLOAT_BELOW_CHANNELS) -> None:
    from ai_edge_quantizer import quantizer

    log: list[str] = []
    try:
        with captured_output() as log:
            narrow = _narrow_convolutions(path, float_below) if mode == "int8" else []
            q = quantizer.Quantizer(str(path), _recipe(mode, narrow))
            result = q.calibrate(calibration, num_threads=2) if mode == "int8" else None
            tmp = path.with_suffix(".quantized")
            q.quantize(result, enable_progress_report=False).export_model(str(tmp), overwrite=True)
        os.replace(tmp, path)
    except Exception as exc:
        raise _fail(f"{what} ({mode} quantization)", exc, log) from exc


def _calibration_feeds(segments: SegmentSet) -> dict[str, list[dict]]:
    """Per signature, batch-1 inputs that really reach the segment (from the model inputs)."""
    feeds = segment_feeds(segments, calibration_inputs(segments, CALIBRATION_SAMPLES))
    return {name: [{"args_0": x[i:i + 1].numpy()} for i in range(len(x))] for name, x in feeds.items()}


def _per_segment_files(spec: ExportSpec) -> bool:
    """A profile may ask for one .tflite per segment (``[tflite] per_segment_files = true``)."""
    return bool(spec.profile_section("tflite").get("per_segment_files", False))


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    if _per_segment_files(spec):
        return _convert_per_segment(segments, spec, out_dir, on_segment)
    import litert_torch

    converter = None
    artifacts = []
    for seg in segments:
        example = (segments.example_input(seg.name)[:1],)
        module = seg.module.eval()
        converter = litert_torch.signature(seg.name, module, example) if converter is None \
            else converter.signature(seg.name, module, example)
        artifacts.append(SegmentArtifact(seg.name, SEGMENTS_FILE, ["args_0"],
                                         [f"output_{i}" for i in range(len(seg.outputs))], signature=seg.name))
    log: list[str] = []
    path = out_dir / SEGMENTS_FILE
    try:
        with warnings.catch_warnings(), captured_output() as log:
            warnings.simplefilter("ignore")
            converter.convert().export(str(path))
    except Exception as exc:
        raise _diagnose(segments) or _fail("the segments", exc, log) from exc
    if on_segment:
        on_segment(f"{len(artifacts)} signatures")
    if spec.quantize != "none":
        _quantize(path, spec.quantize, _calibration_feeds(segments) if spec.quantize == "int8" else None, "the segments")
        if on_segment:
            on_segment(spec.quantize)
    if spec.with_static:
        artifacts.append(_convert_static(segments, spec, out_dir))
        if on_segment:
            on_segment("static")
    return artifacts


def _convert_per_segment(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
                         on_segment: Callable[[str], None] | None) -> list[SegmentArtifact]:
    """One .tflite per segment (its only signature named after it), for runtimes that load
    segments separately."""
    import litert_torch

    feeds = _calibration_feeds(segments) if spec.quantize == "int8" else {}
    artifacts = []
    for seg in segments:
        path = out_dir / f"{seg.name}.tflite"
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_output() as log:
                warnings.simplefilter("ignore")
                litert_torch.signature(seg.name, seg.module.eval(), (segments.example_input(seg.name)[:1],)) \
                    .convert().export(str(path))
        except Exception as exc:
            raise _fail(f"segment {seg.name}", exc, log) from exc
        if spec.quantize != "none":
            _quantize(path, spec.quantize, {seg.name: feeds[seg.name]} if feeds else None, f"segment {seg.name}")
        artifacts.append(SegmentArtifact(seg.name, path.name, ["args_0"],
                                         [f"output_{i}" for i in range(len(seg.outputs))], signature=seg.name))
        if on_segment:
            on_segment(seg.name)
    if spec.with_static:
        artifacts.append(_convert_static(segments, spec, out_dir))
    return artifacts


def _convert_static(segments: SegmentSet, spec: ExportSpec, out_dir: Path) -> SegmentArtifact:
    import litert_torch

    net = segments.net
    static = StaticModel(net).eval()
    example = static.example_inputs(1)
    path = out_dir / "static.tflite"
    log: list[str] = []
    try:
        with warnings.catch_warnings(), captured_output() as log:
            warnings.simplefilter("ignore")
            litert_torch.convert(static, example).export(str(path))
    except Exception as exc:
        raise _fail("the static model", exc, log) from exc
    outputs = StaticModel(net).output_names
    if spec.quantize != "none":
        calibration = None
        if spec.quantize == "int8":
            inputs = segments.calibration or dict(zip(static.input_names, static.example_inputs(8)))
            xs = [inputs[m][:CALIBRATION_SAMPLES].numpy() for m in static.input_names]
            calibration = {"serving_default": [{f"args_{j}": x[i:i + 1] for j, x in enumerate(xs)}
                                               for i in range(len(xs[0]))]}
        _quantize(path, spec.quantize, calibration, "the static model")
    return SegmentArtifact("static", path.name, [f"args_{j}" for j in range(len(static.input_names))],
                           [f"output_{i}" for i in range(len(outputs))],
                           signature="serving_default", extra={"names": outputs})
