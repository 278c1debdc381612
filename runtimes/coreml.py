"""Core ML: runs segments through ``MLModel.predict`` on macOS; elsewhere a clear error."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import UsageError
from cephalon_edge.extras import require
from cephalon_edge.targets import get_target

NOT_HERE_HINT = "on Linux run the onnx or tflite target of the same checkpoint (onnxruntime, litert)"


class CoreMLRuntime:
    name = "coreml"

    def __init__(self, manifest: Manifest, threads: int | None = None, segments: Sequence[str] | None = None,
                 spinning: bool = False) -> None:
        not_here = get_target(manifest.target).why_not_here()
        if not_here:
            raise UsageError(f"{not_here}; the package was checked at spec level on export", hint=NOT_HERE_HINT)
        require("coreml", "running a coreml package")
        import coremltools as ct

        self._manifest = manifest
        self._models: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}
        for name in segments or manifest.segments:
            seg = manifest.segments[name]
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

        static = self._manifest.static
        if not static:
            return None
        model = ct.models.MLModel(str(self._manifest.static_file()))
        names = static.get("inputs") or ["x"]
        return lambda *xs: [np.concatenate(p) for p in zip(*(
            self._predict(model, static["outputs"], tuple(x[i:i + 1] for x in xs), names) for i in range(len(xs[0]))))]

    def close(self) -> None:
        self._models.clear()
