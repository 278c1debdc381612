"""ExecuTorch: one program per ``.pte`` file, each segment a method loaded once.

ExecuTorch's Python runtime takes and returns torch tensors, so this runtime imports torch
(lazily, when a package is opened): a device-only install runs ExecuTorch packages with the
``executorch`` extra, which brings torch. (The torch-free ``executorch-numpy-runtime``
requires Python 3.12 or newer.) It binds ExecuTorch's runtime extension directly
(``executorch.extension.pybindings._C``, what ``executorch.runtime`` wraps): the public
wrapper's import pulls in ExecuTorch's whole compiler, 14 s per process start here against
4.7 s. Segments are lowered at batch 1; larger batches run sample by sample. The XNNPACK
thread pool is process-wide: ``threads`` resizes it when given, else ExecuTorch's default
(its count of performant cores) stays, for the segments and the static model alike.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from cephalon_edge.device.runtimes.base import REEXPORT, check_io

from cephalon_edge.capture import captured_output
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import PackageError, RuntimeFailure
from cephalon_edge.extras import require


def _load():
    """ExecuTorch's runtime extension and torch, imported quietly (the CPU probe of XNNPACK
    logs to stderr on first use)."""
    with captured_output():
        import torch
        from executorch.extension.pybindings import _C

        return _C, torch


class _Method:
    """One loaded method: numpy in, numpy out, one sample at a time."""

    def __init__(self, method: Any, torch: Any) -> None:
        self.method, self.torch = method, torch

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        tensors = [self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs]
        return [o.numpy() for o in self.method.call(tensors)]

    def batched(self, *xs: np.ndarray) -> list[np.ndarray]:
        if xs[0].shape[0] == 1:
            return self(*xs)
        per_sample = [self(*(x[i:i + 1] for x in xs)) for i in range(xs[0].shape[0])]
        return [np.concatenate(parts) for parts in zip(*per_sample)]


def _shapes(meta: Any) -> tuple[list[tuple], list[tuple]]:
    return ([tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())],
            [tuple(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())])


class ExecuTorchRuntime:
    name = "executorch"

    def __init__(self, manifest: Manifest, threads: int | None = None, segments: Sequence[str] | None = None,
                 spinning: bool = False) -> None:
        """``spinning`` is ONNX Runtime's knob; ExecuTorch's thread pool has none to set."""
        require("executorch", "running an executorch package")
        self._et, self._torch = _load()
        if threads:
            self._et._unsafe_reset_threadpool(int(threads))
        self._manifest = manifest
        self._programs: dict[str, Any] = {}
        self._methods: dict[str, _Method] = {}
        for name in segments or manifest.segments:
            seg = manifest.segments[name]
            program = self._program(seg["file"])
            method_name = seg.get("signature") or "forward"
            if method_name not in {program.get_method_name(i) for i in range(program.num_methods())}:
                raise PackageError(f"segment {name}: {seg['file']} has no method {method_name!r}", hint=REEXPORT)
            method = self._method(program, method_name, seg["file"])
            check_io(name, seg, *_shapes(method.method_meta()))
            self._methods[name] = _Method(method, self._torch)

    def _program(self, file: str) -> Any:
        if file not in self._programs:
            path = self._manifest.member(file)
            try:
                self._programs[file] = self._load_program(path)
            except (RuntimeError, ValueError) as exc:
                raise RuntimeFailure(f"ExecuTorch cannot load {file}: {exc}") from None
        return self._programs[file]

    def _load_program(self, path) -> Any:
        return self._et._load_program(str(path), program_verification=self._et.Verification.InternalConsistency)

    @staticmethod
    def _method(program: Any, name: str, file: str) -> Any:
        log: list[str] = []
        try:
            with captured_output() as log:
                return program.load_method(name)
        except (RuntimeError, ValueError) as exc:
            detail = " ".join(line for line in "".join(log).splitlines()[-2:])
            raise RuntimeFailure(f"ExecuTorch cannot load method {name} of {file}: {exc} {detail}".strip()) from None

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._methods[segment].batched(inputs[0])
        except (RuntimeError, ValueError) as exc:
            raise RuntimeFailure(f"ExecuTorch failed on segment {segment}: {exc}") from None

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        """The plain static model as ExecuTorch runs it out of the box: its ``forward`` method,
        the runtime's default thread pool."""
        static = self._manifest.static
        if not static:
            return None
        program = self._load_program(self._manifest.static_file())
        return _Method(self._method(program, static.get("signature") or "forward", static["file"]), self._torch).batched

    def close(self) -> None:
        self._methods.clear()
        self._programs.clear()
