"""ONNX Runtime: one InferenceSession per segment file, created once per package.

A segment below ``SINGLE_THREAD_FLOPS`` runs on the calling thread alone: waking an intra-op
pool costs more than it saves at that size (measured per segment on digits-exits and
mnist1d-moe, BENCHMARKS.md "threads per segment": 1.2-2x faster on one thread below ~5
MFLOPs, even or slower on one thread above ~7 MFLOPs)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from cephalon_edge.device.runtimes.base import check_io

from cephalon_edge.device.manifest import Manifest
from cephalon_edge.errors import RuntimeFailure
from cephalon_edge.extras import require

SINGLE_THREAD_FLOPS = 5e6


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, threads: int | None = None, segments: Sequence[str] | None = None,
                 spinning: bool = False, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        require("onnx", "running an onnx package")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        # A package holds one session per segment, each with its own intra-op pool. Workers
        # spin while a run lasts (the hand-off between ops is as quick as in one plain
        # session) and stop when it returns (force_spinning_stop): left spinning, an idle
        # session's workers steal the cores of the next segment's run (3x slower at full
        # depth on resnet50-exits, BENCHMARKS.md "Spinning"). A profile's `spinning = true`
        # keeps them spinning between runs, ONNX Runtime's own default. (ONNX Runtime's
        # process-wide pool would share one set of workers, but once set, every session of
        # the process, the app's own and ORT's quantization tools included, must opt out of
        # per-session threads or fail to load.)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        if not spinning:
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        single = ort.SessionOptions()
        single.graph_optimization_level, single.log_severity_level = opts.graph_optimization_level, 3
        single.intra_op_num_threads = single.inter_op_num_threads = 1
        self._ort, self._providers = ort, list(providers)
        self._manifest = manifest
        self._sessions = {}
        self._names: dict[str, tuple[str, list[str]]] = {}
        for name in segments or manifest.segments:
            flops = manifest.segments[name].get("flops")
            small = isinstance(flops, (int, float)) and not isinstance(flops, bool) and flops < SINGLE_THREAD_FLOPS
            try:
                sess = ort.InferenceSession(str(manifest.file_of(name)), single if small else opts,
                                            providers=list(providers))
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise RuntimeFailure(f"onnxruntime cannot load segment {name}: {exc}") from None
            check_io(name, manifest.segments[name], [i.shape for i in sess.get_inputs()],
                     [o.shape for o in sess.get_outputs()])
            self._sessions[name] = sess
            self._names[name] = (sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()])

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        input_name, output_names = self._names[segment]
        try:
            return self._sessions[segment].run(output_names, {input_name: inputs[0]})
        except Exception as exc:
            raise RuntimeFailure(f"onnxruntime failed on segment {segment}: {exc}") from None

    def static_runner(self) -> Callable[..., list[np.ndarray]] | None:
        """The package's plain static model as a user would run it: ONNX Runtime's default
        session options (threads, spinning), if the package has one; called with one array
        per package input, in manifest order."""
        path = self._manifest.static_file()
        if path is None:
            return None
        defaults = self._ort.SessionOptions()
        defaults.log_severity_level = 3
        sess = self._ort.InferenceSession(str(path), defaults, providers=self._providers)
        names = [i.name for i in sess.get_inputs()]
        return lambda *xs: sess.run(None, dict(zip(names, xs)))

    def close(self) -> None:
        self._sessions.clear()
