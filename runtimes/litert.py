"""LiteRT (TensorFlow Lite): signature runners of ai_edge_litert's Interpreter, XNNPACK on CPU.

int8 packages are exported with float32 at every signature's boundary (the model quantizes and
dequantizes in its own ops); packages with quantized inputs or outputs (exported before) are
converted here with each tensor's scale and zero point, so the router always sees float32.
Segments are converted at batch 1; larger batches run sample by sample.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from cephalon_edge.device.runtimes.base import REEXPORT, check_io

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import PackageError, RuntimeFailure
from cephalon_edge.extras import require


class _Signature:
    """One signature runner with pre-resolved names and quantization parameters."""

    def __init__(self, runner: Any, outputs: Sequence[str]) -> None:
        self.runner = runner
        details = runner.get_input_details()
        # args_0, args_1, ...: positional order (sorted by number, not as text)
        self.input_names = sorted(details, key=lambda n: (len(n), n))
        self.input_name = self.input_names[0]
        self.input_quant = {n: (details[n]["dtype"], details[n]["quantization"]) for n in self.input_names}
        out = runner.get_output_details()
        self.outputs = list(outputs) or sorted(out)
        self.output_quant = [(out[o]["dtype"], out[o]["quantization"]) for o in self.outputs]
        float_io = (len(self.input_names) == 1 and details[self.input_name]["dtype"] == np.float32
                    and all(dtype == np.float32 for dtype, _ in self.output_quant))
        self.direct = _direct_call(runner, details[self.input_name]["index"],
                                   [out[o]["index"] for o in self.outputs]) if float_io else None

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        if self.direct is not None:  # the router's hot path: float32 in and out, nothing to convert
            return self.direct(xs[0])
        feeds = {}  # several inputs, or quantized ones (packages exported before the float boundary)
        for name, x in zip(self.input_names, xs):
            dtype, (scale, zero) = self.input_quant[name]
            if dtype != np.float32:
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
            feeds[name] = x
        return self._outputs(self.runner(**feeds))

    def _outputs(self, result: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = []  # the runner's tensors are copies already: only quantized ones are converted
        for name, (dtype, (scale, zero)) in zip(self.outputs, self.output_quant):
            y = result[name]
            outs.append((y.astype(np.float32) - zero) * scale if dtype != np.float32 else y)
        return outs


def _direct_call(runner: Any, input_index: int,
                 output_indices: Sequence[int]) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """A call of ``runner`` at the shape its model was converted at, without what the signature
    runner repeats on every call (resizing the input to the shape it already has, allocating
    the arena it already has, a dict of outputs by name): set the input, invoke, copy the
    outputs out. A wrong shape is still refused (SetTensor checks it). None (the runner is
    called) if this ai_edge_litert does not lay out its runner as expected."""
    try:
        wrapper, subgraph = runner._interpreter_wrapper, runner._subgraph_index
        wrapper.AllocateTensors(subgraph)
        set_tensor, invoke, get_tensor = wrapper.SetTensor, wrapper.Invoke, wrapper.GetTensor
    except AttributeError:  # pragma: no cover - another ai_edge_litert's internals
        return None

    def call(x: np.ndarray) -> list[np.ndarray]:
        set_tensor(input_index, x, subgraph)
        invoke(subgraph)
        return [get_tensor(i, subgraph) for i in output_indices]
    return call


class LiteRTRuntime:
    name = "litert"

    def __init__(self, manifest: Manifest, threads: int | None = None, segments: Sequence[str] | None = None,
                 spinning: bool = False) -> None:
        """``spinning`` is ONNX Runtime's knob; LiteRT's XNNPACK pool has none to set."""
        require("tflite", "running a tflite package")
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter_cls, self._threads, self._manifest = Interpreter, threads, manifest
        self._interpreters: dict[str, Any] = {}
        self._signatures: dict[str, _Signature] = {}
        for name in segments or manifest.segments:
            seg = manifest.segments[name]
            interp = self._open(seg["file"])
            try:
                runner = interp.get_signature_runner(seg.get("signature") or None)
            except ValueError as exc:
                raise RuntimeFailure(f"{seg['file']} has no signature {seg.get('signature')!r} for segment {name}: {exc}") from None
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
            if set(seg["outputs"]) - set(outputs):
                raise PackageError(f"segment {name}: its graph has no output {sorted(set(seg['outputs']) - set(outputs))[0]!r}",
                                   hint=REEXPORT)
            check_io(name, seg, [inputs[n]["shape"] for n in sorted(inputs, key=lambda n: (len(n), n))],
                     [outputs[o]["shape"] for o in (seg["outputs"] or sorted(outputs))])
            self._signatures[name] = _Signature(runner, seg["outputs"])

    def _open(self, file: str) -> Any:
        if file not in self._interpreters:
            path = self._manifest.member(file)
            try:
                self._interpreters[file] = self._interpreter_cls(model_path=str(path), num_threads=self._threads)
            except (ValueError, RuntimeError) as exc:
                raise RuntimeFailure(f"LiteRT cannot load {file}: {exc}") from None
        return self._interpreters[file]

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        sig = self._signatures[segment]
        x = inputs[0]
        try:
            if x.shape[0] == 1:
                return sig(x)
            per_sample = [sig(x[i:i + 1]) for i in range(x.shape[0])]
        except (ValueError, RuntimeError) as exc:
            raise RuntimeFailure(f"LiteRT failed on segment {segment}: {exc}") from None
        return [np.concatenate(parts) for parts in zip(*per_sample)]

    def static_runner(self) -> Callable[[np.ndarray], list[np.ndarray]] | None:
        """The plain static model as a user would run it: the interpreter's default settings."""
        static = self._manifest.static
        if not static:
            return None
        interp = self._interpreter_cls(model_path=str(self._manifest.static_file()))
        sig = _Signature(interp.get_signature_runner(static.get("signature") or None), static["outputs"])
        return lambda *xs: sig(*xs) if xs[0].shape[0] == 1 else \
            [np.concatenate(p) for p in zip(*(sig(*(x[i:i + 1] for x in xs)) for i in range(len(xs[0]))))]

    def close(self) -> None:
        self._signatures.clear()
        self._interpreters.clear()
