"""Runtimes, one module per runtime, registered by name (torch-free).

A runtime opens a package's segment files and runs a segment by name on numpy arrays; see
``base.Runtime``. Modules are imported only when used, so a device needs only the runtime
package it actually runs (``pip install onnxruntime numpy``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .base import Runtime

RUNTIMES: dict[str, str] = {
    "onnxruntime": "cephalon_edge.runtimes.onnxruntime:OnnxRuntime",
    "litert": "cephalon_edge.runtimes.litert:LiteRTRuntime",
    "coreml": "cephalon_edge.runtimes.coreml:CoreMLRuntime",
}
DEFAULT_FOR_TARGET: dict[str, str] = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}


def open_runtime(name: str, manifest: "Manifest", threads: int | None = None) -> "Runtime":
    """Open ``manifest``'s segments with runtime ``name`` (``auto``: the target's default)."""
    if name == "auto":
        name = DEFAULT_FOR_TARGET.get(manifest.target, "")
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r} for a {manifest.target} package",
                         hint=f"known runtimes: {', '.join(RUNTIMES)}")
    module, _, cls = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(manifest, threads=threads)
