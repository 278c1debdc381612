"""Converters, one module per target format, registered by name.

Each module exposes ``convert(segments, spec, out_dir, on_segment=None) -> list[SegmentArtifact]``
``QUANTIZATION``, the modes it realises, and ``DEFAULT_QUANTIZATION``; a converter whose
packages cannot run here also exposes ``verify(manifest)`` for spec-level checks. Heavy imports happen inside ``convert``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UsageError

CONVERTERS: dict[str, str] = {
    "onnx": "cephalon_edge.converters.onnx",
    "tflite": "cephalon_edge.converters.tflite",
    "coreml": "cephalon_edge.converters.coreml",
}


def get_converter(target: str) -> ModuleType:
    if target not in CONVERTERS:
        raise UsageError(f"unknown target {target!r}", hint=f"known targets: {', '.join(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[target])
