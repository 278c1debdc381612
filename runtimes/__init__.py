"""Runtimes, one module per runtime, registered by name (the device half: torch-free).

A runtime opens a package's segment files and runs a segment by name on numpy arrays; see
``base.Runtime``. Modules are imported only when used, so a device needs only the runtime
package it actually runs (``pip install 'cephalon-edge[onnx]'``). Which runtime runs which
target is registered once, in ``cephalon_edge.targets``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Sequence

from cephalon_edge.errors import UsageError
from cephalon_edge.targets import TARGETS, get_target

if TYPE_CHECKING:
    from cephalon_edge.device.runtimes.base import Runtime

    from cephalon_edge.device.manifest import Manifest

RUNTIMES: dict[str, str] = {
    "onnxruntime": "cephalon_edge.device.runtimes.onnxruntime:OnnxRuntime",
    "litert": "cephalon_edge.device.runtimes.litert:LiteRTRuntime",
    "coreml": "cephalon_edge.device.runtimes.coreml:CoreMLRuntime",
    "executorch": "cephalon_edge.device.runtimes.executorch:ExecuTorchRuntime",
}


def open_runtime(name: str, manifest: "Manifest", threads: int | None = None,
                 segments: Sequence[str] | None = None, spinning: bool = False) -> "Runtime":
    """Open ``manifest``'s segments (or only ``segments``) with runtime ``name`` (``auto``:
    the one registered for the package's target)."""
    target = get_target(manifest.target)
    if name == "auto":
        name = target.runtime
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r} for a {manifest.target} package",
                         hint=f"known runtimes: {', '.join(RUNTIMES)}")
    if name != target.runtime:
        runs = [t.name for t in TARGETS.values() if t.runtime == name]
        raise UsageError(f"{name} runs {', '.join(runs)} packages, this one is {manifest.target}",
                         hint=f"a {manifest.target} package runs with {target.runtime}")
    module, _, cls = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(manifest, threads=threads, segments=segments,
                                                         spinning=spinning)

