"""Core ML: runs segments through ``MLModel.predict`` on macOS; elsewhere a clear error."""

from __future__ import annotations

import platform
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UsageError
from ..manifest import Manifest
from .base import TensorSpec

NOT_HERE = ("Core ML predictions need macOS (this is {system}); the package was still checked at "
            "spec level on export")
NOT_HERE_HINT = "on Linux run the onnx or tflite target of the same checkpoint (onnxruntime, litert)"


class CoreMLRuntime:
    name = "coreml"

    def __init__(self, manifest: Manifest, threads: int | None = None) -> None:
        if platform.system() != "Darwin":
            raise UsageError(NOT_HERE.format(system=platform.system()), hint=NOT_HERE_HINT)
        import coremltools as ct

        if manifest.target != "coreml":
            raise UsageError(f"coreml runs coreml packages, this one is {manifest.target}")
        self._manifest = manifest
        self._models: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}
        for name, seg in manifest.segments.items():
            units = getattr(ct.ComputeUnit, seg.get("coreml", {}).get("compute_units", "CPU_AND_NE"))
            kwargs = {"function_name": seg["signature"]} if seg.get("signature") else {}
            self._models[name] = ct.models.MLModel(str(manifest.file_of(name)), compute_units=units, **kwargs)
            self._outputs[name] = seg["outputs"]

    def _predict(self, model: Any, outputs: list[str], x: np.ndarray, names: Sequence[str] = ("x",)) -> list[np.ndarray]:
        result = model.predict(dict(zip(names, x if isinstance(x, tuple) else (x,))))
        return [np.asarray(result[o], dtype=np.float32) for o in outputs]

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        model, outputs, x = self._models[segment], self._outputs[segment], inputs[0]
        parts = [self._predict(model, outputs, x[i:i + 1]) for i in range(x.shape[0])]
        return [np.concatenate(p) for p in zip(*parts)]

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        import coremltools as ct

        static = self._manifest.data.get("static")
        if not static:
            return None
        model = ct.models.MLModel(str(self._manifest.static_file()))
        names = static.get("inputs") or ["x"]
        return lambda *xs: [np.concatenate(p) for p in zip(*(
            self._predict(model, static["outputs"], tuple(x[i:i + 1] for x in xs), names) for i in range(len(xs[0]))))]

    def input_specs(self, segment: str) -> list[TensorSpec]:
        seg = self._manifest.segments[segment]
        return [TensorSpec("x", (1, *seg["shapes"]["inputs"][0]), "float32")]

    def output_specs(self, segment: str) -> list[TensorSpec]:
        seg = self._manifest.segments[segment]
        return [TensorSpec(o, (1, *s), "float32") for o, s in zip(seg["outputs"], seg["shapes"]["outputs"])]

    def close(self) -> None:
        self._models.clear()
