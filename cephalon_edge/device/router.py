"""The torch-free router: runs a package's program (compiled once into a ``Plan``), calling
only the segments each input needs.

Decisions are per sample: samples that exit leave the batch, a skip gate runs its block on
the samples it fires for, and a mixture of experts splits the batch by the chosen expert.
The program speaks of parts; a fused segment runs when its first part is called and hands
its other parts' outputs to the steps that follow. Needs numpy and one runtime, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cephalon_edge.device.data_checks import are_token_ids
from cephalon_edge.device.manifest import Manifest
from cephalon_edge.device.plan import Plan, Walk
from cephalon_edge.device.runtimes import open_runtime
from cephalon_edge.device.scores import SCORES, PatienceStreaks
from cephalon_edge.errors import DataError, UsageError


_FLOAT32 = np.dtype(np.float32)


def _filled(shape: int | tuple[int, ...], value: float, dtype: Any) -> np.ndarray:
    """``np.full`` without its Python-level overhead (the router allocates per predict)."""
    a = np.empty(shape, dtype)
    a.fill(value)
    return a


class LayeredRuntime:
    """After ``Router.reload``: the segments that changed run on freshly opened sessions, the
    rest on the sessions the router already had."""

    def __init__(self, base: Any, fresh: Any, segments: set[str]) -> None:
        self.base, self.fresh, self.segments, self.name = base, fresh, segments, fresh.name

    def run(self, segment: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return (self.fresh if segment in self.segments else self.base).run(segment, inputs)

    def static_runner(self) -> Any:
        return self.fresh.static_runner()

    def close(self) -> None:
        self.fresh.close()
        self.base.close()


@dataclass(slots=True)
class Prediction:
    """Per-sample results of one ``Router.predict`` call."""

    logits: np.ndarray  # (B, classes) from the exit each sample took
    scores: np.ndarray  # (B,) confidence at that exit
    exit_index: np.ndarray  # (B,) index into exit_names
    exit_names: list[str]
    gates: np.ndarray  # (B, n_gates) int8: 1 ran, 0 skipped, -1 not reached
    experts: np.ndarray  # (B, n_moe) int64: chosen expert, -1 not reached
    tasks: dict[str, np.ndarray]  # extra task outputs; NaN for samples that exited early
    latency_us: np.ndarray  # (B,) time of the segments each sample went through
    segment_us: dict[str, float] = field(default_factory=dict)  # total time per segment run
    labels: list[str] = field(default_factory=list)
    # with collect_exits: every exit's logits and max-softmax for the samples that reached it (NaN otherwise)
    exit_logits: np.ndarray | None = None  # (B, n_exits, classes)
    exit_max_softmax: np.ndarray | None = None  # (B, n_exits)
    # a variants package: the operating point (variant, thresholds, accuracy, latency) used
    operating_point: dict[str, Any] | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @property
    def exits(self) -> list[str]:
        return [self.exit_names[i] for i in self.exit_index]

    @property
    def label_names(self) -> list[str]:
        return [self.labels[i] if i < len(self.labels) else str(i) for i in self.predicted]


class Router:
    def __init__(self, manifest: Manifest, runtime: Any, score: str | None = None) -> None:
        """``score``: route with this exit score instead of the package's own (calibrate
        chooses thresholds for a score before writing it into the manifest)."""
        self.runtime = runtime
        self._score_override = score
        self._open_args: dict[str, Any] = {}
        self._bind(manifest)

    def _bind(self, manifest: Manifest) -> None:
        """Take the package's program, parts and settings from ``manifest``."""
        score = self._score_override
        self.manifest = manifest
        self.program = manifest.program
        self.exit_names = self.program.exit_names
        self.inputs = manifest.inputs
        parts = manifest.parts
        self.classes = len(manifest.labels) or int(parts[self.program.final.part].output_shapes[0][0])
        self.task_segments = dict(self.program.final.tasks)
        self.task_outputs = {t: int(np.prod(parts[s].output_shapes[0])) for t, s in self.task_segments.items()}
        self._n_gates, self._n_moe, self._main_task = self.program.n_gates, self.program.n_moe, manifest.main_task
        # read once here, not per predict: the hot path only looks these up
        self._thresholds = manifest.thresholds
        self._input_specs = {name: (tuple(m["shape"]), m.get("vocab")) for name, m in self.inputs.items()}
        self._labels = manifest.labels
        self._threshold_list = [self._thresholds[e] for e in self.program.early_exits]
        self.score = score or manifest.score
        if self.score not in SCORES:
            raise UsageError(f"package uses exit score {self.score!r}, unknown to this cephalon-edge",
                             hint=f"known scores: {', '.join(SCORES)}")
        self._plan = Plan(self.program, {n: (p.segment, p.position, p.outputs) for n, p in parts.items()},
                          {n: len(s["shapes"]["outputs"]) for n, s in manifest.segments.items()}, self.score)
        self._per_batch: dict[int, tuple[np.ndarray, tuple[np.ndarray, ...]]] = {}

    @classmethod
    def open(cls, package_dir: str | Path, runtime: str = "auto", threads: int | None = None,
             verify: bool = True, score: str | None = None, spinning: bool = False) -> "Router":
        """Open a package: validate the manifest, check sha256s, create the runtime sessions."""
        manifest = Manifest.open(Path(package_dir), verify=verify)
        router = cls(manifest, open_runtime(runtime, manifest, threads=threads, spinning=spinning), score=score)
        router._open_args = {"threads": threads, "spinning": spinning}
        return router

    def reload(self) -> dict[str, list[str]]:
        """Re-open the package in place, between predictions (after ``apply``): the new
        manifest is validated and every file checked; segments whose file, method and shapes
        did not change keep their runtime sessions, the others are opened anew. Returns
        ``{"reopened": [...], "kept": [...]}``. On any error the router is as it was."""
        new = Manifest.open(self.manifest.root)
        old = self.manifest.segments
        same = {n for n, s in new.segments.items()
                if n in old and all(old[n].get(k) == s.get(k) for k in ("file", "sha256", "signature", "shapes"))}
        changed = [n for n in new.segments if n not in same]
        if changed:
            fresh = open_runtime(self.runtime.name, new, segments=changed, **self._open_args)
            self.runtime = LayeredRuntime(self.runtime, fresh, set(changed))
        self._bind(new)
        return {"reopened": changed, "kept": sorted(same)}

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- inputs and thresholds -----------------------------------------------------
    def resolve_thresholds(self, thresholds: float | Mapping[str, float] | None) -> dict[str, float]:
        resolved = dict(self._thresholds)
        if thresholds is None:
            return resolved
        if isinstance(thresholds, (int, float)):
            return {name: float(thresholds) for name in resolved}
        unknown = sorted(set(thresholds) - set(resolved))
        if unknown:
            raise UsageError(f"unknown exit {unknown[0]!r} in thresholds", hint=f"exits: {', '.join(resolved)}")
        return {**resolved, **{k: float(v) for k, v in thresholds.items()}}

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Validate modality names, shapes and dtypes; add a missing batch dimension."""
        if not inputs:
            raise DataError("no input given", hint=f"inputs: {', '.join(self.inputs)}")
        checked, batch = {}, None
        for name, x in inputs.items():
            if name not in self._input_specs:
                raise DataError(f"unknown modality {name!r}", hint=f"this package takes: {', '.join(self.inputs)}")
            shape, vocab = self._input_specs[name]  # text: token ids, integers or whole floats
            if not (type(x) is np.ndarray and x.dtype is _FLOAT32 and vocab is None):  # the common case is ready
                x = np.asarray(x)
                if not (np.issubdtype(x.dtype, np.floating) or (vocab is not None and np.issubdtype(x.dtype, np.integer))):
                    raise DataError(f"{name} input has dtype {x.dtype}; expected "
                                    + ("token ids (integers)" if vocab is not None else "floating point (float32)"))
            if x.shape == shape:
                x = x[None]
            if x.shape[1:] != shape or x.shape[0] == 0:
                raise DataError(f"{name} input has shape {list(x.shape)}; expected {list(shape)} "
                                f"or [batch, {', '.join(map(str, shape))}]")
            if vocab is not None and not are_token_ids(x, vocab):
                raise DataError(f"{name} input must hold token ids: whole numbers in [0, {vocab})")
            if batch is not None and x.shape[0] != batch:
                raise DataError(f"modalities disagree on batch size ({batch} vs {x.shape[0]})")
            batch = x.shape[0]
            checked[name] = x if x.dtype is _FLOAT32 and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=np.float32)
        assert batch is not None  # inputs is not empty
        return checked, batch

    def _blank(self, batch: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The sample indices and a blank result's arrays for ``batch`` samples, made once per
        batch size (copying them is cheaper than filling new ones)."""
        idx = np.arange(batch)
        idx.flags.writeable = False  # shared by every call of this batch size
        blank = (np.zeros((batch, self.classes), np.float32), np.zeros(batch, np.float32),
                 _filled(batch, -1, np.int64), _filled((batch, self._n_gates), -1, np.int8),
                 _filled((batch, self._n_moe), -1, np.int64), np.zeros(batch))
        if len(self._per_batch) < 64:  # the batch sizes a data loader produces, not every size seen
            self._per_batch[batch] = idx, blank
        return idx, blank

    # ---- prediction ------------------------------------------------------------------
    def predict(self, inputs: Mapping[str, np.ndarray], tasks: Sequence[str] | None = None,
                thresholds: float | Mapping[str, float] | None = None, collect_exits: bool = False) -> Prediction:
        """Route a batch: per-sample exits, gates and experts (see ``plan``).

        ``collect_exits`` also records every evaluated exit's logits (for calibration)."""
        xs, batch = self.check_inputs(inputs)
        if thresholds is None:
            thr = self._threshold_list
        elif isinstance(thresholds, (int, float)):
            thr = [float(thresholds)] * len(self._threshold_list)
        else:
            thr = [self.resolve_thresholds(thresholds)[e] for e in self.program.early_exits]
        wanted = [t for t in tasks if t != self._main_task] if tasks else []
        for t in wanted:
            if t not in self.task_segments:
                raise UsageError(f"unknown task {t!r}", hint=f"tasks: {', '.join(self.task_segments) or 'none'}")
        idx, blank = self._per_batch.get(batch) or self._blank(batch)
        res = Prediction(  # positional: the fields in order
            blank[0].copy(), blank[1].copy(), blank[2].copy(), self.exit_names, blank[3].copy(), blank[4].copy(),
            {t: _filled((batch, self.task_outputs[t]), np.nan, np.float32) for t in wanted} if wanted else {},
            blank[5].copy(), {}, self._labels)
        if collect_exits:
            res.exit_logits = _filled((batch, len(self.exit_names), self.classes), np.nan, np.float32)
            res.exit_max_softmax = _filled((batch, len(self.exit_names)), np.nan, np.float32)
        return self._plan.walk(Walk(
            self.runtime.run, xs, batch, res, thr, wanted,
            PatienceStreaks(batch) if self.score == "patience" else None, [None] * len(self._plan.slots), idx))
