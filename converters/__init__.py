"""Converters, one module per target format, registered by name.

Each module exposes ``convert(segments, spec, out_dir, on_segment=None) -> list[SegmentArtifact]``
and ``QUANTIZATION``, the modes it realises. Heavy imports happen inside ``convert``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UsageError

CONVERTERS: dict[str, str] = {
    "onnx": "cephalon_edge.converters.onnx",
    "tflite": "cephalon_edge.converters.tflite",
}


def get_converter(target: str) -> ModuleType:
    if target not in CONVERTERS:
        raise UsageError(f"unknown target {target!r}", hint=f"known targets: {', '.join(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[target])
